//! Several manager replicas sharing the tenants, on the engines vt already stands on: the host
//! API's `coordination.k8s.io/v1` Leases decide who serves which tenant, and tenants on etcd
//! can be served by any replica.
//!
//! * **Members.** Each replica holds a Lease `vt-replica-<id>` in the manager's namespace
//!   (holder: its id; the address its peers forward connections to in an annotation), renewed
//!   every `retry`. A replica is alive while `renewTime + leaseDuration` is in the future.
//! * **Tenants.** A tenant's owner is the holder of the Lease `vt-tenant-<name>`, as long as
//!   the holder is alive: its validity rides on the holder's member Lease, so a thousand
//!   tenants cost one renewal per replica, not a thousand. Each tenant has a preferred replica
//!   among the live ones (rendezvous hashing: even spread, and only the tenants of a replica
//!   that leaves or joins move). A free tenant (no Lease, no holder, or a dead holder) is
//!   taken by its preferred replica with a resourceVersion-guarded update (`leaseTransitions`
//!   counts the takeovers); an owner that is no longer preferred stops serving, then releases.
//!   Tenants on SQLite live on their owner's volume: they never move (they come back when
//!   their replica does).
//! * **Fencing.** A replica that could not renew its member Lease for `renewDeadline`
//!   (shorter than the Lease's duration) counts itself deposed: every check of ownership says
//!   no, its writes to the host are refused before they are sent, its tenants' API servers
//!   refuse writes, and its control planes are stopped — all before any other replica may
//!   take its tenants over.
//! * **Leaving.** A replica told to end (SIGTERM: a rolling restart, a scale-down) stops its
//!   tenants, deletes its member Lease and releases the tenants' Leases, so the others take
//!   them within one pass rather than after the Lease expires; until they do, connections for
//!   them wait ([`Forward::Moving`]) and requests on open connections are told to retry.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::ResourceExt;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use vt_apiserver::serve::{Forward, now_millis};

use crate::tenant::Tenant;

/// The label on every Lease of the replicas.
pub const REPLICA_LABEL: &str = "vt.dev/replica";
/// The label on tenants' ownership Leases.
pub const TENANT_LEASE_LABEL: &str = "vt.dev/tenant-lease";
/// The annotation on a member Lease with the replica's peer address.
pub const PEER_ADDRESS: &str = "vt.dev/peer-address";

/// How this replica takes part.
#[derive(Clone, Debug)]
pub struct ReplicaSettings {
    /// This replica's identity (the pod name in a StatefulSet).
    pub id: String,
    /// Where the other replicas forward this replica's tenants' connections (`host:port`).
    pub peer_address: String,
    /// How long a member Lease lasts without renewal.
    pub lease_duration: Duration,
    /// How long this replica goes on acting without a renewal (< `lease_duration`).
    pub renew_deadline: Duration,
    /// How often it renews and looks at the tenants.
    pub retry: Duration,
}

impl ReplicaSettings {
    /// Defaults for `id` at `peer_address`: a 3 s Lease, deposed after 2 s, renewed every
    /// 500 ms (a dead replica's tenants serve again elsewhere within about 4 s).
    pub fn new(id: &str, peer_address: &str) -> ReplicaSettings {
        ReplicaSettings {
            id: id.to_string(),
            peer_address: peer_address.to_string(),
            lease_duration: Duration::from_secs(3),
            renew_deadline: Duration::from_secs(2),
            retry: Duration::from_millis(500),
        }
    }
}

/// A live replica.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Member {
    address: String,
}

/// This replica's view of the replicas and of who owns which tenant.
pub struct Replicas {
    settings: ReplicaSettings,
    namespace: String,
    /// When the member Lease was last renewed (ms since the epoch): the fence.
    renewed: AtomicU64,
    members: RwLock<BTreeMap<String, Member>>,
    /// Tenants this replica owns.
    owned: RwLock<BTreeSet<String>>,
    /// Of those, the tenants on SQLite (they stay with this replica).
    pinned: RwLock<BTreeSet<String>>,
    /// Tenants other live replicas own: their peer addresses.
    remote: RwLock<HashMap<String, String>>,
    /// Tenants on etcd that no live replica holds: changing hands.
    moving: RwLock<BTreeSet<String>>,
    /// Set once this replica is leaving: it takes nothing any more.
    leaving: AtomicBool,
    /// Held through each pass of [`Replicas::run`] (and by [`Replicas::leave`]).
    pass: tokio::sync::Mutex<()>,
    handoffs: AtomicU64,
    metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
}

/// The name of a tenant's ownership Lease.
pub fn tenant_lease(tenant: &str) -> String {
    format!("vt-tenant-{tenant}")
}

fn member_lease(id: &str) -> String {
    format!("vt-replica-{id}")
}

/// Rendezvous (highest random weight) hashing: the member a tenant prefers.
fn preferred<'a>(tenant: &str, members: impl Iterator<Item = &'a String>) -> Option<&'a String> {
    members.max_by_key(|m| {
        // FNV-1a over tenant, a separator and member: stable across processes and versions.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in tenant.bytes().chain([0u8]).chain(m.bytes()) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // A final mix, so that near-identical names spread.
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    })
}

fn micro_now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

impl Replicas {
    /// A replica in the manager's `namespace`; not a member until [`Replicas::run`] renews.
    pub fn new(settings: ReplicaSettings, namespace: &str) -> Arc<Replicas> {
        Arc::new(Replicas {
            settings,
            namespace: namespace.to_string(),
            renewed: AtomicU64::new(0),
            members: RwLock::new(BTreeMap::new()),
            owned: RwLock::new(BTreeSet::new()),
            pinned: RwLock::new(BTreeSet::new()),
            remote: RwLock::new(HashMap::new()),
            moving: RwLock::new(BTreeSet::new()),
            leaving: AtomicBool::new(false),
            pass: tokio::sync::Mutex::new(()),
            handoffs: AtomicU64::new(0),
            metrics: std::sync::OnceLock::new(),
        })
    }

    /// Reports this replica's tenants and handoffs to `metrics`.
    pub fn set_metrics(&self, metrics: Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    fn handed(&self) {
        self.handoffs.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = self.metrics.get() {
            m.handoff();
        }
    }

    /// This replica's id.
    pub fn id(&self) -> &str {
        &self.settings.id
    }

    /// Whether this replica may act: its member Lease was renewed within the renew deadline.
    pub fn fenced(&self) -> bool {
        now_millis() > self.renewed.load(Ordering::Acquire) + self.settings.renew_deadline.as_millis() as u64
    }

    /// Whether this replica owns `tenant` (and is neither deposed nor leaving).
    pub fn owns(&self, tenant: &str) -> bool {
        !self.fenced()
            && !self.leaving.load(Ordering::Acquire)
            && self.owned.read().unwrap_or_else(|p| p.into_inner()).contains(tenant)
    }

    /// Where a connection for `tenant` (not served here now) belongs: the replica that owns
    /// it, or nowhere yet while it changes hands — taken by a replica that has yet to start
    /// it (this one included), or free.
    pub fn locate(&self, tenant: &str) -> Forward {
        // `moving` first and held: a leaving replica moves a tenant from `moving` to `remote`
        // under both locks, so no reader sees it in neither.
        let moving = self.moving.read().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = self.remote.read().unwrap_or_else(|p| p.into_inner()).get(tenant) {
            return Forward::To(a.clone());
        }
        if self.owns(tenant) || moving.contains(tenant) { Forward::Moving } else { Forward::Here }
    }

    /// How many tenants this replica owns, and how many it has handed off or taken over.
    pub fn counts(&self) -> (usize, u64) {
        (self.owned.read().unwrap_or_else(|p| p.into_inner()).len(), self.handoffs.load(Ordering::Relaxed))
    }

    /// Renews the member Lease; whether it worked.
    async fn renew(&self, leases: &Api<Lease>) -> bool {
        let name = member_lease(&self.settings.id);
        let started = now_millis();
        let spec = LeaseSpec {
            holder_identity: Some(self.settings.id.clone()),
            lease_duration_seconds: Some(self.settings.lease_duration.as_secs().max(1) as i32),
            renew_time: Some(micro_now()),
            ..Default::default()
        };
        let result = match leases.get_opt(&name).await {
            Ok(Some(mut l)) => {
                if l.spec.as_ref().and_then(|s| s.acquire_time.clone()).is_none() {
                    l.spec = Some(LeaseSpec { acquire_time: Some(micro_now()), ..spec });
                } else {
                    let acquired = l.spec.as_ref().and_then(|s| s.acquire_time.clone());
                    l.spec = Some(LeaseSpec { acquire_time: acquired, ..spec });
                }
                l.annotations_mut().insert(PEER_ADDRESS.into(), self.settings.peer_address.clone());
                leases.replace(&name, &PostParams::default(), &l).await.map(|_| ())
            }
            Ok(None) => {
                let l = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        labels: Some([(REPLICA_LABEL.to_string(), "member".to_string())].into()),
                        annotations: Some([(PEER_ADDRESS.to_string(), self.settings.peer_address.clone())].into()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec { acquire_time: Some(micro_now()), ..spec }),
                };
                leases.create(&PostParams::default(), &l).await.map(|_| ())
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                // Counted from before the request: the Lease may have been written that early.
                self.renewed.store(started, Ordering::Release);
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not renew the member Lease");
                false
            }
        }
    }

    /// The live members, from their Leases.
    async fn read_members(&self, leases: &Api<Lease>) -> Option<BTreeMap<String, Member>> {
        let lp = ListParams::default().labels(&format!("{REPLICA_LABEL}=member"));
        let list = leases.list(&lp).await.ok()?;
        let now = jiff::Timestamp::now();
        let mut live = BTreeMap::new();
        for l in list.items {
            let Some(spec) = l.spec.as_ref() else { continue };
            let (Some(holder), Some(renewed), Some(secs)) =
                (spec.holder_identity.clone(), spec.renew_time.as_ref(), spec.lease_duration_seconds)
            else {
                continue;
            };
            let expires = renewed.0 + jiff::SignedDuration::from_secs(secs as i64);
            if expires > now {
                let address = l.annotations().get(PEER_ADDRESS).cloned().unwrap_or_default();
                live.insert(holder, Member { address });
            }
        }
        Some(live)
    }

    /// Keeps this replica's membership and its share of the tenants, forever: `start` and
    /// `stop` are told when it gains or loses a tenant (the reconciler starts or stops it).
    pub async fn run(
        self: Arc<Self>,
        host: kube::Client,
        tenants: kube::runtime::reflector::Store<Tenant>,
        changed: Arc<dyn Fn(&str) + Send + Sync>,
        stop: Arc<dyn Fn(&str) + Send + Sync>,
    ) {
        let leases: Api<Lease> = Api::namespaced(host, &self.namespace);
        let mut tick = tokio::time::interval(self.settings.retry);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_fenced = false;
        loop {
            tick.tick().await;
            let _pass = self.pass.lock().await;
            if self.leaving.load(Ordering::Acquire) {
                return;
            }
            // Deposed (a pause, a partition): stop everything before anything else.
            if self.fenced() && !self.owned.read().unwrap_or_else(|p| p.into_inner()).is_empty() {
                let lost: Vec<String> =
                    std::mem::take(&mut *self.owned.write().unwrap_or_else(|p| p.into_inner())).into_iter().collect();
                tracing::warn!(replica = %self.settings.id, tenants = lost.len(), "lost the member Lease: stopping every tenant");
                for t in &lost {
                    stop(t);
                    changed(t);
                }
                was_fenced = true;
            }
            if !self.renew(&leases).await {
                continue;
            }
            if was_fenced {
                tracing::info!(replica = %self.settings.id, "member Lease renewed again: rejoining");
                was_fenced = false;
            }
            let Some(members) = self.read_members(&leases).await else { continue };
            *self.members.write().unwrap_or_else(|p| p.into_inner()) = members.clone();
            let lp = ListParams::default().labels(&format!("{TENANT_LEASE_LABEL}=true"));
            let Ok(held) = leases.list(&lp).await else { continue };
            let held: HashMap<String, Lease> = held
                .items
                .into_iter()
                .filter_map(|l| Some((l.labels().get(crate::tenant::TENANT_LABEL)?.clone(), l)))
                .collect();
            let mut owned = BTreeSet::new();
            let mut pinned = BTreeSet::new();
            let mut remote = HashMap::new();
            let mut moving = BTreeSet::new();
            for t in tenants.state() {
                let name = t.name_any();
                let lease = held.get(&name);
                let holder = lease.and_then(|l| l.spec.as_ref()?.holder_identity.clone()).filter(|h| !h.is_empty());
                let alive = holder.as_ref().and_then(|h| members.get(h));
                let sqlite = t.spec.store.etcd.is_none();
                let want = preferred(&name, members.keys()).cloned();
                match (&holder, alive) {
                    (Some(h), Some(_)) if *h == self.settings.id => {
                        // Ours: hand it over if another live replica is preferred (never a
                        // SQLite tenant: its data is on this replica's volume).
                        if !sqlite && want.as_ref().is_some_and(|w| *w != self.settings.id) {
                            stop(&name);
                            if self.release(&leases, lease).await {
                                self.handed();
                                tracing::info!(tenant = %name, to = ?want, "handed off");
                            }
                            moving.insert(name);
                        } else {
                            if sqlite {
                                pinned.insert(name.clone());
                            }
                            owned.insert(name);
                        }
                    }
                    (Some(_), Some(m)) => {
                        remote.insert(name, m.address.clone());
                    }
                    // A SQLite tenant whose replica is away stays with it.
                    (Some(h), None) if sqlite && *h != self.settings.id => {}
                    _ => {
                        let mine = want.as_deref() == Some(self.settings.id.as_str())
                            || (sqlite && holder.as_deref() == Some(&self.settings.id));
                        if mine && self.acquire(&leases, &name, lease).await {
                            if holder.is_some() {
                                self.handed();
                            }
                            tracing::info!(tenant = %name, from = ?holder, "took ownership");
                            if sqlite {
                                pinned.insert(name.clone());
                            }
                            owned.insert(name);
                        } else if !sqlite {
                            moving.insert(name);
                        }
                    }
                }
            }
            let before = std::mem::replace(&mut *self.owned.write().unwrap_or_else(|p| p.into_inner()), owned.clone());
            *self.pinned.write().unwrap_or_else(|p| p.into_inner()) = pinned;
            *self.remote.write().unwrap_or_else(|p| p.into_inner()) = remote;
            *self.moving.write().unwrap_or_else(|p| p.into_inner()) = moving;
            if let Some(m) = self.metrics.get() {
                m.replica_tenants(owned.len());
            }
            for t in before.symmetric_difference(&owned) {
                if !owned.contains(t) {
                    stop(t);
                }
                changed(t);
            }
        }
    }

    /// Takes a free tenant (guarded by the Lease's resourceVersion); whether it worked.
    async fn acquire(&self, leases: &Api<Lease>, tenant: &str, lease: Option<&Lease>) -> bool {
        let now = micro_now();
        let result = match lease {
            Some(l) => {
                let mut l = l.clone();
                let spec = l.spec.get_or_insert_with(Default::default);
                spec.holder_identity = Some(self.settings.id.clone());
                spec.acquire_time = Some(now.clone());
                spec.renew_time = Some(now);
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                leases.replace(&tenant_lease(tenant), &PostParams::default(), &l).await.map(|_| ())
            }
            None => {
                let l = Lease {
                    metadata: ObjectMeta {
                        name: Some(tenant_lease(tenant)),
                        labels: Some(
                            [
                                (TENANT_LEASE_LABEL.to_string(), "true".to_string()),
                                (crate::tenant::TENANT_LABEL.to_string(), tenant.to_string()),
                            ]
                            .into(),
                        ),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.settings.id.clone()),
                        acquire_time: Some(now.clone()),
                        renew_time: Some(now),
                        lease_duration_seconds: Some(self.settings.lease_duration.as_secs().max(1) as i32),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                leases.create(&PostParams::default(), &l).await.map(|_| ())
            }
        };
        result.map_err(|e| tracing::debug!(tenant, error = %e, "could not take the tenant")).is_ok()
    }

    /// Gives a tenant up (after its control plane stopped); whether it worked.
    async fn release(&self, leases: &Api<Lease>, lease: Option<&Lease>) -> bool {
        let Some(mut l) = lease.cloned() else { return false };
        let name = l.name_any();
        if let Some(spec) = l.spec.as_mut() {
            spec.holder_identity = None;
        }
        leases.replace(&name, &PostParams::default(), &l).await.is_ok()
    }

    /// Leaves the replicas for good (the process is ending): takes nothing any more, stops
    /// every tenant (`stop`), gives up membership and the Leases of the tenants on etcd (the
    /// others take them at their next pass, not after the Lease expires), then waits — at most
    /// a Lease's duration — until each has a new owner, meanwhile telling connections for them
    /// where to go. Tenants on SQLite keep this replica as holder: they come back with it.
    pub async fn leave(&self, host: kube::Client, stop: &(dyn Fn(&str) + Send + Sync)) {
        self.leaving.store(true, Ordering::Release);
        // A pass in progress ends first; none starts after.
        let _pass = self.pass.lock().await;
        let leases: Api<Lease> = Api::namespaced(host, &self.namespace);
        let mine = self.owned.read().unwrap_or_else(|p| p.into_inner()).clone();
        let pinned = std::mem::take(&mut *self.pinned.write().unwrap_or_else(|p| p.into_inner()));
        let moving: BTreeSet<String> = mine.difference(&pinned).cloned().collect();
        // Moving before they stop: a request that finds one stopped is told to retry, never
        // that the cluster is gone.
        *self.moving.write().unwrap_or_else(|p| p.into_inner()) = moving.clone();
        self.owned.write().unwrap_or_else(|p| p.into_inner()).clear();
        for t in &mine {
            stop(t);
        }
        if let Some(m) = self.metrics.get() {
            m.replica_tenants(0);
        }
        // Nothing of ours runs now. Without our member Lease no one prefers us.
        if let Err(e) = leases.delete(&member_lease(&self.settings.id), &Default::default()).await {
            tracing::warn!(error = %e, "could not delete the member Lease: peers wait for it to expire");
        }
        let lp = ListParams::default().labels(&format!("{TENANT_LEASE_LABEL}=true"));
        if let Ok(list) = leases.list(&lp).await {
            for l in &list.items {
                let ours =
                    l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(self.settings.id.as_str());
                let tenant = l.labels().get(crate::tenant::TENANT_LABEL);
                if ours && tenant.is_some_and(|t| moving.contains(t)) && self.release(&leases, Some(l)).await {
                    self.handed();
                }
            }
        }
        tracing::info!(replica = %self.settings.id, released = moving.len(), kept = pinned.len(), "leaving");
        let deadline = tokio::time::Instant::now() + self.settings.lease_duration;
        while !self.moving.read().unwrap_or_else(|p| p.into_inner()).is_empty()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let (Some(members), Ok(list)) = (self.read_members(&leases).await, leases.list(&lp).await) else {
                continue;
            };
            let mut moving = self.moving.write().unwrap_or_else(|p| p.into_inner());
            let mut remote = self.remote.write().unwrap_or_else(|p| p.into_inner());
            for l in &list.items {
                let (Some(t), Some(h)) = (
                    l.labels().get(crate::tenant::TENANT_LABEL),
                    l.spec.as_ref().and_then(|s| s.holder_identity.as_ref()),
                ) else {
                    continue;
                };
                if let Some(m) = members.get(h).filter(|_| *h != self.settings.id && moving.contains(t)) {
                    remote.insert(t.clone(), m.address.clone());
                    moving.remove(t);
                }
            }
        }
    }

    /// Deletes a deleted tenant's ownership Lease.
    pub async fn forget(&self, host: kube::Client, tenant: &str) {
        let leases: Api<Lease> = Api::namespaced(host, &self.namespace);
        let _ = leases.delete(&tenant_lease(tenant), &Default::default()).await;
        self.owned.write().unwrap_or_else(|p| p.into_inner()).remove(tenant);
    }
}

/// `inner`, refusing every write before it is sent while `replicas` is deposed: the one gate
/// all of this replica's host writes (syncer, reconciler) pass.
pub fn fenced_client(inner: kube::Client, replicas: Arc<Replicas>) -> kube::Client {
    let ns = inner.default_namespace().to_string();
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let (inner, replicas) = (inner.clone(), replicas.clone());
        async move {
            let reads = matches!(*req.method(), http::Method::GET | http::Method::HEAD | http::Method::OPTIONS);
            if !reads && replicas.fenced() {
                return Err(kube::Error::Service(
                    format!("replica {} lost its member Lease: host writes refused", replicas.id()).into(),
                ));
            }
            inner.send(req).await
        }
    });
    kube::Client::new(service, ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_spread_evenly_and_only_a_leavers_move() {
        let three: Vec<String> = ["vt-0", "vt-1", "vt-2"].iter().map(|s| s.to_string()).collect();
        let two: Vec<String> = three[..2].to_vec();
        let mut counts = BTreeMap::new();
        let mut moved = 0;
        for i in 0..3000 {
            let t = format!("tenant-{i}");
            let a = preferred(&t, three.iter()).unwrap();
            *counts.entry(a.clone()).or_insert(0) += 1;
            let b = preferred(&t, two.iter()).unwrap();
            if a != b {
                moved += 1;
                assert_eq!(a, "vt-2", "only the leaver's tenants move");
            }
        }
        for (m, n) in &counts {
            assert!((850..=1150).contains(n), "{m}: {n} of 3000");
        }
        assert_eq!(moved, counts["vt-2"]);
    }
}
