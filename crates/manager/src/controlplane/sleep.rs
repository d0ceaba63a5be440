//! Sleeping tenants. A tenant with `spec.sleepAfter` and no client request for that long, and
//! no pods on the host, goes to sleep: its API server, watch caches, controllers and syncer
//! are dropped (its store closes, its watches end), and all that stays is its spec, its
//! serving credentials and a route saying whom to wake. Its first request — a connection with
//! its TLS server name, or a request on a connection opened before it slept — starts it again
//! and is then answered; concurrent first requests wait for the same start. A tenant with
//! pods on the host stays awake: its syncer keeps their status and its controllers' decisions
//! true. After a manager restart, tenants that ran before come back asleep unless they have
//! pods; those that never sleep on their own are started in the background, a few at a time,
//! behind any that a request wakes first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, ListParams};
use vt_apiserver::serve::{Endpoint, Waking, now_millis};

use super::{ControlPlanes, Credentials};
use crate::router::Wake;
use crate::tenant::TenantSpec;

/// Whether a tenant's control plane runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// It serves.
    Awake,
    /// It sleeps; its first request wakes it.
    Asleep,
}

/// What a sleeping tenant keeps.
struct Asleep {
    spec: TenantSpec,
    creds: Arc<Credentials>,
    last_request: Arc<AtomicU64>,
}

/// The sleeping tenants, the wakes in progress and who hears of changes.
#[derive(Default)]
pub(super) struct Sleepers {
    asleep: Mutex<HashMap<String, Asleep>>,
    /// One lock per tenant being woken (or put to sleep): concurrent wakes share one start.
    busy: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Told the name of a tenant that fell asleep or woke (the reconciler updates its status).
    notify: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<String>>,
    /// Background starts after a restart, a few at a time.
    boot: std::sync::OnceLock<Arc<tokio::sync::Semaphore>>,
    /// Tenants routed at start whose first reconcile may wait (their host objects were
    /// applied when they ran).
    preloaded: Mutex<std::collections::HashSet<String>>,
}

impl Sleepers {
    /// Keeps `spec` for a sleeping tenant; whether it sleeps.
    pub(super) fn update(&self, tenant: &str, spec: &TenantSpec) -> bool {
        match self.asleep.lock().unwrap_or_else(|p| p.into_inner()).get_mut(tenant) {
            Some(a) => {
                a.spec = spec.clone();
                true
            }
            None => false,
        }
    }

    /// Forgets a sleeping tenant; whether it slept.
    pub(super) fn remove(&self, tenant: &str) -> bool {
        self.asleep.lock().unwrap_or_else(|p| p.into_inner()).remove(tenant).is_some()
    }

    fn lock_of(&self, tenant: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner()).entry(tenant.to_string()).or_default().clone()
    }

    fn unlocked(&self, tenant: &str, lock: &Arc<tokio::sync::Mutex<()>>) {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map and this caller hold it: nobody else waits.
        if Arc::strong_count(lock) <= 2 {
            busy.remove(tenant);
        }
    }

    pub(super) fn changed(&self, tenant: &str) {
        if let Some(tx) = self.notify.get() {
            let _ = tx.send(tenant.to_string());
        }
    }
}

impl ControlPlanes {
    /// Tells `tx` the names of tenants that fall asleep or wake.
    pub fn on_sleep_change(&self, tx: tokio::sync::mpsc::UnboundedSender<String>) {
        let _ = self.sleep.notify.set(tx);
    }

    /// Whether `tenant` sleeps.
    pub fn is_asleep(&self, tenant: &str) -> bool {
        self.sleep.asleep.lock().unwrap_or_else(|p| p.into_inner()).contains_key(tenant)
    }

    /// How many tenants sleep.
    pub fn sleeping(&self) -> usize {
        self.sleep.asleep.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether the tenant has pods on the host (it then stays awake).
    pub(super) async fn has_pods(&self, tenant: &str) -> bool {
        let Some(host) = self.host.get() else { return false };
        let pods: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(host.client.clone(), &crate::tenant::host_namespace(tenant));
        // If the host cannot say, the tenant is treated as busy.
        pods.list_metadata(&ListParams::default().limit(1)).await.map_or(true, |l| !l.items.is_empty())
    }

    /// Routes a tenant that is not running (one that ran before this process started, with no
    /// pods on the host) to its wake; one that never sleeps on its own is also started in the
    /// background.
    pub fn route_asleep(&self, tenant: &str, spec: &TenantSpec, pki: &crate::pki::TenantPki) {
        if self.api(tenant).is_some() || self.sleep.update(tenant, spec) {
            return;
        }
        self.put_to_sleep(tenant, spec.clone(), Credentials::of(pki), Arc::new(AtomicU64::new(0)));
        if spec.sleep_after().ok().flatten().is_none() {
            self.boot_in_background(tenant);
        }
    }

    /// [`ControlPlanes::route_asleep`] at start, before the reconciler: its first reconcile
    /// of the tenant may be put off ([`ControlPlanes::take_preloaded`]).
    pub fn preload_asleep(&self, tenant: &str, spec: &TenantSpec, pki: &crate::pki::TenantPki) {
        self.route_asleep(tenant, spec, pki);
        self.sleep.preloaded.lock().unwrap_or_else(|p| p.into_inner()).insert(tenant.to_string());
    }

    /// Whether the tenant was routed at start and not reconciled since (once).
    pub fn take_preloaded(&self, tenant: &str) -> bool {
        self.sleep.preloaded.lock().unwrap_or_else(|p| p.into_inner()).remove(tenant)
    }

    /// Routes the tenant to its wake and keeps what waking needs.
    pub(super) fn put_to_sleep(
        &self,
        tenant: &str,
        spec: TenantSpec,
        creds: Arc<Credentials>,
        last_request: Arc<AtomicU64>,
    ) {
        self.sleep
            .asleep
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant.to_string(), Asleep { spec, creds, last_request });
        self.router.sleep(&self.settings.server_name(tenant), tenant);
        self.sleep.changed(tenant);
    }

    /// Puts a running tenant to sleep now, unless it has pods on the host or a client request
    /// started after `since` (ms since the epoch). Whether it sleeps.
    pub async fn sleep(&self, tenant: &str, since: u64) -> Result<bool, String> {
        let lock = self.sleep.lock_of(tenant);
        let guard = lock.lock().await;
        let result = self.sleep_locked(tenant, since).await;
        drop(guard);
        self.sleep.unlocked(tenant, &lock);
        result
    }

    async fn sleep_locked(&self, tenant: &str, since: u64) -> Result<bool, String> {
        if self.is_asleep(tenant) {
            return Ok(true);
        }
        let busy = {
            let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            let Some(r) = running.get(tenant) else { return Ok(false) };
            r.last_request.load(Ordering::Relaxed) > since
        };
        if busy || self.has_pods(tenant).await {
            return Ok(false);
        }
        let Some(r) = self.running.lock().unwrap_or_else(|p| p.into_inner()).remove(tenant) else { return Ok(false) };
        if r.last_request.load(Ordering::Relaxed) > since {
            // A request came in meanwhile: back as it was.
            self.running.lock().unwrap_or_else(|p| p.into_inner()).insert(tenant.to_string(), r);
            return Ok(false);
        }
        self.put_to_sleep(tenant, r.spec.clone(), r.creds.clone(), r.last_request.clone());
        // Dropping the control plane ends its watches and closes its store.
        drop(r);
        tracing::info!(tenant, "asleep");
        Ok(true)
    }

    /// Wakes a sleeping tenant; its endpoint once it serves (`None`: it neither sleeps nor
    /// runs, or could not start).
    pub async fn wake(&self, tenant: &str) -> Option<Endpoint> {
        let lock = self.sleep.lock_of(tenant);
        let guard = lock.lock().await;
        let result = self.wake_locked(tenant).await;
        drop(guard);
        self.sleep.unlocked(tenant, &lock);
        result
    }

    async fn wake_locked(&self, tenant: &str) -> Option<Endpoint> {
        use vt_apiserver::serve::Resolver;
        if let Some(e) = self.router.resolve(Some(&self.settings.server_name(tenant))) {
            return Some(e);
        }
        let a = self.sleep.asleep.lock().unwrap_or_else(|p| p.into_inner()).remove(tenant)?;
        let started = std::time::Instant::now();
        match self.start(tenant, &a.spec, a.creds.clone(), a.last_request.clone()).await {
            Ok(e) => {
                tracing::info!(tenant, ms = started.elapsed().as_millis() as u64, "awake");
                self.metrics.wake(started.elapsed());
                self.sleep.changed(tenant);
                Some(e)
            }
            Err(error) => {
                tracing::warn!(tenant, %error, "could not wake the tenant");
                self.sleep.asleep.lock().unwrap_or_else(|p| p.into_inner()).insert(tenant.to_string(), a);
                None
            }
        }
    }

    /// Starts a tenant that came back asleep in the background (a few at a time: requests
    /// wake theirs first).
    pub(super) fn boot_in_background(&self, tenant: &str) {
        let Some(planes) = self.me() else { return };
        let boot = self.sleep.boot.get_or_init(|| Arc::new(tokio::sync::Semaphore::new(2))).clone();
        let tenant = tenant.to_string();
        tokio::spawn(async move {
            let Ok(_permit) = boot.acquire().await else { return };
            if planes.is_asleep(&tenant) {
                planes.wake(&tenant).await;
            }
        });
    }

    /// Puts idle tenants to sleep, forever: the one timer all sleeping and awake tenants share.
    pub async fn run_idle(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = now_millis();
            let idle: Vec<(String, u64)> = self
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter_map(|(name, r)| {
                    let after = r.sleep_after?.as_millis() as u64;
                    let last = r.last_request.load(Ordering::Relaxed).max(r.started);
                    (now.saturating_sub(last) >= after).then(|| (name.clone(), last))
                })
                .collect();
            for (tenant, last) in idle {
                match self.sleep(&tenant, last).await {
                    Ok(true) => {}
                    // Pods on the host (or a request just now): it stays awake, and is looked
                    // at again one sleepAfter later.
                    _ => {
                        if let Some(r) = self.running.lock().unwrap_or_else(|p| p.into_inner()).get(&tenant) {
                            r.last_request.fetch_max(now, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
    }
}

impl Wake for ControlPlanes {
    fn wake(&self, tenant: Arc<str>) -> Waking {
        let Some(planes) = self.me() else { return Box::pin(std::future::ready(None)) };
        Box::pin(async move { planes.wake(&tenant).await })
    }
}
