//! ControllerRevisions: the template history of StatefulSets and DaemonSets, as kube keeps it.
//! Each revision's `data` is the strategic-merge patch that restores its template
//! (`{"spec":{"template":{…,"$patch":"replace"}}}`), so `kubectl rollout history|undo` work on
//! them unchanged; it is named `<owner>-<hash>` and numbered by `revision`.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::util::{self, Result};

/// The label carrying a revision's hash.
pub const HASH_LABEL: &str = "controller.kubernetes.io/hash";

/// A workload's revisions.
pub struct Revisions {
    /// The revision pods are updated to (the current template).
    pub update: ControllerRevision,
    /// The revision the workload last completed (`status.currentRevision`).
    pub current: ControllerRevision,
    /// All revisions the workload owns.
    pub all: Vec<ControllerRevision>,
    /// Hash collisions met so far (`status.collisionCount`).
    pub collision_count: i32,
}

/// The `data` of a revision of `template`.
pub fn data_of(template: Option<&PodTemplateSpec>) -> Value {
    let mut t = vt_apiserver::object::to_value(template.cloned().unwrap_or_default()).unwrap_or_default();
    if let Some(m) = t.as_object_mut() {
        m.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The template a revision restores.
pub fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Some(m) = t.as_object_mut() {
        m.remove("$patch");
    }
    vt_apiserver::object::from_value(t).ok()
}

fn same(a: &Value, b: &Value) -> bool {
    util::normalized(a) == util::normalized(b)
}

/// Finds or creates the revision of `template` for `owner`, adopting nothing that another
/// controller owns; returns the workload's revisions.
#[allow(clippy::too_many_arguments)]
pub async fn sync(
    client: &Client,
    ns: &str,
    owner: &OwnerReference,
    selector: &LabelSelector,
    template: Option<&PodTemplateSpec>,
    current_name: Option<&str>,
    mut collision_count: i32,
) -> Result<Revisions> {
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), ns);
    let mut all: Vec<ControllerRevision> = match util::selector_string(selector) {
        Some(sel) => api
            .list(&ListParams::default().labels(&sel))
            .await?
            .items
            .into_iter()
            .filter(|r| util::controller_uid(&r.metadata) == Some(owner.uid.as_str()))
            .collect(),
        None => Vec::new(),
    };
    all.sort_by_key(|r| r.revision);
    let data = data_of(template);
    let max = all.iter().map(|r| r.revision).max().unwrap_or(0);
    let update = match all.iter().position(|r| r.data.as_ref().is_some_and(|d| same(&d.0, &data))) {
        // A template brought back (rollout undo) becomes the newest revision again.
        Some(i) if all[i].revision < max => {
            let patch = json!({"revision": max + 1});
            let r = api.patch(&all[i].name_any(), &PatchParams::default(), &Patch::Merge(patch)).await?;
            all[i] = r.clone();
            r
        }
        Some(i) => all[i].clone(),
        None => loop {
            let hash = util::template_hash(&data, collision_count.into());
            let mut labels =
                template.and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone()).unwrap_or_default();
            labels.insert(HASH_LABEL.into(), hash.clone());
            let rev = ControllerRevision {
                metadata: ObjectMeta {
                    name: Some(format!("{}-{hash}", owner.name)),
                    namespace: Some(ns.into()),
                    labels: Some(labels),
                    owner_references: Some(vec![owner.clone()]),
                    ..Default::default()
                },
                data: Some(RawExtension(data.clone())),
                revision: max + 1,
            };
            match api.create(&PostParams::default(), &rev).await {
                Ok(r) => {
                    all.push(r.clone());
                    break r;
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    let existing = api.get(&format!("{}-{hash}", owner.name)).await?;
                    if util::controller_uid(&existing.metadata) == Some(owner.uid.as_str())
                        && existing.data.as_ref().is_some_and(|d| same(&d.0, &data))
                    {
                        all.push(existing.clone());
                        break existing;
                    }
                    // A different revision holds the name: kube's collision count.
                    collision_count += 1;
                }
                Err(e) => return Err(e.into()),
            }
        },
    };
    let current = current_name.and_then(|n| all.iter().find(|r| r.name_any() == n)).cloned().unwrap_or(update.clone());
    Ok(Revisions { update, current, all, collision_count })
}

/// Deletes the oldest revisions beyond `limit` that no pod and neither status revision uses.
pub async fn prune(client: &Client, ns: &str, revs: &Revisions, live: &BTreeSet<String>, limit: i32) -> Result<()> {
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), ns);
    let keep = |r: &ControllerRevision| {
        let name = r.name_any();
        name == revs.update.name_any() || name == revs.current.name_any() || live.contains(&name)
    };
    let mut old: Vec<&ControllerRevision> = revs.all.iter().filter(|r| !keep(r)).collect();
    let limit = limit.max(0) as usize;
    if old.len() <= limit {
        return Ok(());
    }
    old.sort_by_key(|r| r.revision);
    let extra = old.len() - limit;
    for r in old.into_iter().take(extra) {
        match api.delete(&r.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if util::gone(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
