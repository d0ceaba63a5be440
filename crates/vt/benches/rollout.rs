//! Workload controllers benchmark: the release `vt apiserver --controllers` with simulated
//! nodes (scheduler and kubelet included), driven through kube-rs as a tenant would.
//!
//! `cargo bench -p vt --bench rollout` prints the time from creating a 100-replica Deployment
//! to all 100 replicas Available, and from `set image` to the rolling update's completion
//! (maxSurge/maxUnavailable 25%), over several rounds (p50 and max).

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use vt_testkit::VtServer;

const REPLICAS: i32 = 100;
const ROUNDS: usize = 5;

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run());
}

fn deployment(name: &str, image: &str) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": image}]}}
        }
    }))
    .unwrap()
}

/// Waits until the Deployment reports every replica updated and available.
async fn until_complete(api: &Api<Deployment>, name: &str) {
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = Box::pin(watcher(api.clone(), cfg).applied_objects());
    while let Some(d) = stream.try_next().await.unwrap() {
        let generation = d.metadata.generation;
        let s = d.status.unwrap_or_default();
        if s.observed_generation == generation
            && s.updated_replicas == Some(REPLICAS)
            && s.available_replicas == Some(REPLICAS)
            && s.replicas == Some(REPLICAS)
        {
            return;
        }
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn run() {
    let server =
        VtServer::start(std::path::Path::new(env!("CARGO_BIN_EXE_vt")), &["--controllers", "--simulate-nodes", "10"]);
    let kc = kube::config::Kubeconfig::read_from(&server.kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    let client = kube::Client::try_from(cfg).unwrap();
    let ns = Namespace {
        metadata: kube::api::ObjectMeta { name: Some("bench".into()), ..Default::default() },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
    let api: Api<Deployment> = Api::namespaced(client.clone(), "bench");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "bench");
    let (mut create_ms, mut update_ms) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let name = format!("web-{round}");
        let t0 = Instant::now();
        api.create(&PostParams::default(), &deployment(&name, "nginx:1.27")).await.unwrap();
        until_complete(&api, &name).await;
        create_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        let t1 = Instant::now();
        let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.28"}]}}}});
        api.patch(&name, &PatchParams::default(), &Patch::Strategic(patch)).await.unwrap();
        until_complete(&api, &name).await;
        update_ms.push(t1.elapsed().as_secs_f64() * 1e3);
        println!(
            "round {round}: 0 → {REPLICAS} available in {:.0} ms, rolling update in {:.0} ms",
            create_ms[round], update_ms[round]
        );
        api.delete(&name, &DeleteParams::background()).await.unwrap();
        let label = format!("app={name}");
        loop {
            if pods.list(&ListParams::default().labels(&label)).await.unwrap().items.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    println!();
    println!("| measure ({REPLICAS} replicas, 10 simulated nodes, {ROUNDS} rounds) | p50 (ms) | max (ms) |");
    println!("|---|---:|---:|");
    println!("| create → all available | {:.0} | {:.0} |", pct(&mut create_ms.clone(), 0.5), pct(&mut create_ms, 1.0));
    println!(
        "| set image → rolling update complete | {:.0} | {:.0} |",
        pct(&mut update_ms.clone(), 0.5),
        pct(&mut update_ms, 1.0)
    );
}
