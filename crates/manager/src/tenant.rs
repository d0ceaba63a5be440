//! The `Tenant` resource (`tenants.vt.dev/v1alpha1`, cluster-scoped) that declares a virtual
//! cluster on the host: how its workloads are isolated, where its objects are stored, its
//! quota, and whether it is paused. The manager reports back in `status`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The label every host object of a tenant carries, with the tenant's name.
pub const TENANT_LABEL: &str = "vt.dev/tenant";
/// The node label naming a node pool.
pub const POOL_LABEL: &str = "vt.dev/pool";
/// The finalizer that makes the manager clean up before a Tenant goes.
pub const FINALIZER: &str = "vt.dev/cleanup";
/// The longest tenant name (it appears in host namespace names and DNS names).
pub const MAX_NAME: usize = 40;

/// A virtual cluster.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "vt.dev",
    version = "v1alpha1",
    kind = "Tenant",
    status = "TenantStatus",
    shortname = "tn",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Pods","type":"integer","jsonPath":".status.pods"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".status.endpoint"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// How the tenant's pods are kept apart on the host.
    #[serde(default)]
    pub isolation: Isolation,
    /// Where the tenant's objects live (embedded SQLite unless etcd is given).
    #[serde(default)]
    pub store: StoreSpec,
    /// Hard limits for the tenant's host namespace (a ResourceQuota), e.g. `pods: "100"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub quota: BTreeMap<String, String>,
    /// A paused tenant has no control plane and no pods; resuming brings both back.
    #[serde(default)]
    pub paused: bool,
    /// After this long without a client request (a duration: `30m`, `1h30m`, `90s`), a tenant
    /// with no pods on the host sleeps: its control plane leaves memory until its next
    /// request, which wakes it. Unset: it never sleeps on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep_after: Option<String>,
    /// Bounds on what the tenant can make the manager hold (the manager's defaults where unset).
    #[serde(default, skip_serializing_if = "TenantLimits::is_empty")]
    pub limits: TenantLimits,
    /// What the tenant's objects may reach and claim on the host network.
    #[serde(default, skip_serializing_if = "Network::is_empty")]
    pub network: Network,
}

impl TenantSpec {
    /// `sleepAfter` as a duration (`None`: never), or why it is not one.
    pub fn sleep_after(&self) -> Result<Option<std::time::Duration>, String> {
        self.sleep_after.as_deref().map(parse_sleep_after).transpose()
    }
}

/// Parses a `sleepAfter` duration: Go's notation (`30m`, `1h30m`, `1.5h`, `90s`), at least
/// one second.
pub fn parse_sleep_after(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("invalid sleepAfter {s:?}: want a duration such as 30m, 1h30m or 90s (at least 1s)");
    let t = s.trim();
    // A bare number is ambiguous (Go refuses it too).
    if t.is_empty() || t.bytes().last().is_some_and(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let d: jiff::SignedDuration = t.parse().map_err(|_| bad())?;
    let d = std::time::Duration::try_from(d).map_err(|_| bad())?;
    if d < std::time::Duration::from_secs(1) {
        return Err(bad());
    }
    Ok(d)
}

/// Per-tenant bounds in the shared manager; unset fields take the manager's defaults
/// (`vt server --max-watches`, ...).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantLimits {
    /// Open watches at once (beyond: 429).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_watches: Option<u32>,
    /// Open connections at once (beyond: 429 and the connection closes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Requests queued or executing at once (beyond: 429).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_inflight: Option<u32>,
    /// Requests per second on average (beyond: 429).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qps: Option<f64>,
}

impl TenantLimits {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == TenantLimits::default()
    }
}

/// The tenant's reach on the host network, granted by the operator.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    /// Address blocks the tenant's webhooks may call by URL, beyond the manager's
    /// `--webhook-allow-cidrs` (loopback, link-local, the manager's own and the host's
    /// Service addresses stay refused whatever is listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhook_allow_cidrs: Vec<String>,
    /// `loadBalancerClass` values the tenant's Services may ask for (none by default: the
    /// host's default load balancer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_balancer_classes: Vec<String>,
    /// Host names the tenant's Ingresses may claim beyond its own `*.<tenant>.<ingress
    /// domain>` (exact names, or `*.suffix`). Grants must not overlap between tenants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress_hosts: Vec<String>,
    /// The host IngressClasses the tenant may use (they appear in the tenant, read-only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress_classes: Vec<String>,
    /// The class an Ingress without one gets (one of `ingressClasses`; none: the host's
    /// default class).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_ingress_class: Option<String>,
    /// The host StorageClasses the tenant may use (empty: all of them), shown read-only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storage_classes: Vec<String>,
    /// The host PriorityClasses the tenant's pods may use (empty: none but the tenant's own
    /// system classes), shown read-only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub priority_classes: Vec<String>,
}

impl Network {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == Network::default()
    }
}

/// Node isolation and pod security of a tenant.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Isolation {
    /// The node pool (`vt.dev/pool=<pool>` nodes, tainted `vt.dev/pool=<pool>:NoSchedule`) the
    /// tenant's pods run on; the tenant's name when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_pool: Option<String>,
    /// More node labels the tenant's pods must land on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// More tolerations the tenant's pods get.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "tolerations_schema")]
    pub tolerations: Vec<Toleration>,
    /// The RuntimeClass forced on every pod (`kata` when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    /// The Pod Security level enforced on the host namespace (`restricted`, `baseline` or
    /// `privileged`; `baseline` when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security: Option<String>,
}

/// The schema of `isolation.tolerations`: a list of core/v1 Tolerations (written out here, as
/// vt builds k8s-openapi without its schemars impls).
fn tolerations_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "More tolerations the tenant's pods get.",
        "type": "array",
        "items": {
            "description": "A core/v1 Toleration: the pods tolerate taints matching key, value and effect by the operator.",
            "type": "object",
            "properties": {
                "effect": {
                    "description": "The taint effect matched (NoSchedule, PreferNoSchedule or NoExecute); empty matches all.",
                    "type": "string"
                },
                "key": {
                    "description": "The taint key matched; empty matches all keys (operator must then be Exists).",
                    "type": "string"
                },
                "operator": {
                    "description": "Exists or Equal (the default).",
                    "type": "string"
                },
                "tolerationSeconds": {
                    "description": "How long a NoExecute taint is tolerated; unset means forever.",
                    "type": "integer",
                    "format": "int64"
                },
                "value": {
                    "description": "The taint value matched with Equal; empty with Exists.",
                    "type": "string"
                }
            }
        }
    })
}

impl Isolation {
    /// The node pool, defaulting to the tenant's name.
    pub fn pool(&self, tenant: &str) -> String {
        self.node_pool.clone().unwrap_or_else(|| tenant.to_string())
    }

    /// The runtime class, defaulting to `kata`.
    pub fn runtime_class(&self) -> String {
        self.runtime_class_name.clone().unwrap_or_else(|| "kata".into())
    }

    /// The Pod Security level, defaulting to `baseline`.
    pub fn security_level(&self) -> String {
        self.pod_security.clone().unwrap_or_else(|| "baseline".into())
    }
}

/// Where a tenant's objects are stored.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StoreSpec {
    /// An etcd cluster (shared by tenants, each under its own key prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdSpec>,
}

/// An etcd store.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EtcdSpec {
    /// Client URLs (`http://etcd:2379`).
    pub endpoints: Vec<String>,
    /// The key prefix (`/vt/<tenant>/` when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// What the manager observed.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// `Pending`, `Ready`, `Paused`, `Terminating` or `Failed`.
    #[serde(default)]
    pub phase: String,
    /// Why, for humans.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// `Ready` (and its transitions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Where the tenant's API server answers (`https://host:port`, with the TLS server name in
    /// the kubeconfig).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
    /// The Secret holding the admin kubeconfig.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret: Option<SecretRef>,
    /// Pods in the virtual cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<i64>,
    /// Objects in the virtual cluster's store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<i64>,
    /// The generation these facts are about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The tenant's DNS: where its pods send queries and how many records its zone holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsStatus>,
    /// The manager replica serving the tenant (when several share the tenants).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// The tenant DNS as the status reports it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DnsStatus {
    /// The address the tenant's pods send DNS queries to.
    pub address: String,
    /// Services and endpoint addresses in the tenant's zone (at the last refresh).
    pub records: i64,
}

/// A condition of a Tenant.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase reason.
    #[serde(default)]
    pub reason: String,
    /// A message.
    #[serde(default)]
    pub message: String,
    /// When the status last changed.
    #[serde(default)]
    pub last_transition_time: String,
}

/// A reference to a Secret.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct SecretRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// Checks a tenant name: a lowercase DNS label of at most [`MAX_NAME`] characters (it becomes
/// the host namespace `vt-<name>` and the DNS name `<name>.<domain>`).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok_chars = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if name.is_empty() {
        return Err("a tenant name must not be empty".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!("tenant name {name:?} is longer than {MAX_NAME} characters"));
    }
    if !ok_chars || name.starts_with('-') || name.ends_with('-') {
        return Err(format!(
            "invalid tenant name {name:?}: use lowercase letters, digits and '-', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// The host namespace of a tenant.
pub fn host_namespace(tenant: &str) -> String {
    format!("vt-{tenant}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_after_takes_go_durations() {
        assert_eq!(parse_sleep_after("30m"), Ok(std::time::Duration::from_secs(1800)));
        assert_eq!(parse_sleep_after("1h30m"), Ok(std::time::Duration::from_secs(5400)));
        assert_eq!(parse_sleep_after("90s"), Ok(std::time::Duration::from_secs(90)));
        assert_eq!(parse_sleep_after("1.5h"), Ok(std::time::Duration::from_secs(5400)));
        for bad in ["", "30", "soon", "-5m", "0s", "500ms", "1x"] {
            let e = parse_sleep_after(bad).unwrap_err();
            assert!(e.contains("invalid sleepAfter"), "{bad}: {e}");
        }
    }
    use kube::CustomResourceExt;

    #[test]
    fn names() {
        assert!(check_name("acme").is_ok());
        assert!(check_name("a-1").is_ok());
        for bad in ["", "Acme", "-a", "a-", "a_b", "a.b", &"x".repeat(41)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_crd_is_cluster_scoped_with_status() {
        let crd = Tenant::crd();
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.metadata.name.as_deref(), Some("tenants.vt.dev"));
        assert!(crd.spec.versions[0].subresources.as_ref().unwrap().status.is_some());
    }
}
