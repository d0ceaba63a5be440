//! The StatefulSet controller: pods with stable identities `<set>-<ordinal>` (from
//! `ordinals.start`), hostname and subdomain, and PersistentVolumeClaims
//! `<claim>-<set>-<ordinal>` from `volumeClaimTemplates`. `OrderedReady` creates pods in order,
//! each after the previous one is Running and Ready, and removes them in reverse; `Parallel`
//! does both at once. Templates are versioned as ControllerRevisions; `RollingUpdate` replaces
//! pods from the highest ordinal down to `partition`, one at a time once each is ready;
//! `OnDelete` replaces only pods the user deletes. PVCs follow
//! `persistentVolumeClaimRetentionPolicy` (kept by default).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::revisions;
use crate::util::{self, Error, Result, Result2};

/// The revision label of a workload's pods.
pub const REVISION_LABEL: &str = "controller-revision-hash";
const POD_NAME: &str = "statefulset.kubernetes.io/pod-name";
const POD_INDEX: &str = "apps.kubernetes.io/pod-index";

struct Ctx {
    client: Client,
}

/// Runs the controller until the client's server goes away.
pub async fn run(client: Client) {
    let sets: Api<StatefulSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    Controller::new(sets, watcher::Config::default())
        .owns(pods, watcher::Config::default())
        .run(reconcile, util::retry, Arc::new(Ctx { client }))
        .for_each(|_| async {})
        .await;
}

fn ordinal(set: &str, pod: &Pod) -> Option<i32> {
    let name = pod.metadata.name.as_deref()?;
    name.strip_prefix(set)?.strip_prefix('-')?.parse().ok().filter(|o: &i32| *o >= 0)
}

fn claim_name(claim: &str, set: &str, ordinal: i32) -> String {
    format!("{claim}-{set}-{ordinal}")
}

fn healthy(pod: &Pod) -> bool {
    util::phase(pod) == "Running" && util::ready(pod) && !util::deleting(pod)
}

fn new_pod(set: &StatefulSet, ordinal: i32, rev: &ControllerRevision, owner: &OwnerReference) -> Pod {
    let name = set.name_any();
    let ns = set.namespace().unwrap_or_default();
    let spec = set.spec.clone().unwrap_or_default();
    let template = revisions::template_of(rev).or(Some(spec.template.clone()));
    let mut pod = util::pod_from_template(template.as_ref(), &ns, owner);
    let pod_name = format!("{name}-{ordinal}");
    pod.metadata.name = Some(pod_name.clone());
    pod.metadata.generate_name = None;
    let labels = pod.metadata.labels.get_or_insert_default();
    labels.insert(REVISION_LABEL.into(), rev.name_any());
    labels.insert(POD_NAME.into(), pod_name.clone());
    labels.insert(POD_INDEX.into(), ordinal.to_string());
    if let Some(ps) = pod.spec.as_mut() {
        ps.hostname = Some(pod_name);
        if !spec.service_name.as_deref().unwrap_or("").is_empty() {
            ps.subdomain = spec.service_name.clone();
        }
        for claim in spec.volume_claim_templates.iter().flatten() {
            let cname = claim.name_any();
            let volumes = ps.volumes.get_or_insert_default();
            volumes.retain(|v| v.name != cname);
            volumes.push(
                vt_apiserver::object::from_value(json!({"name": cname,
                    "persistentVolumeClaim": {"claimName": claim_name(&cname, &name, ordinal)}}))
                .unwrap_or_default(),
            );
        }
    }
    pod
}

/// Creates the pod's missing claims.
async fn ensure_claims(client: &Client, set: &StatefulSet, ordinal: i32) -> Result<()> {
    let ns = set.namespace().unwrap_or_default();
    let spec = set.spec.clone().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let delete_with_set =
        spec.persistent_volume_claim_retention_policy.as_ref().and_then(|p| p.when_deleted.as_deref())
            == Some("Delete");
    for claim in spec.volume_claim_templates.iter().flatten() {
        let name = claim_name(&claim.name_any(), &set.name_any(), ordinal);
        if api.get_opt(&name).await?.is_some() {
            continue;
        }
        let mut pvc = claim.clone();
        pvc.metadata.name = Some(name);
        pvc.metadata.namespace = Some(ns.clone());
        pvc.metadata.resource_version = None;
        pvc.metadata.uid = None;
        pvc.status = None;
        let labels = pvc.metadata.labels.get_or_insert_default();
        for (k, v) in spec.selector.match_labels.iter().flatten() {
            labels.insert(k.clone(), v.clone());
        }
        if delete_with_set {
            let mut owner = util::controller_ref(set);
            owner.controller = None;
            owner.block_owner_deletion = None;
            pvc.metadata.owner_references = Some(vec![owner]);
        }
        match api.create(&PostParams::default(), &pvc).await {
            Ok(_) => {}
            Err(e) if util::gone(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// With `whenScaled: Delete`, a condemned pod's claims are handed to the pod, so the garbage
/// collector removes them after it.
async fn release_claims(client: &Client, set: &StatefulSet, pod: &Pod, ordinal: i32) -> Result<()> {
    let spec = set.spec.clone().unwrap_or_default();
    let when_scaled = spec.persistent_volume_claim_retention_policy.as_ref().and_then(|p| p.when_scaled.as_deref());
    if when_scaled != Some("Delete") {
        return Ok(());
    }
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &set.namespace().unwrap_or_default());
    for claim in spec.volume_claim_templates.iter().flatten() {
        let name = claim_name(&claim.name_any(), &set.name_any(), ordinal);
        let owner = json!({"apiVersion": "v1", "kind": "Pod", "name": pod.name_any(), "uid": pod.uid()});
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"ownerReferences": [owner]}})))
            .await
        {
            Ok(_) => {}
            Err(e) if util::gone(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action> {
    if set.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = set.namespace().unwrap_or_default();
    let name = set.name_any();
    let spec = set.spec.clone().ok_or_else(|| Error::Invalid("no spec".into()))?;
    let status = set.status.clone().unwrap_or_default();
    let owner = util::controller_ref(set.as_ref());
    let revs = revisions::sync(
        &ctx.client,
        &ns,
        &owner,
        &spec.selector,
        Some(&spec.template),
        status.current_revision.as_deref(),
        status.collision_count.unwrap_or(0),
    )
    .await?;
    let (update, current) = (revs.update.name_any(), revs.current.name_any());
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let pods = crate::replicaset::owned_pods(&ctx.client, &ns, &owner.uid, &spec.selector, Some(&owner)).await?;
    let mut by_ordinal: BTreeMap<i32, &Pod> = BTreeMap::new();
    for p in &pods {
        if let Some(o) = ordinal(&name, p) {
            by_ordinal.insert(o, p);
        }
    }
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0).max(0);
    let range = start..start.saturating_add(replicas);
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let rolling = strategy.type_.as_deref() != Some("OnDelete");
    let partition = strategy.rolling_update.as_ref().and_then(|r| r.partition);
    let revision_of = |p: &Pod| p.labels().get(REVISION_LABEL).cloned().unwrap_or_default();

    // Pods of the current range, in order.
    let mut blocked = false;
    for o in range.clone() {
        if blocked && !parallel {
            break;
        }
        match by_ordinal.get(&o) {
            None => {
                // kube: below the partition (or, without one, below the current replicas)
                // a new pod keeps the current revision.
                let keep_current = rolling
                    && match partition {
                        Some(p) => o < start + p,
                        None => o < start + status.current_replicas.unwrap_or(0),
                    };
                let rev = if keep_current { &revs.current } else { &revs.update };
                ensure_claims(&ctx.client, &set, o).await?;
                match pod_api.create(&PostParams::default(), &new_pod(&set, o, rev, &owner)).await {
                    Ok(_) => {}
                    Err(e) if util::gone(&e) => {}
                    // Refused (quota, admission, a ServiceAccount not there yet): retried soon.
                    Err(kube::Error::Api(e)) if e.code == 403 || e.code == 422 => {
                        return Err(Error::Invalid(format!("statefulset {name}: pod creation refused: {}", e.message)));
                    }
                    Err(e) => return Err(e.into()),
                }
                blocked = true;
            }
            Some(p) if util::phase(p) == "Failed" && !util::deleting(p) => {
                util::delete(&pod_api, &p.name_any(), &DeleteParams::default()).await?;
                blocked = true;
            }
            Some(p) if !healthy(p) => blocked = true,
            Some(_) => {}
        }
    }

    // Pods beyond the range: highest first; one at a time unless Parallel, and only once the
    // rest are healthy.
    let condemned: Vec<(i32, &Pod)> =
        by_ordinal.iter().rev().filter(|(o, _)| !range.contains(o)).map(|(o, p)| (*o, *p)).collect();
    if !blocked || parallel {
        for (o, p) in condemned {
            if util::deleting(p) {
                if !parallel {
                    blocked = true;
                    break;
                }
                continue;
            }
            release_claims(&ctx.client, &set, p, o).await?;
            util::delete(&pod_api, &p.name_any(), &DeleteParams::default()).await?;
            if !parallel {
                blocked = true;
                break;
            }
        }
    }

    // Rolling update: from the highest ordinal down to the partition, one pod at a time.
    if rolling && !blocked {
        let floor = start + partition.unwrap_or(0);
        for o in range.clone().rev().filter(|o| *o >= floor) {
            let Some(p) = by_ordinal.get(&o) else { break };
            if revision_of(p) != update && !util::deleting(p) {
                util::delete(&pod_api, &p.name_any(), &DeleteParams::default()).await?;
                break;
            }
            if !healthy(p) {
                break;
            }
        }
    }

    // Status.
    let live: Vec<&Pod> = pods.iter().filter(|p| !util::deleting(p)).collect();
    let now = jiff::Timestamp::now();
    let min_ready = spec.min_ready_seconds.unwrap_or(0).into();
    let mut requeue = None;
    let mut available = 0;
    for p in &live {
        match util::available(p, min_ready, now) {
            Result2::Yes => available += 1,
            Result2::After(d) => requeue = Some(requeue.map_or(d, |r: Duration| r.min(d))),
            Result2::No => {}
        }
    }
    let ready = live.iter().filter(|p| util::ready(p)).count() as i32;
    let count = live.len() as i32;
    let updated = live.iter().filter(|p| revision_of(p) == update).count() as i32;
    let mut current_name = current.clone();
    let mut current_count = live.iter().filter(|p| revision_of(p) == current).count() as i32;
    if updated == replicas && count == replicas && ready == replicas {
        current_name = update.clone();
        current_count = updated;
    }
    let new_status = json!({
        "observedGeneration": set.metadata.generation,
        "replicas": count,
        "readyReplicas": ready,
        "availableReplicas": available,
        "currentReplicas": current_count,
        "updatedReplicas": updated,
        "currentRevision": current_name,
        "updateRevision": update,
        "collisionCount": revs.collision_count,
    });
    let old = vt_apiserver::object::to_value(&status).unwrap_or_default();
    let differs = new_status.as_object().into_iter().flatten().any(|(k, v)| {
        let cur = old.get(k).cloned().unwrap_or(Value::Null);
        cur != *v && !(cur.is_null() && v.as_i64() == Some(0))
    });
    if differs {
        let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": new_status}))).await?;
    }
    let in_use: BTreeSet<String> = pods.iter().map(revision_of).collect();
    revisions::prune(&ctx.client, &ns, &revs, &in_use, spec.revision_history_limit.unwrap_or(10)).await?;
    Ok(match requeue {
        Some(d) => Action::requeue(d + Duration::from_millis(50)),
        None => Action::await_change(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_parse_only_for_the_set() {
        let pod = |n: &str| Pod {
            metadata: kube::api::ObjectMeta { name: Some(n.into()), ..Default::default() },
            ..Default::default()
        };
        assert_eq!(ordinal("web", &pod("web-0")), Some(0));
        assert_eq!(ordinal("web", &pod("web-12")), Some(12));
        assert_eq!(ordinal("web", &pod("web-x")), None);
        assert_eq!(ordinal("web", &pod("webby-1")), None);
        assert_eq!(ordinal("web", &pod("web--1")), None);
        assert_eq!(claim_name("data", "web", 2), "data-web-2");
    }
}
