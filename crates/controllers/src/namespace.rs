//! The namespace controller: a namespace being deleted loses its contents — every namespaced
//! resource the cluster serves, custom resources included, found through discovery — then its
//! `kubernetes` finalizer, then itself. While it works it reports kube-controller-manager's
//! conditions: `NamespaceDeletionDiscoveryFailure`, `NamespaceDeletionGroupVersionParsingFailure`,
//! `NamespaceDeletionContentFailure`, `NamespaceContentRemaining` (what is left, by resource)
//! and `NamespaceFinalizersRemaining` (which finalizers hold it). Objects with finalizers keep
//! the namespace until their owners release them, as in kube.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::discovery::{Discovery, Scope, verbs};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::util::{self, Result};

/// The finalizer kube-apiserver puts in every namespace's `spec.finalizers`.
pub const FINALIZER: &str = "kubernetes";

struct Ctx {
    client: Client,
}

/// Runs the controller until the client's server goes away.
pub async fn run(client: Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    Controller::new(namespaces, watcher::Config::default())
        .run(reconcile, util::retry, Arc::new(Ctx { client }))
        .for_each(|_| async {})
        .await;
}

/// What one deletion pass found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Pass {
    /// Discovery failed for these group versions.
    discovery_failures: Vec<String>,
    /// Deletes or lists that failed: `resource: message`.
    content_failures: Vec<String>,
    /// Objects left, by `resource.group`.
    remaining: BTreeMap<String, usize>,
    /// Objects left with finalizers, by finalizer.
    finalizers: BTreeMap<String, usize>,
}

impl Pass {
    /// The namespace's conditions after this pass, as kube's deleter words them.
    pub(crate) fn conditions(&self) -> Vec<(&'static str, bool, &'static str, String)> {
        let join = |m: &BTreeMap<String, usize>| {
            m.iter().map(|(k, n)| format!("{k} has {n} resource instances")).collect::<Vec<_>>().join(", ")
        };
        let finalizers = || {
            self.finalizers.iter().map(|(k, n)| format!("{k} in {n} resource instances")).collect::<Vec<_>>().join(", ")
        };
        vec![
            if self.discovery_failures.is_empty() {
                (
                    "NamespaceDeletionDiscoveryFailure",
                    false,
                    "ResourcesDiscovered",
                    "All resources successfully discovered".into(),
                )
            } else {
                (
                    "NamespaceDeletionDiscoveryFailure",
                    true,
                    "DiscoveryFailed",
                    format!(
                        "Discovery failed for some groups, {} failing: {}",
                        self.discovery_failures.len(),
                        self.discovery_failures.join(", ")
                    ),
                )
            },
            (
                "NamespaceDeletionGroupVersionParsingFailure",
                false,
                "ParsedGroupVersions",
                "All legacy kube types successfully parsed".into(),
            ),
            if self.content_failures.is_empty() {
                (
                    "NamespaceDeletionContentFailure",
                    false,
                    "ContentDeleted",
                    "All content successfully deleted, may be waiting on finalization".into(),
                )
            } else {
                (
                    "NamespaceDeletionContentFailure",
                    true,
                    "ContentDeletionFailed",
                    format!(
                        "Failed to delete all resource types, {} remaining: {}",
                        self.content_failures.len(),
                        self.content_failures.join(", ")
                    ),
                )
            },
            if self.remaining.is_empty() {
                ("NamespaceContentRemaining", false, "ContentRemoved", "All content successfully removed".into())
            } else {
                (
                    "NamespaceContentRemaining",
                    true,
                    "SomeResourcesRemain",
                    format!("Some resources are remaining: {}", join(&self.remaining)),
                )
            },
            if self.finalizers.is_empty() {
                (
                    "NamespaceFinalizersRemaining",
                    false,
                    "ContentHasNoFinalizers",
                    "All content-preserving finalizers finished".into(),
                )
            } else {
                (
                    "NamespaceFinalizersRemaining",
                    true,
                    "SomeFinalizersRemain",
                    format!("Some content in the namespace has finalizers remaining: {}", finalizers()),
                )
            },
        ]
    }

    fn done(&self) -> bool {
        self.discovery_failures.is_empty() && self.content_failures.is_empty() && self.remaining.is_empty()
    }
}

/// Deletes everything in `ns` once, and counts what is left.
async fn delete_contents(client: &Client, ns: &str) -> Pass {
    let mut pass = Pass::default();
    let discovery = match Discovery::new(client.clone()).run().await {
        Ok(d) => d,
        Err(e) => {
            pass.discovery_failures.push(e.to_string());
            return pass;
        }
    };
    for group in discovery.groups() {
        // Only the preferred version of each group: every version is the same storage.
        for (ar, caps) in group.recommended_resources() {
            if caps.scope != Scope::Namespaced || !caps.supports_operation(verbs::LIST) {
                continue;
            }
            // Events are listed and deleted like everything else; subresources never appear here.
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
            let label = if ar.group.is_empty() { ar.plural.clone() } else { format!("{}.{}", ar.plural, ar.group) };
            let dp = DeleteParams::background();
            if caps.supports_operation(verbs::DELETE_COLLECTION)
                && let Err(e) = api.delete_collection(&dp, &ListParams::default()).await
                && !matches!(&e, kube::Error::Api(s) if s.code == 404 || s.code == 405)
            {
                pass.content_failures.push(format!("{label}: {e}"));
            }
            let items = match api.list_metadata(&ListParams::default()).await {
                Ok(l) => l.items,
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 405 => continue,
                Err(e) => {
                    pass.content_failures.push(format!("{label}: {e}"));
                    continue;
                }
            };
            for item in &items {
                if item.metadata.deletion_timestamp.is_none() && caps.supports_operation(verbs::DELETE) {
                    match api.delete(&item.name_any(), &dp).await {
                        Ok(_) => {}
                        Err(e) if util::gone(&e) => {}
                        Err(e) => pass.content_failures.push(format!("{label}: {e}")),
                    }
                }
                for f in item.metadata.finalizers.iter().flatten() {
                    *pass.finalizers.entry(f.clone()).or_default() += 1;
                }
            }
            if !items.is_empty() {
                pass.remaining.insert(label, items.len());
            }
        }
    }
    pass
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action> {
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let pass = delete_contents(&ctx.client, &name).await;

    // Conditions, kept when unchanged (lastTransitionTime moves only when the status does).
    let mut conds: Vec<Value> = ns
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| vt_apiserver::object::to_value(c).ok())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    let before = conds.clone();
    for (ty, status, reason, message) in pass.conditions() {
        util::set_condition(&mut conds, ty, if status { "True" } else { "False" }, reason, &message, json!({}));
    }
    if conds != before {
        let patch = json!({"status": {"phase": "Terminating", "conditions": conds}});
        match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch)).await {
            Ok(_) => {}
            Err(e) if util::gone(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    if !pass.done() {
        // Content goes away through other controllers (kubelets, finalizers): look again soon,
        // backing off while finalizers hold it. Only terminating namespaces are ever requeued.
        let wait = if pass.finalizers.is_empty() { 500 } else { 2_000 };
        return Ok(Action::requeue(Duration::from_millis(wait)));
    }

    // Empty: drop our finalizer, then delete the namespace for good.
    let current = match api.get_opt(&name).await? {
        Some(n) => n,
        None => return Ok(Action::await_change()),
    };
    let finalizers = current.spec.as_ref().and_then(|s| s.finalizers.clone()).unwrap_or_default();
    if finalizers.iter().any(|f| f == FINALIZER) {
        let mut next = current.clone();
        next.spec.get_or_insert_default().finalizers =
            Some(finalizers.into_iter().filter(|f| f != FINALIZER).collect());
        let data = serde_json::to_vec(&next).map_err(|e| util::Error::Invalid(e.to_string()))?;
        let req = http::Request::put(format!("/api/v1/namespaces/{name}/finalize"))
            .header("content-type", "application/json")
            .body(data)
            .map_err(|e| util::Error::Invalid(e.to_string()))?;
        match ctx.client.request::<Namespace>(req).await {
            Ok(_) => {}
            Err(e) if util::gone(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    let pre = DeleteParams {
        preconditions: current.uid().map(|uid| kube::api::Preconditions { uid: Some(uid), resource_version: None }),
        ..Default::default()
    };
    match api.delete(&name, &pre).await {
        Ok(_) => {}
        Err(e) if util::gone(&e) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_name_what_remains() {
        let pass = Pass {
            remaining: BTreeMap::from([("pods".into(), 2), ("widgets.example.com".into(), 1)]),
            finalizers: BTreeMap::from([("example.com/hold".into(), 1)]),
            ..Default::default()
        };
        let conds = pass.conditions();
        let find = |t: &str| conds.iter().find(|c| c.0 == t).unwrap().clone();
        assert!(!find("NamespaceDeletionDiscoveryFailure").1);
        let remaining = find("NamespaceContentRemaining");
        assert!(remaining.1);
        assert_eq!(remaining.2, "SomeResourcesRemain");
        assert_eq!(
            remaining.3,
            "Some resources are remaining: pods has 2 resource instances, widgets.example.com has 1 resource instances"
        );
        let fins = find("NamespaceFinalizersRemaining");
        assert_eq!(
            fins.3,
            "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
        );
        assert!(!pass.done());
        let empty = Pass::default();
        assert!(empty.done());
        assert!(empty.conditions().iter().all(|c| !c.1));
    }
}
