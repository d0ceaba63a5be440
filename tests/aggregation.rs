//! Aggregated APIs in a tenant, against the real `vt server` and kubectl: an extension API
//! server (a real HTTPS server here, on a simulated pod's address) registered with an
//! APIService is reached through the tenant's front proxy, as kube-aggregator reaches it;
//! and `kubectl top` in a tenant answers from the host's metrics API (a metrics server here,
//! registered on the host the same way), narrowed to the tenant's own pods and nodes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vt_testkit::VtManager;
use vt_testkit::tls::TenantClient;

fn vt() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_vt"))
}

/// One request an extension server saw: method and path, the identity headers, and whether
/// anything that speaks for the client (its credentials) reached it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    user: String,
    groups: Vec<String>,
    credentials: bool,
}

type Handler = Arc<dyn Fn(&str) -> (u16, Value) + Send + Sync>;

/// An HTTPS server at `ip` answering with `handler` (JSON), recording what it saw; requires a
/// client certificate signed by `client_ca` when given. Watches (`watch=true`) get the
/// handler's list items as ADDED events. Returns its port, its CA, and the record.
async fn extension_server(ip: &str, client_ca: Option<&str>, handler: Handler) -> (u16, String, Arc<Mutex<Vec<Seen>>>) {
    let server =
        vt_testkit::https::https(ip, &["wardle.default.svc", "metrics-server.kube-system.svc"], &[], client_ca).await;
    let (listener, acceptor, port) = (server.listener, server.acceptor, server.port);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, handler, record) = (acceptor.clone(), handler.clone(), record.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (handler, record) = (handler.clone(), record.clone());
                    async move {
                        let h = req.headers();
                        let all = |n: &str| -> Vec<String> {
                            h.get_all(n).iter().map(|v| v.to_str().unwrap_or("").to_string()).collect()
                        };
                        let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
                        record.lock().unwrap().push(Seen {
                            path: path.clone(),
                            user: all("x-remote-user").join(","),
                            groups: all("x-remote-group"),
                            credentials: h.contains_key("authorization")
                                || h.keys().any(|k| k.as_str().starts_with("impersonate-")),
                        });
                        // A streaming subresource: switch protocols and echo what comes.
                        if let Some(protocol) = h.get("upgrade").cloned() {
                            let pending = hyper::upgrade::on(req);
                            tokio::spawn(async move {
                                let Ok(io) = pending.await else { return };
                                let mut io = hyper_util::rt::TokioIo::new(io);
                                let mut buf = [0u8; 1024];
                                while let Ok(n) = io.read(&mut buf).await {
                                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            });
                            return Ok(http::Response::builder()
                                .status(101)
                                .header("connection", "Upgrade")
                                .header("upgrade", protocol)
                                .body(Full::new(bytes::Bytes::new()))
                                .unwrap());
                        }
                        let (code, body) = handler(&path);
                        let text = if path.contains("watch=true") {
                            let items = body.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
                            items.iter().map(|i| format!("{}\n", json!({"type": "ADDED", "object": i}))).collect()
                        } else {
                            body.to_string()
                        };
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(code)
                                .header("content-type", "application/json")
                                .body(Full::new(bytes::Bytes::from(text)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (port, server.ca_pem, seen)
}

fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> tokio::task::JoinHandle<T> {
    tokio::task::spawn_blocking(f)
}

/// The wardle sample API (kube's sample-apiserver): one Flunder.
fn wardle(path: &str) -> (u16, Value) {
    let p = path.split('?').next().unwrap_or("");
    match p {
        "/apis/wardle.example.com/v1alpha1" => (
            200,
            json!({"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": "wardle.example.com/v1alpha1", "resources": [
                {"name": "flunders", "singularName": "flunder", "namespaced": true, "kind": "Flunder",
                 "verbs": ["get", "list", "watch"], "shortNames": ["fl"]},
                {"name": "flunders/status", "singularName": "", "namespaced": true, "kind": "Flunder", "verbs": ["get"]}]}),
        ),
        "/apis/wardle.example.com/v1alpha1/namespaces/default/flunders" => (
            200,
            json!({
            "kind": "FlunderList", "apiVersion": "wardle.example.com/v1alpha1", "metadata": {"resourceVersion": "7"},
            "items": [{"kind": "Flunder", "apiVersion": "wardle.example.com/v1alpha1",
                       "metadata": {"name": "alpha", "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z", "resourceVersion": "7"},
                       "spec": {"reference": "beta"}}]}),
        ),
        _ => {
            (404, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}))
        }
    }
}

/// The `AVAILABLE` column of an APIService.
fn availability(k: &vt_testkit::Kubectl, name: &str) -> String {
    k.ok(&["get", "apiservice", name, "--no-headers"]).split_whitespace().skip(2).take(2).collect::<Vec<_>>().join(" ")
}

/// Waits (30 s at most) for an APIService to be available; fails with its condition.
fn wait_available(k: &vt_testkit::Kubectl, name: &str) {
    let mut last = String::new();
    let passed = (0..60).any(|_| {
        last = k.ok(&["get", "apiservice", name, "-o", "jsonpath={.status.conditions[0]}"]);
        std::thread::sleep(Duration::from_millis(500));
        last.contains(r#""status":"True""#)
    });
    assert!(passed, "{name} never available: {last}");
}

fn apiservice(name: &str, group: &str, version: &str, service: &str, trust: &str) -> String {
    let (ns, svc) = service.split_once('/').unwrap();
    format!(
        "apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata: {{name: {name}}}\nspec:\n  group: {group}\n  version: {version}\n  service: {{namespace: {ns}, name: {svc}, port: 443}}\n  {trust}\n  groupPriorityMinimum: 1000\n  versionPriority: 15\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregated_apis_and_host_metrics_work_in_a_tenant() {
    let (m, k, hk) = blocking(|| {
        let m = VtManager::start(vt(), &["--sim-pod-cidr", "127.78.0.0/16"]);
        m.vt_ok(&["create", "agg"]);
        let k = Arc::new(m.tenant_kubectl("agg"));
        let hk = Arc::new(m.host_kubectl());
        (m, k, hk)
    })
    .await
    .unwrap();

    // --- An extension API server of the tenant's own, behind its own Service. ---
    let k1 = k.clone();
    let (pod_ip, auth) = blocking(move || {
        k1.ok(&["-n", "default", "create", "deployment", "wardle", "--image=registry.example/wardle:1"]);
        k1.ok(&["-n", "default", "rollout", "status", "deployment/wardle", "--timeout=60s"]);
        k1.ok(&["-n", "default", "expose", "deployment", "wardle", "--port=443", "--target-port=8443"]);
        let ip =
            k1.ok(&["-n", "default", "get", "pods", "-l", "app=wardle", "-o", "jsonpath={.items[0].status.podIP}"]);
        // What kube publishes for aggregated servers (and they read with the
        // extension-apiserver-authentication-reader Role).
        let cm = vt_testkit::eventually("the front proxy's trust", || {
            let out =
                k1.run(&["-n", "kube-system", "get", "configmap", "extension-apiserver-authentication", "-o", "json"]);
            out.status.success().then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap())
        });
        k1.ok(&["-n", "kube-system", "get", "role", "extension-apiserver-authentication-reader"]);
        k1.ok(&["get", "clusterrole", "system:auth-delegator"]);
        (ip, cm["data"].clone())
    })
    .await
    .unwrap();
    assert_eq!(auth["requestheader-username-headers"], "[\"X-Remote-User\"]", "{auth}");
    assert_eq!(auth["requestheader-group-headers"], "[\"X-Remote-Group\"]", "{auth}");
    assert_eq!(auth["requestheader-extra-headers-prefix"], "[\"X-Remote-Extra-\"]", "{auth}");
    assert_eq!(auth["requestheader-allowed-names"], "[\"front-proxy-client\"]", "{auth}");
    assert!(auth["client-ca-file"].as_str().unwrap().contains("BEGIN CERTIFICATE"), "{auth}");
    // The server trusts only the front proxy's CA for its client certificates.
    let front_proxy_ca = auth["requestheader-client-ca-file"].as_str().unwrap().to_string();
    assert_ne!(front_proxy_ca, auth["client-ca-file"].as_str().unwrap());
    let (port, ca, seen) = extension_server(&pod_ip, Some(&front_proxy_ca), Arc::new(wardle)).await;

    let k2 = k.clone();
    blocking(move || {
        // Not reachable yet (the Service's port goes nowhere): the discovery check fails.
        let trust = format!("caBundle: {}", base64::engine::general_purpose::STANDARD.encode(&ca));
        let svc = apiservice("v1alpha1.wardle.example.com", "wardle.example.com", "v1alpha1", "default/wardle", &trust);
        k2.ok_stdin(&["apply", "-f", "-"], &svc);
        vt_testkit::eventually_within("FailedDiscoveryCheck", Duration::from_secs(30), || {
            (availability(&k2, "v1alpha1.wardle.example.com") == "False (FailedDiscoveryCheck)").then_some(())
        });
        let err = k2.fails(&["-n", "default", "get", "flunders"]);
        assert!(
            err.contains("the server is currently unable to handle the request")
                || err.contains("the server doesn't have a resource type"),
            "{err}"
        );
        // The Service's target port is where the test's server listens.
        k2.ok(&[
            "-n",
            "default",
            "patch",
            "service",
            "wardle",
            "-p",
            &format!(r#"{{"spec":{{"ports":[{{"port":443,"targetPort":{port}}}]}}}}"#),
        ]);
        wait_available(&k2, "v1alpha1.wardle.example.com");
        let status = k2.ok(&[
            "get",
            "apiservice",
            "v1alpha1.wardle.example.com",
            "-o",
            "jsonpath={.status.conditions[0].reason}",
        ]);
        assert_eq!(status, "Passed");
        // kubectl finds the resource through discovery (its short name too) and lists it.
        let names = k2.ok(&["-n", "default", "get", "fl", "-o", "name"]);
        assert_eq!(names.trim(), "flunder.wardle.example.com/alpha");
        let table = k2.ok(&["-n", "default", "get", "flunders"]);
        assert!(table.contains("alpha"), "{table}");
        let resources = k2.ok(&["api-resources", "--api-group=wardle.example.com"]);
        assert!(resources.contains("flunders") && resources.contains("Flunder"), "{resources}");
        // A watch passes through, streamed.
        let events =
            k2.ok(&["get", "--raw", "/apis/wardle.example.com/v1alpha1/namespaces/default/flunders?watch=true"]);
        assert!(events.contains(r#""type":"ADDED""#) && events.contains("alpha"), "{events}");
    })
    .await
    .unwrap();
    // The server saw the tenant's user as the front proxy says it (its certificate was
    // checked in the handshake), never the client's credentials.
    {
        let seen = seen.lock().unwrap();
        let list = seen
            .iter()
            .find(|s| s.path.starts_with("/apis/wardle.example.com/v1alpha1/namespaces/default/flunders"))
            .unwrap();
        assert_eq!(list.user, "vt-admin", "{seen:?}");
        assert!(list.groups.contains(&"system:masters".to_string()), "{seen:?}");
        assert!(list.groups.contains(&"system:authenticated".to_string()), "{seen:?}");
        assert!(seen.iter().all(|s| !s.credentials), "{seen:?}");
        let check = seen.iter().find(|s| s.path == "/apis/wardle.example.com/v1alpha1").unwrap();
        assert_eq!(check.user, "system:kube-aggregator", "{seen:?}");
    }
    // Identity headers a client sends are not passed on.
    let client = TenantClient::of(&m, "agg");
    let mut c = client.connect().await;
    let req = "GET /apis/wardle.example.com/v1alpha1/namespaces/default/flunders HTTP/1.1\r\nHost: agg\r\nX-Remote-User: mallory\r\nX-Remote-Group: thieves\r\nX-Remote-Extra-Scope: all\r\nConnection: close\r\n\r\n";
    c.write_all(req.as_bytes()).await.unwrap();
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), c.read_to_string(&mut answer)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    {
        let seen = seen.lock().unwrap();
        let last = seen.last().unwrap();
        assert_eq!(last.user, "vt-admin", "{seen:?}");
        assert!(!last.groups.contains(&"thieves".to_string()), "{seen:?}");
    }
    // A streaming subresource (as KubeVirt's consoles are): the upgrade passes through the
    // front proxy and the two connections are joined.
    let mut c = client.connect().await;
    let req = "GET /apis/wardle.example.com/v1alpha1/namespaces/default/flunders/alpha/attach HTTP/1.1\r\nHost: agg\r\nConnection: Upgrade\r\nUpgrade: vt-echo\r\n\r\n";
    c.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(20), c.read_exact(&mut byte)).await.unwrap().unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101") && head.contains("upgrade: vt-echo"), "{head}");
    for word in ["ping", "pong"] {
        c.write_all(word.as_bytes()).await.unwrap();
        let mut echo = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(20), c.read_exact(&mut echo)).await.unwrap().unwrap();
        assert_eq!(&echo, word.as_bytes());
    }
    assert_eq!(seen.lock().unwrap().last().unwrap().user, "vt-admin");

    // --- kubectl top, from the host's metrics API. ---
    let k3 = k.clone();
    let host_ns = blocking(move || {
        // No metrics API on the host yet: kube's words.
        let err = k3.fails(&["top", "pods"]);
        assert!(err.contains("Metrics API not available"), "{err}");
        k3.ok(&["-n", "default", "create", "deployment", "web", "--image=registry.example/web:1", "--replicas=2"]);
        k3.ok(&["-n", "default", "rollout", "status", "deployment/web", "--timeout=60s"]);
        k3.ok(&["-n", "default", "get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].metadata.name}"])
    })
    .await
    .unwrap();
    let tenant_pods: Vec<String> = host_ns.split_whitespace().map(str::to_string).collect();
    assert_eq!(tenant_pods.len(), 2);
    let hk1 = hk.clone();
    let host_pods: Value = blocking(move || {
        serde_json::from_str(&hk1.ok(&["get", "pods", "-A", "-l", "vt.dev/tenant=agg", "-o", "json"])).unwrap()
    })
    .await
    .unwrap();
    let host_ns = host_pods["items"][0]["metadata"]["namespace"].as_str().unwrap().to_string();
    let hk2 = hk.clone();
    let nodes: Vec<String> = blocking(move || hk2.ok(&["get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"]))
        .await
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    // The host's metrics server: every host pod of the tenant uses 5m and 20Mi per container;
    // an entry for a pod the tenant does not have is there too, and must not show.
    let mut pod_metrics = Vec::new();
    for p in host_pods["items"].as_array().unwrap() {
        let containers: Vec<Value> = p["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| json!({"name": c["name"], "usage": {"cpu": "5m", "memory": "20Mi"}}))
            .collect();
        pod_metrics.push(json!({"metadata": {"name": p["metadata"]["name"], "namespace": host_ns, "labels": p["metadata"]["labels"],
            "creationTimestamp": "2026-01-01T00:00:00Z"}, "timestamp": "2026-01-01T00:00:00Z", "window": "10s", "containers": containers}));
    }
    pod_metrics.push(json!({"metadata": {"name": "intruder", "namespace": host_ns}, "timestamp": "2026-01-01T00:00:00Z", "window": "10s",
        "containers": [{"name": "x", "usage": {"cpu": "1", "memory": "1Gi"}}]}));
    let node_metrics: Vec<Value> = nodes
        .iter()
        .map(|n| json!({"metadata": {"name": n, "creationTimestamp": "2026-01-01T00:00:00Z"}, "timestamp": "2026-01-01T00:00:00Z",
            "window": "10s", "usage": {"cpu": "250m", "memory": "512Mi"}}))
        .collect();
    let tables: Arc<HashMap<&'static str, Value>> =
        Arc::new(HashMap::from([("pods", json!(pod_metrics)), ("nodes", json!(node_metrics))]));
    let ns_path = format!("/apis/metrics.k8s.io/v1beta1/namespaces/{host_ns}/pods");
    let handler: Handler = Arc::new(move |path: &str| {
        let p = path.split('?').next().unwrap_or("");
        let list = |kind: &str, items: &Value| json!({"kind": kind, "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": items});
        if p == "/apis/metrics.k8s.io/v1beta1" {
            (
                200,
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "metrics.k8s.io/v1beta1", "resources": [
                {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
                {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]}]}),
            )
        } else if p == ns_path {
            (200, list("PodMetricsList", &tables["pods"]))
        } else if p == "/apis/metrics.k8s.io/v1beta1/nodes" {
            (200, list("NodeMetricsList", &tables["nodes"]))
        } else {
            (404, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}))
        }
    });
    let (mport, _, mseen) = extension_server("127.0.0.1", None, handler).await;
    let (hk3, k4) = (hk.clone(), k.clone());
    let (pod_name, hns) = (tenant_pods[0].clone(), host_ns.clone());
    blocking(move || {
        hk3.ok_stdin(
            &["apply", "-f", "-"],
            &format!(
                r#"{{"apiVersion":"v1","kind":"List","items":[
{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"metrics-server","namespace":"kube-system"}},"spec":{{"ports":[{{"port":443}}]}}}},
{{"apiVersion":"v1","kind":"Endpoints","metadata":{{"name":"metrics-server","namespace":"kube-system"}},"subsets":[{{"addresses":[{{"ip":"127.0.0.1"}}],"ports":[{{"port":{mport}}}]}}]}}]}}"#
            ),
        );
        let svc = apiservice("v1beta1.metrics.k8s.io", "metrics.k8s.io", "v1beta1", "kube-system/metrics-server", "insecureSkipTLSVerify: true");
        hk3.ok_stdin(&["apply", "-f", "-"], &svc);
        wait_available(&hk3, "v1beta1.metrics.k8s.io");
        // The tenant's pods, by their names, with the host's figures (a fresh discovery cache:
        // kubectl keeps discovery for minutes).
        let cache = tempfile::tempdir().unwrap();
        let cache_dir = format!("--cache-dir={}", cache.path().display());
        let top = vt_testkit::eventually_within("kubectl top pods", Duration::from_secs(30), || {
            let out = k4.run(&[&cache_dir, "-n", "default", "top", "pods", "-l", "app=web"]);
            out.status.success().then(|| String::from_utf8_lossy(&out.stdout).to_string())
        });
        let rows: Vec<Vec<&str>> = top.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(rows[0], ["NAME", "CPU(cores)", "MEMORY(bytes)"], "{top}");
        assert_eq!(rows.len(), 3, "{top}");
        for r in &rows[1..] {
            assert!(r[0].starts_with("web-"), "{top}");
            assert_eq!(r[1..], ["5m", "20Mi"], "{top}");
        }
        assert!(!top.contains("intruder"), "{top}");
        let all = k4.ok(&[&cache_dir, "top", "pods", "-A"]);
        assert!(!all.contains("intruder") && !all.contains(&hns), "{all}");
        let one = k4.ok(&[&cache_dir, "-n", "default", "top", "pod", &pod_name, "--containers"]);
        assert!(one.contains(&pod_name) && one.contains("web") && one.contains("5m"), "{one}");
        let err = k4.fails(&["-n", "default", "get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nosuch"]);
        assert!(err.contains(r#"podmetrics.metrics.k8s.io "default/nosuch" not found"#), "{err}");
        // Nodes: the pool's nodes, with their capacity from the tenant's own Node objects.
        let nodes = k4.ok(&[&cache_dir, "top", "nodes"]);
        let rows: Vec<Vec<&str>> = nodes.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(rows[0], ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"], "{nodes}");
        assert!(rows.len() > 1 && rows[1..].iter().all(|r| r[1] == "250m" && r[3] == "512Mi"), "{nodes}");
    })
    .await
    .unwrap();
    // The host's metrics server was asked for the tenant's namespace only (and its nodes).
    let asked: Vec<String> =
        mseen.lock().unwrap().iter().map(|s| s.path.split('?').next().unwrap_or("").to_string()).collect();
    assert!(
        asked.iter().all(|p| p == "/apis/metrics.k8s.io/v1beta1"
            || p == &format!("/apis/metrics.k8s.io/v1beta1/namespaces/{host_ns}/pods")
            || p == "/apis/metrics.k8s.io/v1beta1/nodes"),
        "{asked:?}"
    );
    drop(m);
}
