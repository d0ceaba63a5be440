//! Store benchmark: SQLite and etcd side by side in one run, on this machine's disk.
//!
//! `cargo bench -p vt-store` prints, per backend: durable create and update throughput with
//! p50/p99 latency at 1, 8 and 64 concurrent writers; get and list (1,000 keys) latency; watch
//! delivery latency (write call to event received); and memory. Both backends acknowledge only
//! durable writes (SQLite: WAL fsync per group; etcd: its WAL fsync per batch).
//!
//! Set `VT_BENCH_SCALE` (default 1.0) to scale the operation counts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use vt_store::etcd::{EtcdOptions, EtcdStore};
use vt_store::sqlite::{SqliteOptions, SqliteStore};
use vt_store::{ListOptions, Store};
use vt_testkit::EtcdServer;

fn scale(n: usize) -> usize {
    let s: f64 = std::env::var("VT_BENCH_SCALE").ok().and_then(|v| v.parse().ok()).unwrap_or(1.0);
    ((n as f64 * s) as usize).max(10)
}

/// Latency percentiles of a sample, in microseconds.
fn pct(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i].as_secs_f64() * 1e6
}

use vt_testkit::rss_kib;

struct Row {
    what: String,
    ops_per_sec: Option<f64>,
    p50_us: f64,
    p99_us: f64,
}

async fn writes(store: &Arc<dyn Store>, tag: &str, writers: usize, total: usize, update: bool) -> Row {
    let value = Bytes::from(vec![b'x'; 512]);
    // For updates, create the keys first.
    if update {
        for w in 0..writers {
            store.create(format!("/bench/{tag}/u{w}").as_bytes(), value.clone(), None).await.unwrap();
        }
    }
    let per = total / writers;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, value, tag) = (store.clone(), value.clone(), tag.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            let key = format!("/bench/{tag}/u{w}");
            let mut rev = if update { store.get(key.as_bytes()).await.unwrap().unwrap().mod_revision } else { 0 };
            for i in 0..per {
                let t = Instant::now();
                if update {
                    rev = store.update(key.as_bytes(), value.clone(), rev, None).await.unwrap();
                } else {
                    store.create(format!("/bench/{tag}/c{w}/{i}").as_bytes(), value.clone(), None).await.unwrap();
                }
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
    Row {
        what: format!("{} x{writers}", if update { "update" } else { "create" }),
        ops_per_sec: Some((per * writers) as f64 / secs),
        p50_us: pct(&mut lat, 0.5),
        p99_us: pct(&mut lat, 0.99),
    }
}

async fn reads(store: &Arc<dyn Store>) -> Vec<Row> {
    let value = Bytes::from(vec![b'y'; 512]);
    let mut tasks = Vec::new();
    for w in 0..16 {
        let (store, value) = (store.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            for i in (w..1000).step_by(16) {
                store.create(format!("/bench/list/{i:04}").as_bytes(), value.clone(), None).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n = scale(2000);
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        let got = store.get(format!("/bench/list/{:04}", i % 1000).as_bytes()).await.unwrap();
        assert!(got.is_some());
        lat.push(t.elapsed());
    }
    let get = Row {
        what: "get".into(),
        ops_per_sec: Some(n as f64 / start.elapsed().as_secs_f64()),
        p50_us: pct(&mut lat, 0.5),
        p99_us: pct(&mut lat, 0.99),
    };
    let n = scale(100);
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let l = store.list(b"/bench/list/", ListOptions::default()).await.unwrap();
        assert_eq!(l.kvs.len(), 1000);
        lat.push(t.elapsed());
    }
    let list = Row {
        what: "list 1,000 keys".into(),
        ops_per_sec: None,
        p50_us: pct(&mut lat, 0.5),
        p99_us: pct(&mut lat, 0.99),
    };
    vec![get, list]
}

async fn watch_latency(store: &Arc<dyn Store>) -> Row {
    let mut w = store.watch(b"/bench/watch/", 0).await.unwrap();
    let n = scale(1000);
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        store.create(format!("/bench/watch/{i}").as_bytes(), Bytes::from_static(b"w"), None).await.unwrap();
        let ev = w.next().await.unwrap().unwrap();
        lat.push(t.elapsed());
        assert!(ev.key().ends_with(format!("/{i}").as_bytes()));
    }
    Row {
        what: "watch: write → event".into(),
        ops_per_sec: None,
        p50_us: pct(&mut lat, 0.5),
        p99_us: pct(&mut lat, 0.99),
    }
}

async fn run(name: &str, store: Arc<dyn Store>) -> Vec<Row> {
    let mut rows = Vec::new();
    for (writers, total) in [(1, scale(1000)), (8, scale(4000)), (64, scale(12800))] {
        rows.push(writes(&store, &format!("c{writers}"), writers, total, false).await);
        rows.push(writes(&store, &format!("u{writers}"), writers, total, true).await);
    }
    rows.extend(reads(&store).await);
    rows.push(watch_latency(&store).await);
    for r in &rows {
        eprintln!(
            "{name:7} {:24} {:>10} p50 {:>8.0} µs  p99 {:>8.0} µs",
            r.what,
            r.ops_per_sec.map(|o| format!("{o:.0}/s")).unwrap_or_default(),
            r.p50_us,
            r.p99_us
        );
    }
    rows
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let rss_before = rss_kib(std::process::id());
        let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("bench.db"), SqliteOptions::default()).await.unwrap());
        let sqlite_rows = run("sqlite", sqlite.clone()).await;
        let rss_sqlite = rss_kib(std::process::id());
        drop(sqlite);

        let server = EtcdServer::start();
        let etcd: Arc<dyn Store> = Arc::new(EtcdStore::connect(EtcdOptions::new(vec![server.endpoint().to_string()], "/bench")).await.unwrap());
        let etcd_rows = run("etcd", etcd).await;
        let rss_etcd = rss_kib(server.pid());

        println!("\n| operation | SQLite ops/s | SQLite p50 / p99 (µs) | etcd ops/s | etcd p50 / p99 (µs) |");
        println!("|---|---:|---:|---:|---:|");
        for (s, e) in sqlite_rows.iter().zip(&etcd_rows) {
            let ops = |r: &Row| r.ops_per_sec.map(|o| format!("{o:.0}")).unwrap_or_else(|| "–".into());
            println!("| {} | {} | {:.0} / {:.0} | {} | {:.0} / {:.0} |", s.what, ops(s), s.p50_us, s.p99_us, ops(e), e.p50_us, e.p99_us);
        }
        println!("\nmemory: bench process RSS {rss_before} KiB before, {rss_sqlite} KiB after the SQLite run (store open, page caches warm); etcd server RSS {rss_etcd} KiB after its run");
    });
}
