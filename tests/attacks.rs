//! A hostile tenant against the shared manager: each test tries one way of taking what other
//! tenants need — memory held for unread watches, connections held open half-sent or idle,
//! more watches and connections than its share — against the real `vt server`, and checks
//! that the attempt is refused or bounded while a neighbour keeps being served.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vt_testkit::tls::TenantClient as Tenant;
use vt_testkit::{VtManager, rss_kib};

fn vt() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_vt"))
}

/// 1,000 watches that never read their stream, from one tenant, over 1,000 connections: the
/// manager's memory stays bounded (each watch holds a fixed buffer, not the tenant's data: the
/// tenant holds ~1 MiB of ConfigMaps, which every watch would otherwise buffer), the tenant's
/// watch cap answers 429 beyond it, and a neighbour is served meanwhile. Then the watches
/// close and their slots come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_watches_are_bounded_and_capped() {
    let (m, hostile, quiet) = tokio::task::spawn_blocking(|| {
        let m = VtManager::start(vt(), &[]);
        m.vt_ok(&["create", "hostile", "--max-watches", "1000", "--max-connections", "1200"]);
        m.vt_ok(&["create", "quiet"]);
        // ~1 MiB of ConfigMaps in the hostile tenant.
        let k = m.tenant_kubectl("hostile");
        let blob = "x".repeat(4000);
        let items: Vec<String> = (0..250)
            .map(|i| format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"cm-{i}","namespace":"default"}},"data":{{"blob":"{blob}"}}}}"#))
            .collect();
        k.ok_stdin(&["apply", "-f", "-"], &format!(r#"{{"apiVersion":"v1","kind":"List","items":[{}]}}"#, items.join(",")));
        let (h, q) = (Tenant::of(&m, "hostile"), Tenant::of(&m, "quiet"));
        (m, h, q)
    })
    .await
    .unwrap();
    let pid = m.pid();
    let before = rss_kib(pid);
    let mut held = Vec::new();
    let started = Instant::now();
    for batch in 0..50 {
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let t = hostile.clone();
            tasks.push(tokio::spawn(async move { t.get("/api/v1/configmaps?watch=1").await }));
        }
        for task in tasks {
            let (conn, head) = task.await.unwrap();
            assert!(head.starts_with("HTTP/1.1 200"), "batch {batch}: {head}");
            held.push(conn);
        }
    }
    assert_eq!(held.len(), 1000);
    eprintln!("1000 watches opened in {:?}", started.elapsed());
    // Let the server fill every buffer it may.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = rss_kib(pid);
    let grown = during.saturating_sub(before);
    eprintln!("manager RSS {before} KiB → {during} KiB with 1000 unread watches (+{grown} KiB)");
    // Unbounded, each watch would hold its ~1 MiB of initial events: ~1 GiB.
    assert!(grown < 250 * 1024, "1000 unread watches grew the manager by {grown} KiB");
    // The 1,001st watch is refused as kube refuses over its limits.
    let (_c, head) = hostile.get("/api/v1/configmaps?watch=1").await;
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after: 1"), "{head}");
    // Ordinary requests of the same tenant, and the neighbour, are served.
    let (_c, head) = hostile.get("/api/v1/namespaces/default/configmaps/cm-1").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let t = Instant::now();
    let (_c, head) = quiet.get("/api/v1/namespaces").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    eprintln!("the quiet tenant answered in {:?} meanwhile", t.elapsed());
    // Closing the watches gives their slots back.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_c, head) = hostile.get("/api/v1/configmaps?watch=1&timeoutSeconds=1").await;
        if head.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "watch slots did not come back: {head}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(m);
}

/// Reads until the peer closes; `true` if it closed within `within`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(s: &mut S, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Slowloris and idle connections: half-sent requests, TLS handshakes never finished and
/// connections left idle are closed after their timeouts; one source cannot hold more than
/// its share of handshakes; a quiet watch is not an idle connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed() {
    let (m, slow, quiet, k) = tokio::task::spawn_blocking(|| {
        let m = VtManager::start(vt(), &["--header-timeout", "2", "--idle-timeout", "3"]);
        m.vt_ok(&["create", "slow"]);
        m.vt_ok(&["create", "calm"]);
        let (s, q) = (Tenant::of(&m, "slow"), Tenant::of(&m, "calm"));
        let k = m.tenant_kubectl("calm");
        (m, s, q, k)
    })
    .await
    .unwrap();

    // 300 connections that send half a request.
    let mut half = Vec::new();
    for _ in 0..300 {
        let mut c = slow.connect().await;
        c.write_all(format!("GET /api/v1/namespaces HTTP/1.1\r\nHost: {}\r\n", slow.server_name).as_bytes())
            .await
            .unwrap();
        half.push(c);
    }
    // A neighbour is served meanwhile.
    let (_c, head) = quiet.get("/api/v1/namespaces").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let t = Instant::now();
    for c in &mut half {
        assert!(closed_within(c, Duration::from_secs(8)).await, "a half-sent request was kept open");
    }
    eprintln!("300 half-sent requests closed after {:?}", t.elapsed());

    // Plain TCP connections that never start TLS: one source gets 64 handshakes at once; the
    // rest are dropped at once, the 64 at the handshake deadline.
    let addr = slow.addr.clone();
    let mut raw = Vec::new();
    for _ in 0..100 {
        raw.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut dropped_at_once = 0;
    for c in &mut raw {
        if closed_within(c, Duration::from_millis(20)).await {
            dropped_at_once += 1;
        }
    }
    assert!(dropped_at_once >= 30, "only {dropped_at_once} of 100 half-open connections from one source were refused");
    for c in &mut raw {
        assert!(closed_within(c, Duration::from_secs(8)).await, "a connection without a TLS handshake was kept");
    }

    // A keep-alive connection left idle is closed after the idle timeout.
    let (mut idle, head) = quiet.get("/api/v1/namespaces").await;
    assert!(head.starts_with("HTTP/1.1 200"));
    assert!(closed_within(&mut idle, Duration::from_secs(10)).await, "an idle connection was kept");

    // A watch with nothing to say for longer than the idle timeout is not idle.
    let events = tokio::task::spawn_blocking(move || {
        let mut w = k.spawn_piped(&["-n", "default", "get", "configmaps", "-w", "--output-watch-events", "-o", "name"]);
        std::thread::sleep(Duration::from_secs(5));
        k.ok(&["-n", "default", "create", "configmap", "after-quiet", "--from-literal=a=1"]);
        std::thread::sleep(Duration::from_secs(1));
        let alive = w.try_wait().unwrap().is_none();
        let _ = w.kill();
        let out = w.wait_with_output().unwrap();
        (alive, String::from_utf8_lossy(&out.stdout).to_string())
    })
    .await
    .unwrap();
    assert!(events.0, "the watch ended");
    assert!(events.1.contains("configmap/after-quiet"), "{}", events.1);
    drop(m);
}

/// A tenant's connections beyond its cap get 429 and are closed; below it they are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_refused() {
    let (m, capped) = tokio::task::spawn_blocking(|| {
        let m = VtManager::start(vt(), &[]);
        m.vt_ok(&["create", "capped", "--max-connections", "5", "--max-watches", "3"]);
        let t = Tenant::of(&m, "capped");
        (m, t)
    })
    .await
    .unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        let (c, head) = capped.get("/api/v1/configmaps?watch=1").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        held.push(c);
    }
    let (c, head) = capped.get("/api/v1/configmaps?watch=1").await;
    assert!(head.starts_with("HTTP/1.1 429"), "the fourth watch: {head}");
    held.push(c);
    let (c, head) = capped.get("/api/v1/namespaces").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    held.push(c);
    // Five connections are open: the sixth is refused and closed.
    let (mut c, head) = capped.get("/api/v1/namespaces").await;
    assert!(head.starts_with("HTTP/1.1 429"), "the sixth connection: {head}");
    assert!(closed_within(&mut c, Duration::from_secs(5)).await);
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_c, head) = capped.get("/api/v1/namespaces").await;
        if head.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "connection slots did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(m);
}

/// A loopback listener that counts the connections it gets (a service inside the manager's
/// network a tenant might probe).
async fn counting_listener() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((c, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(c);
        }
    });
    (port, seen)
}

/// An HTTPS admission webhook at `ip` (a simulated pod's address) that denies every request
/// with "denied by the pod's webhook"; returns its port and CA.
async fn denying_webhook(ip: &str) -> (u16, String) {
    let server = vt_testkit::https::https(ip, &["hook.default.svc"], &[], None).await;
    let (listener, acceptor, port) = (server.listener, server.acceptor, server.port);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    use http_body_util::BodyExt;
                    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    let rev: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let answer = serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                        "response": {"uid": rev["request"]["uid"], "allowed": false,
                            "status": {"code": 403, "message": "denied by the pod's webhook"}}});
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .header("content-type", "application/json")
                            .body(http_body_util::Full::new(bytes::Bytes::from(answer.to_string())))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, server.ca_pem)
}

fn webhook(name: &str, client_config: &str) -> String {
    format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {{name: {name}}}
webhooks:
- name: probe.vt.test
  admissionReviewVersions: [v1]
  sideEffects: None
  timeoutSeconds: 3
  failurePolicy: Fail
  clientConfig: {client_config}
  rules: [{{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [configmaps]}}]
"#
    )
}

/// A tenant's admission webhooks are not a way into the manager's network: URLs at loopback
/// (however spelled), the metadata service, the host's Service range or names are refused
/// before anything is dialed, all with the same words (no port-scan oracle); a Service
/// reference reaches the tenant's own pod through its host Service, and never the address the
/// tenant writes into its own Endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_cannot_reach_past_the_tenant() {
    let (probe_port, probed) = counting_listener().await;
    let (m, k) = tokio::task::spawn_blocking(|| {
        let m = VtManager::start(vt(), &["--sim-pod-cidr", "127.77.0.0/16"]);
        m.vt_ok(&["create", "prober"]);
        let k = Arc::new(m.tenant_kubectl("prober"));
        (m, k)
    })
    .await
    .unwrap();
    let ca = base64::engine::general_purpose::STANDARD.encode(vt_pki::Ca::generate("x").unwrap().cert_pem());
    let mut refusals = Vec::new();
    for (i, url) in [
        format!("https://127.0.0.1:{probe_port}/"),
        format!("https://[::ffff:127.0.0.1]:{probe_port}/"),
        format!("https://[::ffff:7f00:1]:{probe_port}/"),
        format!("https://localhost:{probe_port}/"),
        "https://169.254.169.254/".to_string(),
        "https://10.128.0.1/".to_string(),
        "https://127.0.0.1:1/".to_string(),
        "https://203.0.113.9/".to_string(),
    ]
    .into_iter()
    .enumerate()
    {
        let (k, ca) = (k.clone(), ca.clone());
        let out = tokio::task::spawn_blocking(move || {
            k.ok_stdin(&["apply", "-f", "-"], &webhook("probe", &format!(r#"{{url: "{url}", caBundle: "{ca}"}}"#)));
            std::thread::sleep(Duration::from_millis(300));
            k.fails(&["-n", "default", "create", "configmap", &format!("probe-{i}")])
        })
        .await
        .unwrap();
        let tail = out.rsplit_once("failed to call webhook: ").map(|(_, t)| t.trim().to_string()).unwrap_or(out);
        refusals.push(tail);
    }
    assert_eq!(probed.load(std::sync::atomic::Ordering::SeqCst), 0, "the manager dialed a loopback listener");
    assert!(refusals.iter().all(|r| r == &refusals[0]), "refusals differ: {refusals:#?}");
    assert!(refusals[0].contains("not one this cluster may call"), "{}", refusals[0]);

    // The tenant's own webhook pod, behind its own Service, is reached through the host.
    let k2 = k.clone();
    let pod_ip = tokio::task::spawn_blocking(move || {
        k2.ok(&["delete", "validatingwebhookconfiguration", "probe"]);
        k2.ok(&["-n", "default", "create", "deployment", "hook", "--image=registry.example/hook:1"]);
        k2.ok(&["-n", "default", "rollout", "status", "deployment/hook", "--timeout=60s"]);
        k2.ok(&["-n", "default", "expose", "deployment", "hook", "--port=443", "--target-port=8443"]);
        k2.ok(&["-n", "default", "get", "pods", "-l", "app=hook", "-o", "jsonpath={.items[0].status.podIP}"])
    })
    .await
    .unwrap();
    assert!(pod_ip.starts_with("127.77."), "{pod_ip}");
    let (hook_port, hook_ca) = denying_webhook(&pod_ip).await;
    let k3 = k.clone();
    let denied = tokio::task::spawn_blocking(move || {
        // The Service's target port is where the test's server listens.
        k3.ok(&[
            "-n",
            "default",
            "patch",
            "service",
            "hook",
            "-p",
            &format!(r#"{{"spec":{{"ports":[{{"port":443,"targetPort":{hook_port}}}]}}}}"#),
        ]);
        let ca = base64::engine::general_purpose::STANDARD.encode(hook_ca);
        let cfg = format!(r#"{{service: {{namespace: default, name: hook, port: 443}}, caBundle: "{ca}"}}"#);
        k3.ok_stdin(&["apply", "-f", "-"], &webhook("hook", &cfg));
        let mut last = String::new();
        for i in 0..50 {
            let out = k3.run(&["-n", "default", "create", "configmap", &format!("through-{i}")]);
            last = String::from_utf8_lossy(&out.stderr).to_string();
            if last.contains("denied by the pod's webhook") {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        last
    })
    .await
    .unwrap();
    assert!(denied.contains("denied by the pod's webhook"), "{denied}");

    // A selector-less Service whose (virtual) Endpoints point at the loopback listener: the
    // host copy drops the address, so the webhook has nowhere to go.
    let k4 = k.clone();
    let out = tokio::task::spawn_blocking(move || {
        k4.ok(&["delete", "validatingwebhookconfiguration", "hook"]);
        k4.ok_stdin(
            &["apply", "-f", "-"],
            &format!(
                r#"{{"apiVersion":"v1","kind":"List","items":[
{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"evil","namespace":"default"}},"spec":{{"ports":[{{"port":443}}]}}}},
{{"apiVersion":"v1","kind":"Endpoints","metadata":{{"name":"evil","namespace":"default"}},"subsets":[{{"addresses":[{{"ip":"127.0.0.1"}},{{"ip":"::ffff:127.0.0.1"}}],"ports":[{{"port":{probe_port}}}]}}]}}]}}"#
            ),
        );
        let ca = base64::engine::general_purpose::STANDARD.encode(vt_pki::Ca::generate("y").unwrap().cert_pem());
        let cfg = format!(r#"{{service: {{namespace: default, name: evil, port: 443}}, caBundle: "{ca}"}}"#);
        k4.ok_stdin(&["apply", "-f", "-"], &webhook("evil", &cfg));
        std::thread::sleep(Duration::from_secs(1));
        k4.fails(&["-n", "default", "create", "configmap", "evil-probe"])
    })
    .await
    .unwrap();
    assert!(out.contains("failed to call webhook"), "{out}");
    assert_eq!(probed.load(std::sync::atomic::Ordering::SeqCst), 0, "the manager dialed the tenant's Endpoints");
    drop(m);
}

/// What a tenant can claim on the host is granted, not taken: node ports and load balancers
/// only within its quota (none by default, and an update to NodePort is charged too),
/// ExternalNames never into the cluster's own names, load balancer classes only if granted.
/// Its credentials live in the manager's namespace, never where its pods run; an older layout
/// (credentials in the host namespace) moves on restart and its clients keep working.
#[test]
fn host_claims_and_credentials_stay_bounded() {
    let mut m = VtManager::start(vt(), &[]);
    m.vt_ok(&["create", "claimer"]);
    m.vt_ok(&["create", "granted", "--quota", "services.nodeports=2", "--quota", "pods=10"]);
    let k = m.tenant_kubectl("claimer");
    let out = k.fails(&["-n", "default", "create", "service", "nodeport", "squat", "--tcp=80:80"]);
    assert!(out.contains("exceeded quota") && out.contains("services.nodeports"), "{out}");
    let out = k.fails(&["-n", "default", "create", "service", "loadbalancer", "lb", "--tcp=80:80"]);
    assert!(out.contains("exceeded quota"), "{out}");
    // Turning a ClusterIP Service into a NodePort one does not reach the host's node ports.
    k.ok(&["-n", "default", "create", "service", "clusterip", "web", "--tcp=80:80"]);
    let _ = k.run(&["-n", "default", "patch", "service", "web", "-p", r#"{"spec":{"type":"NodePort"}}"#]);
    std::thread::sleep(Duration::from_secs(2));
    let host = m.host_kubectl();
    let types = host.ok(&["-n", "vt-claimer", "get", "services", "-o", "jsonpath={.items[*].spec.type}"]);
    assert!(!types.contains("NodePort"), "a host node port was taken: {types}");
    // ExternalNames into the cluster, and classes not granted, are refused with a reason.
    let out = k.fails(&[
        "-n",
        "default",
        "create",
        "service",
        "externalname",
        "peek",
        "--external-name=secret-store.vt-granted.svc.cluster.local",
    ]);
    assert!(out.contains("externalName") && out.contains("cluster"), "{out}");
    k.ok(&["-n", "default", "create", "service", "externalname", "ok", "--external-name=api.example.com"]);
    let out = k.fails_stdin(
        &["apply", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"lbc","namespace":"default"},"spec":{"type":"ClusterIP","loadBalancerClass":"example.com/x","ports":[{"port":80}]}}"#,
    );
    assert!(out.contains("loadBalancerClass"), "{out}");
    // A tenant granted node ports gets exactly its grant (ports, as kube counts them).
    let g = m.tenant_kubectl("granted");
    g.ok(&["-n", "default", "create", "service", "nodeport", "two", "--tcp=80:80", "--tcp=81:81"]);
    let out = g.fails(&["-n", "default", "create", "service", "nodeport", "three", "--tcp=82:82"]);
    assert!(out.contains("exceeded quota"), "{out}");

    // The isolation policy lets in the manager only from the manager's namespace: a tenant pod
    // with the manager's labels is not the manager.
    let policy = host.ok(&["-n", "vt-claimer", "get", "networkpolicy", "vt-isolation", "-o", "json"]);
    let policy: serde_json::Value = serde_json::from_str(&policy).unwrap();
    for peer in
        policy.pointer("/spec/egress").unwrap().as_array().unwrap().iter().flat_map(|r| r["to"].as_array().unwrap())
    {
        if peer.pointer("/podSelector/matchLabels/app.kubernetes.io~1name").is_some() {
            assert_eq!(
                peer.pointer("/namespaceSelector/matchLabels/kubernetes.io~1metadata.name"),
                Some(&serde_json::json!("vt-system")),
                "{peer}"
            );
        }
    }
    // Credentials: in the manager's namespace, not the pods'.
    let secrets = host.ok(&["-n", "vt-claimer", "get", "secrets", "-o", "name"]);
    assert!(!secrets.contains("vt-pki") && !secrets.contains("kubeconfig"), "{secrets}");
    let own = host.ok(&["-n", "vt-system", "get", "secrets", "-o", "name"]);
    assert!(own.contains("secret/vt-claimer-pki") && own.contains("secret/vt-claimer-kubeconfig"), "{own}");
    // An older layout: the PKI back in the host namespace, the new Secret gone.
    let pki = host.ok(&["-n", "vt-system", "get", "secret", "vt-claimer-pki", "-o", "json"]);
    let mut legacy: serde_json::Value = serde_json::from_str(&pki).unwrap();
    legacy["metadata"] = serde_json::json!({"name": "vt-pki", "namespace": "vt-claimer"});
    host.ok(&["delete", "-n", "vt-system", "secret", "vt-claimer-pki", "vt-claimer-kubeconfig"]);
    host.ok_stdin(&["create", "-f", "-"], &legacy.to_string());
    m.restart();
    // The kubeconfig from before the move still works: same CA, same admin certificate.
    let deadline = Instant::now() + Duration::from_secs(30);
    while k.run(&["get", "namespaces"]).status.code() != Some(0) {
        assert!(Instant::now() < deadline, "the tenant's old kubeconfig stopped working");
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let own = host.ok(&["-n", "vt-system", "get", "secrets", "-o", "name"]);
        let left = host.ok(&["-n", "vt-claimer", "get", "secrets", "-o", "name"]);
        if own.contains("secret/vt-claimer-pki") && !left.contains("vt-pki") {
            break;
        }
        assert!(Instant::now() < deadline, "the credentials were not moved: {own} / {left}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A flood waits in its own queue: with one shared seat and a queue of two per tenant, forty
/// concurrent requests of one tenant get 429s (with Retry-After) once its queue is full, while
/// its neighbour's requests are still answered — they wait behind at most one of the flood's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_waits_in_its_own_queue() {
    let (m, noisy, quiet) = tokio::task::spawn_blocking(|| {
        let m = VtManager::start(vt(), &["--max-concurrent-requests", "1", "--max-queued-requests", "2"]);
        m.vt_ok(&["create", "flood"]);
        m.vt_ok(&["create", "still"]);
        let (n, q) = (Tenant::of(&m, "flood"), Tenant::of(&m, "still"));
        (m, n, q)
    })
    .await
    .unwrap();
    // Forty connections first, then forty requests at once.
    let mut conns = Vec::new();
    for _ in 0..40 {
        conns.push(noisy.connect().await);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(40));
    let mut tasks = Vec::new();
    for mut c in conns {
        let (b, name) = (barrier.clone(), noisy.server_name.clone());
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            let req = format!("GET /api/v1/namespaces HTTP/1.1\r\nHost: {name}\r\n\r\n");
            c.write_all(req.as_bytes()).await.unwrap();
            let mut head = vec![0u8; 1024];
            let n = c.read(&mut head).await.unwrap();
            String::from_utf8_lossy(&head[..n]).to_string()
        }));
    }
    let quiet_answer = tokio::spawn(async move { quiet.get("/api/v1/namespaces").await.1 });
    let mut throttled = 0;
    for t in tasks {
        let head = t.await.unwrap();
        if head.starts_with("HTTP/1.1 429") {
            assert!(head.to_ascii_lowercase().contains("retry-after: 1"), "{head}");
            throttled += 1;
        } else {
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        }
    }
    assert!(throttled > 0, "a flood beyond its queue was not refused");
    let head = quiet_answer.await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "the neighbour was refused: {head}");
    drop(m);
}

/// Expensive admission expressions compute on their own threads, not on the runtime's
/// workers: a tenant whose policy makes every request spend its whole CEL budget (seconds of
/// CPU in a debug build) has four such requests computing, more than there are workers, and a
/// neighbour's request is still answered while they compute — before the first of them ends.
/// (Before, each evaluation blocked a shared runtime worker: two such requests stalled every
/// tenant.) Seats are raised above the workers here, so that what is measured is the runtime,
/// not the fair queue (`a_flood_waits_in_its_own_queue` covers that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expensive_expressions_do_not_stall_neighbours() {
    let (m, heavy, quiet) = tokio::task::spawn_blocking(|| {
        let m = VtManager::start(vt(), &["--max-concurrent-requests", "8"]);
        m.vt_ok(&["create", "heavy"]);
        m.vt_ok(&["create", "light"]);
        let k = m.tenant_kubectl("heavy");
        let ten = "[0,1,2,3,4,5,6,7,8,9]";
        let spin = format!("{ten}.all(a, {ten}.all(b, {ten}.all(c, {ten}.all(d, {ten}.all(e, {ten}.all(f, {ten}.all(g, a+b+c+d+e+f+g >= 0)))))))");
        let validations: String = (0..5).map(|_| format!("  - expression: \"{spin}\"\n")).collect();
        k.ok_stdin(
            &["apply", "-f", "-"],
            &format!(
                "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata: {{name: spin.example.com}}\nspec:\n  matchConstraints:\n    resourceRules: [{{apiGroups: [\"\"], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}}]\n  validations:\n{validations}---\napiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata: {{name: spin-binding}}\nspec: {{policyName: spin.example.com, validationActions: [Deny]}}\n"
            ),
        );
        vt_testkit::eventually("the policy in force", || {
            let out = k.run(&["-n", "default", "create", "configmap", "probe"]);
            (!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("cost")).then_some(())
        });
        let (h, q) = (Tenant::of(&m, "heavy"), Tenant::of(&m, "light"));
        (m, h, q)
    })
    .await
    .unwrap();
    let finished = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..4 {
        let mut c = heavy.connect().await;
        let (name, finished) = (heavy.server_name.clone(), finished.clone());
        tasks.push(tokio::spawn(async move {
            let body = format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"spin-{i}"}}}}"#);
            let req = format!(
                "POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: {name}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            c.write_all(req.as_bytes()).await.unwrap();
            let mut head = vec![0u8; 4096];
            let n = c.read(&mut head).await.unwrap();
            finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            String::from_utf8_lossy(&head[..n]).to_string()
        }));
    }
    // The heavy requests are computing; the neighbour asks now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let head = quiet.get("/api/v1/namespaces").await.1;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let done_before = finished.load(std::sync::atomic::Ordering::SeqCst);
    println!("the neighbour answered in {:?} while {} of 4 heavy requests had ended", started.elapsed(), done_before);
    assert_eq!(done_before, 0, "the neighbour waited for the heavy requests");
    for t in tasks {
        let head = t.await.unwrap();
        assert!(head.contains("actual cost limit exceeded") || head.starts_with("HTTP/1.1 429"), "{head}");
    }
    drop(m);
}
