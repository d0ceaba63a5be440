//! The syncer's pod caches (virtual pods of a tenant, host pods of all tenants): compact
//! records of exactly what the syncer compares, kept in place of whole objects.
//!
//! A decoded `Pod` is over 2 KiB of inline fields before any of its strings (each `Container`
//! another 2 KiB), and label maps allocate B-tree nodes sized for eleven entries; a record is
//! a few hundred bytes plus its strings. Readers get a `Pod` rebuilt from the record with only
//! these fields set — name, namespace, uid, resourceVersion, labels, annotations, deletion timestamp and grace,
//! node, ServiceAccount, containers' names and images, ephemeral containers' names, phase,
//! host IP and start time — and
//! read anything else from the API server.
//!
//! The cache follows a kube-runtime watcher's events as a reflector store does: changes apply
//! at once, a (re)list is buffered and swapped in whole when it is complete.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::{Container, EphemeralContainer, Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::runtime::watcher;

type Text = Box<str>;
type Pairs = Box<[(Text, Text)]>;

/// What is kept of one pod.
struct Record {
    uid: Option<Text>,
    /// The resourceVersion seen: writes guarded by it (`guard.rs`) hold only for this state.
    rv: Option<Text>,
    labels: Pairs,
    annotations: Pairs,
    deletion: Option<Time>,
    grace: Option<i64>,
    node: Option<Text>,
    service_account: Option<Text>,
    /// Containers' (name, image).
    containers: Pairs,
    /// Ephemeral containers' names.
    ephemeral: Box<[Text]>,
    phase: Option<Text>,
    host_ip: Option<Text>,
    start_time: Option<Time>,
}

fn text(s: &Option<String>) -> Option<Text> {
    s.as_deref().map(Into::into)
}

fn pairs(m: &Option<BTreeMap<String, String>>) -> Pairs {
    m.iter().flatten().map(|(k, v)| (k.as_str().into(), v.as_str().into())).collect()
}

fn map(p: &Pairs) -> Option<BTreeMap<String, String>> {
    (!p.is_empty()).then(|| p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

impl Record {
    fn of(p: &Pod) -> Record {
        let m = &p.metadata;
        let spec = p.spec.as_ref();
        let status = p.status.as_ref();
        Record {
            uid: text(&m.uid),
            rv: text(&m.resource_version),
            labels: pairs(&m.labels),
            annotations: pairs(&m.annotations),
            deletion: m.deletion_timestamp.clone(),
            grace: m.deletion_grace_period_seconds,
            node: spec.and_then(|s| text(&s.node_name)),
            service_account: spec.and_then(|s| text(&s.service_account_name)),
            containers: spec
                .into_iter()
                .flat_map(|s| &s.containers)
                .map(|c| (c.name.as_str().into(), c.image.as_deref().unwrap_or("").into()))
                .collect(),
            ephemeral: spec
                .into_iter()
                .flat_map(|s| s.ephemeral_containers.iter().flatten())
                .map(|c| c.name.as_str().into())
                .collect(),
            phase: status.and_then(|s| text(&s.phase)),
            host_ip: status.and_then(|s| text(&s.host_ip)),
            start_time: status.and_then(|s| s.start_time.clone()),
        }
    }

    fn pod(&self, namespace: &str, name: &str) -> Pod {
        let string = |t: &Option<Text>| t.as_deref().map(str::to_string);
        let status = (self.phase.is_some() || self.host_ip.is_some() || self.start_time.is_some()).then(|| PodStatus {
            phase: string(&self.phase),
            host_ip: string(&self.host_ip),
            start_time: self.start_time.clone(),
            ..Default::default()
        });
        Pod {
            metadata: ObjectMeta {
                namespace: Some(namespace.to_string()),
                name: Some(name.to_string()),
                uid: string(&self.uid),
                resource_version: string(&self.rv),
                labels: map(&self.labels),
                annotations: map(&self.annotations),
                deletion_timestamp: self.deletion.clone(),
                deletion_grace_period_seconds: self.grace,
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: string(&self.node),
                service_account_name: string(&self.service_account),
                containers: self
                    .containers
                    .iter()
                    .map(|(n, i)| Container {
                        name: n.to_string(),
                        image: (!i.is_empty()).then(|| i.to_string()),
                        ..Default::default()
                    })
                    .collect(),
                ephemeral_containers: (!self.ephemeral.is_empty()).then(|| {
                    self.ephemeral
                        .iter()
                        .map(|n| EphemeralContainer { name: n.to_string(), ..Default::default() })
                        .collect()
                }),
                ..Default::default()
            }),
            status,
        }
    }
}

/// Pods by namespace, then name: lookups borrow the caller's strings, a namespace's pods
/// are listed without scanning the others, and each namespace's name is kept once.
type Pods = HashMap<Text, HashMap<Text, Record>>;

fn names(p: &Pod) -> (&str, &str) {
    (p.metadata.namespace.as_deref().unwrap_or(""), p.metadata.name.as_deref().unwrap_or(""))
}

fn insert(pods: &mut Pods, p: &Pod) {
    let (ns, name) = names(p);
    let record = Record::of(p);
    match pods.get_mut(ns) {
        Some(in_ns) => _ = in_ns.insert(name.into(), record),
        None => _ = pods.insert(ns.into(), HashMap::from([(name.into(), record)])),
    }
}

#[derive(Default)]
struct State {
    pods: Pods,
    /// A list in progress.
    listing: Option<Pods>,
}

/// A compact cache of pods fed by a watcher.
pub struct PodCache {
    state: RwLock<State>,
    listed: tokio::sync::watch::Sender<bool>,
}

impl Default for PodCache {
    fn default() -> Self {
        PodCache { state: RwLock::default(), listed: tokio::sync::watch::Sender::new(false) }
    }
}

impl PodCache {
    /// Applies one watcher event.
    pub fn handle(&self, event: &watcher::Event<Pod>) {
        let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
        match event {
            watcher::Event::Apply(p) => insert(&mut s.pods, p),
            watcher::Event::Delete(p) => {
                let (ns, name) = names(p);
                if let Some(in_ns) = s.pods.get_mut(ns) {
                    in_ns.remove(name);
                    if in_ns.is_empty() {
                        s.pods.remove(ns);
                    }
                }
            }
            watcher::Event::Init => s.listing = Some(HashMap::new()),
            watcher::Event::InitApply(p) => insert(s.listing.get_or_insert_default(), p),
            watcher::Event::InitDone => {
                s.pods = s.listing.take().unwrap_or_default();
                drop(s);
                self.listed.send_replace(true);
            }
        }
    }

    /// Waits until the first list is complete.
    pub async fn wait_until_ready(&self) {
        let mut rx = self.listed.subscribe();
        let _ = rx.wait_for(|listed| *listed).await;
    }

    /// One pod, as far as the cache knows it.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        let s = self.state.read().unwrap_or_else(|p| p.into_inner());
        s.pods.get(namespace)?.get(name).map(|r| Arc::new(r.pod(namespace, name)))
    }

    /// Every pod (of one namespace, if given).
    pub fn list(&self, namespace: Option<&str>) -> Vec<Arc<Pod>> {
        let s = self.state.read().unwrap_or_else(|p| p.into_inner());
        let namespaces: Vec<(&Text, &HashMap<Text, Record>)> = match namespace {
            Some(ns) => s.pods.get_key_value(ns).into_iter().collect(),
            None => s.pods.iter().collect(),
        };
        namespaces
            .into_iter()
            .flat_map(|(ns, in_ns)| in_ns.iter().map(move |(name, r)| Arc::new(r.pod(ns, name))))
            .collect()
    }

    /// How many pods it holds.
    pub fn len(&self) -> usize {
        self.state.read().unwrap_or_else(|p| p.into_inner()).pods.values().map(HashMap::len).sum()
    }

    /// Whether it holds no pod.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, image: &str) -> Pod {
        vt_apiserver::object::from_value(serde_json::json!({
            "metadata": {"namespace": ns, "name": name, "uid": format!("uid-{name}"),
                "labels": {"app": "web"}, "annotations": {"a": "1"}, "resourceVersion": "7",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u"}]},
            "spec": {"nodeName": "n1", "serviceAccountName": "sa", "containers": [{"name": "c", "image": image,
                "env": [{"name": "X", "value": "y"}]}], "volumes": [{"name": "v", "emptyDir": {}}]},
            "status": {"phase": "Running", "hostIP": "10.0.0.1", "startTime": "2026-01-01T00:00:00Z",
                "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap()
    }

    #[test]
    fn keeps_what_is_compared_and_nothing_else() {
        let c = PodCache::default();
        c.handle(&watcher::Event::Apply(pod("ns", "p", "nginx:1")));
        let got = c.get("ns", "p").unwrap();
        let want = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": "ns", "name": "p", "uid": "uid-p", "resourceVersion": "7",
                "labels": {"app": "web"}, "annotations": {"a": "1"}},
            "spec": {"nodeName": "n1", "serviceAccountName": "sa", "containers": [{"name": "c", "image": "nginx:1"}]},
            "status": {"phase": "Running", "hostIP": "10.0.0.1", "startTime": "2026-01-01T00:00:00Z"}
        });
        assert_eq!(vt_apiserver::object::to_value(got.as_ref()).unwrap(), want);
        assert!(c.get("ns", "other").is_none());
        assert!(c.get("other", "p").is_none());
    }

    #[test]
    fn follows_changes_and_relists_like_a_store() {
        let c = PodCache::default();
        c.handle(&watcher::Event::Init);
        c.handle(&watcher::Event::InitApply(pod("a", "p1", "i")));
        // Not visible until the list is complete.
        assert!(c.is_empty());
        c.handle(&watcher::Event::InitDone);
        assert_eq!(c.len(), 1);
        c.handle(&watcher::Event::Apply(pod("b", "p2", "i")));
        c.handle(&watcher::Event::Apply(pod("a", "p1", "j")));
        assert_eq!(c.get("a", "p1").unwrap().spec.as_ref().unwrap().containers[0].image.as_deref(), Some("j"));
        assert_eq!(c.list(Some("b")).len(), 1);
        assert_eq!(c.list(None).len(), 2);
        c.handle(&watcher::Event::Delete(pod("b", "p2", "i")));
        assert!(c.get("b", "p2").is_none());
        // A relist replaces everything: a pod deleted while the watch was down disappears.
        c.handle(&watcher::Event::Init);
        c.handle(&watcher::Event::InitApply(pod("c", "p3", "i")));
        assert_eq!(c.len(), 1, "the old contents stay until the list completes");
        c.handle(&watcher::Event::InitDone);
        assert!(c.get("a", "p1").is_none());
        assert!(c.get("c", "p3").is_some());
    }

    #[tokio::test]
    async fn ready_after_the_first_list() {
        let c = Arc::new(PodCache::default());
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.wait_until_ready().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        c.handle(&watcher::Event::Init);
        c.handle(&watcher::Event::InitDone);
        waiter.await.unwrap();
    }
}
