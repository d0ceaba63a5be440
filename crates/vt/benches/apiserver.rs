//! API server benchmark: the real `vt apiserver` binary (SQLite store) driven over TLS by
//! kube-rs clients, side by side with the raw SQLite store in the same run.
//!
//! `cargo bench -p vt --bench apiserver` prints, for 1, 16 and 64 concurrent clients: create,
//! get and list (100 objects) throughput and p50/p99 latency, through the API and directly on
//! the store, and their ratio (the API-over-store overhead); watch delivery latency; and the
//! server's RSS idle and with 1,000 open watches; then the everyday-tool paths: a strategic
//! merge patch, a merge patch and a server-side apply on a Deployment, and a list of 1,000
//! pods as plain JSON and as the Table `kubectl get` asks for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{AsyncBufReadExt, StreamExt};
use vt_store::sqlite::{SqliteOptions, SqliteStore};
use vt_store::{ListOptions, Store};
use vt_testkit::VtServer;

fn scale(n: usize) -> usize {
    let s: f64 = std::env::var("VT_BENCH_SCALE").ok().and_then(|v| v.parse().ok()).unwrap_or(1.0);
    ((n as f64 * s) as usize).max(16)
}

fn pct(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e6
}

use vt_testkit::rss_kib;

#[derive(Clone, Copy)]
struct Figures {
    ops: f64,
    p50: f64,
    p99: f64,
}

/// Runs `total` operations split over `workers` tasks; `op(worker, i)` does one.
async fn measure<F, Fut>(workers: usize, total: usize, op: F) -> Figures
where
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let per = (total / workers).max(1);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for i in 0..per {
                let t = Instant::now();
                op(w, i).await;
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    Figures { ops: (per * workers) as f64 / secs, p50: pct(&mut lat, 0.5), p99: pct(&mut lat, 0.99) }
}

fn configmap(name: &str) -> Vec<u8> {
    format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"key":"{}"}}}}"#,
        "v".repeat(400)
    )
    .into_bytes()
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run());
}

async fn run() {
    let server = VtServer::start(std::path::Path::new(env!("CARGO_BIN_EXE_vt")), &["--compaction-interval", "0"]);
    let pid = server.pid();
    if let Ok(path) = std::env::var("VT_BENCH_PIDFILE") {
        let _ = std::fs::write(path, pid.to_string());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = rss_kib(pid);
    let kc = kube::config::Kubeconfig::read_from(&server.kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    let client = kube::Client::try_from(cfg).unwrap();
    let ns = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"bench"}}"#;
    client
        .request_text(
            http::Request::post("/api/v1/namespaces")
                .header("content-type", "application/json")
                .body(ns.as_bytes().to_vec())
                .unwrap(),
        )
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(dir.path().join("raw.db"), SqliteOptions::default()).await.unwrap());

    println!(
        "| operation | clients | API ops/s | API p50 / p99 (µs) | store ops/s | store p50 / p99 (µs) | API/store (p50) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let row = |what: &str, c: usize, a: Figures, s: Figures| {
        println!(
            "| {what} | {c} | {:.0} | {:.0} / {:.0} | {:.0} | {:.0} / {:.0} | {:.2}× |",
            a.ops,
            a.p50,
            a.p99,
            s.ops,
            s.p50,
            s.p99,
            a.p50 / s.p50
        );
    };
    for clients in [1usize, 16, 64] {
        let total = scale(if clients == 1 { 1000 } else { 4000 });
        let c = client.clone();
        let api_create = measure(clients, total, move |w, i| {
            let c = c.clone();
            async move {
                let req = http::Request::post("/api/v1/namespaces/bench/configmaps")
                    .header("content-type", "application/json")
                    .body(configmap(&format!("c{clients}-{w}-{i}")))
                    .unwrap();
                c.request_text(req).await.unwrap();
            }
        })
        .await;
        let s = store.clone();
        let store_create = measure(clients, total, move |w, i| {
            let s = s.clone();
            async move {
                s.create(format!("/raw/c{clients}-{w}-{i}").as_bytes(), Bytes::from(configmap("x")), None)
                    .await
                    .unwrap();
            }
        })
        .await;
        row("create", clients, api_create, store_create);

        let c = client.clone();
        let api_get = measure(clients, total, move |w, _| {
            let c = c.clone();
            async move {
                let req = http::Request::get(format!("/api/v1/namespaces/bench/configmaps/c{clients}-{w}-0"))
                    .body(Vec::new())
                    .unwrap();
                c.request_text(req).await.unwrap();
            }
        })
        .await;
        let s = store.clone();
        let store_get = measure(clients, total, move |w, _| {
            let s = s.clone();
            async move {
                s.get(format!("/raw/c{clients}-{w}-0").as_bytes()).await.unwrap().unwrap();
            }
        })
        .await;
        row("get", clients, api_get, store_get);

        let lists = scale(if clients == 1 { 200 } else { 800 });
        let c = client.clone();
        let api_list = measure(clients, lists, move |_, _| {
            let c = c.clone();
            async move {
                let req = http::Request::get("/api/v1/namespaces/bench/configmaps?limit=100").body(Vec::new()).unwrap();
                c.request_text(req).await.unwrap();
            }
        })
        .await;
        let s = store.clone();
        let store_list = measure(clients, lists, move |_, _| {
            let s = s.clone();
            async move {
                s.list(b"/raw/", ListOptions { limit: 100, ..Default::default() }).await.unwrap();
            }
        })
        .await;
        row("list (100 objects)", clients, api_list, store_list);
    }

    // Watch delivery: time from the create call to the event at a watcher.
    let rv = {
        let req = http::Request::get("/api/v1/namespaces/bench/configmaps?limit=1").body(Vec::new()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&client.request_text(req).await.unwrap()).unwrap();
        v["metadata"]["resourceVersion"].as_str().unwrap().to_string()
    };
    let req = http::Request::get(format!(
        "/api/v1/namespaces/bench/configmaps?watch=true&resourceVersion={rv}&labelSelector=w%3D1"
    ))
    .body(Vec::new())
    .unwrap();
    let mut lines = client.request_stream(req).await.unwrap().lines();
    let n = scale(300);
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let body =
            format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"w-{i}","labels":{{"w":"1"}}}}}}"#);
        let t = Instant::now();
        client
            .request_text(
                http::Request::post("/api/v1/namespaces/bench/configmaps")
                    .header("content-type", "application/json")
                    .body(body.into_bytes())
                    .unwrap(),
            )
            .await
            .unwrap();
        let line = lines.next().await.unwrap().unwrap();
        lat.push(t.elapsed());
        assert!(line.contains(&format!("w-{i}")), "{line}");
    }
    let store_watch = {
        let mut w = store.watch(b"/rawwatch/", 0).await.unwrap();
        let mut lat = Vec::with_capacity(n);
        for i in 0..n {
            let t = Instant::now();
            store.create(format!("/rawwatch/{i}").as_bytes(), Bytes::from_static(b"{}"), None).await.unwrap();
            w.next().await.unwrap().unwrap();
            lat.push(t.elapsed());
        }
        lat
    };
    let (mut a, mut s) = (lat, store_watch);
    println!(
        "| watch: write → event | 1 | – | {:.0} / {:.0} | – | {:.0} / {:.0} | {:.2}× |",
        pct(&mut a, 0.5),
        pct(&mut a, 0.99),
        pct(&mut s, 0.5),
        pct(&mut s, 0.99),
        pct(&mut a, 0.5) / pct(&mut s, 0.5)
    );

    // Memory: idle, then with 1,000 open watches on one resource (one store watch serves all).
    let before = rss_kib(pid);
    let mut watches = Vec::new();
    for i in 0..1000 {
        let req = http::Request::get(format!(
            "/api/v1/namespaces/bench/configmaps?watch=true&resourceVersion={rv}&labelSelector=idle%3D{i}"
        ))
        .body(Vec::new())
        .unwrap();
        watches.push(client.request_stream(req).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with_watches = rss_kib(pid);
    // One change fans out to all 1,000 watches (each filters it out by its label selector).
    let t = Instant::now();
    client
        .request_text(
            http::Request::post("/api/v1/namespaces/bench/configmaps")
                .header("content-type", "application/json")
                .body(configmap("fanout"))
                .unwrap(),
        )
        .await
        .unwrap();
    let fanout = t.elapsed();
    println!(
        "\nmemory: server RSS idle (bootstrapped, empty) {idle_rss} KiB; after the run {before} KiB; with 1,000 open watches {with_watches} KiB ({:.1} KiB per watch); a write with 1,000 watches open: {:.0} µs",
        (with_watches.saturating_sub(before)) as f64 / 1000.0,
        fanout.as_secs_f64() * 1e6
    );
    drop(watches);
    tools(&client).await;
}

const DEPLOYMENT: &str = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","labels":{"app":"web"}},
 "spec":{"replicas":2,"selector":{"matchLabels":{"app":"web"}},"template":{"metadata":{"labels":{"app":"web"}},
 "spec":{"containers":[{"name":"nginx","image":"nginx:1.27","ports":[{"containerPort":80}],
 "env":[{"name":"A","value":"1"},{"name":"B","value":"2"}],"resources":{"requests":{"cpu":"100m","memory":"64Mi"}}},
 {"name":"sidecar","image":"busybox:1.36"}]}}}}"#;

/// Latency of the paths kubectl and Helm exercise (one client, sequential).
async fn tools(client: &kube::Client) {
    let send = |method: http::Method, path: String, ct: &'static str, accept: &'static str, body: Vec<u8>| {
        let c = client.clone();
        async move {
            let req = http::Request::builder()
                .method(method)
                .uri(path)
                .header("content-type", ct)
                .header("accept", accept)
                .body(body)
                .unwrap();
            c.request_text(req).await.unwrap()
        }
    };
    send(
        http::Method::POST,
        "/apis/apps/v1/namespaces/bench/deployments".into(),
        "application/json",
        "application/json",
        DEPLOYMENT.as_bytes().to_vec(),
    )
    .await;
    let n = scale(500);
    let dep = "/apis/apps/v1/namespaces/bench/deployments/web";
    let timed = |label: &'static str, lat: &mut Vec<Duration>| {
        println!("| {label} | {:.0} | {:.0} |", pct(lat, 0.5), pct(lat, 0.99));
    };
    println!("\n| operation (1 client, over TLS) | p50 (µs) | p99 (µs) |\n|---|---:|---:|");
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let patch = format!(
            r#"{{"spec":{{"template":{{"spec":{{"containers":[{{"name":"nginx","image":"nginx:1.{i}"}}]}}}}}}}}"#
        );
        let t = Instant::now();
        send(
            http::Method::PATCH,
            dep.into(),
            "application/strategic-merge-patch+json",
            "application/json",
            patch.into_bytes(),
        )
        .await;
        lat.push(t.elapsed());
    }
    timed("strategic merge patch (Deployment, container image)", &mut lat);
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let patch = format!(r#"{{"metadata":{{"annotations":{{"rev":"{i}"}}}}}}"#);
        let t = Instant::now();
        send(http::Method::PATCH, dep.into(), "application/merge-patch+json", "application/json", patch.into_bytes())
            .await;
        lat.push(t.elapsed());
    }
    timed("merge patch (Deployment, annotation)", &mut lat);
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let applied = DEPLOYMENT.replace(r#""replicas":2"#, &format!(r#""replicas":{}"#, 2 + i % 5));
        let t = Instant::now();
        send(
            http::Method::PATCH,
            format!("{dep}?fieldManager=bench&force=true"),
            "application/apply-patch+yaml",
            "application/json",
            applied.into_bytes(),
        )
        .await;
        lat.push(t.elapsed());
    }
    timed("server-side apply (Deployment, whole manifest)", &mut lat);

    // 1,000 pods, listed as kubectl does (Table) and as plain JSON.
    for i in 0..1000 {
        let pod = format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"p{i}","labels":{{"app":"web"}}}},"spec":{{"containers":[{{"name":"c","image":"nginx"}}]}}}}"#
        );
        send(
            http::Method::POST,
            "/api/v1/namespaces/bench/pods".into(),
            "application/json",
            "application/json",
            pod.into_bytes(),
        )
        .await;
    }
    let lists = scale(50);
    for (label, accept) in [
        ("list 1,000 pods as JSON", "application/json"),
        (
            "list 1,000 pods as Table (kubectl get)",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
        ),
    ] {
        let mut lat = Vec::with_capacity(lists);
        for _ in 0..lists {
            let t = Instant::now();
            let body =
                send(http::Method::GET, "/api/v1/namespaces/bench/pods".into(), "application/json", accept, Vec::new())
                    .await;
            lat.push(t.elapsed());
            assert!(body.len() > 100_000);
        }
        timed(label, &mut lat);
    }
}
