//! APIServices, as kube-aggregator keeps them in front of kube-apiserver.
//!
//! - Every built-in group version has a *local* APIService (`v1.apps`, `v1.`, ...; labelled
//!   `kube-aggregator.kubernetes.io/automanaged: onstart`, `Available` with reason `Local`),
//!   created in the background once the server runs, so `kubectl get apiservices` lists what
//!   a kube cluster lists.
//! - An APIService with a `service` claims its group version: `/apis/<group>` answers the
//!   group document from the APIServices, `/apis` and aggregated discovery list the group,
//!   and requests under `/apis/<group>/<version>` get what kube-aggregator answers while the
//!   API is unavailable — 503 with the plain-text body `service unavailable` (client-go turns
//!   it into "the server is currently unable to handle the request"; `kubectl top` says so).
//! - Its `Available` condition is kept by [`run`]: `ServiceNotFound`, `MissingEndpoints`, or
//!   `FailedDiscoveryCheck` while vt does not proxy to extension API servers (the request
//!   path above is where the proxy goes).
//!
//! Claims never shadow a group this server serves itself (built-in or custom resources).

use std::time::Duration;

use http::{Response, StatusCode};
use serde_json::{Value, json};

use crate::body::Body;
use crate::{ApiServer, json_response};

/// Where APIServices are stored.
const PREFIX: &str = "/registry/apiregistration.k8s.io/apiservices/";

/// How often the availability of service-backed APIServices is checked.
const CHECK_EVERY: Duration = Duration::from_secs(10);

/// kube-apiserver's priorities for the built-in groups (`groupPriorityMinimum`) and the
/// version priority of their versions (15 unless listed).
fn priorities(group: &str, version: &str) -> (i64, i64) {
    let group_priority = match group {
        "" => 18000,
        "apiregistration.k8s.io" => 18000,
        "apps" => 17800,
        "events.k8s.io" => 17750,
        "authentication.k8s.io" => 17700,
        "authorization.k8s.io" => 17600,
        "autoscaling" => 17500,
        "batch" => 17400,
        "certificates.k8s.io" => 17300,
        "networking.k8s.io" => 17200,
        "policy" => 17100,
        "rbac.authorization.k8s.io" => 17000,
        "storage.k8s.io" => 16800,
        "apiextensions.k8s.io" | "admissionregistration.k8s.io" => 16700,
        "scheduling.k8s.io" => 16600,
        "coordination.k8s.io" => 16500,
        "node.k8s.io" => 16300,
        "discovery.k8s.io" => 16200,
        "flowcontrol.apiserver.k8s.io" => 16100,
        _ => 16000,
    };
    let version_priority = match (group, version) {
        ("", "v1") => 1,
        ("autoscaling", "v2") => 30,
        ("flowcontrol.apiserver.k8s.io", "v1") => 21,
        _ => 15,
    };
    (group_priority, version_priority)
}

/// The name of a group version's APIService (`v1.apps`; `v1.` for the core group).
fn name_of(group: &str, version: &str) -> String {
    format!("{version}.{group}")
}

fn condition(status: &str, reason: &str, message: &str) -> Value {
    json!({"type": "Available", "status": status, "lastTransitionTime": crate::object::now_rfc3339(),
           "reason": reason, "message": message})
}

/// Creates the local APIServices of the built-in group versions that lack one.
pub(crate) async fn bootstrap(api: &ApiServer) -> Result<(), crate::status::ApiError> {
    let collection = "/apis/apiregistration.k8s.io/v1/apiservices";
    let (_, existing) = api.internal(http::Method::GET, collection, None).await;
    let have: Vec<&str> = existing
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i.pointer("/metadata/name").and_then(Value::as_str))
        .collect();
    let mut wanted: Vec<(String, String)> = api
        .registry()
        .all()
        .iter()
        .filter(|t| t.custom.is_none())
        .map(|t| (t.group.clone(), t.version.clone()))
        .collect();
    wanted.sort();
    wanted.dedup();
    for (group, version) in wanted {
        let name = name_of(&group, &version);
        if have.contains(&name.as_str()) {
            continue;
        }
        let (group_priority, version_priority) = priorities(&group, &version);
        let obj = json!({
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": name, "labels": {"kube-aggregator.kubernetes.io/automanaged": "onstart"}},
            "spec": {"group": group, "version": version, "groupPriorityMinimum": group_priority, "versionPriority": version_priority},
        });
        let (code, mut created) = api.internal(http::Method::POST, collection, Some(&obj)).await;
        if code == StatusCode::CONFLICT {
            continue;
        }
        if !code.is_success() {
            return Err(crate::status::ApiError::internal(format!("creating APIService {name}: {created}")));
        }
        created["status"] =
            json!({"conditions": [condition("True", "Local", "Local APIServices are always available")]});
        api.internal(http::Method::PUT, &format!("{collection}/{name}/status"), Some(&created)).await;
    }
    Ok(())
}

/// The APIServices backed by a Service, as stored.
async fn remote(api: &ApiServer) -> Vec<Value> {
    let Ok(page) = api.store().list(PREFIX.as_bytes(), vt_store::ListOptions::default()).await else {
        return Vec::new();
    };
    page.kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .filter(|a| a.pointer("/spec/service").is_some_and(Value::is_object))
        .collect()
}

fn spec_str<'a>(a: &'a Value, field: &str) -> &'a str {
    a.pointer(&format!("/spec/{field}")).and_then(Value::as_str).unwrap_or("")
}

/// An APIService's `Available` condition.
fn available_condition(a: &Value) -> Option<&Value> {
    a.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c.get("type").and_then(Value::as_str) == Some("Available")))
}

fn is_available(a: &Value) -> bool {
    available_condition(a).is_some_and(|c| c.get("status").and_then(Value::as_str) == Some("True"))
}

/// The groups claimed by service-backed APIServices (and not served here), each with its
/// versions by descending `versionPriority`: `(group, [(version, available)])`.
pub(crate) async fn claimed_groups(api: &ApiServer) -> Vec<(String, Vec<(String, bool)>)> {
    let served: Vec<String> = api.registry().groups().into_iter().map(|g| g.name).collect();
    let mut by_group: std::collections::BTreeMap<String, Vec<(i64, String, bool)>> = Default::default();
    for a in remote(api).await {
        let group = spec_str(&a, "group").to_string();
        if group.is_empty() || served.contains(&group) {
            continue;
        }
        let priority = a.pointer("/spec/versionPriority").and_then(Value::as_i64).unwrap_or(0);
        by_group.entry(group).or_default().push((priority, spec_str(&a, "version").to_string(), is_available(&a)));
    }
    by_group
        .into_iter()
        .map(|(g, mut vs)| {
            vs.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            (g, vs.into_iter().map(|(_, v, up)| (v, up)).collect())
        })
        .collect()
}

/// The answer to a request under `/apis/<group>[/<version>...]` for a claimed group, or `None`
/// when the group is not claimed (served here, or nobody's).
pub(crate) async fn route(api: &ApiServer, parts: &[String]) -> Option<Response<Body>> {
    let [apis, group, rest @ ..] = parts else { return None };
    if apis != "apis" || api.registry().groups().iter().any(|g| &g.name == group) {
        return None;
    }
    let claimed = claimed_groups(api).await;
    let (_, versions) = claimed.iter().find(|(g, _)| g == group)?;
    match rest.first() {
        None => {
            let vs: Vec<Value> =
                versions.iter().map(|(v, _)| json!({"groupVersion": format!("{group}/{v}"), "version": v})).collect();
            let doc = json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": vs,
                             "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)});
            Some(json_response(StatusCode::OK, &doc))
        }
        Some(version) => {
            versions.iter().find(|(v, _)| v == version)?;
            // kube-aggregator's `proxyError`: http.Error's plain text, with its headers.
            let mut resp = crate::text_response(StatusCode::SERVICE_UNAVAILABLE, "service unavailable\n");
            resp.headers_mut()
                .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
            resp.headers_mut().insert("x-content-type-options", http::HeaderValue::from_static("nosniff"));
            Some(resp)
        }
    }
}

/// The `Available` condition a service-backed APIService has now.
async fn availability(api: &ApiServer, a: &Value) -> Value {
    let namespace = a.pointer("/spec/service/namespace").and_then(Value::as_str).unwrap_or("");
    let name = a.pointer("/spec/service/name").and_then(Value::as_str).unwrap_or("");
    let read = |key: String| async move {
        match api.store().get(key.as_bytes()).await {
            Ok(Some(kv)) => serde_json::from_slice::<Value>(&kv.value).ok(),
            _ => None,
        }
    };
    if read(format!("/registry/core/services/{namespace}/{name}")).await.is_none() {
        return condition("False", "ServiceNotFound", &format!("service/{name} in \"{namespace}\" is not present"));
    }
    let endpoints = read(format!("/registry/core/endpoints/{namespace}/{name}")).await;
    let has_address = endpoints
        .as_ref()
        .and_then(|e| e.get("subsets"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|s| s.get("addresses").and_then(Value::as_array).is_some_and(|a| !a.is_empty()));
    if !has_address {
        return condition(
            "False",
            "MissingEndpoints",
            &format!("endpoints for service/{name} in \"{namespace}\" have no addresses"),
        );
    }
    condition(
        "False",
        "FailedDiscoveryCheck",
        "vt does not proxy requests to aggregated API servers yet; the API is not reachable through this server",
    )
}

/// Creates the local APIServices (in the background, as kube-aggregator's autoregister
/// controller does: a new cluster serves without waiting for them), then keeps the
/// `Available` condition of service-backed APIServices, until the server stops.
pub(crate) async fn run(weak: crate::WeakApiServer) {
    if let Some(api) = weak.upgrade()
        && let Err(e) = bootstrap(&api).await
    {
        tracing::warn!(error = %e, "local APIServices not created");
    }
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let Some(api) = weak.upgrade() else { return };
        check(&api).await;
    }
}

/// One pass of [`run`]: rewrites the status of each service-backed APIService whose
/// availability changed (reason or status; the transition time stays otherwise).
pub(crate) async fn check(api: &ApiServer) {
    for a in remote(api).await {
        let want = availability(api, &a).await;
        let same = available_condition(&a)
            .is_some_and(|c| ["status", "reason", "message"].iter().all(|k| c.get(*k) == want.get(*k)));
        if same {
            continue;
        }
        let name = a.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
        let path = format!("/apis/apiregistration.k8s.io/v1/apiservices/{name}/status");
        let (_, mut fresh) =
            api.internal(http::Method::GET, &format!("/apis/apiregistration.k8s.io/v1/apiservices/{name}"), None).await;
        if !fresh.is_object() || fresh.get("kind").and_then(Value::as_str) == Some("Status") {
            continue;
        }
        fresh["status"] = json!({"conditions": [want]});
        api.internal(http::Method::PUT, &path, Some(&fresh)).await;
    }
}
