//! The syncer: what must really run in a virtual cluster — pods, and the ConfigMaps, Secrets,
//! ServiceAccount tokens, PersistentVolumeClaims and Services they use — translated into the
//! tenant's one namespace of the host cluster, and the host's state (pod status, node
//! binding, nodes, events) brought back. It speaks only the standard Kubernetes API to the
//! host, through kube-rs.

pub mod cache;
pub mod classes;
mod data;
mod dns;
pub mod egress;
mod events;
mod guard;
pub mod host;
pub mod ingress;
pub mod names;
pub mod netpol;
mod nodes;
mod pods;
mod policies;
mod proxy;
mod queue;
/// Pod Security Standards (the API server's, checked again before a pod reaches the host).
pub mod security {
    pub use vt_apiserver::podsecurity::{Level, check, containers};
}
pub mod services;
pub mod tenant;
pub mod translate;
mod usage;

/// The label every host object of a tenant carries, with the tenant's name.
pub const TENANT_LABEL: &str = "vt.dev/tenant";
/// The label naming a host object's virtual namespace (Service selectors use it).
pub const NAMESPACE_LABEL: &str = "vt.dev/namespace";
/// The node label (and taint key) naming a node pool.
pub const POOL_LABEL: &str = "vt.dev/pool";
/// The annotation naming a host object's virtual object.
pub const NAME_ANNOTATION: &str = "vt.dev/name";
/// The annotation naming a host object's virtual namespace.
pub const NAMESPACE_ANNOTATION: &str = "vt.dev/namespace";
/// The annotation with a host object's virtual uid.
pub const UID_ANNOTATION: &str = "vt.dev/uid";
/// The cluster domain of every tenant (its DNS zone).
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// The field manager of what the syncer applies.
pub const MANAGER: &str = "vt-syncer";

/// A time as kube writes it.
pub(crate) fn timestamp(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Now, as kube writes it.
pub(crate) fn now() -> String {
    timestamp(jiff::Timestamp::now())
}

/// Observes the syncers' work (the manager's metrics).
pub trait SyncObserver: Send + Sync {
    /// A reconcile of one `kind` (`pod`, `service`, `endpoints`, `data`, `claim`, `node`,
    /// `sweep`) for `tenant` took `elapsed` and failed for `error` (a Kubernetes Status reason
    /// such as `Conflict`, `Forbidden`, `Invalid`, or `Transport`/`Other`), if it failed.
    fn synced(&self, tenant: &str, kind: &'static str, elapsed: std::time::Duration, error: Option<&'static str>);
    /// `tenant`'s work queue holds `depth` keys waiting.
    fn queue_depth(&self, tenant: &str, depth: usize);
}

pub use egress::HostEgress;
pub use host::Host;
pub use proxy::HostPods;
pub use services::HostServices;
pub use tenant::{Handle, start};
pub use translate::Target;
pub use usage::HostMetrics;
