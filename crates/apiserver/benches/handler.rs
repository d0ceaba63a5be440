//! The API server's own cost over its store: requests handed to `ApiServer::handle_as` in
//! process (no TLS, HTTP or client), next to the same operations on the raw SQLite store, in
//! one run. `cargo bench -p vt-apiserver --bench handler`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use vt_apiserver::auth::UserInfo;
use vt_apiserver::{ApiServer, Config};
use vt_store::sqlite::{CompactionPolicy, SqliteOptions, SqliteStore};
use vt_store::{ListOptions, Store};

fn pct(s: &mut [Duration], p: f64) -> f64 {
    s.sort();
    s[((s.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e6
}

#[derive(Clone, Copy)]
struct Fig {
    ops: f64,
    p50: f64,
    p99: f64,
}

async fn measure<F, Fut>(workers: usize, total: usize, op: F) -> Fig
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
    Fig {
        ops: (per * workers) as f64 / start.elapsed().as_secs_f64(),
        p50: pct(&mut lat, 0.5),
        p99: pct(&mut lat, 0.99),
    }
}

fn cm(name: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"key":"{}"}}}}"#,
        "v".repeat(400)
    ))
}

async fn call(api: &ApiServer, method: &str, path: &str, body: Bytes) -> u16 {
    let req =
        Request::builder().method(method).uri(path).header("content-type", "application/json").body(body).unwrap();
    let resp = api.handle_as(req, UserInfo::new("bench", ["system:masters"])).await;
    let status = resp.status().as_u16();
    let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
    status
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let opts = SqliteOptions { compaction: CompactionPolicy::disabled(), ..Default::default() };
        let api_store = Arc::new(SqliteStore::open(dir.path().join("api.db"), opts.clone()).await.unwrap());
        let raw: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("raw.db"), opts).await.unwrap());
        let api = ApiServer::new(Config::basic(api_store, "bench")).await.unwrap();
        call(&api, "POST", "/api/v1/namespaces", Bytes::from(r#"{"metadata":{"name":"bench"}}"#)).await;
        println!("| operation | clients | handler ops/s | handler p50 / p99 (µs) | store ops/s | store p50 / p99 (µs) | handler/store (p50) |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for clients in [1usize, 16, 64] {
            let total = if clients == 1 { 2000 } else { 8000 };
            let a = api.clone();
            let hc = measure(clients, total, move |w, i| {
                let a = a.clone();
                async move { assert_eq!(call(&a, "POST", "/api/v1/namespaces/bench/configmaps", cm(&format!("c{clients}-{w}-{i}"))).await, 201) }
            })
            .await;
            let r = raw.clone();
            let sc = measure(clients, total, move |w, i| {
                let r = r.clone();
                async move {
                    r.create(format!("/raw/c{clients}-{w}-{i}").as_bytes(), cm("x"), None).await.unwrap();
                }
            })
            .await;
            let a = api.clone();
            let hg = measure(clients, total, move |w, _| {
                let a = a.clone();
                async move { assert_eq!(call(&a, "GET", &format!("/api/v1/namespaces/bench/configmaps/c{clients}-{w}-0"), Bytes::new()).await, 200) }
            })
            .await;
            let r = raw.clone();
            let sg = measure(clients, total, move |w, _| {
                let r = r.clone();
                async move {
                    r.get(format!("/raw/c{clients}-{w}-0").as_bytes()).await.unwrap().unwrap();
                }
            })
            .await;
            let a = api.clone();
            let hl = measure(clients, total / 4, move |_, _| {
                let a = a.clone();
                async move { assert_eq!(call(&a, "GET", "/api/v1/namespaces/bench/configmaps?limit=100", Bytes::new()).await, 200) }
            })
            .await;
            let r = raw.clone();
            let sl = measure(clients, total / 4, move |_, _| {
                let r = r.clone();
                async move {
                    r.list(b"/raw/", ListOptions { limit: 100, ..Default::default() }).await.unwrap();
                }
            })
            .await;
            for (what, h, s) in [("create", hc, sc), ("get", hg, sg), ("list (100 objects)", hl, sl)] {
                println!("| {what} | {clients} | {:.0} | {:.0} / {:.0} | {:.0} | {:.0} / {:.0} | {:.2}× |", h.ops, h.p50, h.p99, s.ops, s.p50, s.p99, h.p50 / s.p50);
            }
        }
    });
}
