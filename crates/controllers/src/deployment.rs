//! The Deployment controller: one ReplicaSet per pod template (named `<deployment>-<hash>`,
//! labelled `pod-template-hash`, annotated with its revision), rolled out by `Recreate` or
//! `RollingUpdate` within `maxSurge`/`maxUnavailable`, paused and resumed, with old
//! ReplicaSets kept up to `revisionHistoryLimit` (so `kubectl rollout undo|history` work), and
//! kube's Available and Progressing conditions (with `progressDeadlineSeconds`).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::util::{self, Error, Result};

const REVISION: &str = "deployment.kubernetes.io/revision";
const HASH: &str = "pod-template-hash";

struct Ctx {
    client: Client,
}

/// Runs the controller until the client's server goes away.
pub async fn run(client: Client) {
    let deployments: Api<Deployment> = Api::all(client.clone());
    let rs: Api<ReplicaSet> = Api::all(client.clone());
    Controller::new(deployments, watcher::Config::default())
        .owns(rs, watcher::Config::default())
        .run(reconcile, util::retry, Arc::new(Ctx { client }))
        .for_each(|_| async {})
        .await;
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations().get(REVISION).and_then(|r| r.parse().ok()).unwrap_or(0)
}

fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (s.replicas, s.ready_replicas.unwrap_or(0), s.available_replicas.unwrap_or(0))
}

/// The template without the hash label and zero values, for comparisons.
fn template_without_hash(t: &Value) -> Value {
    let mut t = t.clone();
    if let Some(l) = t.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        l.remove(HASH);
    }
    util::normalized(&t)
}

async fn scale(api: &Api<ReplicaSet>, rs: &ReplicaSet, to: i32, d: &Deployment) -> Result<()> {
    if replicas(rs) == to {
        return Ok(());
    }
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let patch = json!({
        "metadata": {"annotations": {"deployment.kubernetes.io/desired-replicas": desired.to_string()}},
        "spec": {"replicas": to}
    });
    api.patch(&rs.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await?;
    Ok(())
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action> {
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = d.namespace().unwrap_or_default();
    let name = d.name_any();
    let uid = d.uid().unwrap_or_default();
    let spec = d.spec.clone().ok_or_else(|| Error::Invalid("no spec".into()))?;
    let desired = spec.replicas.unwrap_or(1);
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(sel) = util::selector_string(&spec.selector) else { return Ok(Action::await_change()) };
    let mut all: Vec<ReplicaSet> = Vec::new();
    for rs in rs_api.list(&ListParams::default().labels(&sel)).await?.items {
        match util::controller_uid(&rs.metadata) {
            Some(u) if u == uid => all.push(rs),
            Some(_) => {}
            None if rs.metadata.deletion_timestamp.is_none() => {
                // Adopt an orphaned ReplicaSet that matches.
                let mut refs = rs.metadata.owner_references.clone().unwrap_or_default();
                refs.push(util::controller_ref(d.as_ref()));
                let patch = json!({"metadata": {"ownerReferences": refs, "uid": rs.metadata.uid}});
                if let Ok(r) = rs_api.patch(&rs.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await {
                    all.push(r);
                }
            }
            None => {}
        }
    }
    let template = vt_apiserver::object::to_value(&spec.template).unwrap_or_default();
    let collisions = d.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0);
    let hash = util::template_hash(&template, collisions.into());
    let new_rs = all.iter().find(|rs| {
        let t = rs
            .spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .map(|t| vt_apiserver::object::to_value(t).unwrap_or_default());
        t.is_some_and(|t| template_without_hash(&t) == template_without_hash(&template))
    });
    let max_revision = all.iter().map(revision).max().unwrap_or(0);
    let paused = spec.paused.unwrap_or(false);
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let new_rs = match new_rs {
        Some(rs) => {
            // A template brought back (rollout undo) takes the next revision.
            if revision(rs) < max_revision && !paused {
                let patch = json!({"metadata": {"annotations": {REVISION: (max_revision + 1).to_string()}}});
                Some(rs_api.patch(&rs.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await?)
            } else {
                Some(rs.clone())
            }
        }
        None if paused => None,
        None => {
            let mut tmpl = spec.template.clone();
            let mut meta = tmpl.metadata.clone().unwrap_or_default();
            meta.labels.get_or_insert_with(Default::default).insert(HASH.into(), hash.clone());
            tmpl.metadata = Some(meta.clone());
            let mut selector = spec.selector.clone();
            selector.match_labels.get_or_insert_with(Default::default).insert(HASH.into(), hash.clone());
            let old_total: i32 = all.iter().map(replicas).sum();
            let initial = if recreate || old_total > 0 { 0 } else { desired };
            let mut annotations = d.annotations().clone();
            annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
            annotations.insert(REVISION.into(), (max_revision + 1).to_string());
            annotations.insert("deployment.kubernetes.io/desired-replicas".into(), desired.to_string());
            let rs: ReplicaSet = vt_apiserver::object::from_value(json!({
                "metadata": {
                    "name": format!("{name}-{hash}"),
                    "namespace": ns,
                    "labels": meta.labels,
                    "annotations": annotations,
                    "ownerReferences": [util::controller_ref(d.as_ref())],
                },
                "spec": {
                    "replicas": initial,
                    "minReadySeconds": spec.min_ready_seconds,
                    "selector": selector,
                    "template": tmpl,
                }
            }))
            .map_err(|e| Error::Invalid(e.to_string()))?;
            match rs_api.create(&PostParams::default(), &rs).await {
                Ok(r) => {
                    all.push(r.clone());
                    Some(r)
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    // A ReplicaSet of that name with another template: a hash collision.
                    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
                    api.patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": {"collisionCount": collisions + 1}})),
                    )
                    .await?;
                    return Ok(Action::requeue(Duration::from_millis(10)));
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let new_name = new_rs.as_ref().map(|r| r.name_any());
    let olds: Vec<&ReplicaSet> = all.iter().filter(|r| Some(r.name_any()) != new_name).collect();
    if !paused && let Some(new_rs) = &new_rs {
        if recreate {
            let old_running: i32 = olds.iter().map(|r| replicas(r).max(status_of(r).0)).sum();
            for old in &olds {
                scale(&rs_api, old, 0, &d).await?;
            }
            if old_running == 0 {
                scale(&rs_api, new_rs, desired, &d).await?;
            }
        } else {
            let ru = spec.strategy.as_ref().and_then(|s| s.rolling_update.as_ref());
            let surge = util::int_or_percent(ru.and_then(|r| r.max_surge.as_ref()), desired, "25%", true);
            let mut unavailable =
                util::int_or_percent(ru.and_then(|r| r.max_unavailable.as_ref()), desired, "25%", false);
            if surge == 0 && unavailable == 0 {
                unavailable = 1;
            }
            // Scale the new ReplicaSet up within the surge.
            let total: i32 = all.iter().map(replicas).sum();
            let new_now = replicas(new_rs);
            let target = if new_now >= desired {
                desired
            } else {
                let room = desired + surge - total;
                (new_now + room.max(0)).min(desired)
            };
            if target != new_now {
                scale(&rs_api, new_rs, target, &d).await?;
            }
            // Scale old ReplicaSets down, keeping `desired - maxUnavailable` available.
            let min_available = desired - unavailable;
            // A ReplicaSet's reported availability can lag a scale-down: count at most what it
            // is asked to run, so one pass's removals are not counted twice.
            let available_total: i32 = all.iter().map(|r| status_of(r).2.min(replicas(r))).sum();
            let mut can_remove = (available_total - min_available).max(0);
            let mut olds_sorted: Vec<&ReplicaSet> = olds.iter().copied().filter(|r| replicas(r) > 0).collect();
            olds_sorted.sort_by_key(|r| revision(r));
            // Unavailable old replicas go first: they count against nothing.
            for old in &olds_sorted {
                let (_, _, avail) = status_of(old);
                let unhealthy = (replicas(old) - avail).max(0);
                let remove = unhealthy.min(replicas(old));
                if remove > 0 {
                    scale(&rs_api, old, replicas(old) - remove, &d).await?;
                }
            }
            let olds_now: Vec<ReplicaSet> = rs_api
                .list(&ListParams::default().labels(&sel))
                .await?
                .items
                .into_iter()
                .filter(|r| util::controller_uid(&r.metadata) == Some(uid.as_str()) && Some(r.name_any()) != new_name)
                .collect();
            let mut olds_now: Vec<&ReplicaSet> = olds_now.iter().filter(|r| replicas(r) > 0).collect();
            olds_now.sort_by_key(|r| revision(r));
            for old in olds_now {
                if can_remove == 0 {
                    break;
                }
                let remove = can_remove.min(replicas(old));
                scale(&rs_api, old, replicas(old) - remove, &d).await?;
                can_remove -= remove;
            }
        }
    }
    // Old ReplicaSets beyond the history limit go (scaled-down ones, oldest first).
    let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let mut idle: Vec<&ReplicaSet> = olds.iter().copied().filter(|r| replicas(r) == 0 && status_of(r).0 == 0).collect();
    if idle.len() > limit {
        idle.sort_by_key(|r| revision(r));
        for r in &idle[..idle.len() - limit] {
            match rs_api.delete(&r.name_any(), &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    status(&ctx, &d, &all, new_rs.as_ref(), desired).await
}

async fn status(
    ctx: &Ctx,
    d: &Deployment,
    all: &[ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    desired: i32,
) -> Result<Action> {
    let ns = d.namespace().unwrap_or_default();
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    // Fresh ReplicaSet states (this pass may have scaled them).
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let uid = d.uid().unwrap_or_default();
    let mut fresh = Vec::new();
    for r in all {
        if let Some(x) = rs_api.get_opt(&r.name_any()).await?
            && util::controller_uid(&x.metadata) == Some(uid.as_str())
        {
            fresh.push(x);
        }
    }
    let sum = |f: &dyn Fn(&ReplicaSet) -> i32| fresh.iter().map(f).sum::<i32>();
    let replicas_total = sum(&|r| status_of(r).0);
    let ready = sum(&|r| status_of(r).1);
    let available = sum(&|r| status_of(r).2);
    let new_fresh = new_rs.and_then(|n| fresh.iter().find(|r| r.name_any() == n.name_any()));
    let updated = new_fresh.map(|r| status_of(r).0).unwrap_or(0);
    let spec = d.spec.clone().unwrap_or_default();
    let ru = spec.strategy.as_ref().and_then(|s| s.rolling_update.as_ref());
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let max_unavailable = if recreate {
        0
    } else {
        util::int_or_percent(ru.and_then(|r| r.max_unavailable.as_ref()), desired, "25%", false)
    };
    let now = util::now();
    let old_conditions = d.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let keep = |ty: &str, status: &str, reason: &str, message: String| -> Value {
        let prior = old_conditions.iter().find(|c| c.type_ == ty);
        let transition = match prior {
            Some(c) if c.status == status => {
                c.last_transition_time.as_ref().map(|t| t.0.to_string()).unwrap_or(now.clone())
            }
            _ => now.clone(),
        };
        let update = match prior {
            Some(c) if c.status == status && c.reason.as_deref() == Some(reason) => {
                c.last_update_time.as_ref().map(|t| t.0.to_string()).unwrap_or(now.clone())
            }
            _ => now.clone(),
        };
        json!({"type": ty, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": transition, "lastUpdateTime": update})
    };
    let available_ok = available >= desired - max_unavailable;
    let available_cond = if available_ok {
        keep("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.".into())
    } else {
        keep(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        )
    };
    let new_name = new_rs.map(|r| r.name_any()).unwrap_or_default();
    let complete = updated == desired && replicas_total == desired && available == desired;
    let paused = spec.paused.unwrap_or(false);
    let deadline = spec.progress_deadline_seconds.unwrap_or(600);
    let prior_progress = old_conditions.iter().find(|c| c.type_ == "Progressing");
    let mut requeue = None;
    let progressing = if paused {
        keep("Progressing", "Unknown", "DeploymentPaused", "Deployment is paused".into())
    } else if complete {
        keep(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet {new_name:?} has successfully progressed."),
        )
    } else {
        // Progress is any change in the counts; the deadline runs from the last progress.
        let counts = (replicas_total, updated, ready, available);
        let before = d.status.as_ref().map(|s| {
            (
                s.replicas.unwrap_or(0),
                s.updated_replicas.unwrap_or(0),
                s.ready_replicas.unwrap_or(0),
                s.available_replicas.unwrap_or(0),
            )
        });
        let last = prior_progress.and_then(|c| c.last_update_time.as_ref()).map(|t| t.0);
        let stalled_for = last.map(|t| jiff::Timestamp::now().duration_since(t).as_secs()).unwrap_or(0);
        if before == Some(counts) && stalled_for >= i64::from(deadline) && prior_progress.is_some() {
            keep(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet {new_name:?} has timed out progressing."),
            )
        } else {
            let msg = format!("ReplicaSet {new_name:?} is progressing.");
            let c = if before == Some(counts)
                && prior_progress.is_some_and(|c| c.reason.as_deref() == Some("ReplicaSetUpdated"))
            {
                keep("Progressing", "True", "ReplicaSetUpdated", msg)
            } else {
                json!({"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated", "message": msg,
                    "lastTransitionTime": prior_progress.filter(|c| c.status == "True").and_then(|c| c.last_transition_time.as_ref()).map(|t| t.0.to_string()).unwrap_or(now.clone()),
                    "lastUpdateTime": now.clone()})
            };
            requeue = Some(Duration::from_secs((i64::from(deadline) - stalled_for).max(1) as u64));
            c
        }
    };
    let status = json!({
        "observedGeneration": d.metadata.generation,
        "replicas": replicas_total,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": (desired - available).max(0),
        "conditions": [available_cond, progressing],
    });
    let current = vt_apiserver::object::to_value(d.status.clone().unwrap_or_default()).unwrap_or_default();
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(cs) = v.get_mut("conditions").and_then(Value::as_array_mut) {
            for c in cs {
                if let Some(m) = c.as_object_mut() {
                    m.remove("lastUpdateTime");
                    m.remove("lastTransitionTime");
                }
            }
        }
        for k in ["replicas", "updatedReplicas", "readyReplicas", "availableReplicas", "unavailableReplicas"] {
            if v.get(k).is_none() {
                v[k] = json!(0);
            }
        }
        v.as_object_mut().map(|m| m.remove("collisionCount"));
        v
    };
    if strip(&current) != strip(&status) {
        api.patch_status(&d.name_any(), &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await?;
    }
    // The deployment shows the revision of its new ReplicaSet.
    if let Some(rev) = new_fresh.map(revision).filter(|r| *r > 0)
        && d.annotations().get(REVISION) != Some(&rev.to_string())
    {
        api.patch(
            &d.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {REVISION: rev.to_string()}}})),
        )
        .await?;
    }
    Ok(match requeue {
        Some(r) => Action::requeue(r),
        None => Action::await_change(),
    })
}
