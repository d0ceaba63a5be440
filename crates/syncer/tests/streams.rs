//! `exec`, `attach` and `port-forward` of a tenant's pod pass through the syncer to the host pod
//! unchanged: two real API servers over TLS (a host and a tenant), the upgraded connection joined
//! byte for byte.
//!
//! The host's pods are reached by a connector that stands in for a kubelet: it answers the
//! upgrade with `101 Switching Protocols` and echoes every byte. (vt's simulated nodes refuse
//! exec, so the end-to-end tests can only pin the error path; this pins the stream itself.)
//! What it pins, as kube-apiserver proxies to a kubelet: the request reaches the host pod (its
//! host name, in the tenant's host namespace) with its query and upgrade headers; the host's
//! `101` and its protocol headers come back to the client; then bytes flow both ways.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vt_apiserver::body::Body;
use vt_apiserver::serve::{Endpoint, Single};
use vt_apiserver::{ApiServer, Config, PodConnector};
use vt_store::sqlite::{SqliteOptions, SqliteStore};
use vt_syncer::translate::Target;

/// What the stand-in kubelet was asked.
#[derive(Debug, Clone)]
struct Seen {
    namespace: String,
    pod: String,
    subresource: String,
    query: String,
    upgrade: String,
}

/// A kubelet stand-in: upgrades and echoes.
#[derive(Default)]
struct Echo {
    seen: Mutex<Vec<Seen>>,
}

impl PodConnector for Echo {
    fn connect<'a>(
        &'a self,
        pod: &'a Value,
        subresource: &'a str,
        req: Request<Bytes>,
    ) -> BoxFuture<'a, Response<Body>> {
        Box::pin(async move {
            let header = |k: &str| req.headers().get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            self.seen.lock().unwrap().push(Seen {
                namespace: pod["metadata"]["namespace"].as_str().unwrap_or("").into(),
                pod: pod["metadata"]["name"].as_str().unwrap_or("").into(),
                subresource: subresource.into(),
                query: req.uri().query().unwrap_or("").into(),
                upgrade: header("upgrade"),
            });
            let protocol = header("sec-websocket-protocol");
            let upgrade = header("upgrade");
            let pending = hyper::upgrade::on(req);
            tokio::spawn(async move {
                let Ok(io) = pending.await else { return };
                let (mut r, mut w) = tokio::io::split(TokioIo::new(io));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
            let mut res = Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "Upgrade")
                .header("upgrade", upgrade)
                .header("x-stream-protocol-version", "v4.channel.k8s.io");
            if !protocol.is_empty() {
                res = res.header("sec-websocket-protocol", protocol.split(',').next().unwrap_or("").trim());
            }
            res.body(vt_apiserver::body::empty()).unwrap()
        })
    }
}

struct Server {
    client: kube::Client,
    _dir: tempfile::TempDir,
}

/// An API server on a loopback port with `pods` as its pods' connector, and an admin client.
async fn server(ca: &vt_pki::Ca, name: &str, pods: Arc<dyn PodConnector>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("db"), SqliteOptions::default()).await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Config { advertise: addr, pods: Some(pods), ..Config::basic(store, name) };
    let api = ApiServer::new(config).await.unwrap();
    let serving = ca.issue_server("localhost", &["localhost".into()], &[addr.ip()]).unwrap();
    let tls = Arc::new(vt_apiserver::serve::tls_config(&serving, ca.cert_pem()).unwrap());
    tokio::spawn(vt_apiserver::serve::serve(listener, Arc::new(Single(Endpoint::serving(tls, api)))));
    let admin = ca.issue_client("admin", Some("system:masters"), Duration::from_secs(3600)).unwrap();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let kubeconfig = json!({"apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": format!("https://{addr}"),
            "certificate-authority-data": b64(ca.cert_pem())}}],
        "users": [{"name": "u", "user": {"client-certificate-data": b64(&admin.cert_pem),
            "client-key-data": b64(&admin.key_pem)}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]});
    let kc: kube::config::Kubeconfig = serde_json::from_value(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    Server { client: kube::Client::try_from(config).unwrap(), _dir: dir }
}

fn pod(name: &str, labels: Value) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "busybox"}]}}))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_port_forward_streams_pass_through_to_the_host_pod() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = vt_pki::Ca::generate("streams-test-ca").unwrap();
    let kubelet = Arc::new(Echo::default());
    let host = server(&ca, "host", kubelet.clone()).await;

    // The tenant's pod, running on the host under its host name.
    let target = Target {
        tenant: "acme".into(),
        namespace: "vt-acme".into(),
        pool: "acme".into(),
        node_selector: BTreeMap::new(),
        tolerations: Vec::new(),
        runtime_class: "kata".into(),
        level: vt_syncer::security::Level::Baseline,
        api_host: "127.0.0.1".into(),
        api_port: 443,
        api_server_name: "acme.vt.local".into(),
        load_balancer_classes: Vec::new(),
        dns_server: None,
        ingress: Default::default(),
        storage_classes: Vec::new(),
        priority_classes: Vec::new(),
    };
    let host_name = target.name("web", "default");
    let namespaces: Api<Namespace> = Api::all(host.client.clone());
    namespaces
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "vt-acme"}})).unwrap())
        .await
        .unwrap();
    let host_pods: Api<Pod> = Api::namespaced(host.client.clone(), "vt-acme");
    host_pods.create(&PostParams::default(), &pod(&host_name, json!({vt_syncer::TENANT_LABEL: "acme"}))).await.unwrap();
    let shared = vt_syncer::Host::start(host.client.clone(), None);
    shared.ready().await;
    for _ in 0..100 {
        if shared.pod("vt-acme", &host_name).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(shared.pod("vt-acme", &host_name).is_some(), "the host pod never reached the syncer's cache");

    let tenant = server(&ca, "acme", vt_syncer::HostPods::new(shared.clone(), target.clone())).await;
    let pods: Api<Pod> = Api::namespaced(tenant.client.clone(), "default");
    pods.create(&PostParams::default(), &pod("web", json!({"app": "web"}))).await.unwrap();

    // exec over SPDY-style headers, port-forward over WebSocket-style ones.
    let cases = [
        ("exec", "command=cat&stdin=true&stdout=true", "SPDY/3.1", None),
        ("portforward", "ports=8080", "websocket", Some("SPDY/3.1+portforward.k8s.io")),
    ];
    for (sub, query, upgrade, protocol) in cases {
        let mut req = Request::get(format!("/api/v1/namespaces/default/pods/web/{sub}?{query}"))
            .header("connection", "Upgrade")
            .header("upgrade", upgrade)
            .header("x-stream-protocol-version", "v4.channel.k8s.io");
        if let Some(p) = protocol {
            req = req
                .header("sec-websocket-protocol", p)
                .header("sec-websocket-version", "13")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        }
        let res = tenant.client.send(req.body(kube::client::Body::empty()).unwrap()).await.unwrap();
        assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS, "{sub}");
        let header = |k: &str| res.headers().get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        assert_eq!(header("upgrade"), upgrade, "{sub}: the host's upgrade comes back");
        assert_eq!(header("x-stream-protocol-version"), "v4.channel.k8s.io", "{sub}");
        if let Some(p) = protocol {
            assert_eq!(header("sec-websocket-protocol"), p, "{sub}");
        }
        let io = hyper::upgrade::on(res).await.unwrap();
        let mut io = TokioIo::new(io);
        // Binary, in both directions, several writes: nothing is re-framed on the way.
        let mut sent = Vec::new();
        for i in 0u8..8 {
            let chunk: Vec<u8> = (0..=255u8).map(|b| b ^ i).chain(format!("{sub} {i}\n").into_bytes()).collect();
            io.write_all(&chunk).await.unwrap();
            sent.extend(chunk);
        }
        io.flush().await.unwrap();
        let mut back = vec![0; sent.len()];
        tokio::time::timeout(Duration::from_secs(10), io.read_exact(&mut back)).await.unwrap().unwrap();
        assert_eq!(back, sent, "{sub}: the bytes came back unchanged");
    }

    let seen = kubelet.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for (s, (sub, query, upgrade, _)) in seen.iter().zip(cases) {
        assert_eq!((s.namespace.as_str(), s.pod.as_str()), ("vt-acme", host_name.as_str()), "{s:?}");
        assert_eq!(s.subresource, sub);
        assert_eq!(s.query, query, "the query goes to the host unchanged");
        assert_eq!(s.upgrade, upgrade);
    }

    // A pod of the tenant that is not on the host: a clear error, no upgrade.
    pods.create(&PostParams::default(), &pod("elsewhere", json!({}))).await.unwrap();
    let req = Request::get("/api/v1/namespaces/default/pods/elsewhere/exec?command=ls&stdout=true")
        .header("connection", "Upgrade")
        .header("upgrade", "SPDY/3.1")
        .body(kube::client::Body::empty())
        .unwrap();
    let res = tenant.client.send(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(kubelet.seen.lock().unwrap().len(), 2, "nothing reached the host");
}
