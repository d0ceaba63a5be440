//! Allocations of Service writes: cluster IPs (through the configured allocator) and node
//! ports (one store key per port, claimed atomically), released on failure and on delete.

use std::net::Ipv4Addr;

use bytes::Bytes;
use rand::RngExt;
use serde_json::{Value, json};
use vt_store::StoreError;

use crate::ipalloc::{AllocError, ServiceRef};
use crate::object;
use crate::rest::Op;
use crate::status::{ApiError, ApiResult, FieldError, from_store};

/// The node port range.
const NODE_PORTS: std::ops::RangeInclusive<i64> = 30000..=32767;

/// What a create allocated, to release if the write fails.
#[derive(Default)]
pub(crate) struct Allocated {
    ips: Vec<Ipv4Addr>,
    node_ports: Vec<i64>,
    /// A Service created on the configured backend.
    backend: Option<Value>,
}

fn node_port_key(port: i64) -> String {
    format!("/vt/nodeports/{port}")
}

async fn claim_node_port(op: &Op<'_>, port: i64, owner: &str) -> Result<bool, StoreError> {
    match op.store().create(node_port_key(port).as_bytes(), Bytes::from(owner.to_string()), None).await {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Allocates a new Service's cluster IP and node ports, writing them into the object.
pub(crate) async fn allocate(op: &Op<'_>, obj: &mut Value) -> ApiResult<Allocated> {
    let mut done = Allocated::default();
    if op.rt.kind == "Secret" && op.rt.group.is_empty() {
        legacy_token(op, obj).await;
        return Ok(done);
    }
    if op.rt.kind != "Service" || !op.rt.group.is_empty() {
        return Ok(done);
    }
    let name = object::name(obj).to_string();
    if let Some(backend) = op.api.config().services.clone()
        && !(op.ns == "default" && name == "kubernetes")
    {
        return allocate_on_backend(op, backend.as_ref(), obj, &name).await;
    }
    let svc = ServiceRef { namespace: op.ns.clone(), name: name.clone() };
    let ty = object::str_at(obj, &["spec", "type"]).unwrap_or("ClusterIP").to_string();
    let requested = object::str_at(obj, &["spec", "clusterIP"]).unwrap_or("").to_string();
    let invalid = |e: FieldError| ApiError::invalid("", "Service", &name, vec![e]);
    if ty != "ExternalName" && requested != "None" {
        let want = if requested.is_empty() {
            None
        } else {
            Some(requested.parse::<Ipv4Addr>().map_err(|_| {
                invalid(FieldError::invalid("spec.clusterIPs[0]", &json!(requested), "must be a valid IP address"))
            })?)
        };
        match op.api.config().cluster_ips.allocate(op.store().as_ref(), &svc, want).await {
            Ok(ip) => {
                done.ips.push(ip);
                obj["spec"]["clusterIP"] = json!(ip.to_string());
                obj["spec"]["clusterIPs"] = json!([ip.to_string()]);
            }
            Err(AllocError::Store(e)) => return Err(from_store(e, &op.gr(), &name)),
            Err(e) => {
                return Err(invalid(
                    FieldError::invalid(
                        "spec.clusterIPs",
                        &json!(format!("[]string{{{requested:?}}}")),
                        &format!("failed to allocate IP {requested}: {e}"),
                    )
                    .raw_invalid_list(&requested),
                ));
            }
        }
    }
    let wants_node_ports = ty == "NodePort"
        || (ty == "LoadBalancer"
            && object::at(obj, &["spec", "allocateLoadBalancerNodePorts"]).and_then(Value::as_bool) != Some(false));
    if wants_node_ports {
        let owner = format!("{}/{name}", op.ns);
        let ports = obj["spec"]["ports"].as_array().cloned().unwrap_or_default();
        let mut by_port: std::collections::HashMap<i64, i64> = Default::default();
        let mut out = Vec::new();
        for mut p in ports {
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            let np = match p.get("nodePort").and_then(Value::as_i64).filter(|n| *n != 0) {
                Some(np) => {
                    if !by_port.values().any(|v| *v == np) {
                        if !claim_node_port(op, np, &owner).await.map_err(|e| from_store(e, &op.gr(), &name))? {
                            release(op, &done).await;
                            return Err(invalid(FieldError::invalid(
                                "spec.ports[0].nodePort",
                                &json!(np),
                                "provided port is already allocated",
                            )));
                        }
                        done.node_ports.push(np);
                    }
                    np
                }
                None if by_port.contains_key(&port) => by_port[&port],
                None => {
                    let mut got = None;
                    for _ in 0..256 {
                        let candidate = rand::rng().random_range(NODE_PORTS);
                        if claim_node_port(op, candidate, &owner).await.map_err(|e| from_store(e, &op.gr(), &name))? {
                            got = Some(candidate);
                            break;
                        }
                    }
                    let Some(np) = got else {
                        release(op, &done).await;
                        return Err(ApiError::internal("failed to allocate a nodePort: range is full"));
                    };
                    done.node_ports.push(np);
                    np
                }
            };
            by_port.insert(port, np);
            p["nodePort"] = json!(np);
            out.push(p);
        }
        obj["spec"]["ports"] = Value::Array(out);
    }
    Ok(done)
}

/// A Service of a virtual cluster: created on its backend (the host) first, taking the
/// addresses the backend allocated.
async fn allocate_on_backend(
    op: &Op<'_>,
    backend: &dyn crate::ipalloc::ServiceBackend,
    obj: &mut Value,
    name: &str,
) -> ApiResult<Allocated> {
    // The backend side of an existing Service of this name must never be touched: a create
    // that would fail with AlreadyExists fails before reaching the backend.
    if op.store().get(op.key(name).as_bytes()).await.map_err(|e| from_store(e, &op.gr(), name))?.is_some() {
        return Err(ApiError::already_exists(&op.gr(), name));
    }
    let spec = backend.create(obj).await.map_err(|e| {
        let reason = match e.code {
            409 => "AlreadyExists",
            422 => "Invalid",
            403 => "Forbidden",
            429 => "TooManyRequests",
            400 => "BadRequest",
            500 => "InternalError",
            _ => "ServiceUnavailable",
        };
        let code = if reason == "ServiceUnavailable" { 503 } else { e.code };
        ApiError::new(code, reason, e.message)
    })?;
    for k in ["clusterIP", "clusterIPs", "healthCheckNodePort"] {
        if let Some(v) = spec.get(k) {
            obj["spec"][k] = v.clone();
        }
    }
    let got = spec.get("ports").and_then(Value::as_array).cloned().unwrap_or_default();
    if let Some(ports) = obj["spec"]["ports"].as_array_mut() {
        for (p, g) in ports.iter_mut().zip(got) {
            if let Some(np) = g.get("nodePort") {
                p["nodePort"] = np.clone();
            }
        }
    }
    Ok(Allocated { backend: Some(obj.clone()), ..Default::default() })
}

impl FieldError {
    /// Renders a slice value the way Go's `%#v` does (`[]string{"10.0.0.5"}`).
    fn raw_invalid_list(mut self, ip: &str) -> Self {
        let quoted = serde_json::to_string(&format!("[]string{{{ip:?}}}")).unwrap_or_default();
        self.message = self.message.replacen(&quoted, &format!("[]string{{{ip:?}}}"), 1);
        self
    }
}

/// Releases what a failed create allocated.
pub(crate) async fn release(op: &Op<'_>, a: &Allocated) {
    if let (Some(svc), Some(backend)) = (&a.backend, op.api.config().services.as_ref()) {
        backend.delete(svc).await;
    }
    for ip in &a.ips {
        op.api.config().cluster_ips.release(op.store().as_ref(), *ip).await;
    }
    for np in &a.node_ports {
        let _ = op.store().delete(node_port_key(*np).as_bytes(), None).await;
    }
}

/// Releases what a deleted Service held.
pub(crate) async fn release_service(op: &Op<'_>, svc: &Value) {
    if let Some(backend) = op.api.config().services.as_ref()
        && !(op.ns == "default" && object::name(svc) == "kubernetes")
    {
        backend.delete(svc).await;
        return;
    }
    let mut a = Allocated::default();
    if let Some(ips) = object::at(svc, &["spec", "clusterIPs"]).and_then(Value::as_array) {
        a.ips = ips.iter().filter_map(|i| i.as_str()?.parse().ok()).collect();
    }
    if let Some(ports) = object::at(svc, &["spec", "ports"]).and_then(Value::as_array) {
        let mut nps: Vec<i64> = ports.iter().filter_map(|p| p.get("nodePort")?.as_i64()).collect();
        nps.sort();
        nps.dedup();
        a.node_ports = nps;
    }
    release(op, &a).await;
}

/// A `kubernetes.io/service-account-token` Secret gets its ServiceAccount's legacy token, the
/// cluster CA and the namespace (kube-controller-manager's token controller does this; here it
/// happens as the Secret is created, when the ServiceAccount exists).
async fn legacy_token(op: &Op<'_>, obj: &mut Value) {
    if object::str_at(obj, &["type"]) != Some("kubernetes.io/service-account-token") {
        return;
    }
    let Some(issuer) = op.api.config().service_accounts.clone() else { return };
    let Some(sa_name) =
        object::str_at(obj, &["metadata", "annotations", "kubernetes.io/service-account.name"]).map(str::to_string)
    else {
        return;
    };
    let key = format!("/registry/core/serviceaccounts/{}/{sa_name}", op.ns);
    let Ok(Some(kv)) = op.store().get(key.as_bytes()).await else { return };
    let sa: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
    let uid = object::uid(&sa).to_string();
    let token = issuer.sign(&issuer.legacy_claims(&op.ns, object::name(obj), &sa_name, &uid));
    use base64::Engine;
    let b64 = |s: &str| json!(base64::engine::general_purpose::STANDARD.encode(s));
    if !obj.get("data").is_some_and(Value::is_object) {
        obj["data"] = json!({});
    }
    obj["data"]["token"] = b64(&token);
    obj["data"]["ca.crt"] = b64(&issuer.ca_pem);
    obj["data"]["namespace"] = b64(&op.ns);
    if let Some(a) = object::meta_mut(obj).get_mut("annotations").and_then(Value::as_object_mut) {
        a.insert("kubernetes.io/service-account.uid".into(), json!(uid));
    }
}
