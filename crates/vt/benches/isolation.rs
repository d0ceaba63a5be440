//! Isolation benchmark: what one hostile tenant can take from the others in a shared manager.
//!
//! `cargo bench -p vt --bench isolation` prints:
//! * the manager's RSS idle, with 1,000 watches from one tenant that never read their stream
//!   (the tenant holds ~1 MiB of ConfigMaps, which every watch must send), and after they
//!   close — with glibc's default arenas and with `MALLOC_ARENA_MAX=2` (the chart's setting);
//! * a quiet tenant's request latency (p50/p99, one client in a loop) alone, during a flooding
//!   neighbour with fair queuing (the default) and without it, and the neighbour's throughput
//!   and 429s;
//! * the quiet tenant's latency with every limit off, against the defaults (what the limits
//!   cost on the normal path).
//!
//! Client and server share this machine's cores.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vt_testkit::tls::TenantClient;
use vt_testkit::{ManagerOptions, VtManager, rss_kib};

fn vt() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_vt"))
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        if std::env::var("VT_BENCH_SKIP_WATCHES").is_err() {
            for arenas in [None, Some("2")] {
                unread_watches(arenas).await;
            }
        }
        fairness().await;
    });
}

/// A manager with `extra` flags and `env`.
async fn manager(extra: &'static [&'static str], env: Vec<(String, String)>) -> VtManager {
    tokio::task::spawn_blocking(move || {
        VtManager::start_with(vt(), extra, ManagerOptions { env, ..Default::default() })
    })
    .await
    .unwrap()
}

async fn kube_client(m: &VtManager, tenant: &str) -> kube::Client {
    let yaml = m.vt_ok(&["connect", tenant, "--print"]);
    let kc = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    cfg.default_retry = false;
    kube::Client::try_from(cfg).unwrap()
}

async fn unread_watches(arenas: Option<&str>) {
    let env: Vec<(String, String)> =
        arenas.map(|a| vec![("MALLOC_ARENA_MAX".to_string(), a.to_string())]).unwrap_or_default();
    let m = manager(&[], env).await;
    let (m, hostile) = tokio::task::spawn_blocking(move || {
        m.vt_ok(&["create", "hostile", "--max-watches", "1000", "--max-connections", "1200"]);
        let k = m.tenant_kubectl("hostile");
        let blob = "x".repeat(4000);
        let items: Vec<String> = (0..250)
            .map(|i| format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"cm-{i}","namespace":"default"}},"data":{{"blob":"{blob}"}}}}"#))
            .collect();
        k.ok_stdin(&["apply", "-f", "-"], &format!(r#"{{"apiVersion":"v1","kind":"List","items":[{}]}}"#, items.join(",")));
        let h = TenantClient::of(&m, "hostile");
        (m, h)
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(m.pid());
    let mut held = Vec::new();
    for _ in 0..50 {
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let t = hostile.clone();
                tokio::spawn(async move { t.get("/api/v1/configmaps?watch=1").await })
            })
            .collect();
        for t in tasks {
            let (c, head) = t.await.unwrap();
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            held.push(c);
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = rss_kib(m.pid());
    drop(held);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = rss_kib(m.pid());
    println!(
        "unread watches (MALLOC_ARENA_MAX={}): RSS idle {:.1} MiB, with 1,000 unread watches {:.1} MiB (+{:.1} MiB, {:.0} KiB/watch), after they close {:.1} MiB",
        arenas.unwrap_or("unset"),
        idle as f64 / 1024.0,
        during as f64 / 1024.0,
        (during as f64 - idle as f64) / 1024.0,
        (during as f64 - idle as f64) / 1000.0,
        after as f64 / 1024.0,
    );
}

/// One client's requests, 100 a second (a busy controller's pace), for `window`: latencies
/// in ms.
async fn quiet_latencies(client: &kube::Client, window: Duration) -> Vec<f64> {
    let mut out = Vec::new();
    let end = Instant::now() + window;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < end {
        tick.tick().await;
        let req = http::Request::get("/api/v1/namespaces/default/configmaps").body(Vec::new()).unwrap();
        let t = Instant::now();
        let r = client.request_text(req).await;
        out.push(t.elapsed().as_secs_f64() * 1000.0);
        if let Err(e) = r {
            panic!("the quiet tenant's request failed: {e}");
        }
    }
    out
}

struct Flood {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    throttled: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn flood(client: &kube::Client, clients: usize) -> Flood {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let throttled = Arc::new(AtomicU64::new(0));
    let tasks = (0..clients)
        .map(|_| {
            let (c, stop, ok, throttled) = (client.clone(), stop.clone(), ok.clone(), throttled.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let req = http::Request::get("/api/v1/namespaces/default/configmaps").body(Vec::new()).unwrap();
                    match c.request_text(req).await {
                        Ok(_) => _ = ok.fetch_add(1, Ordering::Relaxed),
                        Err(kube::Error::Api(s)) if s.code == 429 => {
                            throttled.fetch_add(1, Ordering::Relaxed);
                            // A client backs off as Retry-After asks (1 s would idle the
                            // flood; clients retry sooner in practice).
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => panic!("the noisy tenant's request failed: {e}"),
                    }
                }
            })
        })
        .collect();
    Flood { stop, ok, throttled, tasks }
}

async fn fairness() {
    let window = Duration::from_secs(10);
    for (label, extra) in [
        ("fair queuing (default: a seat per CPU), no rate limit", &["--qps", "0"][..]),
        ("fair queuing (4 seats), no rate limit", &["--qps", "0", "--max-concurrent-requests", "4"][..]),
        ("no fair queuing, no rate limit", &["--max-concurrent-requests", "0", "--qps", "0"][..]),
        (
            "every limit off",
            &[
                "--max-concurrent-requests",
                "0",
                "--max-requests-inflight",
                "0",
                "--qps",
                "0",
                "--max-connections",
                "0",
                "--max-watches",
                "0",
            ][..],
        ),
    ] {
        let m = manager(extra, Vec::new()).await;
        let m = tokio::task::spawn_blocking(move || {
            for t in ["quiet", "noisy"] {
                m.vt_ok(&["create", t]);
                let k = m.tenant_kubectl(t);
                let items: Vec<String> = (0..50)
                    .map(|i| format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"cm-{i}","namespace":"default"}},"data":{{"k":"{}"}}}}"#, "v".repeat(200)))
                    .collect();
                k.ok_stdin(&["apply", "-f", "-"], &format!(r#"{{"apiVersion":"v1","kind":"List","items":[{}]}}"#, items.join(",")));
            }
            m
        })
        .await
        .unwrap();
        let quiet = kube_client(&m, "quiet").await;
        let noisy = kube_client(&m, "noisy").await;
        // Warm up, then the quiet tenant alone.
        let _ = quiet_latencies(&quiet, Duration::from_secs(2)).await;
        let mut alone = quiet_latencies(&quiet, window).await;
        let (a50, a99) = (pct(&mut alone, 0.5), pct(&mut alone, 0.99));
        if label == "every limit off" {
            println!("normal path, {label}: quiet tenant p50 {a50:.2} ms, p99 {a99:.2} ms ({} requests)", alone.len());
            continue;
        }
        // The limits' cost on the normal path: the same pace with every limit on.
        println!("normal path, {label}: quiet tenant p50 {a50:.2} ms, p99 {a99:.2} ms ({} requests)", alone.len());
        let f = flood(&noisy, std::env::var("VT_BENCH_FLOOD").ok().and_then(|v| v.parse().ok()).unwrap_or(64));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (ok0, th0) = (f.ok.load(Ordering::Relaxed), f.throttled.load(Ordering::Relaxed));
        let mut during = quiet_latencies(&quiet, window).await;
        let (ok1, th1) = (f.ok.load(Ordering::Relaxed), f.throttled.load(Ordering::Relaxed));
        f.stop.store(true, Ordering::Relaxed);
        for t in f.tasks {
            let _ = t.await;
        }
        let (d50, d99) = (pct(&mut during, 0.5), pct(&mut during, 0.99));
        println!(
            "flood, {label}: quiet tenant p50 {d50:.2} ms, p99 {d99:.2} ms ({} requests; p99 {:.1}× alone); noisy tenant {:.0} req/s served, {:.0} req/s answered 429",
            during.len(),
            d99 / a99,
            (ok1 - ok0) as f64 / window.as_secs_f64(),
            (th1 - th0) as f64 / window.as_secs_f64(),
        );
        drop(m);
    }
}
