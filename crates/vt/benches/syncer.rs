//! Syncer benchmark: the release `vt server` against a separate host (`vt apiserver
//! --controllers --simulate-nodes 20`, the tenant's pool), so the manager's memory is the
//! tenants' and the syncer's alone.
//!
//! `cargo bench -p vt --bench syncer` prints: virtual pod created → host pod created, p50/p99,
//! at 10 and 100 pods/s; host pod Running → virtual pod Running, p50/p99; and the manager's
//! RSS per synced pod at 1,000 and 10,000 pods, against the same run without the syncer
//! (`--tenant-syncer=false`) where the bench binds the pods and writes the same status itself. `VT_BENCH_PODS` caps the largest count (default 10000).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use vt_testkit::{VtManager, VtServer};

const TENANT: &str = "bench";

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run());
}

use vt_testkit::rss_kib;

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn client_for(yaml: &str) -> kube::Client {
    let kc = kube::config::Kubeconfig::from_yaml(yaml).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    kube::Client::try_from(cfg).unwrap()
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"automountServiceAccountToken": false, "containers": [{"name": "c", "image": "nginx:1.27"}]}
    }))
    .unwrap()
}

/// A host for the manager: a standalone vt API server whose simulated nodes form the pool.
async fn host(vt: &std::path::Path) -> (VtServer, kube::Client) {
    let server = VtServer::start(vt, &["--controllers", "--simulate-nodes", "20"]);
    let client = client_for(&std::fs::read_to_string(&server.kubeconfig).unwrap()).await;
    let nodes: Api<Node> = Api::all(client.clone());
    for n in nodes.list(&ListParams::default()).await.unwrap().items {
        let name = n.metadata.name.unwrap();
        let patch = serde_json::json!({"metadata": {"labels": {"vt.dev/pool": TENANT}},
            "spec": {"taints": [{"key": "vt.dev/pool", "value": TENANT, "effect": "NoSchedule"}]}});
        nodes.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
    }
    let rc: k8s_openapi::api::node::v1::RuntimeClass =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "kata"}, "handler": "kata"})).unwrap();
    let _ =
        Api::<k8s_openapi::api::node::v1::RuntimeClass>::all(client.clone()).create(&PostParams::default(), &rc).await;
    (server, client)
}

/// A manager on `host` with one tenant; returns it with the tenant's client.
async fn manager(
    vt: &std::path::Path,
    host_kc: &std::path::Path,
    host: &kube::Client,
    syncer: bool,
) -> (VtManager, kube::Client) {
    let flag = format!("--tenant-syncer={syncer}");
    let m = VtManager::start(
        vt,
        &["--host-kubeconfig", &host_kc.display().to_string(), "--max-requests-inflight", "0", "--qps", "0", &flag],
    );
    let tenants: Api<vt_manager::tenant::Tenant> = Api::all(host.clone());
    let mut spec = vt_manager::tenant::TenantSpec::default();
    spec.quota.insert("pods".into(), "20000".into());
    let _ = tenants.create(&PostParams::default(), &vt_manager::tenant::Tenant::new(TENANT, spec)).await;
    let secrets: Api<Secret> = Api::namespaced(host.clone(), &format!("vt-{TENANT}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let kc = loop {
        let ready = tenants.get(TENANT).await.ok().and_then(|t| t.status).is_some_and(|s| s.phase == "Ready");
        if ready && let Ok(Some(s)) = secrets.get_opt("vt-admin-kubeconfig").await {
            break String::from_utf8(s.data.unwrap()["kubeconfig"].0.clone()).unwrap();
        }
        assert!(Instant::now() < deadline, "the tenant never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let client = client_for(&kc).await;
    // The default ServiceAccount must exist before pods can be created.
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), "default");
    while sas.get_opt("default").await.ok().flatten().is_none() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (m, client)
}

/// When each pod (by virtual name) was first seen on the host, and became Running there.
#[derive(Default)]
struct Seen {
    host_created: HashMap<String, Instant>,
    host_running: HashMap<String, Instant>,
    virtual_running: HashMap<String, Instant>,
}

async fn watch_host(host: kube::Client, seen: Arc<Mutex<Seen>>) {
    let api: Api<Pod> = Api::namespaced(host, &format!("vt-{TENANT}"));
    let mut stream = Box::pin(watcher(api, watcher::Config::default()).applied_objects());
    while let Ok(Some(p)) = stream.try_next().await {
        let Some(name) = p.metadata.annotations.as_ref().and_then(|a| a.get("vt.dev/name")).cloned() else { continue };
        let now = Instant::now();
        let mut s = seen.lock().unwrap();
        s.host_created.entry(name.clone()).or_insert(now);
        if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
            s.host_running.entry(name).or_insert(now);
        }
    }
}

async fn watch_virtual(client: kube::Client, seen: Arc<Mutex<Seen>>) {
    let api: Api<Pod> = Api::namespaced(client, "default");
    let mut stream = Box::pin(watcher(api, watcher::Config::default()).applied_objects());
    while let Ok(Some(p)) = stream.try_next().await {
        if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
            let now = Instant::now();
            seen.lock().unwrap().virtual_running.entry(p.metadata.name.unwrap_or_default()).or_insert(now);
        }
    }
}

/// Creates `count` pods at `rate` per second (each create runs on its own); returns when each
/// create was sent.
async fn create_at(api: &Api<Pod>, prefix: &str, count: usize, rate: f64) -> HashMap<String, Instant> {
    let mut sent = HashMap::new();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..count {
        let at = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(at.into()).await;
        let name = format!("{prefix}-{i}");
        sent.insert(name.clone(), Instant::now());
        let api = api.clone();
        tasks.push(tokio::spawn(async move { api.create(&PostParams::default(), &pod(&name)).await.unwrap() }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    sent
}

async fn wait_all(seen: &Arc<Mutex<Seen>>, names: &[String], what: fn(&Seen) -> &HashMap<String, Instant>) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = {
            let s = seen.lock().unwrap();
            names.iter().all(|n| what(&s).contains_key(n))
        };
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "pods did not all arrive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates pods up to `target` (16 at a time) and waits until every pod is Running in the
/// tenant. Without a syncer, each pod is bound and given `like`'s status instead (as a
/// kubelet would), so the tenant's own objects and caches are as large in both runs and the
/// difference is the syncer's.
async fn fill(api: &Api<Pod>, seen: &Arc<Mutex<Seen>>, from: usize, target: usize, like: Option<&Pod>) {
    futures::stream::iter(from..target)
        .for_each_concurrent(16, |i| {
            let api = api.clone();
            async move {
                let name = format!("mem-{i}");
                api.create(&PostParams::default(), &pod(&name)).await.unwrap();
                if let Some(like) = like {
                    let node = like.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
                    let binding = serde_json::json!({"apiVersion": "v1", "kind": "Binding",
                        "metadata": {"name": name}, "target": {"kind": "Node", "name": node}});
                    let _: serde_json::Value =
                        api.create_subresource("binding", &name, &PostParams::default(), &binding).await.unwrap();
                    let mut status = serde_json::to_value(&like.status).unwrap();
                    status["podIP"] =
                        serde_json::json!(format!("10.{}.{}.{}", 200 + i / 65536, i / 256 % 256, i % 256));
                    status["podIPs"] = serde_json::json!([{"ip": status["podIP"]}]);
                    let patch = serde_json::json!({"status": status});
                    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
                }
            }
        })
        .await;
    let synced = like.is_none();
    if synced {
        let names: Vec<String> = (0..target).map(|i| format!("mem-{i}")).collect();
        wait_all(seen, &names, |s| &s.virtual_running).await;
    }
}

async fn run() {
    let vt = std::path::Path::new(env!("CARGO_BIN_EXE_vt"));
    let max: usize = std::env::var("VT_BENCH_PODS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let mut rows = Vec::new();
    let mut rss_rows = Vec::new();
    let mut like: Option<Pod> = None;
    for synced in [true, false] {
        let (host_server, host) = host(vt).await;
        let (m, tenant) = manager(vt, &host_server.kubeconfig, &host, synced).await;
        let pid = m.pid();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let watches = [
            tokio::spawn(watch_host(host.clone(), seen.clone())),
            tokio::spawn(watch_virtual(tenant.clone(), seen.clone())),
        ];
        let api: Api<Pod> = Api::namespaced(tenant.clone(), "default");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let base = rss_kib(pid);
        let mut created = 0;
        let mut points = vec![(0usize, base)];
        for target in [1_000usize, 10_000] {
            let target = target.min(max);
            if target <= created {
                continue;
            }
            let t0 = Instant::now();
            fill(&api, &seen, created, target, if synced { None } else { like.as_ref() }).await;
            if synced && like.is_none() {
                like = Some(api.get("mem-0").await.unwrap());
            }
            created = target;
            tokio::time::sleep(Duration::from_secs(5)).await;
            let rss = rss_kib(pid);
            println!(
                "{} {target} pods: manager RSS {rss} KiB ({:.1} s to create{})",
                if synced { "synced" } else { "not synced" },
                t0.elapsed().as_secs_f64(),
                if synced { " and run on the host" } else { ", bind and set status" }
            );
            points.push((target, rss));
        }
        if synced {
            // Latency on an emptied tenant (after the memory figures, taken on a fresh one).
            api.delete_collection(&Default::default(), &ListParams::default()).await.unwrap();
            while !api.list(&ListParams::default().limit(1)).await.unwrap().items.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            for (rate, count) in [(10.0, 100usize), (100.0, 1000)] {
                let prefix = format!("r{}", rate as u64);
                let sent = create_at(&api, &prefix, count, rate).await;
                let names: Vec<String> = sent.keys().cloned().collect();
                wait_all(&seen, &names, |s| &s.virtual_running).await;
                let s = seen.lock().unwrap();
                let mut to_host: Vec<f64> =
                    names.iter().map(|n| (s.host_created[n] - sent[n]).as_secs_f64() * 1e3).collect();
                let mut back: Vec<f64> = names
                    .iter()
                    .map(|n| s.virtual_running[n].saturating_duration_since(s.host_running[n]).as_secs_f64() * 1e3)
                    .collect();
                rows.push(format!(
                    "| {rate:.0} pods/s ({count} pods) | {:.1} / {:.1} | {:.1} / {:.1} |",
                    pct(&mut to_host.clone(), 0.5),
                    pct(&mut to_host, 0.99),
                    pct(&mut back.clone(), 0.5),
                    pct(&mut back, 0.99)
                ));
                println!("{}", rows.last().unwrap());
            }
            api.delete_collection(&Default::default(), &ListParams::default()).await.unwrap();
            while !api.list(&ListParams::default().limit(1)).await.unwrap().items.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        rss_rows.push((synced, points));
        for w in watches {
            w.abort();
        }
        drop(m);
        drop(host_server);
    }
    println!();
    println!("| rate | virtual create → host pod, p50 / p99 (ms) | host Running → virtual Running, p50 / p99 (ms) |");
    println!("|---|---:|---:|");
    for r in rows {
        println!("{r}");
    }
    println!();
    println!("| pods | manager RSS with the syncer | without | syncer's share per pod |");
    println!("|---:|---:|---:|---:|");
    let with = &rss_rows[0].1;
    let without = &rss_rows[1].1;
    for (i, (n, rss)) in with.iter().enumerate().skip(1) {
        let (_, rss_off) = without[i];
        let (_, base_on) = with[0];
        let (_, base_off) = without[0];
        let per_pod = ((rss - base_on) as f64 - (rss_off - base_off) as f64) * 1024.0 / *n as f64;
        println!("| {n} | {rss} KiB | {rss_off} KiB | {:.1} KB |", per_pod / 1000.0);
    }
}
