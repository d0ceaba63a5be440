//! The garbage collector: ownerReferences across the workload kinds and what pods use. When an
//! owner goes, dependents whose owners are all gone are deleted (background propagation);
//! an owner deleted with `foregroundDeletion` waits until its dependents are gone; one deleted
//! with `orphan` leaves them, without the reference. Dependents whose owner does not exist
//! (dangling references, owners of any kind, custom resources included) are deleted too.

use std::collections::{BTreeSet, HashMap};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{GroupVersionKind, PartialObjectMeta};
use kube::discovery::ApiResource;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde_json::json;
use tokio::sync::mpsc;

/// One object of the graph.
#[derive(Clone, Debug)]
struct Node {
    resource: ApiResource,
    namespace: Option<String>,
    name: String,
    owners: Vec<OwnerReference>,
    finalizers: Vec<String>,
    deleting: bool,
}

enum Event {
    Apply(String, Box<Node>),
    Delete(String),
}

fn resource_of<K: Resource<DynamicType = ()>>() -> ApiResource {
    ApiResource::erase::<K>(&())
}

/// Aborts the watch tasks when the collector stops.
struct Watches(Vec<tokio::task::AbortHandle>);

impl Drop for Watches {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Follows one kind's metadata into the graph's event channel.
fn follow<K>(client: Client, tx: mpsc::UnboundedSender<Event>) -> tokio::task::AbortHandle
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    let ar = resource_of::<K>();
    let task = tokio::spawn(async move {
        let api: Api<PartialObjectMeta<K>> = Api::all(client);
        let mut stream = Box::pin(watcher(api, watcher::Config::default()).default_backoff());
        while let Some(ev) = stream.next().await {
            let Ok(ev) = ev else { continue };
            let (objs, deleted): (Vec<PartialObjectMeta<K>>, bool) = match ev {
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) => (vec![o], false),
                watcher::Event::Delete(o) => (vec![o], true),
                _ => (Vec::new(), false),
            };
            for o in objs {
                let m = o.metadata;
                let Some(uid) = m.uid.clone() else { continue };
                let sent = if deleted {
                    tx.send(Event::Delete(uid))
                } else {
                    tx.send(Event::Apply(
                        uid,
                        Box::new(Node {
                            resource: ar.clone(),
                            namespace: m.namespace.clone(),
                            name: m.name.clone().unwrap_or_default(),
                            owners: m.owner_references.clone().unwrap_or_default(),
                            finalizers: m.finalizers.clone().unwrap_or_default(),
                            deleting: m.deletion_timestamp.is_some(),
                        }),
                    ))
                };
                if sent.is_err() {
                    return;
                }
            }
        }
    });
    task.abort_handle()
}

struct Collector {
    client: Client,
    nodes: HashMap<String, Node>,
    /// owner uid → dependent uids.
    dependents: HashMap<String, BTreeSet<String>>,
}

impl Collector {
    fn api(&self, resource: &ApiResource, ns: Option<&str>) -> Api<DynamicObject> {
        match ns {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, resource),
            None => Api::all_with(self.client.clone(), resource),
        }
    }

    /// Whether an owner exists (from the graph, or asking the API server for kinds it does
    /// not follow, such as custom resources).
    async fn owner_exists(&self, owner: &OwnerReference, ns: Option<&str>) -> bool {
        if self.nodes.contains_key(&owner.uid) {
            return true;
        }
        let (group, version) = match owner.api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), owner.api_version.clone()),
        };
        let gvk = GroupVersionKind::gvk(&group, &version, &owner.kind);
        let Ok((ar, caps)) = kube::discovery::pinned_kind(&self.client, &gvk).await else {
            // An unknown kind: never delete on a guess.
            return true;
        };
        let scope_ns = if caps.scope == kube::discovery::Scope::Namespaced { ns } else { None };
        match self.api(&ar, scope_ns).get_metadata_opt(&owner.name).await {
            Ok(Some(o)) => o.metadata.uid.as_deref() == Some(owner.uid.as_str()),
            Ok(None) => false,
            Err(_) => true,
        }
    }

    async fn set_finalizers(&self, node: &Node, finalizers: Vec<String>) {
        let finalizers = if finalizers.is_empty() { serde_json::Value::Null } else { json!(finalizers) };
        let patch = json!({"metadata": {"finalizers": finalizers}});
        let _ = self
            .api(&node.resource, node.namespace.as_deref())
            .patch(&node.name, &PatchParams::default(), &Patch::Merge(patch))
            .await;
    }

    async fn set_owners(&self, node: &Node, owners: Vec<OwnerReference>) {
        // No owners left: the field goes (null in a merge patch), as Go's omitempty shows it.
        let owners = if owners.is_empty() { serde_json::Value::Null } else { json!(owners) };
        let patch = json!({"metadata": {"ownerReferences": owners}});
        let _ = self
            .api(&node.resource, node.namespace.as_deref())
            .patch(&node.name, &PatchParams::default(), &Patch::Merge(patch))
            .await;
    }

    /// A dependent whose owners may be gone: delete it if none remains, drop dangling
    /// references otherwise.
    async fn check_dependent(&self, uid: &str) {
        let Some(node) = self.nodes.get(uid).cloned() else { return };
        if node.owners.is_empty() || node.deleting {
            return;
        }
        let mut alive = Vec::new();
        for o in &node.owners {
            if self.owner_exists(o, node.namespace.as_deref()).await {
                alive.push(o.clone());
            }
        }
        if alive.len() == node.owners.len() {
            return;
        }
        // The graph may be behind the dependent (an orphaning owner has just removed its
        // reference): before acting, decide again on the dependent as it is now, as kube's
        // collector does, and delete only that version of it.
        let api = self.api(&node.resource, node.namespace.as_deref());
        let Ok(Some(live)) = api.get_metadata_opt(&node.name).await else { return };
        if live.metadata.uid.as_deref() != Some(uid) || live.metadata.deletion_timestamp.is_some() {
            return;
        }
        let owners = live.metadata.owner_references.clone().unwrap_or_default();
        if owners.is_empty() {
            return;
        }
        let mut alive = Vec::new();
        for o in &owners {
            if self.owner_exists(o, node.namespace.as_deref()).await {
                alive.push(o.clone());
            }
        }
        if alive.is_empty() {
            let dp = DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: live.metadata.uid.clone(),
                    resource_version: live.metadata.resource_version.clone(),
                }),
                ..DeleteParams::background()
            };
            match api.delete(&node.name, &dp).await {
                Ok(_) => tracing::debug!(kind = %node.resource.kind, name = %node.name, "garbage collected"),
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => tracing::debug!(error = %e, "garbage collection delete failed"),
            }
        } else if alive.len() < owners.len() {
            self.set_owners(&node, alive).await;
        }
    }

    /// An owner being deleted with the `orphan` or `foregroundDeletion` finalizer.
    async fn finalize_owner(&self, uid: &str) {
        let Some(node) = self.nodes.get(uid).cloned() else { return };
        if !node.deleting {
            return;
        }
        let deps: Vec<Node> =
            self.dependents.get(uid).into_iter().flatten().filter_map(|d| self.nodes.get(d).cloned()).collect();
        if node.finalizers.iter().any(|f| f == "orphan") {
            for d in &deps {
                let owners: Vec<OwnerReference> = d.owners.iter().filter(|o| o.uid != uid).cloned().collect();
                self.set_owners(d, owners).await;
            }
            let rest = node.finalizers.iter().filter(|f| *f != "orphan").cloned().collect();
            self.set_finalizers(&node, rest).await;
        } else if node.finalizers.iter().any(|f| f == "foregroundDeletion") {
            let blocking: Vec<&Node> = deps.iter().filter(|d| d.owners.iter().any(|o| o.uid == uid)).collect();
            if blocking.is_empty() {
                let rest = node.finalizers.iter().filter(|f| *f != "foregroundDeletion").cloned().collect();
                self.set_finalizers(&node, rest).await;
            } else {
                for d in blocking {
                    if !d.deleting {
                        // Dependents go in the foreground too, so theirs go first.
                        let dp = DeleteParams::foreground();
                        let _ = self.api(&d.resource, d.namespace.as_deref()).delete(&d.name, &dp).await;
                    }
                }
            }
        }
    }

    fn insert(&mut self, uid: String, node: Node) {
        if let Some(old) = self.nodes.get(&uid) {
            for o in &old.owners {
                if let Some(s) = self.dependents.get_mut(&o.uid) {
                    s.remove(&uid);
                }
            }
        }
        for o in &node.owners {
            self.dependents.entry(o.uid.clone()).or_default().insert(uid.clone());
        }
        self.nodes.insert(uid, node);
    }

    fn remove(&mut self, uid: &str) -> Option<Node> {
        let node = self.nodes.remove(uid)?;
        for o in &node.owners {
            if let Some(s) = self.dependents.get_mut(&o.uid) {
                s.remove(uid);
                if s.is_empty() {
                    self.dependents.remove(&o.uid);
                }
            }
        }
        Some(node)
    }

    async fn handle(&mut self, ev: Event) {
        match ev {
            Event::Apply(uid, node) => {
                let has_owners = !node.owners.is_empty();
                let owner_finalizing =
                    node.deleting && node.finalizers.iter().any(|f| f == "orphan" || f == "foregroundDeletion");
                let owners = node.owners.clone();
                self.insert(uid.clone(), *node);
                if owner_finalizing {
                    self.finalize_owner(&uid).await;
                }
                if has_owners {
                    self.check_dependent(&uid).await;
                    // A dependent that changed may unblock an owner in foreground deletion.
                    for o in owners {
                        self.finalize_owner(&o.uid).await;
                    }
                }
            }
            Event::Delete(uid) => {
                let Some(gone) = self.remove(&uid) else { return };
                for d in self.dependents.get(&uid).cloned().unwrap_or_default() {
                    self.check_dependent(&d).await;
                }
                for o in gone.owners {
                    self.finalize_owner(&o.uid).await;
                }
            }
        }
    }
}

/// Runs the collector until the client's server goes away.
pub async fn run(client: Client) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _watches = Watches(vec![
        follow::<Pod>(client.clone(), tx.clone()),
        follow::<ReplicaSet>(client.clone(), tx.clone()),
        follow::<Deployment>(client.clone(), tx.clone()),
        follow::<StatefulSet>(client.clone(), tx.clone()),
        follow::<DaemonSet>(client.clone(), tx.clone()),
        follow::<ControllerRevision>(client.clone(), tx.clone()),
        follow::<Job>(client.clone(), tx.clone()),
        follow::<CronJob>(client.clone(), tx.clone()),
        follow::<Service>(client.clone(), tx.clone()),
        follow::<Endpoints>(client.clone(), tx.clone()),
        follow::<EndpointSlice>(client.clone(), tx.clone()),
        follow::<ConfigMap>(client.clone(), tx.clone()),
        follow::<Secret>(client.clone(), tx.clone()),
        follow::<PersistentVolumeClaim>(client.clone(), tx.clone()),
        follow::<ServiceAccount>(client.clone(), tx),
    ]);
    let mut gc = Collector { client, nodes: HashMap::new(), dependents: HashMap::new() };
    while let Some(ev) = rx.recv().await {
        gc.handle(ev).await;
    }
}
