//! One TLS listener for every tenant: connections are routed by their TLS server name
//! (`<tenant>.<domain>`, which kubeconfigs set with `tls-server-name`). Each tenant's endpoint
//! trusts only its own CA for client certificates, so tenant A's certificate is worthless at B.
//! A sleeping tenant's name routes to its wake: the first connection (or request) waits for
//! its control plane to start.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock, Weak};

use vt_apiserver::serve::{Endpoint, Forward, Resolver, Waking};

/// Starts sleeping tenants' control planes.
pub trait Wake: Send + Sync {
    /// Wakes `tenant`: its endpoint once it serves.
    fn wake(&self, tenant: Arc<str>) -> Waking;
}

enum Route {
    Ready(Endpoint),
    /// Asleep: the tenant to wake.
    Asleep(Arc<str>),
}

/// Says where a server name not served here belongs: another replica's peer address, or
/// nowhere yet (changing hands).
pub type Forwarder = Box<dyn Fn(&str) -> Forward + Send + Sync>;

/// The endpoints of the running tenants, by server name.
#[derive(Default)]
pub struct Router {
    routes: RwLock<HashMap<String, Route>>,
    waker: OnceLock<Weak<dyn Wake>>,
    forwarder: OnceLock<Forwarder>,
}

/// The router without forwarding: what the peer listener serves (a connection another
/// replica passed here is served here or closed, never passed on again). One for a tenant
/// this replica has just taken and is still starting waits for it.
pub struct LocalOnly(pub Arc<Router>);

impl Resolver for LocalOnly {
    fn resolve(&self, server_name: Option<&str>) -> Option<Endpoint> {
        self.0.resolve(server_name)
    }

    fn wake(&self, server_name: &str) -> Waking {
        self.0.wake(server_name)
    }

    fn forwards(&self) -> bool {
        self.0.forwards()
    }

    fn forward(&self, server_name: &str) -> Forward {
        match self.0.forward(server_name) {
            Forward::Moving => Forward::Moving,
            _ => Forward::Here,
        }
    }

    fn moved(&self, server_name: &str) -> bool {
        self.0.moved(server_name)
    }
}

impl Router {
    /// Routes `server_name` to `endpoint`.
    pub fn insert(&self, server_name: &str, endpoint: Endpoint) {
        self.routes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(server_name.to_ascii_lowercase(), Route::Ready(endpoint));
    }

    /// Routes `server_name` to the wake of `tenant`.
    pub fn sleep(&self, server_name: &str, tenant: &str) {
        self.routes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(server_name.to_ascii_lowercase(), Route::Asleep(Arc::from(tenant)));
    }

    /// The ready endpoint of `server_name`.
    pub fn resolve_ready(&self, server_name: &str) -> Option<Endpoint> {
        self.resolve(Some(server_name))
    }

    /// Who says where other replicas' tenants are served (set once).
    pub fn set_forwarder(&self, f: Forwarder) {
        let _ = self.forwarder.set(f);
    }

    /// Who wakes sleeping tenants (set once).
    pub fn set_waker(&self, waker: Weak<dyn Wake>) {
        let _ = self.waker.set(waker);
    }

    /// Stops routing `server_name`.
    pub fn remove(&self, server_name: &str) {
        self.routes.write().unwrap_or_else(|p| p.into_inner()).remove(&server_name.to_ascii_lowercase());
    }

    /// How many names are routed (ready or asleep).
    pub fn len(&self) -> usize {
        self.routes.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Resolver for Router {
    fn resolve(&self, server_name: Option<&str>) -> Option<Endpoint> {
        let name = server_name?.to_ascii_lowercase();
        match self.routes.read().unwrap_or_else(|p| p.into_inner()).get(&name)? {
            Route::Ready(e) => Some(e.clone()),
            Route::Asleep(_) => None,
        }
    }

    fn forwards(&self) -> bool {
        self.forwarder.get().is_some()
    }

    fn forward(&self, server_name: &str) -> Forward {
        let name = server_name.to_ascii_lowercase();
        // Served here (awake or asleep): never passed on.
        if self.routes.read().unwrap_or_else(|p| p.into_inner()).contains_key(&name) {
            return Forward::Here;
        }
        self.forwarder.get().map_or(Forward::Here, |f| f(&name))
    }

    fn wake(&self, server_name: &str) -> Waking {
        let tenant = match self.routes.read().unwrap_or_else(|p| p.into_inner()).get(&server_name.to_ascii_lowercase())
        {
            Some(Route::Asleep(t)) => t.clone(),
            _ => return Box::pin(std::future::ready(None)),
        };
        match self.waker.get().and_then(Weak::upgrade) {
            Some(w) => w.wake(tenant),
            None => Box::pin(std::future::ready(None)),
        }
    }
}
