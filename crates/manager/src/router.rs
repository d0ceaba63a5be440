//! One TLS listener for every tenant: connections are routed by their TLS server name
//! (`<tenant>.<domain>`, which kubeconfigs set with `tls-server-name`). Each tenant's endpoint
//! trusts only its own CA for client certificates, so tenant A's certificate is worthless at B.

use std::collections::HashMap;
use std::sync::RwLock;

use vt_apiserver::serve::{Endpoint, Resolver};

/// The endpoints of the running tenants, by server name.
#[derive(Default)]
pub struct Router {
    endpoints: RwLock<HashMap<String, Endpoint>>,
}

impl Router {
    /// Routes `server_name` to `endpoint`.
    pub fn insert(&self, server_name: &str, endpoint: Endpoint) {
        self.endpoints.write().unwrap_or_else(|p| p.into_inner()).insert(server_name.to_ascii_lowercase(), endpoint);
    }

    /// Stops routing `server_name`.
    pub fn remove(&self, server_name: &str) {
        self.endpoints.write().unwrap_or_else(|p| p.into_inner()).remove(&server_name.to_ascii_lowercase());
    }

    /// How many endpoints are routed.
    pub fn len(&self) -> usize {
        self.endpoints.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Resolver for Router {
    fn resolve(&self, server_name: Option<&str>) -> Option<Endpoint> {
        let name = server_name?.to_ascii_lowercase();
        self.endpoints.read().unwrap_or_else(|p| p.into_inner()).get(&name).cloned()
    }
}
