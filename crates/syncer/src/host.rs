//! The host side, shared by every tenant of a manager: one watch per kind on the host (pods,
//! claims and events of all tenants, nodes), so a thousand tenants cost the host a handful of
//! watches, not thousands. Changes are handed to the tenant whose host namespace they are in
//! (nodes to every tenant: each decides whether the node is in its pool).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Node, PersistentVolumeClaim, Pod};
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::mpsc;

use crate::TENANT_LABEL;

/// A change on the host that concerns a tenant.
#[derive(Clone, Debug)]
pub enum HostChange {
    /// A host pod changed or went away: the virtual pod (namespace, name) it stands for.
    Pod(Option<(String, String)>),
    /// A node changed or went away.
    Node(String),
    /// A host claim changed or went away: the virtual claim it stands for.
    Claim(Option<(String, String)>),
    /// A host event in the tenant's namespace.
    Event(Arc<Event>),
    /// The host watches (re)started: everything may have changed.
    Resync,
}

/// The shared view of the host.
pub struct Host {
    /// The host cluster.
    pub client: Client,
    /// The host cluster, for streams (no read timeout).
    pub streams: Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    claims: Store<PersistentVolumeClaim>,
    subscribers: RwLock<HashMap<String, mpsc::UnboundedSender<HostChange>>>,
    tasks: std::sync::Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Drop for Host {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            t.abort();
        }
    }
}

impl Host {
    /// Starts watching `client`'s cluster; pods' streams go through `streams` (a client
    /// without a read timeout), or `client`.
    pub fn start(client: Client, streams: Option<Client>) -> Arc<Host> {
        let (pods, pods_w) = reflector::store();
        let (nodes, nodes_w) = reflector::store();
        let (claims, claims_w) = reflector::store();
        let host = Arc::new(Host {
            client: client.clone(),
            streams: streams.unwrap_or_else(|| client.clone()),
            pods,
            nodes,
            claims,
            subscribers: RwLock::new(HashMap::new()),
            tasks: std::sync::Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&host);
        let tenants = watcher::Config::default().labels(TENANT_LABEL);
        let mut tasks = vec![
            {
                let weak = weak.clone();
                let stream = reflector::reflector(
                    pods_w,
                    watcher(Api::<Pod>::all(client.clone()), tenants.clone()).modify(trim_pod),
                );
                tokio::spawn(follow(stream, weak, |p: &Pod| {
                    (p.namespace(), Some(HostChange::Pod(crate::tenant::identity(p))))
                }))
            },
            {
                let weak = weak.clone();
                let stream = reflector::reflector(
                    claims_w,
                    watcher(Api::<PersistentVolumeClaim>::all(client.clone()), tenants)
                        .modify(|c: &mut PersistentVolumeClaim| c.metadata.managed_fields = None),
                );
                tokio::spawn(follow(stream, weak, |c: &PersistentVolumeClaim| {
                    (c.namespace(), Some(HostChange::Claim(crate::tenant::identity(c))))
                }))
            },
            {
                let weak = weak.clone();
                let stream =
                    reflector::reflector(nodes_w, watcher(Api::<Node>::all(client.clone()), Default::default()));
                tokio::spawn(follow(stream, weak, |n: &Node| (None, Some(HostChange::Node(n.name_any())))))
            },
            {
                let weak = weak.clone();
                let stream = watcher(Api::<Event>::all(client), watcher::Config::default());
                tokio::spawn(follow(stream, weak, |e: &Event| {
                    let about_pod = e.involved_object.kind.as_deref() == Some("Pod");
                    (e.namespace(), about_pod.then(|| HostChange::Event(Arc::new(e.clone()))))
                }))
            },
        ];
        host.tasks.lock().unwrap_or_else(|p| p.into_inner()).extend(tasks.drain(..).map(|t| t.abort_handle()));
        host
    }

    /// Registers the tenant whose host namespace is `namespace`.
    pub fn subscribe(&self, namespace: &str) -> mpsc::UnboundedReceiver<HostChange> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribers.write().unwrap_or_else(|p| p.into_inner()).insert(namespace.to_string(), tx);
        rx
    }

    /// Forgets a tenant.
    pub fn unsubscribe(&self, namespace: &str) {
        self.subscribers.write().unwrap_or_else(|p| p.into_inner()).remove(namespace);
    }

    fn send(&self, namespace: Option<&str>, change: HostChange) {
        let subs = self.subscribers.read().unwrap_or_else(|p| p.into_inner());
        match namespace {
            Some(ns) => {
                if let Some(tx) = subs.get(ns) {
                    let _ = tx.send(change);
                }
            }
            None => {
                for tx in subs.values() {
                    let _ = tx.send(change.clone());
                }
            }
        }
    }

    /// Waits until the host's pods and nodes are listed.
    pub async fn ready(&self) {
        let _ = self.pods.wait_until_ready().await;
        let _ = self.nodes.wait_until_ready().await;
        let _ = self.claims.wait_until_ready().await;
    }

    /// A host pod of a tenant.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        self.pods.get(&ObjectRef::new(name).within(namespace))
    }

    /// The host pods of a tenant.
    pub fn pods_in(&self, namespace: &str) -> Vec<Arc<Pod>> {
        self.pods.state().into_iter().filter(|p| p.meta().namespace.as_deref() == Some(namespace)).collect()
    }

    /// A host claim of a tenant.
    pub fn claim(&self, namespace: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
        self.claims.get(&ObjectRef::new(name).within(namespace))
    }

    /// A node.
    pub fn node(&self, name: &str) -> Option<Arc<Node>> {
        self.nodes.get(&ObjectRef::new(name))
    }

    /// Every node.
    pub fn nodes(&self) -> Vec<Arc<Node>> {
        self.nodes.state()
    }
}

/// What the syncer reads of a host pod: its identity, labels, annotations and deletion, its
/// node and images, its status. The rest of the spec (volumes, env, affinity) and the managed
/// fields are dropped before caching: a host pod costs its status, not its whole object.
fn trim_pod(p: &mut Pod) {
    p.metadata.managed_fields = None;
    if let Some(spec) = p.spec.take() {
        p.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            node_name: spec.node_name,
            containers: spec
                .containers
                .into_iter()
                .map(|c| k8s_openapi::api::core::v1::Container { name: c.name, image: c.image, ..Default::default() })
                .collect(),
            ..Default::default()
        });
    }
}

/// Follows one watch, telling the subscribers what changed.
async fn follow<K, S>(
    stream: S,
    host: std::sync::Weak<Host>,
    route: impl Fn(&K) -> (Option<String>, Option<HostChange>),
) where
    K: Resource + Clone + std::fmt::Debug + Send + Sync + 'static,
    S: futures::Stream<Item = watcher::Result<watcher::Event<K>>> + Send,
{
    let mut stream = Box::pin(stream.default_backoff());
    while let Some(ev) = stream.next().await {
        let Some(host) = host.upgrade() else { return };
        match ev {
            Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o) | watcher::Event::InitApply(o)) => {
                if let (ns, Some(change)) = route(&o) {
                    host.send(ns.as_deref(), change);
                }
            }
            Ok(watcher::Event::InitDone) => host.send(None, HostChange::Resync),
            Ok(watcher::Event::Init) | Err(_) => {}
        }
    }
}
