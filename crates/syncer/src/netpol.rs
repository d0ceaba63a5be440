//! NetworkPolicies: a tenant's policy becomes a host policy in its namespace whose every peer
//! stays inside the tenant. Host policies add up (a pod's allowed traffic is the union of the
//! policies selecting it), so the translation may only ever allow traffic among the tenant's
//! own pods and to or from outside the cluster — never across the host's walls:
//!
//! * pod selectors gain `vt.dev/namespace` (the virtual namespace) and no translated peer has a
//!   namespace selector, so a peer can only match pods of the tenant's host namespace;
//! * namespace selectors are resolved against the tenant's virtual namespaces (their labels,
//!   `kubernetes.io/metadata.name` included) into `vt.dev/namespace In [...]`;
//! * ip blocks lose every address of the cluster (its pod and Service ranges), so `0.0.0.0/0`
//!   means "the internet", never "another tenant's pods";
//! * a rule whose peers all translate to nothing is dropped (an empty peer list would mean
//!   "everyone"); an empty or absent peer list ("everyone" in the tenant's cluster) becomes
//!   all the tenant's pods plus the internet.
//!
//! Isolation (a pod selected by some policy allows only what its policies allow) is kept by
//! labelling host pods `vt.dev/isolated-ingress`/`-egress` when a tenant policy of that type
//! selects them: the manager's `vt-open-ingress`/`vt-open-egress` policies keep intra-tenant
//! traffic open only for pods without the label ([`isolation`]).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};
use vt_apiserver::selector::LabelSelector;
use vt_net::{Cidr, CidrSet};

use crate::NAMESPACE_LABEL;
use crate::translate::{Target, host_meta, reserved_label};

/// The label a host pod gets when a tenant policy of type Ingress selects it.
pub const ISOLATED_INGRESS: &str = "vt.dev/isolated-ingress";
/// The label a host pod gets when a tenant policy of type Egress selects it.
pub const ISOLATED_EGRESS: &str = "vt.dev/isolated-egress";

/// What the translation needs besides the policy.
pub struct Context<'a> {
    /// The tenant's virtual namespaces and their labels.
    pub namespaces: &'a BTreeMap<String, BTreeMap<String, String>>,
    /// The cluster's own addresses (pod and Service ranges): never an ip block's.
    pub cluster: &'a CidrSet,
}

fn labels_of(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

/// A virtual pod selector restricted to the virtual namespaces `namespaces`, for host pods;
/// `None` if it can select no host pod (it requires a label host pods never carry).
fn scoped(selector: Option<&Value>, namespaces: &[String]) -> Option<Value> {
    if namespaces.is_empty() {
        return None;
    }
    let empty = json!({});
    let sel = selector.unwrap_or(&empty);
    let mut match_labels = Map::new();
    for (k, v) in sel.get("matchLabels").and_then(Value::as_object).into_iter().flatten() {
        if reserved_label(k, v) {
            return None;
        }
        match_labels.insert(k.clone(), v.clone());
    }
    let mut exprs = Vec::new();
    for e in sel.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        let op = e.get("operator").and_then(Value::as_str).unwrap_or("");
        let values: Vec<&Value> =
            e.get("values").and_then(Value::as_array).map(|v| v.iter().collect()).unwrap_or_default();
        let reserved = reserved_label(key, &Value::Null) || values.iter().any(|v| reserved_label(key, v));
        match (reserved, op) {
            // Host pods never carry a reserved label: requiring one selects nothing, excluding
            // one excludes nothing.
            (true, "In" | "Exists") => return None,
            (true, _) => continue,
            (false, _) => exprs.push(e.clone()),
        }
    }
    if let [one] = namespaces {
        match_labels.insert(NAMESPACE_LABEL.into(), json!(one));
    } else {
        exprs.push(json!({"key": NAMESPACE_LABEL, "operator": "In", "values": namespaces}));
    }
    let mut out = Map::new();
    if !match_labels.is_empty() {
        out.insert("matchLabels".into(), Value::Object(match_labels));
    }
    if !exprs.is_empty() {
        out.insert("matchExpressions".into(), Value::Array(exprs));
    }
    Some(Value::Object(out))
}

/// The virtual namespaces a namespace selector matches.
fn resolve(selector: &Value, cx: &Context) -> Vec<String> {
    let Some(sel) = LabelSelector::from_api(selector) else { return Vec::new() };
    cx.namespaces
        .iter()
        .filter(|(name, labels)| {
            let mut l = (*labels).clone();
            l.insert("kubernetes.io/metadata.name".into(), (*name).clone());
            sel.matches(&l)
        })
        .map(|(n, _)| n.clone())
        .collect()
}

/// An ip block minus the cluster's addresses: the pieces left, each with the excepts inside
/// it.
fn ip_blocks(block: &Value, cx: &Context) -> Vec<Value> {
    let Some(cidr) = block.get("cidr").and_then(Value::as_str).and_then(|c| c.parse::<Cidr>().ok()) else {
        return Vec::new();
    };
    let excepts: Vec<Cidr> = block
        .get("except")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str()?.parse().ok())
        .collect();
    let mut out = Vec::new();
    for piece in cx.cluster.subtract_from(&cidr) {
        if excepts.iter().any(|e| e.covers(&piece)) {
            continue;
        }
        let inside: Vec<String> = excepts.iter().filter(|e| piece.covers(e)).map(Cidr::to_string).collect();
        let mut b = json!({"cidr": piece.to_string()});
        if !inside.is_empty() {
            b["except"] = json!(inside);
        }
        out.push(json!({"ipBlock": b}));
    }
    out
}

/// "Everyone" in the tenant's cluster: all its pods, and the internet.
fn everyone(cx: &Context) -> Vec<Value> {
    let mut peers = vec![json!({"podSelector": {}})];
    for all in ["0.0.0.0/0", "::/0"] {
        peers.extend(ip_blocks(&json!({"cidr": all}), cx));
    }
    peers
}

/// The host peers of one virtual peer of a policy in namespace `ns`.
fn peer(p: &Value, ns: &str, cx: &Context) -> Vec<Value> {
    if let Some(block) = p.get("ipBlock") {
        return ip_blocks(block, cx);
    }
    let namespaces = match p.get("namespaceSelector") {
        Some(sel) => resolve(sel, cx),
        None => vec![ns.to_string()],
    };
    let pods = p.get("podSelector");
    scoped(pods, &namespaces).map(|s| json!({"podSelector": s})).into_iter().collect()
}

/// The host rules of a policy's ingress or egress rules (`peers_key`: `from` or `to`).
fn rules(rules: Option<&Value>, peers_key: &str, ns: &str, cx: &Context) -> Vec<Value> {
    let mut out = Vec::new();
    for r in rules.and_then(Value::as_array).into_iter().flatten() {
        let virtual_peers = r.get(peers_key).and_then(Value::as_array).filter(|p| !p.is_empty());
        let peers: Vec<Value> = match virtual_peers {
            None => everyone(cx),
            Some(ps) => ps.iter().flat_map(|p| peer(p, ns, cx)).collect(),
        };
        if peers.is_empty() {
            // Every peer translated to nothing: the rule allows nothing (an empty list would
            // allow everyone).
            continue;
        }
        let mut rule = json!({ peers_key: peers });
        if let Some(ports) = r.get("ports").filter(|p| p.as_array().is_some_and(|a| !a.is_empty())) {
            rule["ports"] = ports.clone();
        }
        out.push(rule);
    }
    out
}

/// The policy types of a policy: as written, or kube's default (Ingress, and Egress if it has
/// egress rules).
pub fn policy_types(spec: &Value) -> Vec<String> {
    match spec.get("policyTypes").and_then(Value::as_array) {
        Some(t) if !t.is_empty() => t.iter().filter_map(Value::as_str).map(String::from).collect(),
        _ => {
            let mut t = vec!["Ingress".to_string()];
            if spec.get("egress").is_some() {
                t.push("Egress".into());
            }
            t
        }
    }
}

/// The host copy of a tenant's NetworkPolicy, or `None` when it selects no host pod.
pub fn host_policy(v: &Value, t: &Target, cx: &Context) -> Option<Value> {
    let ns = v.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
    let spec = v.get("spec").cloned().unwrap_or_else(|| json!({}));
    let target = scoped(spec.get("podSelector"), &[ns.to_string()])?;
    let types = policy_types(&spec);
    let mut out = json!({"podSelector": target, "policyTypes": types});
    if types.iter().any(|t| t == "Ingress") {
        out["ingress"] = json!(rules(spec.get("ingress"), "from", ns, cx));
    }
    if types.iter().any(|t| t == "Egress") {
        out["egress"] = json!(rules(spec.get("egress"), "to", ns, cx));
    }
    Some(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": host_meta(v, t), "spec": out}),
    )
}

/// Whether some policy of type `kind` (`Ingress` or `Egress`) among `policies` (of the pod's
/// virtual namespace) selects a pod with `labels`.
pub fn isolation(policies: &[Value], labels: &BTreeMap<String, String>, kind: &str) -> bool {
    policies.iter().any(|p| {
        let spec = p.get("spec").cloned().unwrap_or_default();
        policy_types(&spec).iter().any(|t| t == kind)
            && LabelSelector::from_api(spec.get("podSelector").unwrap_or(&json!({}))).is_some_and(|s| s.matches(labels))
    })
}

/// The namespaces a namespace label change may affect (for re-translation).
pub fn uses_namespace_selectors(v: &Value) -> bool {
    let spec = v.get("spec").cloned().unwrap_or_default();
    ["ingress", "egress"].iter().any(|k| {
        spec.get(*k).and_then(Value::as_array).into_iter().flatten().any(|r| {
            ["from", "to"].iter().any(|pk| {
                r.get(*pk).and_then(Value::as_array).into_iter().flatten().any(|p| p.get("namespaceSelector").is_some())
            })
        })
    })
}

/// Labels of a map of labels (for tests and callers building contexts).
pub fn label_map(v: Option<&Value>) -> BTreeMap<String, String> {
    labels_of(v)
}

/// The namespaces referenced by a policy's selectors, resolved (for inspection).
pub fn resolved_namespaces(v: &Value, cx: &Context) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let spec = v.get("spec").cloned().unwrap_or_default();
    for k in ["ingress", "egress"] {
        for r in spec.get(k).and_then(Value::as_array).into_iter().flatten() {
            for pk in ["from", "to"] {
                for p in r.get(pk).and_then(Value::as_array).into_iter().flatten() {
                    if let Some(sel) = p.get("namespaceSelector") {
                        out.extend(resolve(sel, cx));
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
