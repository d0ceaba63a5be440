//! Translation rules, as pure functions over JSON objects: virtual objects become host objects
//! (names, references, isolation), host state becomes virtual state (pod status, nodes,
//! events). Nothing here does I/O, so every rule is unit-tested on its own.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::names::host_name;
use crate::security::{self, Level};
use crate::{NAME_ANNOTATION, NAMESPACE_ANNOTATION, NAMESPACE_LABEL, POOL_LABEL, TENANT_LABEL, UID_ANNOTATION};

/// Where and how a tenant's objects land on the host.
#[derive(Clone, Debug)]
pub struct Target {
    /// The tenant.
    pub tenant: String,
    /// Its host namespace.
    pub namespace: String,
    /// The node pool its pods run on (`vt.dev/pool=<pool>` nodes, tainted likewise).
    pub pool: String,
    /// More node labels its pods must land on.
    pub node_selector: BTreeMap<String, String>,
    /// More tolerations its pods get (JSON tolerations).
    pub tolerations: Vec<Value>,
    /// The RuntimeClass forced on every pod.
    pub runtime_class: String,
    /// The Pod Security level its pods must meet.
    pub level: Level,
    /// The address its pods reach the tenant's API server at.
    pub api_host: String,
    /// The port of [`Target::api_host`].
    pub api_port: u16,
    /// The tenant API server's TLS name (`<tenant>.<domain>`): pods get it as
    /// `KUBERNETES_SERVICE_HOST`, resolved to [`Target::api_host`] by a host alias, so in-cluster
    /// clients send it as SNI and verify the tenant's serving certificate by it (the shared
    /// listener picks the tenant by SNI). Empty: the address is used as it is.
    pub api_server_name: String,
    /// The `loadBalancerClass` values its Services may ask for.
    pub load_balancer_classes: Vec<String>,
    /// The address of the tenant DNS server its pods resolve cluster names with (`None`: the
    /// host's DNS, as the pod's spec says).
    pub dns_server: Option<String>,
    /// What its Ingresses may claim on the host's ingress controllers.
    pub ingress: crate::ingress::IngressRules,
    /// The host StorageClasses it may use (empty: all).
    pub storage_classes: Vec<String>,
    /// The host PriorityClasses its pods may use.
    pub priority_classes: Vec<String>,
}

/// The target of tenant `acme` that unit tests start from.
#[cfg(test)]
pub(crate) fn test_target() -> Target {
    Target {
        tenant: "acme".into(),
        namespace: "vt-acme".into(),
        pool: "acme".into(),
        node_selector: Default::default(),
        tolerations: Vec::new(),
        runtime_class: "kata".into(),
        level: crate::security::Level::Baseline,
        api_host: "10.0.0.1".into(),
        api_port: 443,
        api_server_name: String::new(),
        load_balancer_classes: Vec::new(),
        dns_server: None,
        ingress: Default::default(),
        storage_classes: Vec::new(),
        priority_classes: Vec::new(),
    }
}

impl Target {
    /// The host name of the virtual object `namespace/name`.
    pub fn name(&self, name: &str, namespace: &str) -> String {
        host_name(name, namespace, &self.tenant)
    }

    /// Whether a host node belongs to this tenant's pool (and matches its node selector).
    pub fn owns_node(&self, node: &Value) -> bool {
        let labels = node.pointer("/metadata/labels");
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        label(POOL_LABEL) == Some(self.pool.as_str()) && self.node_selector.iter().all(|(k, v)| label(k) == Some(v))
    }

    /// [`Target::owns_node`] on a node's labels.
    pub fn owns_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        labels.get(POOL_LABEL) == Some(&self.pool) && self.node_selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// Why a virtual object is not synced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// A CamelCase reason (`PodSecurity`, `NodeIsolation`, `RuntimeClass`).
    pub reason: &'static str,
    /// For humans.
    pub message: String,
}

/// Whether a label or annotation key is the syncer's alone: every `vt.dev/` key (and
/// subdomains of vt.dev), whatever the tenant wrote — except the directives vt's simulated
/// kubelet reads (`vt.dev/sim-runtime`, `vt.dev/sim-exit-code`), which only shape a
/// simulated pod's life.
fn reserved(key: &str) -> bool {
    let Some((prefix, name)) = key.split_once('/') else { return false };
    (prefix == "vt.dev" && !name.starts_with("sim-")) || prefix.ends_with(".vt.dev")
}

/// The labels that say "this is the vt manager" (what the chart's selectors and the tenants'
/// isolation NetworkPolicies select it by): a tenant's object never carries them on the host.
const MANAGER_LABELS: &[(&str, &str)] = &[("app.kubernetes.io/name", "vt")];

/// Whether a label (key and value) may not reach the host as a tenant wrote it.
pub(crate) fn reserved_label(key: &str, value: &Value) -> bool {
    reserved(key) || MANAGER_LABELS.iter().any(|(k, v)| *k == key && value.as_str() == Some(*v))
}

/// Annotation prefixes the host's own machinery acts on (container runtime and Kata VM
/// settings, CNI network and address choices, load balancer address pools, legacy AppArmor
/// and seccomp profiles, kubelet config sources, service mesh injection): a tenant's
/// annotations with them are not copied to the host.
const HOST_ANNOTATION_PREFIXES: &[&str] = &[
    "io.katacontainers.",
    "io.kubernetes.cri-o.",
    "io.containerd.",
    "k8s.v1.cni.cncf.io/",
    "v1.multus-cni.io/",
    "cni.projectcalico.org/",
    "io.cilium",
    "lbipam.cilium.io/",
    "metallb.universe.tf/",
    "container.apparmor.security.beta.kubernetes.io/",
    "seccomp.security.alpha.kubernetes.io/",
    "container.seccomp.security.alpha.kubernetes.io/",
    "kubernetes.io/config.",
    "sidecar.istio.io/",
    "linkerd.io/",
];

/// Whether an annotation key is the host machinery's (never the tenant's to set or remove).
fn host_owned_annotation(key: &str) -> bool {
    HOST_ANNOTATION_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// Whether a tenant's annotation may reach the host.
fn copied_annotation(key: &str) -> bool {
    !reserved(key) && !host_owned_annotation(key)
}

fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    v.pointer(path).and_then(Value::as_str)
}

/// Host metadata for a virtual object: the host name and namespace, the virtual labels and
/// annotations (less the reserved ones) plus the tenant's.
pub fn host_meta(v: &Value, t: &Target) -> Value {
    let ns = str_at(v, "/metadata/namespace").unwrap_or("");
    let name = str_at(v, "/metadata/name").unwrap_or("");
    let (labels, mut annotations) = tenant_meta(v.get("metadata"), t, ns);
    annotations.insert(NAME_ANNOTATION.into(), json!(name));
    annotations.insert(NAMESPACE_ANNOTATION.into(), json!(ns));
    annotations.insert(UID_ANNOTATION.into(), json!(str_at(v, "/metadata/uid").unwrap_or("")));
    json!({"name": t.name(name, ns), "namespace": t.namespace, "labels": labels, "annotations": annotations})
}

/// The labels and annotations of `meta` (an object's metadata) that may reach the host, plus
/// the tenant's labels.
fn tenant_meta(meta: Option<&Value>, t: &Target, ns: &str) -> (Map<String, Value>, Map<String, Value>) {
    let pick = |k: &str, keep: fn(&str) -> bool| -> Map<String, Value> {
        meta.and_then(|m| m.get(k))
            .and_then(Value::as_object)
            .map(|m| m.iter().filter(|(k, _)| keep(k)).map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    };
    let mut labels: Map<String, Value> = meta
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|m| m.iter().filter(|(k, v)| !reserved_label(k, v)).map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    labels.insert(TENANT_LABEL.into(), json!(t.tenant));
    labels.insert(NAMESPACE_LABEL.into(), json!(ns));
    (labels, pick("annotations", copied_annotation))
}

/// The metadata patch (a merge patch, `{}` when nothing differs) taking a host object's
/// labels and annotations to `want`'s ([`host_meta`]): keys only the host has are removed,
/// except annotations the host's machinery set (its CNI's, its runtime's).
pub fn host_meta_patch(
    want: &Value,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Value {
    let mut patch = json!({});
    let annotations: BTreeMap<&String, &String> =
        annotations.iter().filter(|(k, _)| !host_owned_annotation(k)).collect();
    for (key, have) in [("labels", json!(labels)), ("annotations", json!(annotations))] {
        let want = want.get(key).cloned().unwrap_or_else(|| json!({}));
        if want == have {
            continue;
        }
        patch[key] = replacing(&have, want);
    }
    patch
}

/// A merge patch turning the object `have` into `want`: `want`, with the keys only `have`
/// has set to null (values are replaced whole, as a merge patch replaces lists).
pub fn replacing(have: &Value, mut want: Value) -> Value {
    if let (Some(h), Some(w)) = (have.as_object(), want.as_object_mut()) {
        for k in h.keys() {
            if !w.contains_key(k) {
                w.insert(k.clone(), Value::Null);
            }
        }
    }
    want
}

/// The virtual identity a host object carries: (namespace, name, uid).
pub fn virtual_identity(h: &Value) -> Option<(String, String, String)> {
    let a = h.pointer("/metadata/annotations")?;
    let get = |k: &str| a.get(k).and_then(Value::as_str).map(str::to_string);
    Some((get(NAMESPACE_ANNOTATION)?, get(NAME_ANNOTATION)?, get(UID_ANNOTATION).unwrap_or_default()))
}

/// What a pod uses from its namespace, to be synced before it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct References {
    /// ConfigMaps.
    pub configmaps: BTreeSet<String>,
    /// Secrets (volumes, env, image pull secrets).
    pub secrets: BTreeSet<String>,
    /// PersistentVolumeClaims.
    pub claims: BTreeSet<String>,
    /// Projected ServiceAccount tokens: (key in the pod's token Secret, audience, lifetime).
    pub tokens: Vec<TokenSource>,
}

/// One projected ServiceAccount token of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSource {
    /// The key in the pod's host token Secret.
    pub key: String,
    /// The audience (empty: the API server's).
    pub audience: String,
    /// Requested lifetime in seconds.
    pub expiration_seconds: i64,
}

fn containers_mut(spec: &mut Value) -> impl Iterator<Item = &mut Value> {
    let mut out: Vec<&mut Value> = Vec::new();
    if let Some(m) = spec.as_object_mut() {
        for (k, v) in m.iter_mut() {
            if matches!(k.as_str(), "containers" | "initContainers" | "ephemeralContainers")
                && let Some(a) = v.as_array_mut()
            {
                out.extend(a.iter_mut());
            }
        }
    }
    out.into_iter()
}

fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    ["containers", "initContainers", "ephemeralContainers"]
        .into_iter()
        .flat_map(move |k| spec.get(k).and_then(Value::as_array).into_iter().flatten())
}

/// What a pod references.
pub fn references(pod: &Value) -> References {
    let mut r = References::default();
    let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
    for (i, vol) in spec.get("volumes").and_then(Value::as_array).into_iter().flatten().enumerate() {
        if let Some(n) = str_at(vol, "/configMap/name") {
            r.configmaps.insert(n.into());
        }
        if let Some(n) = str_at(vol, "/secret/secretName") {
            r.secrets.insert(n.into());
        }
        if let Some(n) = str_at(vol, "/persistentVolumeClaim/claimName") {
            r.claims.insert(n.into());
        }
        for (j, src) in vol.pointer("/projected/sources").and_then(Value::as_array).into_iter().flatten().enumerate() {
            if let Some(n) = str_at(src, "/configMap/name") {
                r.configmaps.insert(n.into());
            }
            if let Some(n) = str_at(src, "/secret/name") {
                r.secrets.insert(n.into());
            }
            if let Some(tok) = src.get("serviceAccountToken") {
                r.tokens.push(TokenSource {
                    key: format!("token-{i}-{j}"),
                    audience: str_at(tok, "/audience").unwrap_or("").to_string(),
                    expiration_seconds: tok.get("expirationSeconds").and_then(Value::as_i64).unwrap_or(3600),
                });
            }
        }
    }
    for c in containers(&spec) {
        for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
            if let Some(n) = str_at(e, "/valueFrom/configMapKeyRef/name") {
                r.configmaps.insert(n.into());
            }
            if let Some(n) = str_at(e, "/valueFrom/secretKeyRef/name") {
                r.secrets.insert(n.into());
            }
        }
        for e in c.get("envFrom").and_then(Value::as_array).into_iter().flatten() {
            if let Some(n) = str_at(e, "/configMapRef/name") {
                r.configmaps.insert(n.into());
            }
            if let Some(n) = str_at(e, "/secretRef/name") {
                r.secrets.insert(n.into());
            }
        }
    }
    for s in spec.get("imagePullSecrets").and_then(Value::as_array).into_iter().flatten() {
        if let Some(n) = str_at(s, "/name").filter(|n| !n.is_empty()) {
            r.secrets.insert(n.into());
        }
    }
    r
}

/// The host name of a pod's token Secret.
pub fn token_secret_name(host_pod: &str) -> String {
    format!("{host_pod}-token")
}

/// A downward-API field of the virtual pod, read on the host from what the host pod carries.
fn rewrite_field_ref(fr: &mut Value) {
    let path = str_at(fr, "/fieldPath").unwrap_or("").to_string();
    let to = match path.as_str() {
        "metadata.name" => format!("metadata.annotations['{NAME_ANNOTATION}']"),
        "metadata.namespace" => format!("metadata.annotations['{NAMESPACE_ANNOTATION}']"),
        "metadata.uid" => format!("metadata.annotations['{UID_ANNOTATION}']"),
        _ => return,
    };
    fr["fieldPath"] = json!(to);
}

/// Whether the virtual pod is already bound to a node.
pub fn node_name(pod: &Value) -> Option<&str> {
    str_at(pod, "/spec/nodeName").filter(|n| !n.is_empty())
}

/// Checks what would break the tenant's isolation, whatever its Pod Security level.
pub fn check_isolation(pod: &Value, t: &Target, pool_nodes: &BTreeSet<String>) -> Result<(), Refusal> {
    let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
    if let Some(rc) = str_at(&spec, "/runtimeClassName").filter(|rc| !rc.is_empty())
        && rc != t.runtime_class
    {
        return Err(Refusal {
            reason: "RuntimeClass",
            message: format!(
                "runtimeClassName {rc:?} is not allowed: this tenant's pods run with {:?}",
                t.runtime_class
            ),
        });
    }
    if let Some(node) = node_name(pod)
        && !pool_nodes.contains(node)
    {
        return Err(Refusal {
            reason: "NodeIsolation",
            message: format!("nodeName {node:?} is not a node of this tenant's pool {:?}", t.pool),
        });
    }
    security::check(&spec, t.level).map_err(|message| Refusal { reason: "PodSecurity", message })?;
    if t.level == Level::Privileged {
        // A privileged tenant is trusted by the host (see docs/architecture.md).
        return Ok(());
    }
    host_reach(&spec).map_err(|message| Refusal { reason: "HostIsolation", message })
}

/// Volume sources a tenant's pod may use: all are served inside its sandbox or from its own
/// namespace's objects. (`hostPath` is Pod Security's to refuse, with its message.) Network
/// and inline storage (nfs, iscsi, csi, cloud disks, flexVolume, ...) is mounted by the host
/// node outside the sandbox, with the host's network and credentials, and names Secrets in
/// the host namespace: refused at every level but privileged.
const TENANT_VOLUMES: &[&str] = &[
    "configMap",
    "secret",
    "projected",
    "downwardAPI",
    "emptyDir",
    "persistentVolumeClaim",
    "ephemeral",
    "image",
    "hostPath",
];

/// What Pod Security (1.33) does not check but would reach beyond the tenant on a shared
/// host: volumes the node mounts itself, probes and lifecycle hooks the kubelet sends to
/// another host (the node's network: metadata services, other tenants), and dynamic resource
/// claims (names of host objects).
fn host_reach(spec: &Value) -> Result<(), String> {
    for vol in spec.get("volumes").and_then(Value::as_array).into_iter().flatten() {
        let name = vol.get("name").and_then(Value::as_str).unwrap_or("");
        let mut kinds = vol.as_object().into_iter().flatten().map(|(k, _)| k.as_str());
        if let Some(kind) = kinds.find(|k| *k != "name" && !TENANT_VOLUMES.contains(k)) {
            return Err(format!(
                "volume {name:?} uses {kind}, which the host's nodes would mount outside the tenant's sandbox; \
                 use a PersistentVolumeClaim instead"
            ));
        }
    }
    /// Where a container names a handler the kubelet runs (path as kubectl shows it).
    const HANDLERS: [(&str, &str); 5] = [
        ("livenessProbe", "/livenessProbe"),
        ("readinessProbe", "/readinessProbe"),
        ("startupProbe", "/startupProbe"),
        ("lifecycle.postStart", "/lifecycle/postStart"),
        ("lifecycle.preStop", "/lifecycle/preStop"),
    ];
    for (cname, c) in security::containers(spec) {
        for (field, path) in HANDLERS {
            for action in ["httpGet", "tcpSocket"] {
                let host =
                    c.pointer(path).and_then(|h| h.get(action)).and_then(|a| a.get("host")).and_then(Value::as_str);
                if let Some(host) = host.filter(|h| !h.is_empty()) {
                    return Err(format!(
                        "container {cname:?}: {field}.{action}.host {host:?} is not allowed: the node would send \
                         it from the host's network; leave host unset (the pod's own IP)"
                    ));
                }
            }
        }
    }
    if spec.get("resourceClaims").and_then(Value::as_array).is_some_and(|c| !c.is_empty()) {
        return Err("resourceClaims (dynamic resource allocation) are not supported for tenant pods".into());
    }
    Ok(())
}

/// Scopes a pod (anti-)affinity term to the tenant: only its own pods of the namespaces the
/// term names (its own namespace by default) can match.
fn scope_affinity_term(term: &mut Value, ns: &str) {
    let namespaces: Vec<String> = match term.get("namespaces").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => list.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ if term.get("namespaceSelector").is_some() => Vec::new(),
        _ => vec![ns.to_string()],
    };
    let obj = term.as_object_mut();
    let Some(obj) = obj else { return };
    obj.remove("namespaces");
    obj.remove("namespaceSelector");
    let selector = obj.entry("labelSelector").or_insert_with(|| json!({}));
    if !selector.is_object() {
        *selector = json!({});
    }
    let exprs = selector.as_object_mut().map(|s| s.entry("matchExpressions").or_insert_with(|| json!([])));
    if let Some(Value::Array(exprs)) = exprs {
        // A namespaceSelector over virtual namespaces cannot be translated: the term then
        // matches the tenant's pods in any namespace (never another tenant's).
        if !namespaces.is_empty() {
            exprs.push(json!({"key": NAMESPACE_LABEL, "operator": "In", "values": namespaces}));
        } else {
            exprs.push(json!({"key": NAMESPACE_LABEL, "operator": "Exists"}));
        }
    }
}

/// The host copy of a virtual pod. `services` are the virtual Services of the pod's namespace
/// (for the service environment variables), `pool_nodes` the nodes of the tenant's pool.
pub fn host_pod(v: &Value, t: &Target, services: &[Value], pool_nodes: &BTreeSet<String>) -> Result<Value, Refusal> {
    translate_pod(v, t, services, pool_nodes, false)
}

/// The host copies of a virtual pod's ephemeral containers (translated, and checked by the
/// same rules as its containers), for the host pod's `ephemeralcontainers` subresource.
pub fn host_ephemeral_containers(
    v: &Value,
    t: &Target,
    services: &[Value],
    pool_nodes: &BTreeSet<String>,
) -> Result<Value, Refusal> {
    let pod = translate_pod(v, t, services, pool_nodes, true)?;
    Ok(pod.pointer("/spec/ephemeralContainers").cloned().unwrap_or_else(|| json!([])))
}

fn translate_pod(
    v: &Value,
    t: &Target,
    services: &[Value],
    pool_nodes: &BTreeSet<String>,
    ephemeral: bool,
) -> Result<Value, Refusal> {
    check_isolation(v, t, pool_nodes)?;
    let ns = str_at(v, "/metadata/namespace").unwrap_or("").to_string();
    let vname = str_at(v, "/metadata/name").unwrap_or("").to_string();
    let meta = host_meta(v, t);
    let host = meta["name"].as_str().unwrap_or("").to_string();
    let mut spec = v.get("spec").cloned().unwrap_or_else(|| json!({}));
    let vsa = str_at(&spec, "/serviceAccountName").unwrap_or("default").to_string();
    let links = spec.get("enableServiceLinks").and_then(Value::as_bool) != Some(false);
    if let Some(s) = spec.as_object_mut() {
        // Scheduling belongs to the host: its scheduler, its priorities, the tenant's pool.
        // A PriorityClass the host grants the tenant (mirrored into it) is kept.
        let granted = s
            .get("priorityClassName")
            .and_then(Value::as_str)
            .is_some_and(|c| t.priority_classes.iter().any(|g| g == c));
        for k in ["schedulerName", "priorityClassName", "priority", "preemptionPolicy", "serviceAccount", "nodeName"] {
            if granted && k == "priorityClassName" {
                continue;
            }
            s.remove(k);
        }
        if let Some(node) = node_name(v) {
            s.insert("nodeName".into(), json!(node));
        }
        s.insert("runtimeClassName".into(), json!(t.runtime_class));
        s.insert("automountServiceAccountToken".into(), json!(false));
        s.insert("enableServiceLinks".into(), json!(false));
        s.insert("serviceAccountName".into(), json!("default"));
        let mut selector = s.get("nodeSelector").and_then(Value::as_object).cloned().unwrap_or_default();
        selector.insert(POOL_LABEL.into(), json!(t.pool));
        for (k, val) in &t.node_selector {
            selector.insert(k.clone(), json!(val));
        }
        s.insert("nodeSelector".into(), Value::Object(selector));
        let mut tolerations = s.get("tolerations").and_then(Value::as_array).cloned().unwrap_or_default();
        tolerations.push(json!({"key": POOL_LABEL, "operator": "Equal", "value": t.pool, "effect": "NoSchedule"}));
        tolerations.extend(t.tolerations.iter().cloned());
        s.insert("tolerations".into(), Value::Array(tolerations));
        // The pod's own name as its hostname (what it sees as `hostname`), when it is one.
        if s.get("hostname").is_none() && crate::names::is_label(&vname) {
            s.insert("hostname".into(), json!(vname));
        }
        if let Some(sub) = s.get("subdomain").and_then(Value::as_str).map(str::to_string) {
            s.insert("subdomain".into(), json!(t.name(&sub, &ns)));
        }
        // Cluster names resolve through the tenant's DNS (its own Services, by virtual name).
        if let Some(server) = &t.dns_server {
            crate::dns::rewrite(s, &ns, server);
        }
        // The tenant's API server by its TLS name, whatever DNS says.
        if !t.api_server_name.is_empty() {
            let mut aliases = s.get("hostAliases").and_then(Value::as_array).cloned().unwrap_or_default();
            aliases.retain(|a| {
                !a.get("hostnames")
                    .and_then(Value::as_array)
                    .is_some_and(|h| h.iter().any(|n| n == t.api_server_name.as_str()))
            });
            aliases.push(json!({"ip": t.api_host, "hostnames": [t.api_server_name]}));
            s.insert("hostAliases".into(), Value::Array(aliases));
        }
        if let Some(Value::Array(pull)) = s.get_mut("imagePullSecrets") {
            for p in pull.iter_mut() {
                if let Some(n) = p.get("name").and_then(Value::as_str).map(str::to_string) {
                    p["name"] = json!(t.name(&n, &ns));
                }
            }
        }
        if let Some(Value::Object(aff)) = s.get_mut("affinity") {
            for kind in ["podAffinity", "podAntiAffinity"] {
                let Some(a) = aff.get_mut(kind) else { continue };
                for term in a
                    .get_mut("requiredDuringSchedulingIgnoredDuringExecution")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    scope_affinity_term(term, &ns);
                }
                for weighted in a
                    .get_mut("preferredDuringSchedulingIgnoredDuringExecution")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if let Some(term) = weighted.get_mut("podAffinityTerm") {
                        scope_affinity_term(term, &ns);
                    }
                }
            }
        }
        if let Some(Value::Array(spread)) = s.get_mut("topologySpreadConstraints") {
            for c in spread.iter_mut() {
                let sel = c.as_object_mut().map(|c| c.entry("labelSelector").or_insert_with(|| json!({})));
                if let Some(sel) = sel {
                    let ml = sel.as_object_mut().map(|m| m.entry("matchLabels").or_insert_with(|| json!({})));
                    if let Some(Value::Object(ml)) = ml {
                        ml.insert(NAMESPACE_LABEL.into(), json!(ns));
                    }
                }
            }
        }
        let token_secret = token_secret_name(&host);
        if let Some(Value::Array(vols)) = s.get_mut("volumes") {
            for (i, vol) in vols.iter_mut().enumerate() {
                if let Some(n) = str_at(vol, "/configMap/name").map(str::to_string) {
                    vol["configMap"]["name"] = json!(t.name(&n, &ns));
                }
                if let Some(n) = str_at(vol, "/secret/secretName").map(str::to_string) {
                    vol["secret"]["secretName"] = json!(t.name(&n, &ns));
                }
                if let Some(n) = str_at(vol, "/persistentVolumeClaim/claimName").map(str::to_string) {
                    vol["persistentVolumeClaim"]["claimName"] = json!(t.name(&n, &ns));
                }
                if let Some(tpl) = vol.pointer_mut("/ephemeral/volumeClaimTemplate") {
                    clean_claim_template(tpl, t, &ns);
                }
                for item in vol.pointer_mut("/downwardAPI/items").and_then(Value::as_array_mut).into_iter().flatten() {
                    if let Some(fr) = item.get_mut("fieldRef") {
                        rewrite_field_ref(fr);
                    }
                }
                if let Some(Value::Array(sources)) = vol.pointer_mut("/projected/sources") {
                    for (j, src) in sources.iter_mut().enumerate() {
                        if let Some(n) = str_at(src, "/configMap/name").map(str::to_string) {
                            src["configMap"]["name"] = json!(t.name(&n, &ns));
                        }
                        if let Some(n) = str_at(src, "/secret/name").map(str::to_string) {
                            src["secret"]["name"] = json!(t.name(&n, &ns));
                        }
                        for item in
                            src.pointer_mut("/downwardAPI/items").and_then(Value::as_array_mut).into_iter().flatten()
                        {
                            if let Some(fr) = item.get_mut("fieldRef") {
                                rewrite_field_ref(fr);
                            }
                        }
                        if let Some(tok) = src.get("serviceAccountToken").cloned() {
                            let path = str_at(&tok, "/path").unwrap_or("token");
                            *src = json!({"secret": {"name": token_secret,
                                "items": [{"key": format!("token-{i}-{j}"), "path": path}]}});
                        }
                    }
                }
            }
        }
    }
    let env_vars = if links { service_env(services, t) } else { service_env(&[], t) };
    for c in containers_mut(&mut spec) {
        let Some(c) = c.as_object_mut() else { continue };
        let mut env = c.get("env").and_then(Value::as_array).cloned().unwrap_or_default();
        for e in env.iter_mut() {
            if let Some(n) = str_at(e, "/valueFrom/configMapKeyRef/name").map(str::to_string) {
                e["valueFrom"]["configMapKeyRef"]["name"] = json!(t.name(&n, &ns));
            }
            if let Some(n) = str_at(e, "/valueFrom/secretKeyRef/name").map(str::to_string) {
                e["valueFrom"]["secretKeyRef"]["name"] = json!(t.name(&n, &ns));
            }
            if str_at(e, "/valueFrom/fieldRef/fieldPath") == Some("spec.serviceAccountName") {
                let name = e.get("name").cloned().unwrap_or(Value::Null);
                *e = json!({"name": name, "value": vsa});
            } else if let Some(fr) = e.pointer_mut("/valueFrom/fieldRef") {
                rewrite_field_ref(fr);
            }
        }
        // The service variables a kubelet would add, unless the container sets them itself.
        let declared: BTreeSet<String> =
            env.iter().filter_map(|e| e.get("name").and_then(Value::as_str)).map(str::to_string).collect();
        let mut all: Vec<Value> =
            env_vars.iter().filter(|e| !declared.contains(e["name"].as_str().unwrap_or(""))).cloned().collect();
        all.append(&mut env);
        c.insert("env".into(), Value::Array(all));
        if let Some(Value::Array(from)) = c.get_mut("envFrom") {
            for e in from.iter_mut() {
                if let Some(n) = str_at(e, "/configMapRef/name").map(str::to_string) {
                    e["configMapRef"]["name"] = json!(t.name(&n, &ns));
                }
                if let Some(n) = str_at(e, "/secretRef/name").map(str::to_string) {
                    e["secretRef"]["name"] = json!(t.name(&n, &ns));
                }
            }
        }
    }
    // Ephemeral containers are added through their own subresource, never at creation.
    if !ephemeral && let Some(s) = spec.as_object_mut() {
        s.remove("ephemeralContainers");
    }
    Ok(json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}))
}

/// The environment variables a kubelet derives from Services (docker-link style), computed
/// from the virtual Services, plus the `kubernetes` Service pointing at the tenant's own API
/// server. Only Services with a cluster IP count, as in kube.
pub fn service_env(services: &[Value], t: &Target) -> Vec<Value> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut add = |name: &str, ip: &str, ports: &[Value]| {
        let prefix = name.to_uppercase().replace('-', "_");
        let host = if ip.contains(':') { format!("[{ip}]") } else { ip.to_string() };
        out.insert(format!("{prefix}_SERVICE_HOST"), ip.to_string());
        if let Some(first) = ports.first() {
            let port = first.get("port").and_then(Value::as_i64).unwrap_or(0);
            let proto = first.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            out.insert(format!("{prefix}_SERVICE_PORT"), port.to_string());
            out.insert(format!("{prefix}_PORT"), format!("{}://{host}:{port}", proto.to_lowercase()));
        }
        for p in ports {
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            if let Some(pn) = p.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
                out.insert(format!("{prefix}_SERVICE_PORT_{}", pn.to_uppercase().replace('-', "_")), port.to_string());
            }
            let pp = format!("{prefix}_PORT_{port}_{}", proto.to_uppercase());
            out.insert(pp.clone(), format!("{}://{host}:{port}", proto.to_lowercase()));
            out.insert(format!("{pp}_PROTO"), proto.to_lowercase());
            out.insert(format!("{pp}_PORT"), port.to_string());
            out.insert(format!("{pp}_ADDR"), ip.to_string());
        }
    };
    for svc in services {
        let name = str_at(svc, "/metadata/name").unwrap_or("");
        let ip = str_at(svc, "/spec/clusterIP").unwrap_or("");
        if name.is_empty() || ip.is_empty() || ip == "None" || name == "kubernetes" {
            continue;
        }
        let ports = svc.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default();
        add(name, ip, &ports);
    }
    add("kubernetes", &t.api_host, &[json!({"name": "https", "port": t.api_port, "protocol": "TCP"})]);
    // client-go builds `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`: with the
    // TLS name there, in-cluster clients send the SNI the shared listener routes by.
    if !t.api_server_name.is_empty() {
        out.insert("KUBERNETES_SERVICE_HOST".into(), t.api_server_name.clone());
    }
    out.into_iter().map(|(name, value)| json!({"name": name, "value": value})).collect()
}

/// The host copy of a ConfigMap or Secret (ServiceAccount token Secrets become Opaque, so the
/// host's token controller leaves them alone).
pub fn host_data_object(v: &Value, t: &Target) -> Value {
    let mut out = json!({"apiVersion": "v1", "kind": v.get("kind").cloned().unwrap_or(json!("ConfigMap")),
        "metadata": host_meta(v, t)});
    for k in ["data", "binaryData", "immutable"] {
        if let Some(x) = v.get(k) {
            out[k] = x.clone();
        }
    }
    if let Some(ty) = v.get("type").and_then(Value::as_str) {
        out["type"] = json!(if ty == "kubernetes.io/service-account-token" { "Opaque" } else { ty });
    }
    out
}

/// The host copy of a PersistentVolumeClaim: no pinning to a volume and no volume selector
/// (either could reach another tenant's volume); a claim as its data source keeps working.
pub fn host_claim(v: &Value, t: &Target) -> Value {
    let ns = str_at(v, "/metadata/namespace").unwrap_or("");
    let mut spec = v.get("spec").cloned().unwrap_or_else(|| json!({}));
    clean_claim_spec(&mut spec, t, ns);
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": host_meta(v, t), "spec": spec})
}

/// A generic ephemeral volume's claim template, as the host will create it: the claim rules
/// of [`host_claim`], and metadata the tenant may set (plus the tenant's label).
fn clean_claim_template(tpl: &mut Value, t: &Target, ns: &str) {
    let Some(obj) = tpl.as_object_mut() else {
        *tpl = json!({"spec": {}});
        return;
    };
    if let Some(spec) = obj.get_mut("spec") {
        clean_claim_spec(spec, t, ns);
    }
    let (labels, annotations) = tenant_meta(obj.get("metadata"), t, ns);
    obj.insert("metadata".into(), json!({"labels": labels, "annotations": annotations}));
}

/// A claim spec that can only reach the tenant's own storage: no pinning to a volume, no
/// volume selector, and only a claim of the same namespace as its data source.
fn clean_claim_spec(spec: &mut Value, t: &Target, ns: &str) {
    if let Some(s) = spec.as_object_mut() {
        s.remove("volumeName");
        s.remove("selector");
        for k in ["dataSource", "dataSourceRef"] {
            let keep = s.get(k).is_some_and(|d| {
                d.get("kind").and_then(Value::as_str) == Some("PersistentVolumeClaim")
                    && d.get("apiGroup").and_then(Value::as_str).unwrap_or("").is_empty()
            });
            if keep {
                if let Some(n) = s[k].get("name").and_then(Value::as_str).map(str::to_string) {
                    s[k]["name"] = json!(t.name(&n, ns));
                }
                if let Some(m) = s[k].as_object_mut() {
                    m.remove("namespace");
                }
            } else {
                s.remove(k);
            }
        }
    }
}

/// The selector of a host Service: the virtual selector, only among the tenant's pods of the
/// Service's virtual namespace.
pub fn host_selector(selector: Option<&Value>, ns: &str, t: &Target) -> Option<Value> {
    let sel = selector?.as_object()?;
    if sel.is_empty() {
        return None;
    }
    // Reserved labels never reach host pods, so the host selector leaves them out too.
    let mut out: Map<String, Value> =
        sel.iter().filter(|(k, v)| !reserved_label(k, v)).map(|(k, v)| (k.clone(), v.clone())).collect();
    out.insert(TENANT_LABEL.into(), json!(t.tenant));
    out.insert(NAMESPACE_LABEL.into(), json!(ns));
    Some(Value::Object(out))
}

/// Services that exist only in the tenant: its `kubernetes` Service (its API server, which is
/// the manager) and `kube-system/kube-dns` (the tenant DNS server, the manager's).
pub fn virtual_only_service(namespace: &str, name: &str) -> bool {
    matches!((namespace, name), ("default", "kubernetes") | ("kube-system", "kube-dns"))
}

/// Whether a Service may be created on the host as the tenant wrote it: an ExternalName must
/// not name the cluster's own Services (`<svc>.<namespace>.svc[.<domain>]`, the cluster
/// domain, or an address — on the host, its CNAME would lead the tenant's pods, and anyone
/// resolving it, into other namespaces), and a `loadBalancerClass` must be one the operator
/// granted the tenant.
pub fn check_service(v: &Value, t: &Target) -> Result<(), Refusal> {
    if let Some(name) = v.pointer("/spec/externalName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
        let lower = name.trim_end_matches('.').to_ascii_lowercase();
        let labels: Vec<&str> = lower.split('.').collect();
        let internal = labels.contains(&"svc")
            || lower == "cluster.local"
            || lower.ends_with(".cluster.local")
            || lower.ends_with(".local")
            || lower == "localhost"
            || lower.ends_with(".localhost")
            || lower.parse::<std::net::IpAddr>().is_ok()
            || labels.len() < 2;
        if internal {
            return Err(Refusal {
                reason: "HostIsolation",
                message: format!(
                    "externalName {name:?} names the cluster's own network (a cluster-internal name, a single label or an address); only external DNS names are allowed"
                ),
            });
        }
    }
    if let Some(class) = v.pointer("/spec/loadBalancerClass").and_then(Value::as_str)
        && !t.load_balancer_classes.iter().any(|c| c == class)
    {
        return Err(Refusal {
            reason: "HostIsolation",
            message: format!(
                "loadBalancerClass {class:?} is not granted to this tenant (granted: {})",
                if t.load_balancer_classes.is_empty() {
                    "none".to_string()
                } else {
                    t.load_balancer_classes.join(", ")
                }
            ),
        });
    }
    Ok(())
}

/// The host copy of a Service. The host allocates its cluster IP and node ports (the virtual
/// Service takes the same); external IPs are dropped (they would let a tenant capture traffic
/// to any address on the host's nodes, CVE-2020-8554).
pub fn host_service(v: &Value, t: &Target) -> Value {
    let ns = str_at(v, "/metadata/namespace").unwrap_or("");
    let spec = v.get("spec").cloned().unwrap_or_else(|| json!({}));
    let mut out = Map::new();
    for k in [
        "type",
        "ports",
        "sessionAffinity",
        "sessionAffinityConfig",
        "publishNotReadyAddresses",
        "externalName",
        "externalTrafficPolicy",
        "internalTrafficPolicy",
        "ipFamilyPolicy",
        "ipFamilies",
        "loadBalancerSourceRanges",
        "loadBalancerClass",
        "allocateLoadBalancerNodePorts",
        "trafficDistribution",
    ] {
        if let Some(x) = spec.get(k) {
            out.insert(k.into(), x.clone());
        }
    }
    if str_at(&spec, "/clusterIP") == Some("None") {
        out.insert("clusterIP".into(), json!("None"));
    }
    if let Some(sel) = host_selector(spec.get("selector"), ns, t) {
        out.insert("selector".into(), sel);
    }
    json!({"apiVersion": "v1", "kind": "Service", "metadata": host_meta(v, t), "spec": out})
}

/// The virtual status of a pod, from its host copy.
pub fn virtual_pod_status(h: &Value) -> Value {
    let mut status = h.get("status").cloned().unwrap_or_else(|| json!({}));
    if let Some(s) = status.as_object_mut() {
        // Host scheduling details that mean nothing in the tenant.
        s.remove("nominatedNodeName");
    }
    status
}

/// The tenant's view of a host node: its name, labels, capacity and conditions; not its
/// annotations, addresses other than internal ones, images (other tenants'), volumes, provider
/// details, or the pool taint the syncer tolerates for the tenant.
pub fn virtual_node(h: &Value) -> Value {
    let labels = h.pointer("/metadata/labels").cloned().unwrap_or_else(|| json!({}));
    let mut spec = json!({});
    if let Some(taints) = h.pointer("/spec/taints").and_then(Value::as_array) {
        let kept: Vec<Value> = taints.iter().filter(|t| str_at(t, "/key") != Some(POOL_LABEL)).cloned().collect();
        if !kept.is_empty() {
            spec["taints"] = Value::Array(kept);
        }
    }
    if let Some(u) = h.pointer("/spec/unschedulable") {
        spec["unschedulable"] = u.clone();
    }
    let mut status = json!({});
    for k in ["capacity", "allocatable", "conditions", "nodeInfo", "phase"] {
        if let Some(x) = h.pointer(&format!("/status/{k}")) {
            status[k] = x.clone();
        }
    }
    if let Some(addrs) = h.pointer("/status/addresses").and_then(Value::as_array) {
        let kept: Vec<Value> =
            addrs.iter().filter(|a| matches!(str_at(a, "/type"), Some("InternalIP" | "Hostname"))).cloned().collect();
        status["addresses"] = Value::Array(kept);
    }
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": str_at(h, "/metadata/name").unwrap_or(""), "labels": labels},
        "spec": spec, "status": status})
}

/// The tenant's copy of a host event about one of its pods: the virtual pod as the involved
/// object, host names in the message replaced by virtual ones.
pub fn virtual_event(h: &Value, t: &Target, vns: &str, vname: &str, vuid: &str) -> Value {
    let host_pod = str_at(h, "/involvedObject/name").unwrap_or("");
    let message = str_at(h, "/message")
        .unwrap_or("")
        .replace(&format!("{}/{host_pod}", t.namespace), &format!("{vns}/{vname}"))
        .replace(host_pod, vname);
    let id = crate::names::hash(&[str_at(h, "/metadata/uid").unwrap_or(""), str_at(h, "/metadata/name").unwrap_or("")]);
    let mut involved = json!({"kind": "Pod", "apiVersion": "v1", "namespace": vns, "name": vname, "uid": vuid});
    if let Some(fp) = h.pointer("/involvedObject/fieldPath") {
        involved["fieldPath"] = fp.clone();
    }
    let mut out = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{vname}.{id}"), "namespace": vns},
        "involvedObject": involved,
        "reason": h.get("reason").cloned().unwrap_or(Value::Null),
        "message": message,
        "type": h.get("type").cloned().unwrap_or(json!("Normal")),
    });
    for k in [
        "source",
        "count",
        "firstTimestamp",
        "lastTimestamp",
        "eventTime",
        "reportingComponent",
        "reportingInstance",
        "action",
        "series",
    ] {
        if let Some(x) = h.get(k).filter(|x| !x.is_null()) {
            out[k] = x.clone();
        }
    }
    out
}

#[cfg(test)]
mod tests;
