//! Pod garbage collection for pods whose node is gone (kube's PodGC `gcOrphaned`): when a node
//! is deleted — and once at start, for nodes deleted while the controller was away — every pod
//! still bound to it is marked `Failed` with a `DisruptionTarget` condition
//! (`DeletionByPodGC`) and deleted at once (grace period 0): no kubelet is left to finish it.
//! Driven by the node watch alone; a cluster whose nodes do not change costs nothing.

use std::collections::BTreeSet;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::util;

/// Runs the collector until the client's server goes away.
pub async fn run(client: Client) {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut events = Box::pin(watcher(nodes, watcher::Config::default().any_semantic()).default_backoff());
    // Names seen during a (re)list: after it, pods bound elsewhere are orphans.
    let mut listing: Option<BTreeSet<String>> = None;
    while let Some(ev) = events.next().await {
        match ev {
            Ok(watcher::Event::Init) => listing = Some(BTreeSet::new()),
            Ok(watcher::Event::InitApply(n)) => {
                if let Some(l) = listing.as_mut() {
                    l.insert(n.name_any());
                }
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(live) = listing.take() {
                    sweep(&client, None, &live).await;
                }
            }
            Ok(watcher::Event::Delete(n)) => sweep(&client, Some(&n.name_any()), &BTreeSet::new()).await,
            Ok(watcher::Event::Apply(_)) | Err(_) => {}
        }
    }
}

/// Deletes the pods bound to `node` (or, with `None`, to any node not in `live`), checking
/// each node once more against the API server so a node that came back keeps its pods.
async fn sweep(client: &Client, node: Option<&str>, live: &BTreeSet<String>) {
    let pods: Api<Pod> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let lp = match node {
        Some(n) => ListParams::default().fields(&format!("spec.nodeName={n}")),
        None => ListParams::default(),
    };
    let Ok(list) = pods.list(&lp).await else { return };
    let mut confirmed_gone: BTreeSet<String> = BTreeSet::new();
    for pod in list.items {
        let Some(bound) = pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()) else {
            continue;
        };
        if live.contains(&bound) {
            continue;
        }
        if !confirmed_gone.contains(&bound) {
            match nodes.get_opt(&bound).await {
                Ok(None) => {
                    confirmed_gone.insert(bound.clone());
                }
                _ => continue,
            }
        }
        collect(client, &pod).await;
    }
}

/// Marks one orphaned pod failed, then force-deletes it.
async fn collect(client: &Client, pod: &Pod) {
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let name = pod.name_any();
    if !util::terminal(pod) {
        let now = util::now();
        let status = json!({"status": {"phase": "Failed", "conditions": [{"type": "DisruptionTarget", "status": "True",
            "reason": "DeletionByPodGC", "message": "PodGC: node no longer exists", "lastTransitionTime": now}]}});
        // A strategic merge keeps the pod's other conditions (merged by type).
        if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(status)).await
            && !util::gone(&e)
        {
            tracing::debug!(pod = %name, error = %e, "could not mark an orphaned pod failed");
        }
    }
    match api.delete(&name, &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::background() }).await {
        Ok(_) => tracing::info!(namespace = %ns, pod = %name, "deleted a pod whose node no longer exists"),
        Err(e) if util::gone(&e) => {}
        Err(e) => tracing::debug!(pod = %name, error = %e, "could not delete an orphaned pod"),
    }
}
