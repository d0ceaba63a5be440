//! The syncer: what must really run in a virtual cluster — pods, and the ConfigMaps, Secrets,
//! ServiceAccount tokens, PersistentVolumeClaims and Services they use — translated into the
//! tenant's one namespace of the host cluster, and the host's state (pod status, node
//! binding, nodes, events) brought back. It speaks only the standard Kubernetes API to the
//! host, through kube-rs.

pub mod names;
pub mod security;
