//! Tenant benchmark: the real `vt server` (embedded host) creating tenants through the Tenant
//! API, as `vt create` does.
//!
//! `cargo bench -p vt --bench tenants` prints: create → Ready latency (p50/p99) and create →
//! first answered request on the tenant's own endpoint; tenants created per second; and the
//! manager's RSS and idle CPU with 10, 100 and 1,000 idle tenants (their controllers running),
//! with the per-tenant slope. `VT_BENCH_TENANTS` caps the count (default 1000);
//! `VT_BENCH_CONTROLLERS=0` runs the tenants without their controllers, to measure what the
//! controllers cost.
//!
//! Then sleeping tenants (`VT_BENCH_SLEEPING`, default 9,000; 0 skips): that many more tenants
//! are created with `sleepAfter: 1s` and left to fall asleep, next to the awake ones; printed:
//! RSS per sleeping tenant, idle CPU, wake → first answer p50/p99 (a fresh client's first
//! request to a sleeping tenant, TLS handshake included, against the same on an awake one),
//! and after a SIGKILL and restart, the time from the new process's start until every awake
//! tenant of the first phase has answered a request.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use vt_testkit::VtManager;

use vt_testkit::rss_kib;

/// CPU seconds the process has used (user + system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 (1-based), 11 and 12 after the state field.
    (ticks(11) + ticks(12)) / 100.0
}

/// The share of one core the idle process uses over `window`.
fn idle_cpu(pid: u32, window: Duration) -> f64 {
    let c0 = cpu_seconds(pid);
    std::thread::sleep(window);
    (cpu_seconds(pid) - c0) / window.as_secs_f64() * 100.0
}

/// The manager's own RSS (its children are none: everything is in process).
fn settle_rss(pid: u32) -> u64 {
    std::thread::sleep(Duration::from_secs(2));
    rss_kib(pid)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run());
}

async fn client_for(kubeconfig_yaml: &str) -> kube::Client {
    let kc = kube::config::Kubeconfig::from_yaml(kubeconfig_yaml).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    kube::Client::try_from(cfg).unwrap()
}

async fn run() {
    let total: usize = std::env::var("VT_BENCH_TENANTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let controllers = std::env::var("VT_BENCH_CONTROLLERS").map(|v| v != "0").unwrap_or(true);
    let flag = format!("--tenant-controllers={controllers}");
    let m = VtManager::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_vt")),
        &["--nodes-per-pool", "1", "--max-requests-inflight", "0", "--qps", "0", &flag],
    );
    println!("tenant controllers: {}", if controllers { "running" } else { "off" });
    let pid = m.pid();
    let host_kc = std::fs::read_to_string(m.data_dir().join("host").join("admin.kubeconfig")).unwrap();
    let host = client_for(&host_kc).await;
    let tenants: Api<vt_manager::tenant::Tenant> = Api::all(host.clone());
    // Status updates of every tenant, to time create → Ready.
    let (tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    {
        let tenants = tenants.clone();
        tokio::spawn(async move {
            let mut seen = std::collections::HashSet::new();
            let mut w = Box::pin(watcher(tenants, watcher::Config::default()));
            while let Some(Ok(ev)) = w.next().await {
                if let watcher::Event::Apply(t) | watcher::Event::InitApply(t) = ev {
                    let ready = t.status.as_ref().is_some_and(|s| s.phase == "Ready");
                    let name = t.metadata.name.clone().unwrap_or_default();
                    if ready && seen.insert(name.clone()) {
                        let _ = tx.send((name, Instant::now()));
                    }
                }
            }
        });
    }
    let base = settle_rss(pid);
    println!("manager RSS with no tenants (embedded host included): {base} KiB");
    let mut ready_ms = Vec::new();
    let mut first_ms = Vec::new();
    let mut rss_points = vec![(0usize, base)];
    let mut cpu_points: Vec<(usize, f64)> = Vec::new();
    let started = Instant::now();
    // Time spent measuring (settling, idle CPU), left out of the creation rate.
    let mut paused = Duration::ZERO;
    let mut created = 0usize;
    for checkpoint in [10usize, 100, 1000] {
        let target = checkpoint.min(total);
        while created < target {
            let name = format!("t{created}");
            let t0 = Instant::now();
            let tenant = vt_manager::tenant::Tenant::new(&name, Default::default());
            tenants.create(&PostParams::default(), &tenant).await.unwrap();
            let (ready_name, at) = ready_rx.recv().await.unwrap();
            assert_eq!(ready_name, name);
            ready_ms.push(at.duration_since(t0).as_secs_f64() * 1e3);
            // The first request answered by the tenant itself, as `kubectl get ns` makes it.
            if created < 100 {
                let kc = kubeconfig_of(&host, &name).await;
                let client = client_for(&kc).await;
                Api::<Namespace>::all(client).list(&Default::default()).await.unwrap();
                first_ms.push(t0.elapsed().as_secs_f64() * 1e3);
            }
            created += 1;
        }
        let elapsed = (started.elapsed() - paused).as_secs_f64();
        let pause = Instant::now();
        let rss = settle_rss(pid);
        let cpu = idle_cpu(pid, Duration::from_secs(20));
        paused += pause.elapsed();
        rss_points.push((created, rss));
        cpu_points.push((created, cpu));
        println!(
            "{created} tenants: manager RSS {rss} KiB, idle CPU {cpu:.2}% of a core; {:.1} tenants/s so far",
            created as f64 / elapsed
        );
        if created >= total {
            break;
        }
    }
    println!();
    println!("| measure | value |");
    println!("|---|---:|");
    println!(
        "| create → Ready, p50 / p99 (ms) | {:.1} / {:.1} |",
        pct(&mut ready_ms.clone(), 0.5),
        pct(&mut ready_ms, 0.99)
    );
    println!(
        "| create → first request answered by the tenant (first 100), p50 / p99 (ms) | {:.1} / {:.1} |",
        pct(&mut first_ms.clone(), 0.5),
        pct(&mut first_ms, 0.99)
    );
    println!(
        "| tenants created per second (sequential) | {:.1} |",
        created as f64 / (started.elapsed() - paused).as_secs_f64()
    );
    for w in rss_points.windows(2) {
        let ((n0, r0), (n1, r1)) = (w[0], w[1]);
        println!(
            "| RSS {n0} → {n1} tenants | {r1} KiB ({:.0} KiB per tenant) |",
            (r1 as f64 - r0 as f64) / (n1 - n0).max(1) as f64
        );
    }
    for (n, cpu) in cpu_points {
        println!("| idle CPU with {n} tenants (share of one core, 20 s) | {cpu:.2}% |");
    }
    let sleeping: usize = std::env::var("VT_BENCH_SLEEPING").ok().and_then(|v| v.parse().ok()).unwrap_or(9000);
    if sleeping > 0 {
        sleep_phase(m, host, created, sleeping).await;
    }
}

/// The tenant's admin kubeconfig, from the manager's namespace.
async fn kubeconfig_of(host: &kube::Client, name: &str) -> String {
    let secrets: Api<Secret> = Api::namespaced(host.clone(), "vt-system");
    let kc = secrets.get(&vt_manager::reconcile::kubeconfig_secret(name)).await.unwrap();
    String::from_utf8(kc.data.unwrap()["kubeconfig"].0.clone()).unwrap()
}

/// A fresh client's first request (TLS handshake included): milliseconds.
async fn first_answer(kc: &str) -> f64 {
    let client = client_for(kc).await;
    let t0 = Instant::now();
    Api::<Namespace>::all(client).list(&Default::default()).await.unwrap();
    t0.elapsed().as_secs_f64() * 1e3
}

async fn phases(host: &kube::Client) -> std::collections::HashMap<String, String> {
    let tenants: Api<vt_manager::tenant::Tenant> = Api::all(host.clone());
    tenants
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|t| (t.metadata.name.clone().unwrap_or_default(), t.status.map(|s| s.phase).unwrap_or_default()))
        .collect()
}

async fn sleep_phase(mut m: VtManager, host: kube::Client, awake: usize, sleeping: usize) {
    let tenants: Api<vt_manager::tenant::Tenant> = Api::all(host.clone());
    let before = settle_rss(m.pid());
    let started = Instant::now();
    // Created a few at a time; each falls asleep a second after it is ready.
    let names: Vec<String> = (0..sleeping).map(|i| format!("s{i}")).collect();
    futures::stream::iter(names.iter().cloned())
        .for_each_concurrent(8, |name| {
            let tenants = tenants.clone();
            async move {
                let spec = vt_manager::tenant::TenantSpec { sleep_after: Some("1s".into()), ..Default::default() };
                tenants.create(&PostParams::default(), &vt_manager::tenant::Tenant::new(&name, spec)).await.unwrap();
            }
        })
        .await;
    let created_in = started.elapsed();
    loop {
        let p = phases(&host).await;
        let asleep = p.values().filter(|v| *v == "Sleeping").count();
        if asleep >= sleeping {
            break;
        }
        println!("  {asleep} of {sleeping} asleep…");
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let all_asleep_in = started.elapsed();
    // Wake → first answer, on tenants asleep; the same request on awake tenants for reference.
    let mut wake_ms = Vec::new();
    let mut awake_ms = Vec::new();
    for i in 0..200.min(sleeping) {
        let kc = kubeconfig_of(&host, &format!("s{}", i * (sleeping / 200.min(sleeping)).max(1))).await;
        wake_ms.push(first_answer(&kc).await);
        let kc = kubeconfig_of(&host, &format!("t{}", i % awake.max(1))).await;
        awake_ms.push(first_answer(&kc).await);
    }
    // A SIGKILL, then every tenant of the first phase asked at once (16 in flight), timed from
    // the new process's start.
    let mut kcs = Vec::new();
    for i in 0..awake {
        kcs.push(kubeconfig_of(&host, &format!("t{i}")).await);
    }
    m.kill();
    let restart = Instant::now();
    m.restart();
    let serving = restart.elapsed();
    let answered: Vec<f64> = futures::stream::iter(kcs.iter())
        .map(|kc| async move {
            loop {
                let client = client_for(kc).await;
                if Api::<Namespace>::all(client).list(&Default::default()).await.is_ok() {
                    return restart.elapsed().as_secs_f64() * 1e3;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    // After the restart the sleeping tenants were never started in this process (freed
    // memory that the allocator keeps does not blur them): the awake ones are all running
    // again (woken by the requests above, or started in the background), the rest asleep.
    let pid = m.pid();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let after = settle_rss(pid);
    let cpu = idle_cpu(pid, Duration::from_secs(20));
    println!();
    println!("| sleeping tenants ({awake} awake + {sleeping} asleep) | value |");
    println!("|---|---:|");
    println!(
        "| created (8 at a time) / all asleep | {:.1} s / {:.1} s ({:.1} tenants/s) |",
        created_in.as_secs_f64(),
        all_asleep_in.as_secs_f64(),
        sleeping as f64 / created_in.as_secs_f64()
    );
    println!(
        "| RSS {awake} awake (first phase) → {awake} awake + {sleeping} asleep (after a restart) | {before} → {after} KiB ({:.1} KiB per sleeping tenant) |",
        (after as f64 - before as f64) / sleeping as f64
    );
    println!("| idle CPU, {awake} awake + {sleeping} asleep (20 s) | {cpu:.2}% of a core |");
    println!(
        "| wake → first answer (fresh client, TLS included), p50 / p99 (ms) | {:.1} / {:.1} |",
        pct(&mut wake_ms.clone(), 0.5),
        pct(&mut wake_ms, 0.99)
    );
    println!(
        "| same request to an awake tenant, p50 / p99 (ms) | {:.1} / {:.1} |",
        pct(&mut awake_ms.clone(), 0.5),
        pct(&mut awake_ms, 0.99)
    );
    println!(
        "| SIGKILL → restart: serving after / all {awake} answered by (p50 / max of each's first answer) | {:.0} ms / {:.0} / {:.0} ms |",
        serving.as_secs_f64() * 1e3,
        pct(&mut answered.clone(), 0.5),
        pct(&mut answered.clone(), 1.0)
    );
}
