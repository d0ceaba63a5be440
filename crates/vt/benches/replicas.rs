//! Replica benchmark: three real `vt server` replicas against a separate host and a real etcd
//! (`cargo bench -p vt --bench replicas`). Printed: the latency a forwarded connection adds
//! (p50 of a `GET /version` on a kept-alive connection, through the owner vs through another
//! replica), failover time over `VT_BENCH_KILLS` SIGKILLs of an owner (default 20; time until
//! every tenant of the dead replica answers through a survivor), handback time when it
//! returns (until all its preferred tenants are served by it again), and a rolling restart
//! (SIGTERM, start again, each replica in turn) under steady load on every tenant through the
//! front: requests that failed, and what the client's retries absorbed.

use std::time::{Duration, Instant};

use vt_testkit::replicas::Fleet;

#[path = "../../../tests/support/load.rs"]
mod load;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn client(kc: &str) -> kube::Client {
    let kc = kube::config::Kubeconfig::from_yaml(kc).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    kube::Client::try_from(cfg).unwrap()
}

/// p50 of `n` sequential `GET /version` on one client (milliseconds).
async fn version_p50(c: &kube::Client, n: usize) -> f64 {
    let mut ms = Vec::new();
    for _ in 0..n {
        let t0 = Instant::now();
        c.apiserver_version().await.unwrap();
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    pct(&mut ms, 0.5)
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kills: usize = std::env::var("VT_BENCH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let mut f = Fleet::start(std::path::Path::new(env!("CARGO_BIN_EXE_vt")), 3);
    let names: Vec<String> = (0..30).map(|i| format!("t{i}")).collect();
    for n in &names {
        f.vt_ok(&["create", n, "--etcd", f.etcd.endpoint()]);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // Forwarding: the same tenant through its owner and through another replica.
    let (mut direct, mut forwarded) = (Vec::new(), Vec::new());
    for n in names.iter().take(10) {
        let owner = f.index_of(&f.owner(n));
        let (a, b) = (f.kubeconfig_via(n, owner), f.kubeconfig_via(n, (owner + 1) % 3));
        rt.block_on(async {
            let (a, b) = (client(&a).await, client(&b).await);
            version_p50(&a, 20).await;
            version_p50(&b, 20).await;
            direct.push(version_p50(&a, 200).await);
            forwarded.push(version_p50(&b, 200).await);
        });
    }
    // Failover and handback.
    let (mut failover, mut handback, mut moved) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..kills {
        let victim = f.replicas[k % 3].id.clone();
        let vi = k % 3;
        let theirs: Vec<String> = names.iter().filter(|n| f.holder(n) == victim).cloned().collect();
        if theirs.is_empty() {
            continue;
        }
        let via = (vi + 1) % 3;
        let kcs: Vec<String> = theirs.iter().map(|n| f.kubeconfig_via(n, via)).collect();
        f.replicas[vi].kill();
        let t0 = Instant::now();
        rt.block_on(async {
            for kc in &kcs {
                loop {
                    let ok = match tokio::time::timeout(Duration::from_secs(2), async {
                        client(kc).await.apiserver_version().await
                    })
                    .await
                    {
                        Ok(r) => r.is_ok(),
                        Err(_) => false,
                    };
                    if ok {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        failover.push(t0.elapsed().as_secs_f64() * 1e3);
        f.replicas[vi].spawn();
        let t1 = Instant::now();
        while !theirs.iter().all(|n| f.holder(n) == victim) {
            assert!(t1.elapsed() < Duration::from_secs(60), "no handback");
            std::thread::sleep(Duration::from_millis(50));
        }
        handback.push(t1.elapsed().as_secs_f64() * 1e3);
        moved.push(theirs.len() as f64);
        println!(
            "kill {k}: {} tenants of {victim} answered elsewhere after {:.0} ms; handed back {:.0} ms after its restart",
            theirs.len(),
            failover.last().unwrap(),
            handback.last().unwrap()
        );
    }
    // A rolling restart under steady load on every tenant.
    let load = load::Load::start(names.iter().map(|n| (n.clone(), f.kubeconfig(n))).collect());
    std::thread::sleep(Duration::from_secs(3));
    let mut leave = Vec::new();
    let t0 = Instant::now();
    for i in 0..3 {
        let id = f.replicas[i].id.clone();
        leave.push(f.replicas[i].terminate().as_secs_f64() * 1e3);
        f.replicas[i].spawn();
        let t1 = Instant::now();
        while !names.iter().any(|n| f.holder(n) == id) {
            assert!(t1.elapsed() < Duration::from_secs(60), "{id} got nothing back");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    let rolled = t0.elapsed().as_secs_f64();
    let tally = load.finish();
    for why in tally.failed.iter().take(10) {
        println!("failed: {why}");
    }
    println!();
    println!("| replicas (3 replicas, 30 etcd tenants) | value |");
    println!("|---|---:|");
    println!(
        "| GET /version, kept-alive connection: through the owner / through another replica, p50 (ms) | {:.2} / {:.2} |",
        pct(&mut direct, 0.5),
        pct(&mut forwarded, 0.5)
    );
    println!(
        "| SIGKILL of an owner → all its tenants answer elsewhere, p50 / p99 / max over {} kills (ms) | {:.0} / {:.0} / {:.0} |",
        failover.len(),
        pct(&mut failover.clone(), 0.5),
        pct(&mut failover.clone(), 0.99),
        pct(&mut failover, 1.0)
    );
    println!(
        "| restart → its tenants handed back, p50 / max (ms; {:.0} tenants each on average) | {:.0} / {:.0} |",
        moved.iter().sum::<f64>() / moved.len().max(1) as f64,
        pct(&mut handback.clone(), 0.5),
        pct(&mut handback, 1.0)
    );
    println!(
        "| SIGTERM → process ended (tenants handed over), p50 / max of 3 (ms) | {:.0} / {:.0} |",
        pct(&mut leave.clone(), 0.5),
        pct(&mut leave, 1.0)
    );
    println!(
        "| rolling restart of 3 under load ({rolled:.0} s, 30 tenants, create+get loops): requests ok / failed | {} / {} |",
        tally.ok,
        tally.failed.len()
    );
    println!(
        "| … absorbed by retries: connection breaks / 429s beyond kube-rs's own retries; slowest operation (ms) | {} / {} ; {:.0} |",
        tally.resets,
        tally.retried_after,
        tally.slowest.as_secs_f64() * 1e3
    );
}
