//! The simulated kubelet: pods bound to simulated nodes "run" (status Running, a pod IP, ready
//! containers), pods that do not restart finish after their simulated run time, and deleted
//! pods are removed once "stopped". Every step is recorded as the pod's log lines.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

use crate::{NodeSim, now};

fn container_names(pod: &Pod, init: bool) -> Vec<(String, String)> {
    let spec = pod.spec.as_ref();
    let list = if init { spec.and_then(|s| s.init_containers.clone()) } else { spec.map(|s| s.containers.clone()) };
    list.unwrap_or_default().into_iter().map(|c| (c.name, c.image.unwrap_or_default())).collect()
}

fn host_ip(node: &str, sim: &NodeSim) -> String {
    let index = sim.node_names().iter().position(|n| n == node).unwrap_or(0);
    format!("10.240.{}.{}", (index / 250) % 250, index % 250 + 1)
}

/// Marks a bound pod Running.
async fn start(sim: &Arc<NodeSim>, pod: &Pod, node: &str) {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let uid = pod.uid().unwrap_or_default();
    let t = now();
    for (c, image) in container_names(pod, true).into_iter().chain(container_names(pod, false)) {
        sim.record(&ns, &name, format!("pulled image {image:?} (simulated)"));
        sim.record(&ns, &name, format!("created container {c}"));
        sim.record(&ns, &name, format!("started container {c}"));
    }
    let init: Vec<Value> = container_names(pod, true)
        .into_iter()
        .map(|(c, image)| {
            json!({"name": c, "image": image, "imageID": format!("simulated://{image}"),
                "containerID": format!("simulated://{uid}/{c}"), "ready": true, "started": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": t, "finishedAt": t,
                    "containerID": format!("simulated://{uid}/{c}")}}})
        })
        .collect();
    let containers: Vec<Value> = container_names(pod, false)
        .into_iter()
        .map(|(c, image)| {
            json!({"name": c, "image": image, "imageID": format!("simulated://{image}"),
                "containerID": format!("simulated://{uid}/{c}"), "ready": true, "started": true, "restartCount": 0,
                "state": {"running": {"startedAt": t}}})
        })
        .collect();
    let ip = sim.pod_ip(node);
    let cond = |ty: &str| json!({"type": ty, "status": "True", "lastTransitionTime": t});
    let status = json!({"status": {
        "phase": "Running",
        "hostIP": host_ip(node, sim),
        "hostIPs": [{"ip": host_ip(node, sim)}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": t,
        "conditions": [cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready"), cond("ContainersReady"), cond("PodScheduled")],
        "initContainerStatuses": if init.is_empty() { Value::Null } else { json!(init) },
        "containerStatuses": containers,
    }});
    let pods: Api<Pod> = Api::namespaced(sim.client(), &ns);
    if let Err(e) = pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(status)).await {
        tracing::debug!(pod = %name, error = %e, "simulated kubelet: status update failed");
    }
}

/// Starts the ephemeral containers (`kubectl debug`) a running pod has no status for yet.
async fn start_ephemeral(sim: &Arc<NodeSim>, pod: &Pod) {
    let spec = pod.spec.as_ref();
    let wanted: Vec<(String, String)> = spec
        .and_then(|s| s.ephemeral_containers.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.name, c.image.unwrap_or_default()))
        .collect();
    let have = pod.status.as_ref().and_then(|s| s.ephemeral_container_statuses.clone()).unwrap_or_default();
    if wanted.iter().all(|(n, _)| have.iter().any(|h| h.name == *n)) {
        return;
    }
    let (ns, name, uid, t) =
        (pod.namespace().unwrap_or_default(), pod.name_any(), pod.uid().unwrap_or_default(), now());
    let mut statuses: Vec<Value> =
        have.iter().map(|h| vt_apiserver::object::to_value(h).unwrap_or(Value::Null)).collect();
    for (c, image) in wanted.iter().filter(|(n, _)| !have.iter().any(|h| h.name == *n)) {
        sim.record(&ns, &name, format!("started ephemeral container {c} ({image:?}, simulated)"));
        statuses.push(json!({"name": c, "image": image, "imageID": format!("simulated://{image}"),
            "containerID": format!("simulated://{uid}/{c}"), "ready": false, "restartCount": 0,
            "state": {"running": {"startedAt": t}}}));
    }
    let pods: Api<Pod> = Api::namespaced(sim.client(), &ns);
    let status = json!({"status": {"ephemeralContainerStatuses": statuses}});
    if let Err(e) = pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(status)).await {
        tracing::debug!(pod = %name, error = %e, "simulated kubelet: ephemeral status update failed");
    }
}

/// Finishes a pod that does not restart, after its simulated run time.
async fn finish(sim: Arc<NodeSim>, pod: Pod) {
    let annotations = pod.annotations().clone();
    let runtime =
        annotations.get("vt.dev/sim-runtime").and_then(|d| d.trim_end_matches('s').parse::<f64>().ok()).unwrap_or(1.0);
    let code: i64 = annotations.get("vt.dev/sim-exit-code").and_then(|c| c.parse().ok()).unwrap_or(0);
    tokio::time::sleep(Duration::from_secs_f64(runtime.clamp(0.0, 3600.0))).await;
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let uid = pod.uid().unwrap_or_default();
    let t = now();
    let reason = if code == 0 { "Completed" } else { "Error" };
    let containers: Vec<Value> = container_names(&pod, false)
        .into_iter()
        .map(|(c, image)| {
            sim.record(&ns, &name, format!("container {c} exited with code {code}"));
            json!({"name": c, "image": image, "imageID": format!("simulated://{image}"),
                "containerID": format!("simulated://{uid}/{c}"), "ready": false, "started": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "reason": reason, "startedAt": t, "finishedAt": t,
                    "containerID": format!("simulated://{uid}/{c}")}}})
        })
        .collect();
    let phase = if code == 0 { "Succeeded" } else { "Failed" };
    let cond = |ty: &str, st: &str| json!({"type": ty, "status": st, "lastTransitionTime": t, "reason": if st == "False" { "PodCompleted" } else { "" }});
    let status = json!({"status": {
        "phase": phase,
        "conditions": [cond("PodReadyToStartContainers", "False"), cond("Initialized", "True"), cond("Ready", "False"),
            cond("ContainersReady", "False"), cond("PodScheduled", "True")],
        "containerStatuses": containers,
    }});
    let pods: Api<Pod> = Api::namespaced(sim.client(), &ns);
    let _ = pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(status)).await;
}

/// Removes a pod being deleted (its containers "stop" at once).
async fn stop(sim: &Arc<NodeSim>, pod: &Pod) {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    for (c, _) in container_names(pod, false) {
        sim.record(&ns, &name, format!("stopping container {c}"));
    }
    let pods: Api<Pod> = Api::namespaced(sim.client(), &ns);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions { uid: pod.uid(), resource_version: None }),
        ..Default::default()
    };
    match pods.delete(&name, &dp).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => tracing::debug!(pod = %name, error = %e, "simulated kubelet: delete failed"),
    }
}

/// Runs the kubelet until the process ends.
pub(crate) async fn run(sim: Arc<NodeSim>) {
    let pods = Api::<Pod>::all(sim.client());
    let mut events = Box::pin(watcher(pods, watcher::Config::default()).default_backoff());
    // Pods this kubelet started (by uid), so a status write does not restart them.
    let mut started: HashSet<String> = HashSet::new();
    while let Some(ev) = events.next().await {
        let Ok(ev) = ev else { continue };
        let (pods, deleted): (Vec<Pod>, bool) = match ev {
            watcher::Event::Apply(p) | watcher::Event::InitApply(p) => (vec![p], false),
            watcher::Event::Delete(p) => (vec![p], true),
            _ => (Vec::new(), false),
        };
        for pod in pods {
            let uid = pod.uid().unwrap_or_default();
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
            if node.is_empty() || !sim.owns(&node) {
                continue;
            }
            if deleted {
                started.remove(&uid);
                sim.forget(&pod.namespace().unwrap_or_default(), &pod.name_any());
                continue;
            }
            if pod.metadata.deletion_timestamp.is_some() {
                stop(&sim, &pod).await;
                continue;
            }
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
            if started.contains(&uid) && phase == "Running" {
                start_ephemeral(&sim, &pod).await;
            }
            if started.contains(&uid) || matches!(phase.as_str(), "Succeeded" | "Failed") {
                continue;
            }
            started.insert(uid);
            if phase != "Running" {
                start(&sim, &pod, &node).await;
            }
            let restarts = pod.spec.as_ref().and_then(|s| s.restart_policy.clone()).unwrap_or_else(|| "Always".into());
            if restarts != "Always" {
                tokio::spawn(finish(sim.clone(), pod));
            }
        }
    }
}
