//! PodDisruptionBudget status (kube's disruption controller): how many selected pods are
//! expected, how many are healthy (Ready and not being deleted), how many must stay healthy,
//! and so how many disruptions are allowed, with the `DisruptionAllowed` condition. An integer
//! `minAvailable` counts the selected pods; `maxUnavailable` and percentages count the replicas
//! the pods' controllers ask for (Deployments through their ReplicaSets, ReplicaSets,
//! StatefulSets, and anything with a scale subresource), as kube does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::util::{self, Result};

struct Ctx {
    client: Client,
}

/// Runs the controller until the client's server goes away.
pub async fn run(client: Client) {
    let pdbs: Api<PodDisruptionBudget> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let controller = Controller::new(pdbs, watcher::Config::default());
    let store = controller.store();
    controller
        .watches(pods, watcher::Config::default(), move |pod: Pod| {
            let ns = pod.namespace();
            let labels = pod.labels().clone();
            store
                .state()
                .iter()
                .filter(|b| b.namespace() == ns)
                .filter(|b| {
                    b.spec
                        .as_ref()
                        .and_then(|s| s.selector.as_ref())
                        .is_some_and(|s| util::selector_matches(s, &labels))
                })
                .map(|b| ObjectRef::from_obj(b.as_ref()))
                .collect::<Vec<_>>()
        })
        .run(reconcile, util::retry, Arc::new(Ctx { client }))
        .for_each(|_| async {})
        .await;
}

/// The replicas the controllers of `pods` ask for; `Err` names a pod without a known
/// controller (kube cannot compute a percentage then either).
async fn expected_from_controllers(client: &Client, ns: &str, pods: &[Pod]) -> std::result::Result<i32, String> {
    let mut seen = BTreeSet::new();
    let mut total = 0;
    for pod in pods {
        let Some(owner) = pod.owner_references().iter().find(|o| o.controller == Some(true)).cloned() else {
            return Err(format!("found no controllers for pod {:?}", pod.name_any()));
        };
        let mut scale_of = (owner.api_version.clone(), owner.kind.clone(), owner.name.clone(), owner.uid.clone());
        // A Deployment's pods belong to it through their ReplicaSet.
        if owner.kind == "ReplicaSet" && owner.api_version == "apps/v1" {
            let rs = Api::<ReplicaSet>::namespaced(client.clone(), ns)
                .get_opt(&owner.name)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(d) = rs.as_ref().and_then(|rs| {
                rs.owner_references().iter().find(|o| o.controller == Some(true) && o.kind == "Deployment").cloned()
            }) {
                scale_of = (d.api_version, d.kind, d.name, d.uid);
            }
        }
        if !seen.insert(scale_of.3.clone()) {
            continue;
        }
        let (api_version, kind, name, _) = scale_of;
        let replicas = match (api_version.as_str(), kind.as_str()) {
            ("apps/v1", "StatefulSet") => Api::<StatefulSet>::namespaced(client.clone(), ns)
                .get_opt(&name)
                .await
                .map_err(|e| e.to_string())?
                .and_then(|s| s.spec.and_then(|s| s.replicas))
                .unwrap_or(1),
            _ => {
                // Everything else through its scale subresource (Deployments, ReplicaSets,
                // ReplicationControllers, custom resources with scale).
                let plural = match kind.as_str() {
                    "Deployment" => "deployments".to_string(),
                    "ReplicaSet" => "replicasets".to_string(),
                    "ReplicationController" => "replicationcontrollers".to_string(),
                    other => {
                        let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
                        let gvk = kube::core::GroupVersionKind::gvk(group, version, other);
                        match kube::discovery::pinned_kind(client, &gvk).await {
                            Ok((ar, _)) => ar.plural,
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                };
                let base = if api_version.contains('/') {
                    format!("/apis/{api_version}")
                } else {
                    format!("/api/{api_version}")
                };
                let req = http::Request::get(format!("{base}/namespaces/{ns}/{plural}/{name}/scale"))
                    .body(Vec::new())
                    .map_err(|e| e.to_string())?;
                let scale: Value = client.request(req).await.map_err(|e| e.to_string())?;
                scale.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0) as i32
            }
        };
        total += replicas;
    }
    Ok(total)
}

/// `value` resolved against `total` (percentages round up, as kube's disruption controller).
fn resolve(value: &IntOrString, total: i32) -> i32 {
    util::int_or_percent(Some(value), total, "0", true)
}

async fn reconcile(pdb: Arc<PodDisruptionBudget>, ctx: Arc<Ctx>) -> Result<Action> {
    if pdb.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = pdb.namespace().unwrap_or_default();
    let name = pdb.name_any();
    let spec = pdb.spec.clone().unwrap_or_default();
    let pods: Vec<Pod> = match spec.selector.as_ref() {
        None => Vec::new(),
        Some(sel) => {
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
            let lp = match util::selector_string(sel) {
                Some(s) => ListParams::default().labels(&s),
                // An empty selector selects every pod of the namespace (policy/v1).
                None => ListParams::default(),
            };
            api.list(&lp).await?.items.into_iter().filter(|p| util::selector_matches(sel, p.labels())).collect()
        }
    };
    let healthy = pods.iter().filter(|p| util::ready(p) && !util::deleting(p)).count() as i32;
    let computed = match (&spec.min_available, &spec.max_unavailable) {
        (Some(IntOrString::Int(min)), None) => Ok((pods.len() as i32, *min)),
        (Some(min @ IntOrString::String(_)), None) => {
            expected_from_controllers(&ctx.client, &ns, &pods).await.map(|expected| (expected, resolve(min, expected)))
        }
        (None, Some(max)) => expected_from_controllers(&ctx.client, &ns, &pods)
            .await
            .map(|expected| (expected, (expected - resolve(max, expected)).max(0))),
        // Neither (or both, which validation refuses): nothing may be disrupted freely.
        _ => Ok((pods.len() as i32, pods.len() as i32)),
    };
    let mut conds: Vec<Value> =
        vt_apiserver::object::to_value(pdb.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default())
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default();
    let (expected, desired, allowed) = match &computed {
        Ok((expected, desired)) => {
            let allowed = if *expected <= 0 { 0 } else { (healthy - desired).max(0) };
            let (status, reason) = if allowed > 0 { ("True", "SufficientPods") } else { ("False", "InsufficientPods") };
            util::set_condition(
                &mut conds,
                "DisruptionAllowed",
                status,
                reason,
                "",
                json!({"observedGeneration": pdb.metadata.generation}),
            );
            (*expected, *desired, allowed)
        }
        Err(e) => {
            util::set_condition(
                &mut conds,
                "DisruptionAllowed",
                "False",
                "SyncFailed",
                e,
                json!({"observedGeneration": pdb.metadata.generation}),
            );
            (0, 0, 0)
        }
    };
    // Disrupted pods that are gone (or were never deleted within kube's two minutes) drop out.
    let live: BTreeMap<String, &Pod> = pods.iter().map(|p| (p.name_any(), p)).collect();
    let cutoff = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(120);
    let disrupted: BTreeMap<String, Value> = pdb
        .status
        .as_ref()
        .and_then(|s| s.disrupted_pods.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|(pod, at)| live.get(pod).is_some_and(|p| !util::deleting(p)) && at.0 > cutoff)
        .map(|(pod, at)| (pod, json!(util::timestamp(at.0))))
        .collect();
    let status = json!({
        "observedGeneration": pdb.metadata.generation,
        "expectedPods": expected,
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "disruptionsAllowed": allowed,
        "conditions": conds,
        "disruptedPods": if disrupted.is_empty() { Value::Null } else { json!(disrupted) },
    });
    let current = vt_apiserver::object::to_value(pdb.status.clone().unwrap_or_default()).unwrap_or_default();
    let differs = status.as_object().into_iter().flatten().any(|(k, v)| {
        let cur = current.get(k).cloned().unwrap_or(Value::Null);
        cur != *v && !(cur.is_null() && (v.as_i64() == Some(0) || v.as_object().is_some_and(|m| m.is_empty())))
    }) || current.get("conditions").is_none();
    if differs {
        let mut status = status;
        if status["disruptedPods"].is_null() && current.get("disruptedPods").is_none() {
            status.as_object_mut().map(|m| m.remove("disruptedPods"));
        }
        let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &ns);
        match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await {
            Ok(_) => {}
            Err(e) if util::gone(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up() {
        assert_eq!(resolve(&IntOrString::String("50%".into()), 3), 2);
        assert_eq!(resolve(&IntOrString::String("10%".into()), 4), 1);
        assert_eq!(resolve(&IntOrString::Int(2), 10), 2);
    }
}
