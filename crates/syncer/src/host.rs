//! The host side, shared by every tenant of a manager: one watch per kind on the host (pods,
//! claims and events of all tenants, nodes), so a thousand tenants cost the host a handful of
//! watches, not thousands. Changes are handed to the tenant whose host namespace they are in
//! (nodes to every tenant: each decides whether the node is in its pool).

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Node, PersistentVolumeClaim, Pod, PodStatus};
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::mpsc;

use crate::TENANT_LABEL;
use crate::cache::PodCache;

/// A change on the host that concerns a tenant.
#[derive(Clone, Debug)]
pub enum HostChange {
    /// A host pod changed or went away: the virtual pod (namespace, name) it stands for (host
    /// pods without a virtual identity are not the syncer's and are not told).
    Pod((String, String)),
    /// A node of the tenant's pool changed, left the pool or went away.
    Node(String),
    /// A host claim changed or went away: the virtual claim it stands for.
    Claim((String, String)),
    /// A host Ingress changed (its load balancer status): the virtual Ingress.
    Ingress((String, String)),
    /// The host's classes (StorageClasses, IngressClasses, ...) changed.
    Classes,
    /// A host event in the tenant's namespace.
    Event(Arc<Event>),
    /// The host watches (re)started: everything may have changed.
    Resync,
}

/// Where a host change goes.
enum Delivery {
    /// To the tenant of a host namespace.
    Tenant(String, HostChange),
    /// A node as the watch saw it, with its pool (`None`: gone or in no pool): to the tenants
    /// of that pool and of the pool it was in.
    Node(String, Option<String>),
}

/// A tenant listening to the host.
struct Subscriber {
    pool: String,
    tx: mpsc::UnboundedSender<HostChange>,
}

/// The shared view of the host.
pub struct Host {
    /// The host cluster.
    pub client: Client,
    /// The host cluster, for streams (no read timeout).
    pub streams: Client,
    pods: Arc<PodCache>,
    /// Host pods' latest statuses not yet brought back to their tenants, by (namespace, name):
    /// the pod cache itself holds no status, so a synced pod costs its status only while it is
    /// on its way.
    statuses: Arc<std::sync::Mutex<HashMap<(String, String), PodStatus>>>,
    nodes: Store<Node>,
    claims: Store<PersistentVolumeClaim>,
    /// Each tenant's channel and node pool, by host namespace.
    subscribers: RwLock<HashMap<String, Subscriber>>,
    /// The pool each node was last seen in, so a node leaving a pool reaches that pool's
    /// tenants too.
    node_pools: std::sync::Mutex<HashMap<String, String>>,
    tasks: std::sync::Mutex<Vec<tokio::task::AbortHandle>>,
    /// Told of every reconcile (the manager's metrics), once set.
    observer: std::sync::OnceLock<Arc<dyn crate::SyncObserver>>,
    /// The host's Service IP ranges (tenants' Endpoints may not point into them).
    service_ranges: std::sync::RwLock<vt_net::CidrSet>,
    /// The host cluster's pod (and node) ranges: tenants' NetworkPolicy ip blocks never reach
    /// into them.
    cluster_ranges: std::sync::RwLock<vt_net::CidrSet>,
    /// Which tenant's host pod has which address (the DNS server's attribution).
    addresses: Arc<std::sync::RwLock<PodAddresses>>,
    /// Each tenant's cluster DNS zone, by host namespace.
    zones: RwLock<HashMap<String, Arc<vt_dns::Zone>>>,
    /// The host's classes (StorageClasses, IngressClasses, ...), by plural, as JSON.
    classes: Arc<std::sync::RwLock<HashMap<&'static str, BTreeMap<String, Value>>>>,
}

/// The addresses of the tenants' host pods: address → host namespace, and each pod's addresses
/// (so a pod that changes address, or goes, takes its old ones with it). A re-list rebuilds it
/// whole, so nothing a missed deletion left behind survives.
#[derive(Default)]
pub(crate) struct PodAddresses {
    by_ip: HashMap<std::net::IpAddr, String>,
    by_pod: HashMap<(String, String), Vec<std::net::IpAddr>>,
    /// The pods of a re-list under way.
    relist: Option<HashMap<(String, String), Vec<std::net::IpAddr>>>,
}

fn pod_addresses(p: &Pod) -> Vec<std::net::IpAddr> {
    let status = p.status.as_ref();
    let mut ips: Vec<std::net::IpAddr> = status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| vt_net::parse(&i.ip).ok())
        .chain(status.and_then(|s| s.pod_ip.as_deref()).and_then(|i| vt_net::parse(i).ok()))
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

impl PodAddresses {
    fn set(&mut self, key: (String, String), ips: Vec<std::net::IpAddr>) {
        if let Some(old) = self.by_pod.remove(&key) {
            for ip in old {
                if self.by_ip.get(&ip) == Some(&key.0) {
                    self.by_ip.remove(&ip);
                }
            }
        }
        if ips.is_empty() {
            return;
        }
        for ip in &ips {
            self.by_ip.insert(*ip, key.0.clone());
        }
        self.by_pod.insert(key, ips);
    }

    fn handle(&mut self, ev: &watcher::Event<Pod>) {
        let key = |p: &Pod| (p.namespace().unwrap_or_default(), p.name_any());
        match ev {
            watcher::Event::Apply(p) => self.set(key(p), pod_addresses(p)),
            watcher::Event::Delete(p) => self.set(key(p), Vec::new()),
            watcher::Event::Init => self.relist = Some(HashMap::new()),
            watcher::Event::InitApply(p) => {
                if let Some(r) = self.relist.as_mut() {
                    r.insert(key(p), pod_addresses(p));
                }
            }
            watcher::Event::InitDone => {
                if let Some(pods) = self.relist.take() {
                    self.by_ip.clear();
                    self.by_pod.clear();
                    for (k, ips) in pods {
                        self.set(k, ips);
                    }
                }
            }
        }
    }
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
        let pods = Arc::new(PodCache::default());
        let (nodes, nodes_w) = reflector::store();
        let (claims, claims_w) = reflector::store();
        let statuses: Arc<std::sync::Mutex<HashMap<(String, String), PodStatus>>> = Arc::default();
        let host = Arc::new(Host {
            client: client.clone(),
            streams: streams.unwrap_or_else(|| client.clone()),
            pods: pods.clone(),
            statuses: statuses.clone(),
            nodes,
            claims,
            subscribers: RwLock::new(HashMap::new()),
            node_pools: std::sync::Mutex::new(HashMap::new()),
            tasks: std::sync::Mutex::new(Vec::new()),
            observer: std::sync::OnceLock::new(),
            service_ranges: std::sync::RwLock::new(vt_net::CidrSet::new()),
            cluster_ranges: std::sync::RwLock::new(vt_net::CidrSet::new()),
            addresses: Arc::default(),
            zones: RwLock::new(HashMap::new()),
            classes: Arc::default(),
        });
        let weak = Arc::downgrade(&host);
        let tenants = watcher::Config::default().labels(TENANT_LABEL);
        let mut tasks = vec![
            {
                let weak = weak.clone();
                let stash = statuses.clone();
                let addresses = host.addresses.clone();
                let stream = watcher(Api::<Pod>::all(client.clone()), tenants.clone())
                    .inspect(move |ev| {
                        if let Ok(ev) = ev {
                            addresses.write().unwrap_or_else(|p| p.into_inner()).handle(ev);
                        }
                    })
                    .modify(move |p: &mut Pod| {
                        if let Some(status) = p.status.take() {
                            let key = (p.namespace().unwrap_or_default(), p.name_any());
                            stash.lock().unwrap_or_else(|e| e.into_inner()).insert(key, status);
                        }
                    })
                    .inspect(move |ev| {
                        if let Ok(ev) = ev {
                            pods.handle(ev);
                        }
                    });
                let stash = statuses.clone();
                tokio::spawn(follow(stream, weak, move |p: &Pod, deleted: bool| {
                    if deleted {
                        let key = (p.namespace().unwrap_or_default(), p.name_any());
                        stash.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
                    }
                    Some(Delivery::Tenant(p.namespace()?, HostChange::Pod(crate::tenant::identity(p)?)))
                }))
            },
            {
                let weak = weak.clone();
                let stream = reflector::reflector(
                    claims_w,
                    watcher(Api::<PersistentVolumeClaim>::all(client.clone()), tenants)
                        .modify(|c: &mut PersistentVolumeClaim| c.metadata.managed_fields = None),
                );
                tokio::spawn(follow(stream, weak, |c: &PersistentVolumeClaim, _| {
                    Some(Delivery::Tenant(c.namespace()?, HostChange::Claim(crate::tenant::identity(c)?)))
                }))
            },
            {
                let weak = weak.clone();
                let stream = watcher(
                    Api::<k8s_openapi::api::networking::v1::Ingress>::all(client.clone()),
                    watcher::Config::default().labels(TENANT_LABEL),
                );
                tokio::spawn(follow(stream, weak, |i: &k8s_openapi::api::networking::v1::Ingress, _| {
                    Some(Delivery::Tenant(i.namespace()?, HostChange::Ingress(crate::tenant::identity(i)?)))
                }))
            },
            {
                let weak = weak.clone();
                let stream = reflector::reflector(
                    nodes_w,
                    watcher(Api::<Node>::all(client.clone()), Default::default()).modify(|n: &mut Node| {
                        n.metadata.managed_fields = None;
                        // Image lists are long and never shown to tenants.
                        if let Some(s) = n.status.as_mut() {
                            s.images = None;
                        }
                    }),
                );
                tokio::spawn(follow(stream, weak, |n: &Node, deleted| {
                    let pool = if deleted { None } else { n.labels().get(crate::POOL_LABEL).cloned() };
                    Some(Delivery::Node(n.name_any(), pool))
                }))
            },
            {
                let weak = weak.clone();
                let stream = watcher(Api::<Event>::all(client.clone()), watcher::Config::default());
                tokio::spawn(follow(stream, weak, |e: &Event, _| {
                    let about_pod = e.involved_object.kind.as_deref() == Some("Pod");
                    let ns = e.namespace().filter(|_| about_pod)?;
                    Some(Delivery::Tenant(ns, HostChange::Event(Arc::new(e.clone()))))
                }))
            },
        ];
        for (group, plural) in crate::classes::MIRRORED {
            tasks.push(tokio::spawn(follow_classes(client.clone(), group, plural, host.classes.clone(), weak.clone())));
        }
        host.tasks.lock().unwrap_or_else(|p| p.into_inner()).extend(tasks.drain(..).map(|t| t.abort_handle()));
        host
    }

    /// The host's objects of a mirrored class kind (`storageclasses`, ...), as JSON; `None`
    /// until the host's list of them has been read (nothing to conclude from yet).
    pub fn classes(&self, plural: &str) -> Option<Vec<Value>> {
        self.classes.read().unwrap_or_else(|p| p.into_inner()).get(plural).map(|m| m.values().cloned().collect())
    }

    /// Registers the tenant whose host namespace is `namespace` and whose nodes are those of
    /// `pool`: it hears of its namespace's objects, of its pool's nodes, and of resyncs.
    pub fn subscribe(&self, namespace: &str, pool: &str) -> mpsc::UnboundedReceiver<HostChange> {
        let (tx, rx) = mpsc::unbounded_channel();
        let sub = Subscriber { pool: pool.to_string(), tx };
        self.subscribers.write().unwrap_or_else(|p| p.into_inner()).insert(namespace.to_string(), sub);
        rx
    }

    /// Forgets a tenant.
    pub fn unsubscribe(&self, namespace: &str) {
        self.subscribers.write().unwrap_or_else(|p| p.into_inner()).remove(namespace);
        self.zones.write().unwrap_or_else(|p| p.into_inner()).remove(namespace);
    }

    /// The cluster DNS zone of the tenant whose host namespace is `namespace` (made empty on
    /// first use; its syncer fills it).
    pub fn zone(&self, namespace: &str) -> Arc<vt_dns::Zone> {
        if let Some(z) = self.zones.read().unwrap_or_else(|p| p.into_inner()).get(namespace) {
            return z.clone();
        }
        self.zones
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(namespace.to_string())
            .or_insert_with(|| Arc::new(vt_dns::Zone::new(crate::CLUSTER_DOMAIN)))
            .clone()
    }

    /// The host namespace (tenant) of the pod with address `ip`, if a tenant's pod has it.
    pub fn tenant_of(&self, ip: std::net::IpAddr) -> Option<String> {
        self.addresses.read().unwrap_or_else(|p| p.into_inner()).by_ip.get(&vt_net::canonical(ip)).cloned()
    }

    fn deliver(&self, delivery: Delivery) {
        match delivery {
            Delivery::Tenant(ns, change) => {
                if let Some(sub) = self.subscribers.read().unwrap_or_else(|p| p.into_inner()).get(&ns) {
                    let _ = sub.tx.send(change);
                }
            }
            Delivery::Node(name, pool) => self.send_node(&name, pool),
        }
    }

    /// Tells every tenant.
    fn broadcast(&self, change: HostChange) {
        for sub in self.subscribers.read().unwrap_or_else(|p| p.into_inner()).values() {
            let _ = sub.tx.send(change.clone());
        }
    }

    /// A node changed (or went away): only the tenants of the pool it is in, or was in, hear
    /// of it — with thousands of tenants, each with its pool, a node's heartbeat must not wake
    /// them all.
    fn send_node(&self, name: &str, now: Option<String>) {
        let before = {
            let mut pools = self.node_pools.lock().unwrap_or_else(|p| p.into_inner());
            match &now {
                Some(pool) => pools.insert(name.to_string(), pool.clone()),
                None => pools.remove(name),
            }
        };
        if now.is_none() && before.is_none() {
            return;
        }
        let subs = self.subscribers.read().unwrap_or_else(|p| p.into_inner());
        for sub in subs.values() {
            if Some(&sub.pool) == now.as_ref() || Some(&sub.pool) == before.as_ref() {
                let _ = sub.tx.send(HostChange::Node(name.to_string()));
            }
        }
    }

    /// Tells `observer` of every tenant's reconciles and queue depth from now on (once).
    pub fn set_observer(&self, observer: Arc<dyn crate::SyncObserver>) {
        let _ = self.observer.set(observer);
    }

    /// Sets the host's Service IP ranges.
    pub fn set_service_ranges(&self, ranges: vt_net::CidrSet) {
        *self.service_ranges.write().unwrap_or_else(|p| p.into_inner()) = ranges;
    }

    /// The host's Service IP ranges.
    pub fn service_ranges(&self) -> vt_net::CidrSet {
        self.service_ranges.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sets the host cluster's pod and node ranges.
    pub fn set_cluster_ranges(&self, ranges: vt_net::CidrSet) {
        *self.cluster_ranges.write().unwrap_or_else(|p| p.into_inner()) = ranges;
    }

    /// The host cluster's own addresses: its Service ranges, its configured pod and node
    /// ranges, and every node's pod range.
    pub fn cluster_ranges(&self) -> vt_net::CidrSet {
        let mut set = self.cluster_ranges.read().unwrap_or_else(|p| p.into_inner()).clone();
        for c in self.service_ranges().blocks() {
            set.insert(*c);
        }
        for n in self.nodes() {
            let spec = n.spec.as_ref();
            let ranges = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
            for cidr in ranges.iter().map(String::as_str).chain(spec.and_then(|s| s.pod_cidr.as_deref())) {
                if let Ok(c) = cidr.parse() {
                    set.insert(c);
                }
            }
        }
        set
    }

    /// The observer, if one is set.
    pub(crate) fn observer(&self) -> Option<&Arc<dyn crate::SyncObserver>> {
        self.observer.get()
    }

    /// Waits until the host's pods and nodes are listed.
    pub async fn ready(&self) {
        let _ = self.pods.wait_until_ready().await;
        let _ = self.nodes.wait_until_ready().await;
        let _ = self.claims.wait_until_ready().await;
    }

    /// A host pod of a tenant.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        self.pods.get(namespace, name)
    }

    /// The host pods of a tenant.
    pub fn pods_in(&self, namespace: &str) -> Vec<Arc<Pod>> {
        self.pods.list(Some(namespace))
    }

    /// Takes the latest status of a host pod that has not been brought back yet.
    pub fn take_status(&self, namespace: &str, name: &str) -> Option<PodStatus> {
        self.statuses.lock().unwrap_or_else(|e| e.into_inner()).remove(&(namespace.to_string(), name.to_string()))
    }

    /// Puts back a status that could not be brought back (unless a newer one arrived).
    pub fn put_back_status(&self, namespace: &str, name: &str, status: PodStatus) {
        self.statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((namespace.to_string(), name.to_string()))
            .or_insert(status);
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

/// Follows one watch, telling the subscribers what changed.
async fn follow<K, S>(stream: S, host: std::sync::Weak<Host>, route: impl Fn(&K, bool) -> Option<Delivery>)
where
    K: Resource + Clone + std::fmt::Debug + Send + Sync + 'static,
    S: futures::Stream<Item = watcher::Result<watcher::Event<K>>> + Send,
{
    let mut stream = Box::pin(stream.default_backoff());
    while let Some(ev) = stream.next().await {
        let Some(host) = host.upgrade() else { return };
        match ev {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                if let Some(d) = route(&o, false) {
                    host.deliver(d);
                }
            }
            Ok(watcher::Event::Delete(o)) => {
                if let Some(d) = route(&o, true) {
                    host.deliver(d);
                }
            }
            Ok(watcher::Event::InitDone) => host.broadcast(HostChange::Resync),
            Ok(watcher::Event::Init) | Err(_) => {}
        }
    }
}

/// The DNS server's attribution: a query belongs to the tenant whose host pod has its source
/// address (as the host's pod watch reports it), and to no one otherwise.
impl vt_dns::Attribution for Host {
    fn zone_for(&self, source: std::net::IpAddr) -> Option<(String, Arc<vt_dns::Zone>)> {
        let ns = self.tenant_of(source)?;
        let zone = self.zones.read().unwrap_or_else(|p| p.into_inner()).get(&ns).cloned()?;
        Some((ns, zone))
    }
}

/// Follows one class kind of the host into `classes`; every change tells every tenant (classes
/// change rarely, and every tenant may show them).
async fn follow_classes(
    client: Client,
    group: &'static str,
    plural: &'static str,
    classes: Arc<std::sync::RwLock<HashMap<&'static str, BTreeMap<String, Value>>>>,
    host: std::sync::Weak<Host>,
) {
    let ar = crate::classes::resource(group, plural);
    let api: Api<kube::api::DynamicObject> = Api::all_with(client, &ar);
    let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
    let mut relist: Option<BTreeMap<String, Value>> = None;
    while let Some(ev) = events.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::debug!(plural, error = %e, "watching the host's classes");
                continue;
            }
        };
        let changed = {
            let mut all = classes.write().unwrap_or_else(|p| p.into_inner());
            let to_json = |o: &kube::api::DynamicObject| vt_apiserver::object::to_value(o).unwrap_or(Value::Null);
            match &ev {
                // Single changes only count once the list has been read.
                watcher::Event::Apply(o) => {
                    all.get_mut(plural).map(|map| map.insert(o.name_any(), to_json(o))).is_some()
                }
                watcher::Event::Delete(o) => all.get_mut(plural).map(|map| map.remove(&o.name_any())).is_some(),
                watcher::Event::Init => {
                    relist = Some(BTreeMap::new());
                    false
                }
                watcher::Event::InitApply(o) => {
                    if let Some(r) = relist.as_mut() {
                        r.insert(o.name_any(), to_json(o));
                    }
                    false
                }
                watcher::Event::InitDone => {
                    if let Some(r) = relist.take() {
                        all.insert(plural, r);
                    }
                    true
                }
            }
        };
        if changed && let Some(h) = host.upgrade() {
            h.broadcast(HostChange::Classes);
        }
    }
}
