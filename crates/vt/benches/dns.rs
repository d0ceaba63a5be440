//! Tenant DNS freshness: `cargo bench -p vt --bench dns`. The real `vt server` (simulated
//! pods on loopback addresses), one tenant; for 200 Services in turn, the time from the
//! create request's answer until a query from the tenant's pod resolves the new name (the
//! change travels: API server → watch → syncer → zone). Prints p50/p99.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use vt_testkit::{VtManager, free_port};

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run());
}

async fn resolves(sock: &tokio::net::UdpSocket, name: &str) -> bool {
    let mut m = Message::new();
    m.set_id(1).set_message_type(MessageType::Query).set_op_code(OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    sock.send(&m.to_vec().unwrap()).await.unwrap();
    let mut buf = [0u8; 1500];
    match tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf)).await {
        Ok(Ok(n)) => Message::from_vec(&buf[..n])
            .is_ok_and(|a| a.response_code() == ResponseCode::NoError && !a.answers().is_empty()),
        _ => false,
    }
}

async fn run() {
    let dns_port = free_port();
    let m = tokio::task::spawn_blocking(move || {
        let m = VtManager::start(
            std::path::Path::new(env!("CARGO_BIN_EXE_vt")),
            &["--sim-pod-cidr", "127.77.0.0/16", "--dns-listen", &format!("127.0.0.1:{dns_port}"), "--qps", "0"],
        );
        m.vt_ok(&["create", "fresh"]);
        let k = m.tenant_kubectl("fresh");
        k.ok(&["-n", "default", "run", "asker", "--image=registry.example/c:1"]);
        k.ok(&["-n", "default", "wait", "--for=condition=Ready", "pod/asker", "--timeout=60s"]);
        m
    })
    .await
    .unwrap();
    let yaml = m.vt_ok(&["connect", "fresh", "--print"]);
    let kc = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
    let client =
        kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap()).unwrap();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "default");
    let ip: IpAddr = pods.get("asker").await.unwrap().status.unwrap().pod_ip.unwrap().parse().unwrap();
    let sock = tokio::net::UdpSocket::bind(SocketAddr::new(ip, 0)).await.unwrap();
    sock.connect(("127.0.0.1", dns_port)).await.unwrap();
    let services: Api<Service> = Api::namespaced(client, "default");
    let mut lat = Vec::new();
    for i in 0..200 {
        let svc: Service = serde_json::from_value(serde_json::json!({"metadata": {"name": format!("s{i}")},
            "spec": {"ports": [{"port": 80}]}}))
        .unwrap();
        services.create(&PostParams::default(), &svc).await.unwrap();
        let t = Instant::now();
        let name = format!("s{i}.default.svc.cluster.local.");
        while !resolves(&sock, &name).await {
            assert!(t.elapsed() < Duration::from_secs(10), "{name} never resolved");
        }
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
    println!(
        "Service created → resolvable from the tenant's pod: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (200 Services)",
        p(0.5),
        p(0.99),
        p(1.0)
    );
    drop(m);
}
