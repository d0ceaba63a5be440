//! The ReplicaSet controller: keeps `spec.replicas` pods from the template, adopting matching
//! orphans, deleting the least valuable extras first (unscheduled, not ready, newest), and
//! reporting replicas, ready and available counts.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::util::{self, Error, Result, Result2};

struct Ctx {
    client: Client,
}

/// Runs the controller until the client's server goes away.
pub async fn run(client: Client) {
    let rs: Api<ReplicaSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    Controller::new(rs, watcher::Config::default())
        .owns(pods, watcher::Config::default())
        .run(reconcile, util::retry, Arc::new(Ctx { client }))
        .for_each(|_| async {})
        .await;
}

/// The pods of a ReplicaSet-like owner: (active, all owned).
pub(crate) async fn owned_pods(
    client: &Client,
    ns: &str,
    owner_uid: &str,
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    adopt: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
) -> Result<Vec<Pod>> {
    let Some(sel) = util::selector_string(selector) else { return Ok(Vec::new()) };
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut out = Vec::new();
    for pod in pods.list(&ListParams::default().labels(&sel)).await?.items {
        match util::controller_uid(&pod.metadata) {
            Some(uid) if uid == owner_uid => out.push(pod),
            Some(_) => {}
            None => {
                // An orphan that matches: adopt it (kube's ControllerRefManager).
                if let Some(owner) = adopt
                    && !util::deleting(&pod)
                {
                    let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
                    refs.push(owner.clone());
                    let patch = json!({"metadata": {"ownerReferences": refs, "uid": pod.metadata.uid}});
                    if let Ok(p) = pods.patch(&pod.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await {
                        out.push(p);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Orders pods from the first to delete to the last (kube's ActivePods ranking, simplified).
pub(crate) fn deletion_order(pods: &mut [Pod]) {
    let rank = |p: &Pod| {
        let scheduled = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some_and(|n| !n.is_empty());
        let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()).unwrap_or(0);
        (scheduled, running, util::ready(p), std::cmp::Reverse(created))
    };
    pods.sort_by_key(rank);
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action> {
    if rs.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = rs.namespace().unwrap_or_default();
    let name = rs.name_any();
    let uid = rs.uid().unwrap_or_default();
    let spec = rs.spec.as_ref().ok_or_else(|| Error::Invalid("no spec".into()))?;
    let owner = util::controller_ref(rs.as_ref());
    let pods = owned_pods(&ctx.client, &ns, &uid, &spec.selector, Some(&owner)).await?;
    let mut active: Vec<Pod> = pods.iter().filter(|p| !util::deleting(p) && !util::terminal(p)).cloned().collect();
    let desired = spec.replicas.unwrap_or(1).max(0) as usize;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    // Creations refused (quota, admission, a ServiceAccount not there yet) are retried soon.
    let mut refused = false;
    if active.len() < desired {
        let template = spec.template.clone().unwrap_or_default();
        let mut meta = template.metadata.clone().unwrap_or_default();
        meta.generate_name = Some(format!("{name}-"));
        meta.namespace = Some(ns.clone());
        meta.owner_references = Some(vec![owner.clone()]);
        let pod = Pod { metadata: meta, spec: template.spec.clone(), status: None };
        for _ in active.len()..desired.min(active.len() + 500) {
            match api.create(&PostParams::default(), &pod).await {
                Ok(p) => active.push(p),
                // Quota or admission said no: try again later, as kube does.
                Err(kube::Error::Api(e)) if e.code == 403 || e.code == 422 => {
                    tracing::debug!(rs = %name, error = %e.message, "pod creation refused");
                    let message = format!("Error creating: {}", e.message);
                    util::warn(&ctx.client, rs.as_ref(), "replicaset-controller", "FailedCreate", &message).await;
                    refused = true;
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
    } else if active.len() > desired {
        deletion_order(&mut active);
        let extra = active.len() - desired;
        for p in active.drain(..extra) {
            match api.delete(&p.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    // Status.
    let min_ready = spec.min_ready_seconds.unwrap_or(0).into();
    let now = jiff::Timestamp::now();
    let mut requeue: Option<Duration> = None;
    let mut available = 0;
    for p in &active {
        match util::available(p, min_ready, now) {
            Result2::Yes => available += 1,
            Result2::After(d) => requeue = Some(requeue.map_or(d, |r| r.min(d))),
            Result2::No => {}
        }
    }
    let template_labels = spec.template.as_ref().and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone());
    let fully_labeled =
        active.iter().filter(|p| template_labels.iter().flatten().all(|(k, v)| p.labels().get(k) == Some(v))).count();
    let status = json!({
        "replicas": active.len(),
        "fullyLabeledReplicas": fully_labeled,
        "readyReplicas": active.iter().filter(|p| util::ready(p)).count(),
        "availableReplicas": available,
        "observedGeneration": rs.metadata.generation,
    });
    let current = vt_apiserver::object::to_value(rs.status.clone().unwrap_or_default()).unwrap_or_default();
    let differs = ["replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas", "observedGeneration"]
        .iter()
        .any(|k| current.get(*k).cloned().unwrap_or(json!(0)) != status[*k].clone());
    if differs {
        let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
        rs_api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await?;
    }
    Ok(match requeue {
        _ if refused => Action::requeue(Duration::from_secs(2)),
        Some(d) => Action::requeue(d + Duration::from_millis(50)),
        None => Action::await_change(),
    })
}
