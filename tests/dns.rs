//! Tenant DNS end to end, on the wire: the real `vt server` with simulated pods whose
//! addresses are on loopback (127.77.0.0/16), so a socket bound to a pod's address *is* that
//! pod asking; `dig` from Debian's dnsutils as the client; a stub upstream resolver on
//! loopback for names outside the cluster zone.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use vt_testkit::{Kubectl, VtManager, eventually, free_port};

fn vt() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_vt"))
}

/// A stub upstream resolver: `*.example.test` A 192.0.2.1 (TTL 60), everything else NXDOMAIN;
/// counts the queries it gets.
fn stub_upstream() -> (u16, Arc<AtomicUsize>) {
    use hickory_proto::op::{Message, MessageType, ResponseCode};
    use hickory_proto::rr::{RData, Record, rdata::A};
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf) else { return };
            let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut a = Message::new();
            a.set_id(q.id()).set_message_type(MessageType::Response).set_recursion_available(true);
            a.add_queries(q.queries().iter().cloned());
            let name = q.queries()[0].name().clone();
            if name.to_ascii().ends_with("example.test.") {
                a.add_answer(Record::from_rdata(name, 60, RData::A(A("192.0.2.1".parse().unwrap()))));
            } else {
                a.set_response_code(ResponseCode::NXDomain);
            }
            let _ = socket.send_to(&a.to_vec().unwrap(), from);
        }
    });
    (port, seen)
}

/// `dig` from `source` (a pod's address) to the manager's DNS server.
struct Dig {
    server: String,
    port: u16,
}

impl Dig {
    fn run(&self, source: &str, args: &[&str]) -> String {
        let out = std::process::Command::new("dig")
            .args(["-b", source, "-p", &self.port.to_string(), &format!("@{}", self.server), "+time=3", "+tries=1"])
            .args(args)
            .output()
            .expect("dig (apt-get install dnsutils)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The answers, one per line (`+short`), sorted.
    fn short(&self, source: &str, name: &str, t: &str) -> Vec<String> {
        let mut v: Vec<String> =
            self.run(source, &["+short", name, t]).lines().map(str::to_string).filter(|l| !l.is_empty()).collect();
        v.sort();
        v
    }

    fn status(&self, source: &str, args: &[&str]) -> String {
        let out = self.run(source, args);
        out.lines()
            .find_map(|l| l.split("status: ").nth(1))
            .map(|s| s.split(',').next().unwrap_or("").to_string())
            .unwrap_or_else(|| format!("no status in: {out}"))
    }
}

fn pod_ips(k: &Kubectl, selector: &str) -> Vec<String> {
    let out = k.ok(&["-n", "default", "get", "pods", "-l", selector, "-o", "jsonpath={.items[*].status.podIP}"]);
    out.split_whitespace().map(str::to_string).collect()
}

#[test]
fn tenants_resolve_their_own_services_and_nothing_else() {
    let (upstream, asked) = stub_upstream();
    let dns_port = free_port();
    let m = VtManager::start(
        vt(),
        &[
            "--sim-pod-cidr",
            "127.77.0.0/16",
            "--dns-listen",
            &format!("127.0.0.1:{dns_port}"),
            "--dns-upstream",
            &format!("127.0.0.1:{upstream}"),
        ],
    );
    let dig = Dig { server: "127.0.0.1".into(), port: dns_port };
    m.vt_ok(&["create", "alpha"]);
    m.vt_ok(&["create", "beta"]);
    let alpha = m.tenant_kubectl("alpha");
    let beta = m.tenant_kubectl("beta");
    alpha.ok_stdin(
        &["apply", "-f", "-"],
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: registry.example/web:1, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: http}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec: {clusterIP: None, selector: {app: db}, ports: [{name: pg, port: 5432}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: default}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: pg, image: registry.example/pg:16}]}
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: default}
spec: {type: ExternalName, externalName: api.example.test}
"#,
    );
    beta.ok_stdin(
        &["apply", "-f", "-"],
        r#"apiVersion: v1
kind: Service
metadata: {name: secret, namespace: default}
spec: {ports: [{port: 443}]}
---
apiVersion: v1
kind: Pod
metadata: {name: asker, namespace: default}
spec: {containers: [{name: c, image: registry.example/c:1}]}
"#,
    );
    alpha.ok(&["-n", "default", "rollout", "status", "deployment/web", "--timeout=60s"]);
    alpha.ok(&["-n", "default", "rollout", "status", "statefulset/db", "--timeout=60s"]);
    let web_ips = eventually("web pods' addresses", || Some(pod_ips(&alpha, "app=web")).filter(|v| v.len() == 2));
    let db_ips = eventually("db pods' addresses", || Some(pod_ips(&alpha, "app=db")).filter(|v| v.len() == 2));
    let beta_pod = eventually("beta's pod address", || Some(pod_ips(&beta, "!x")).filter(|v| v.len() == 1))[0].clone();
    let me = web_ips[0].as_str();
    assert!(me.starts_with("127.77."), "{me}");
    let web_ip = alpha.ok(&["-n", "default", "get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let secret_ip = beta.ok(&["-n", "default", "get", "service", "secret", "-o", "jsonpath={.spec.clusterIP}"]);

    // §2.3: a ClusterIP Service's A, SRV and PTR records.
    assert_eq!(
        eventually("web's A", || Some(dig.short(me, "web.default.svc.cluster.local", "A")).filter(|v| !v.is_empty())),
        vec![web_ip.clone()]
    );
    assert_eq!(
        dig.short(me, "_http._tcp.web.default.svc.cluster.local", "SRV"),
        ["0 100 80 web.default.svc.cluster.local."]
    );
    let octets: Vec<&str> = web_ip.split('.').rev().collect();
    let ptr = format!("{}.in-addr.arpa", octets.join("."));
    assert_eq!(dig.short(me, &ptr, "PTR"), ["web.default.svc.cluster.local."]);
    // Case does not matter.
    assert_eq!(dig.short(me, "WEB.Default.SVC.Cluster.Local", "A"), vec![web_ip.clone()]);
    // §2.4: a headless Service's ready endpoints, and a StatefulSet's stable names.
    let mut db_sorted = db_ips.clone();
    db_sorted.sort();
    assert_eq!(
        eventually("db's endpoints", || Some(dig.short(me, "db.default.svc.cluster.local", "A"))
            .filter(|v| v.len() == 2)),
        db_sorted
    );
    let db0 = alpha.ok(&["-n", "default", "get", "pod", "db-0", "-o", "jsonpath={.status.podIP}"]);
    assert_eq!(
        eventually("db-0", || Some(dig.short(me, "db-0.db.default.svc.cluster.local", "A")).filter(|v| !v.is_empty())),
        [db0]
    );
    let srv = dig.short(me, "_pg._tcp.db.default.svc.cluster.local", "SRV");
    assert_eq!(srv.len(), 2, "{srv:?}");
    assert!(srv.iter().any(|s| s.ends_with("5432 db-0.db.default.svc.cluster.local.")), "{srv:?}");
    // §2.5: ExternalName, followed to the upstream's answer.
    let ext = dig.short(me, "ext.default.svc.cluster.local", "A");
    assert_eq!(ext, ["192.0.2.1", "api.example.test."]);
    // §2.6: pod names; §2.2: the schema version; the tenant's own API server.
    assert_eq!(dig.short(me, "10-1-2-3.default.pod.cluster.local", "A"), ["10.1.2.3"]);
    assert_eq!(dig.short(me, "dns-version.cluster.local", "TXT"), ["\"1.0.1\""]);
    assert_eq!(dig.short(me, "kubernetes.default.svc.cluster.local", "A"), ["127.0.0.1"]);
    // Names outside the zone go upstream, once (then from the cache).
    let before = asked.load(Ordering::SeqCst);
    assert_eq!(dig.short(me, "www.example.test", "A"), ["192.0.2.1"]);
    assert_eq!(dig.short(me, "www.example.test", "A"), ["192.0.2.1"]);
    assert_eq!(asked.load(Ordering::SeqCst), before + 1, "the second answer came from the cache");
    assert_eq!(dig.status(me, &["nothing.invalid", "A"]), "NXDOMAIN");
    // TCP too.
    assert_eq!(dig.short(me, "web.default.svc.cluster.local", "A").len(), 1);
    let tcp = dig.run(me, &["+tcp", "+short", "web.default.svc.cluster.local", "A"]);
    assert_eq!(tcp.trim(), web_ip);

    // Another tenant's pod sees none of it, however it asks.
    let other = beta_pod.as_str();
    for (name, t) in [
        ("web.default.svc.cluster.local", "A"),
        ("WEB.DEFAULT.SVC.CLUSTER.LOCAL", "ANY"),
        ("db-0.db.default.svc.cluster.local", "A"),
        ("_http._tcp.web.default.svc.cluster.local", "SRV"),
        ("ext.default.svc.cluster.local", "CNAME"),
    ] {
        assert_eq!(dig.status(other, &[name, t]), "NXDOMAIN", "beta asking {name} {t}");
    }
    assert_eq!(dig.status(other, &[&ptr, "PTR"]), "NXDOMAIN", "beta asking for alpha's PTR");
    // Zone transfers (dig asks over TCP) are refused: nothing is listed.
    for asker in [me, other] {
        let axfr = dig.run(asker, &["cluster.local", "AXFR"]);
        assert!(axfr.contains("Transfer failed") && !axfr.contains("\tIN\t"), "{axfr}");
    }
    assert_eq!(dig.short(other, "secret.default.svc.cluster.local", "A"), vec![secret_ip.clone()]);
    assert_eq!(dig.status(me, &["secret.default.svc.cluster.local", "A"]), "NXDOMAIN");
    // An address no tenant's pod has is refused.
    assert_eq!(dig.status("127.0.0.1", &["web.default.svc.cluster.local", "A"]), "REFUSED");
    assert_eq!(dig.status("127.77.250.250", &["www.example.test", "A"]), "REFUSED");

    // Changes are visible as the watches deliver them: scale the StatefulSet up.
    alpha.ok(&["-n", "default", "scale", "statefulset/db", "--replicas=3"]);
    let t = Instant::now();
    eventually("db-2 in DNS", || {
        Some(()).filter(|_| !dig.short(me, "db-2.db.default.svc.cluster.local", "A").is_empty())
    });
    eprintln!("db-2 resolvable {:?} after the scale request", t.elapsed());
    // A deleted Service is gone from DNS.
    alpha.ok(&["-n", "default", "delete", "service", "web"]);
    eventually("web gone", || {
        Some(()).filter(|_| dig.status(me, &["web.default.svc.cluster.local", "A"]) == "NXDOMAIN")
    });

    // Host pods resolve through the tenant DNS; the tenant sees kube-system/kube-dns.
    let host = m.host_kubectl();
    let policy = host.ok(&["-n", "vt-alpha", "get", "pods", "-o", "jsonpath={.items[*].spec.dnsPolicy}"]);
    assert!(policy.split_whitespace().all(|p| p == "None") && !policy.is_empty(), "{policy}");
    let cfg = host.ok(&["-n", "vt-alpha", "get", "pod", "-l", "app=web", "-o", "jsonpath={.items[0].spec.dnsConfig}"]);
    assert!(cfg.contains("127.0.0.1") && cfg.contains("default.svc.cluster.local") && cfg.contains("ndots"), "{cfg}");
    assert_eq!(
        alpha.ok(&["-n", "kube-system", "get", "service", "kube-dns", "-o", "jsonpath={.spec.clusterIP}"]),
        "127.0.0.1"
    );
    assert!(!host.ok(&["-n", "vt-alpha", "get", "services", "-o", "name"]).contains("kube-dns"));
    let described = m.vt_ok(&["describe", "alpha"]);
    assert!(described.contains("DNS:             127.0.0.1"), "{described}");
}
