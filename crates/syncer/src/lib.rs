//! The syncer: what must really run in a virtual cluster — pods, and the ConfigMaps, Secrets,
//! ServiceAccount tokens, PersistentVolumeClaims and Services they use — translated into the
//! tenant's one namespace of the host cluster, and the host's state (pod status, node
//! binding, nodes, events) brought back. It speaks only the standard Kubernetes API to the
//! host, through kube-rs.

pub mod names;
pub mod security;
pub mod translate;

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
