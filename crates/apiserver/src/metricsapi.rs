//! `metrics.k8s.io/v1beta1` from where the cluster's pods really run: a virtual cluster serves
//! its pods' and nodes' resource usage from the host's metrics API (metrics-server's
//! `PodMetrics` and `NodeMetrics`), so `kubectl top` works in a tenant. The [`MetricsSource`]
//! brings the host's figures with the tenant's names; here they are narrowed to what the
//! cluster has (its own pods, its own nodes) and answered as metrics-server answers.
//!
//! An APIService of the cluster's own for the group (the tenant installed metrics-server)
//! takes precedence: requests are proxied to it instead (`aggregator` decides, with every
//! other claimed group). While the host has no metrics API
//! the group is not listed, and `kubectl top` says "Metrics API not available", as on a
//! cluster without metrics-server.

use std::collections::{BTreeMap, HashMap};

use futures::future::BoxFuture;
use http::{Response, StatusCode};
use serde_json::{Value, json};

use crate::body::Body;
use crate::selector::LabelSelector;
use crate::status::{ApiError, GroupResource};
use crate::{ApiServer, json_response};

/// The group served.
pub const GROUP: &str = "metrics.k8s.io";
/// Its version.
pub const VERSION: &str = "v1beta1";

/// Where a cluster's resource usage comes from.
pub trait MetricsSource: Send + Sync {
    /// Whether there is a metrics API to ask (cached by the source).
    fn available(&self) -> BoxFuture<'_, bool>;
    /// The `PodMetrics` of the cluster's pods, with the cluster's names and namespaces.
    fn pods(&self) -> BoxFuture<'_, Result<Vec<Value>, String>>;
    /// The `NodeMetrics` of the nodes the cluster's pods may run on.
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<Value>, String>>;
}

/// The group's resources, as the legacy `APIResourceList` of metrics-server.
pub(crate) fn resource_list() -> Value {
    let verbs = json!(["get", "list"]);
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{GROUP}/{VERSION}"), "resources": [
        {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": verbs},
        {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": verbs},
    ]})
}

/// `/apis/metrics.k8s.io/v1beta1` (the group document comes from the aggregator's claimed
/// groups, as every claimed group's does).
pub(crate) fn discovery(parts: &[String]) -> Option<Response<Body>> {
    match parts {
        [_, _, v] if v == VERSION => Some(json_response(StatusCode::OK, &resource_list())),
        _ => None,
    }
}

fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
        .unwrap_or_default()
}

/// The cluster's objects under `prefix`, by their store key's last segments
/// (`namespace/name`, or `name`).
async fn stored(api: &ApiServer, prefix: &str) -> Result<HashMap<String, Value>, ApiError> {
    let page = api
        .store()
        .list(prefix.as_bytes(), vt_store::ListOptions::default())
        .await
        .map_err(|e| crate::status::from_store(e, &Default::default(), ""))?;
    Ok(page
        .kvs
        .iter()
        .filter_map(|kv| {
            let key = std::str::from_utf8(&kv.key).ok()?.strip_prefix(prefix)?.to_string();
            Some((key, serde_json::from_slice::<Value>(&kv.value).ok()?))
        })
        .collect())
}

/// A request under `/apis/metrics.k8s.io/v1beta1/...` (authorized): `nodes[/<name>]`,
/// `pods[/<name>]` in a namespace or across all.
pub(crate) async fn handle(
    api: &ApiServer,
    info: &crate::request::RequestInfo,
    query: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let Some(source) = &api.config().metrics else { return Err(ApiError::not_found_path()) };
    if info.version != VERSION || !info.subresource.is_empty() {
        return Err(ApiError::not_found_path());
    }
    if info.verb != "get" && info.verb != "list" {
        let gr = GroupResource::new(GROUP, info.resource.clone());
        return Err(ApiError::method_not_allowed(&gr, info.verb.as_str()));
    }
    let selector = match query.get("labelSelector") {
        Some(s) => Some(LabelSelector::parse(s)?),
        None => None,
    };
    let unavailable = |e: String| {
        tracing::debug!(tenant = %api.config().name, error = %e, "host metrics");
        ApiError::new(503, "ServiceUnavailable", "the server is currently unable to handle the request")
    };
    let (kind, items) = match info.resource.as_str() {
        "pods" => {
            let prefix = if info.namespace.is_empty() {
                "/registry/core/pods/".to_string()
            } else {
                format!("/registry/core/pods/{}/", info.namespace)
            };
            let pods = stored(api, &prefix).await?;
            let mut items = Vec::new();
            for mut m in source.pods().await.map_err(unavailable)? {
                let ns = m.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("").to_string();
                let name = m.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
                let key = if info.namespace.is_empty() { format!("{ns}/{name}") } else { name.clone() };
                if !info.namespace.is_empty() && ns != info.namespace {
                    continue;
                }
                // Only pods the cluster has, labelled as the cluster labels them.
                let Some(pod) = pods.get(&key) else { continue };
                m["metadata"]["labels"] = pod.pointer("/metadata/labels").cloned().unwrap_or_else(|| json!({}));
                items.push(m);
            }
            ("PodMetrics", items)
        }
        "nodes" if info.namespace.is_empty() => {
            let nodes = stored(api, "/registry/core/nodes/").await?;
            let mut items = Vec::new();
            for mut m in source.nodes().await.map_err(unavailable)? {
                let name = m.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
                let Some(node) = nodes.get(name) else { continue };
                m["metadata"]["labels"] = node.pointer("/metadata/labels").cloned().unwrap_or_else(|| json!({}));
                items.push(m);
            }
            ("NodeMetrics", items)
        }
        _ => return Err(ApiError::not_found_path()),
    };
    let mut items: Vec<Value> =
        items.into_iter().filter(|m| selector.as_ref().is_none_or(|s| s.matches(&labels_of(m)))).collect();
    for m in &mut items {
        m["kind"] = json!(kind);
        m["apiVersion"] = json!(format!("{GROUP}/{VERSION}"));
    }
    if info.verb == "get" {
        let found = items.into_iter().find(|m| m.pointer("/metadata/name").and_then(Value::as_str) == Some(&info.name));
        return match found {
            Some(m) => Ok(json_response(StatusCode::OK, &m)),
            // metrics-server's words: `podmetrics.metrics.k8s.io "default/web" not found`.
            None => {
                let name = if info.namespace.is_empty() {
                    info.name.clone()
                } else {
                    format!("{}/{}", info.namespace, info.name)
                };
                Err(ApiError::not_found(&GroupResource::new(GROUP, kind.to_lowercase()), &name))
            }
        };
    }
    items.sort_by(|a, b| {
        let key = |m: &Value| {
            (
                m.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("").to_string(),
                m.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string(),
            )
        };
        key(a).cmp(&key(b))
    });
    let list = json!({"kind": format!("{kind}List"), "apiVersion": format!("{GROUP}/{VERSION}"), "metadata": {}, "items": items});
    Ok(json_response(StatusCode::OK, &list))
}
