//! One tenant's syncer: watches of the virtual cluster (in process), the host changes routed to
//! it by [`Host`], and one work queue whose keys are reconciled at most once at a time, a few
//! keys in parallel.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Namespace, Node, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::cache::PodCache;
use crate::host::{Host, HostChange};
use crate::queue::Queue;
use crate::translate::{References, Target};

/// How many keys of one tenant are reconciled at once.
const PARALLEL: usize = 8;
/// How often everything is checked again even without a change (missed events, drift).
const RESYNC: Duration = Duration::from_secs(300);

/// What the queue works on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    /// A virtual pod (namespace, name) and its host copy.
    Pod(String, String),
    /// A node of the tenant's pool, as the tenant sees it.
    Node(String),
    /// A virtual Service and its host copy.
    Service(String, String),
    /// The Endpoints of a selector-less virtual Service.
    Endpoints(String, String),
    /// A ConfigMap (`false`) or Secret (`true`) some synced pod uses.
    Data(bool, String, String),
    /// A virtual claim some synced pod uses.
    Claim(String, String),
    /// A virtual NetworkPolicy and its host copy.
    Policy(String, String),
    /// A virtual Ingress and its host copy.
    Ingress(String, String),
    /// The tenant's copies of the host's classes.
    Classes,
    /// Everything: orphans on the host, unused copies.
    Sweep,
}

/// Errors of one reconcile (logged, then retried).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// An API call failed.
    #[error("{0}")]
    Kube(#[from] kube::Error),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

pub(crate) type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A bounded label for metrics: the Kubernetes Status reason of an API error, `Transport`
    /// for a request that got no answer, `Other` for the rest.
    pub(crate) fn reason(&self) -> &'static str {
        const REASONS: [&str; 13] = [
            "Conflict",
            "AlreadyExists",
            "NotFound",
            "Forbidden",
            "Unauthorized",
            "Invalid",
            "BadRequest",
            "TooManyRequests",
            "ServiceUnavailable",
            "InternalError",
            "Timeout",
            "Gone",
            "Expired",
        ];
        match self {
            Error::Kube(kube::Error::Api(s)) => REASONS.iter().find(|r| **r == s.reason).copied().unwrap_or("Other"),
            Error::Kube(kube::Error::HyperError(_) | kube::Error::Service(_)) => "Transport",
            _ => "Other",
        }
    }
}

impl Key {
    /// The kind of work, for metrics.
    fn kind(&self) -> &'static str {
        match self {
            Key::Pod(..) => "pod",
            Key::Node(_) => "node",
            Key::Service(..) => "service",
            Key::Endpoints(..) => "endpoints",
            Key::Data(..) => "data",
            Key::Claim(..) => "claim",
            Key::Policy(..) => "networkpolicy",
            Key::Ingress(..) => "ingress",
            Key::Classes => "classes",
            Key::Sweep => "sweep",
        }
    }
}

/// Whether an API error means "already gone" or "already there".
pub(crate) fn gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 || s.code == 409)
}

/// `r`, with "already gone" (see [`gone`]) counted as done.
pub(crate) fn unless_gone<T>(r: kube::Result<T>) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if gone(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Which data objects synced pods use.
#[derive(Default)]
pub(crate) struct Uses {
    /// Each synced pod's references.
    pub by_pod: HashMap<(String, String), References>,
    /// How many synced pods use each (secret?, namespace, name).
    pub users: HashMap<(bool, String, String), usize>,
}

impl Uses {
    /// Records a pod's references; returns the data objects no pod uses any more.
    pub fn set(&mut self, pod: (String, String), refs: Option<References>) -> Vec<(bool, String, String)> {
        let ns = pod.0.clone();
        let keys = |r: &References| -> Vec<(bool, String, String)> {
            r.configmaps
                .iter()
                .map(|n| (false, ns.clone(), n.clone()))
                .chain(r.secrets.iter().map(|n| (true, ns.clone(), n.clone())))
                .collect()
        };
        let old = match refs {
            Some(r) => {
                let added = keys(&r);
                let old = self.by_pod.insert(pod, r);
                for k in added {
                    *self.users.entry(k).or_default() += 1;
                }
                old
            }
            None => self.by_pod.remove(&pod),
        };
        let mut unused = Vec::new();
        for k in old.as_ref().map(keys).unwrap_or_default() {
            if let Some(n) = self.users.get_mut(&k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.users.remove(&k);
                    unused.push(k);
                }
            }
        }
        unused
    }

    /// Whether any synced pod uses the data object.
    pub fn used(&self, key: &(bool, String, String)) -> bool {
        self.users.contains_key(key)
    }

    /// Whether any synced pod uses the claim.
    pub fn claim_used(&self, ns: &str, name: &str) -> bool {
        self.by_pod.iter().any(|((pns, _), r)| pns == ns && r.claims.contains(name))
    }
}

/// One tenant's syncer.
pub struct Tenant {
    pub(crate) target: Target,
    pub(crate) host: Arc<Host>,
    /// The tenant's own API server (in process).
    pub(crate) virt: Client,
    pub(crate) pods: Arc<PodCache>,
    pub(crate) services: Store<Service>,
    pub(crate) policies: Store<NetworkPolicy>,
    pub(crate) ingresses: Store<Ingress>,
    pub(crate) namespaces: Store<Namespace>,
    pub(crate) queue: Arc<Queue<Key>>,
    pub(crate) uses: Mutex<Uses>,
    /// When each synced pod's token must be minted again.
    pub(crate) token_due: Mutex<HashMap<(String, String), jiff::Timestamp>>,
    /// Refusals already reported (pod uid → message), so each is reported once.
    pub(crate) refused: Mutex<HashMap<String, String>>,
    /// A digest of the last state written per target (`pod/<namespace>/<name>`, `node/<name>`): what was
    /// written once is not written again, even if the API server normalizes it on the way in,
    /// so a write never echoes into another.
    pub(crate) written: Mutex<HashMap<String, u64>>,
}

/// A running syncer; it stops when dropped.
pub struct Handle {
    tenant: Arc<Tenant>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.tenant.host.unsubscribe(&self.tenant.target.namespace);
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Handle {
    /// The tenant's syncer state (tests and the manager's metrics read it).
    pub fn tenant(&self) -> &Arc<Tenant> {
        &self.tenant
    }
}

/// Follows a virtual kind: each change queues a key (no object cache unless `store` is given).
fn follow<K>(
    api: Api<K>,
    store: Option<reflector::store::Writer<K>>,
    queue: Weak<Queue<Key>>,
    key: impl Fn(&K) -> Option<Key> + Send + 'static,
    mut also: impl FnMut(&watcher::Event<K>) + Send + 'static,
) -> tokio::task::AbortHandle
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    tokio::spawn(async move {
        // Managed fields are never read here and are most of a busy object's size.
        let events = watcher(api, watcher::Config::default()).modify(|o: &mut K| o.meta_mut().managed_fields = None);
        let mut events: futures::stream::BoxStream<'static, watcher::Result<watcher::Event<K>>> = match store {
            Some(w) => Box::pin(reflector::reflector(w, events).default_backoff()),
            None => Box::pin(events.default_backoff()),
        };
        while let Some(ev) = events.next().await {
            let Some(q) = queue.upgrade() else { return };
            let Ok(ev) = ev else { continue };
            also(&ev);
            if let watcher::Event::Apply(o) | watcher::Event::Delete(o) | watcher::Event::InitApply(o) = &ev
                && let Some(k) = key(o)
            {
                q.add(k);
            }
        }
    })
    .abort_handle()
}

/// Follows virtual pods into a [`PodCache`] — identity, labels, annotations, deletion, node,
/// service account, images, phase and whether the pod ran — so a synced pod costs a compact
/// record, not its whole object (the rest is read from the virtual API server, in process,
/// when a pod is created on the host or its status written).
fn follow_pods(
    api: Api<Pod>,
    cache: Arc<PodCache>,
    queue: Weak<Queue<Key>>,
    key: impl Fn(&Pod) -> Option<Key> + Send + 'static,
) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        let mut events = Box::pin(watcher(api, watcher::Config::default()).default_backoff());
        while let Some(ev) = events.next().await {
            let Ok(ev) = ev else { continue };
            cache.handle(&ev);
            let Some(q) = queue.upgrade() else { return };
            if let watcher::Event::Apply(o) | watcher::Event::Delete(o) | watcher::Event::InitApply(o) = &ev
                && let Some(k) = key(o)
            {
                q.add(k);
            }
        }
    })
    .abort_handle()
}

fn ns_name<K: kube::Resource>(o: &K) -> (String, String) {
    (o.meta().namespace.clone().unwrap_or_default(), o.meta().name.clone().unwrap_or_default())
}

/// Starts syncing `virt` (the tenant's API server) into `target` on `host`.
pub fn start(host: Arc<Host>, virt: Client, target: Target) -> Handle {
    let pods = Arc::new(PodCache::default());
    let (services, services_w) = reflector::store();
    let (policies, policies_w) = reflector::store();
    let (ingresses, ingresses_w) = reflector::store();
    let (namespaces, namespaces_w) = reflector::store();
    let (queue, rx) = Queue::new();
    let mut host_rx = host.subscribe(&target.namespace, &target.pool);
    let tenant = Arc::new(Tenant {
        target,
        host,
        virt: virt.clone(),
        pods: pods.clone(),
        services,
        policies,
        ingresses,
        namespaces,
        queue: queue.clone(),
        uses: Mutex::new(Uses::default()),
        token_due: Mutex::new(HashMap::new()),
        refused: Mutex::new(HashMap::new()),
        written: Mutex::new(HashMap::new()),
    });
    let q = Arc::downgrade(&queue);
    // The tenant's DNS zone follows its Services and Endpoints as the watches deliver them.
    let zone = tenant.host.zone(&tenant.target.namespace);
    zone.set_api(vt_net::parse(&tenant.target.api_host).into_iter().collect());
    let (services_zone, endpoints_zone) = (zone.clone(), zone);
    let mut services_feed = crate::dns::Feed::default();
    let mut endpoints_feed = crate::dns::Feed::default();
    let mut tasks = vec![
        follow_pods(Api::<Pod>::all(virt.clone()), pods, q.clone(), |p| {
            let (ns, n) = ns_name(p);
            Some(Key::Pod(ns, n))
        }),
        follow(
            Api::<Service>::all(virt.clone()),
            Some(services_w),
            q.clone(),
            |s| {
                let (ns, n) = ns_name(s);
                Some(Key::Service(ns, n))
            },
            move |ev| services_feed.services(&services_zone, ev),
        ),
        follow(
            Api::<Endpoints>::all(virt.clone()),
            None,
            q.clone(),
            |e| {
                let (ns, n) = ns_name(e);
                Some(Key::Endpoints(ns, n))
            },
            move |ev| endpoints_feed.endpoints(&endpoints_zone, ev),
        ),
        follow(
            Api::<ConfigMap>::all(virt.clone()),
            None,
            q.clone(),
            |c| {
                let (ns, n) = ns_name(c);
                Some(Key::Data(false, ns, n))
            },
            |_| {},
        ),
        follow(
            Api::<Secret>::all(virt.clone()),
            None,
            q.clone(),
            |s| {
                let (ns, n) = ns_name(s);
                Some(Key::Data(true, ns, n))
            },
            |_| {},
        ),
        follow(
            Api::<PersistentVolumeClaim>::all(virt.clone()),
            None,
            q.clone(),
            |c| {
                let (ns, n) = ns_name(c);
                Some(Key::Claim(ns, n))
            },
            |_| {},
        ),
        follow(Api::<Node>::all(virt.clone()), None, q.clone(), |n| Some(Key::Node(n.name_any())), |_| {}),
        follow(
            Api::<NetworkPolicy>::all(virt.clone()),
            Some(policies_w),
            q.clone(),
            |p| {
                let (ns, n) = ns_name(p);
                Some(Key::Policy(ns, n))
            },
            |_| {},
        ),
        follow(
            Api::<Ingress>::all(virt.clone()),
            Some(ingresses_w),
            q.clone(),
            |i| {
                let (ns, n) = ns_name(i);
                Some(Key::Ingress(ns, n))
            },
            |_| {},
        ),
        {
            // Namespaces' labels decide what namespace selectors match: any change re-translates
            // the policies.
            let weak = Arc::downgrade(&tenant);
            follow(
                Api::<Namespace>::all(virt),
                Some(namespaces_w),
                q.clone(),
                |_| None,
                move |ev| {
                    if matches!(ev, watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone)
                        && let Some(t) = weak.upgrade()
                    {
                        t.requeue_policies();
                    }
                },
            )
        },
    ];
    // The host's classes are shown from the start (later, as they change).
    tenant.queue.add(Key::Classes);
    // Host changes of this tenant.
    let weak = Arc::downgrade(&tenant);
    tasks.push(
        tokio::spawn(async move {
            while let Some(change) = host_rx.recv().await {
                let Some(t) = weak.upgrade() else { return };
                match change {
                    HostChange::Pod((ns, n)) => t.queue.add(Key::Pod(ns, n)),
                    HostChange::Claim((ns, n)) => t.queue.add(Key::Claim(ns, n)),
                    HostChange::Ingress((ns, n)) => t.queue.add(Key::Ingress(ns, n)),
                    HostChange::Classes => t.queue.add(Key::Classes),
                    HostChange::Node(name) => t.queue.add(Key::Node(name)),
                    HostChange::Event(ev) => t.clone().mirror_event(ev),
                    HostChange::Resync => t.resync(),
                }
            }
        })
        .abort_handle(),
    );
    // The worker.
    let weak = Arc::downgrade(&tenant);
    tasks.push(
        tokio::spawn(async move {
            tokio_stream(rx)
                .for_each_concurrent(PARALLEL, |key| {
                    let weak = weak.clone();
                    async move {
                        let Some(t) = weak.upgrade() else { return };
                        t.queue.start(&key);
                        let started = std::time::Instant::now();
                        let result = t.reconcile(&key).await;
                        if let Some(o) = t.host.observer() {
                            let error = result.as_ref().err().map(Error::reason);
                            o.synced(&t.target.tenant, key.kind(), started.elapsed(), error);
                        }
                        if let Err(e) = result {
                            tracing::debug!(tenant = %t.target.tenant, ?key, error = %e, "sync failed; retrying");
                            t.queue.add_after(key.clone(), Duration::from_secs(1));
                        }
                        t.queue.done(&key);
                        if let Some(o) = t.host.observer() {
                            o.queue_depth(&t.target.tenant, t.queue.waiting());
                        }
                    }
                })
                .await;
        })
        .abort_handle(),
    );
    // Periodic resync.
    let weak = Arc::downgrade(&tenant);
    tasks.push(
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + RESYNC, RESYNC);
            loop {
                tick.tick().await;
                let Some(t) = weak.upgrade() else { return };
                t.resync();
            }
        })
        .abort_handle(),
    );
    Handle { tenant, tasks }
}

fn digest(v: &Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.to_string().hash(&mut h);
    h.finish()
}

fn tokio_stream<T: Send + 'static>(mut rx: tokio::sync::mpsc::UnboundedReceiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The virtual (namespace, name) a host object stands for.
pub(crate) fn identity<K: kube::Resource>(o: &K) -> Option<(String, String)> {
    let a = o.meta().annotations.as_ref()?;
    Some((a.get(crate::NAMESPACE_ANNOTATION)?.clone(), a.get(crate::NAME_ANNOTATION)?.clone()))
}

impl Tenant {
    /// Whether `state` differs from what was last written to `target`.
    pub(crate) fn unwritten(&self, target: &str, state: &Value) -> bool {
        self.written.lock().unwrap_or_else(|p| p.into_inner()).get(target) != Some(&digest(state))
    }

    /// Records that `state` was written to `target`.
    pub(crate) fn wrote(&self, target: &str, state: &Value) {
        self.written.lock().unwrap_or_else(|p| p.into_inner()).insert(target.to_string(), digest(state));
    }

    /// Forgets what was written to `target` (it is gone).
    pub(crate) fn forget_written(&self, target: &str) {
        self.written.lock().unwrap_or_else(|p| p.into_inner()).remove(target);
    }

    /// Queues everything the syncer knows of.
    pub(crate) fn resync(&self) {
        for p in self.pods.list(None) {
            let (ns, n) = ns_name(p.as_ref());
            self.queue.add(Key::Pod(ns, n));
        }
        for s in self.services.state() {
            let (ns, n) = ns_name(s.as_ref());
            self.queue.add(Key::Service(ns, n));
        }
        self.requeue_policies();
        self.queue.add(Key::Classes);
        for i in self.ingresses.state() {
            self.queue.add(Key::Ingress(i.namespace().unwrap_or_default(), i.name_any()));
        }
        // The pool's nodes (nodes that left it were dealt with when they left, or, after a
        // restart, when the virtual nodes were listed).
        for n in self.host.nodes() {
            if n.labels().get(crate::POOL_LABEL) == Some(&self.target.pool) {
                self.queue.add(Key::Node(n.name_any()));
            }
        }
        self.queue.add(Key::Sweep);
    }

    async fn reconcile(self: &Arc<Self>, key: &Key) -> Result<()> {
        match key {
            Key::Pod(ns, name) => self.sync_pod(ns, name).await,
            Key::Node(name) => self.sync_node(name).await,
            Key::Service(ns, name) => self.sync_service(ns, name).await,
            Key::Endpoints(ns, name) => self.sync_endpoints(ns, name).await,
            Key::Data(secret, ns, name) => self.sync_data(*secret, ns, name).await,
            Key::Claim(ns, name) => self.sync_claim(ns, name).await,
            Key::Policy(ns, name) => self.sync_policy(ns, name).await,
            Key::Ingress(ns, name) => self.sync_ingress(ns, name).await,
            Key::Classes => self.sync_classes().await,
            Key::Sweep => self.sweep().await,
        }
    }

    /// The nodes of the tenant's pool.
    pub(crate) fn pool_nodes(&self) -> BTreeSet<String> {
        self.host.nodes().iter().filter(|n| self.target.owns_labels(n.labels())).map(|n| n.name_any()).collect()
    }

    /// A virtual pod from the cache.
    pub(crate) fn virtual_pod(&self, ns: &str, name: &str) -> Option<Arc<Pod>> {
        self.pods.get(ns, name)
    }

    /// The virtual Services of a namespace.
    pub(crate) fn services_in(&self, ns: &str) -> Vec<Value> {
        self.services
            .state()
            .iter()
            .filter(|s| s.namespace().as_deref() == Some(ns))
            .filter_map(|s| vt_apiserver::object::to_value(s.as_ref()).ok())
            .collect()
    }

    /// Records a Warning event about a virtual object (once per message).
    pub(crate) async fn warn(&self, involved: Value, reason: &str, message: &str) {
        let ns = involved["namespace"].as_str().unwrap_or("default").to_string();
        let name = involved["name"].as_str().unwrap_or("").to_string();
        let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let id = crate::names::hash(&[involved["uid"].as_str().unwrap_or(""), reason, message]);
        let ev = json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": format!("{name}.{id}"), "namespace": ns},
            "involvedObject": involved, "reason": reason, "message": message, "type": "Warning",
            "source": {"component": "vt-syncer"}, "reportingComponent": "vt-syncer", "count": 1,
            "firstTimestamp": now, "lastTimestamp": now});
        let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(self.virt.clone(), &ns);
        match vt_apiserver::object::from_value(ev) {
            Ok(ev) => match api.create(&PostParams::default(), &ev).await {
                Ok(_) => {}
                Err(e) if gone(&e) => {}
                Err(e) => tracing::debug!(error = %e, "could not record an event"),
            },
            Err(e) => tracing::debug!(error = %e, "could not build an event"),
        }
    }

    /// Deletes a host object of this tenant, if it is there.
    pub(crate) async fn delete_host<K>(&self, name: &str, dp: &DeleteParams) -> Result<()>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned,
    {
        let api: Api<K> = Api::namespaced(self.host.client.clone(), &self.target.namespace);
        match api.delete(name, dp).await {
            Ok(_) => Ok(()),
            Err(e) if gone(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
