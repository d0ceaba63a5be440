//! APIServices, as kube-aggregator keeps them in front of kube-apiserver.
//!
//! - Every built-in group version has a *local* APIService (`v1.apps`, `v1.`, ...; labelled
//!   `kube-aggregator.kubernetes.io/automanaged: onstart`, `Available` with reason `Local`),
//!   created in the background once the server runs, so `kubectl get apiservices` lists what
//!   a kube cluster lists; so has every group version custom resources serve (labelled
//!   `true`, created and deleted with the CRDs, as kube's crd registration controller does).
//! - An APIService with a `service` claims its group version: `/apis/<group>` answers the
//!   group document from the APIServices, `/apis` and aggregated discovery list the group
//!   (with the resources its server's discovery answered), and requests under
//!   `/apis/<group>/<version>` are proxied to its server ([`proxy`]) while it is available;
//!   while not, they get kube-aggregator's 503 with the plain-text body `service unavailable`
//!   (client-go: "the server is currently unable to handle the request"; `kubectl top` says
//!   so).
//! - Its `Available` condition is kept by [`run`], as kube-aggregator's availability
//!   controller keeps it: `ServiceNotFound`, `MissingEndpoints`, `FailedDiscoveryCheck` (the
//!   server's discovery did not answer 2xx within 5 s), or `Passed`.
//! - The front proxy's CA and headers are published in
//!   `kube-system/extension-apiserver-authentication`, where aggregated servers read them.
//!
//! Claims never shadow a group this server serves itself (built-in or custom resources).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::body::Body;
use crate::{ApiServer, json_response, metricsapi};

mod proxy;

pub(crate) use proxy::forward;

/// Where APIServices are stored.
const PREFIX: &str = "/registry/apiregistration.k8s.io/apiservices/";

/// How often the availability of service-backed APIServices is checked, when all are
/// available and when one is not (kube-aggregator also rechecks on changes; this is the
/// latency of noticing one).
const CHECK_EVERY: Duration = Duration::from_secs(10);
const RECHECK_EVERY: Duration = Duration::from_secs(3);

/// What the aggregator keeps for one server.
#[derive(Default)]
pub(crate) struct State {
    /// What the servers of available APIServices answered to their discovery check (their
    /// `APIResourceList`), by APIService name.
    discovered: Mutex<HashMap<String, Value>>,
    /// The service-backed APIServices as last read, with the [`State::generation`] they were
    /// read at: discovery, proxying and the keeper read the store only after a change.
    remote: Mutex<Option<(u64, Arc<Vec<Value>>)>>,
    /// Bumped by every APIService write.
    generation: AtomicU64,
    /// Signalled on every APIService write (the keeper waits on it).
    changes: Arc<Notify>,
    /// Set once the local APIServices exist: they are created when APIServices are first read
    /// or written (most clusters never look, and then never pay for them).
    local: tokio::sync::OnceCell<()>,
}

impl State {
    /// Notes a write of an APIService: the next read of the service-backed ones goes to the
    /// store, and the keeper wakes.
    pub(crate) fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.changes.notify_one();
    }

    fn discovered(&self, name: &str) -> Option<Value> {
        self.discovered.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// Keeps (or, `None`, forgets) what the server behind APIService `name` answered.
    fn set_discovered(&self, name: &str, list: Option<Value>) {
        let mut d = self.discovered.lock().unwrap_or_else(|p| p.into_inner());
        match list {
            Some(l) => d.insert(name.to_string(), l),
            None => d.remove(name),
        };
    }
}

/// Creates the local APIServices if they do not exist yet (once per server).
pub(crate) async fn ensure_local(api: &ApiServer) -> Result<(), crate::status::ApiError> {
    api.aggregator().local.get_or_try_init(|| create_local(api)).await.map(|_| ())
}

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

/// The automanaged label: `onstart` on the built-in group versions' APIServices, `true` on
/// those of custom resources' group versions (kube's crd registration controller).
const AUTOMANAGED: &str = "kube-aggregator.kubernetes.io/automanaged";

/// Creates the local APIServices of the built-in group versions, and of the custom
/// resources' ones, that lack one ([`ensure_local`] calls it once).
async fn create_local(api: &ApiServer) -> Result<(), crate::status::ApiError> {
    sync_local(api, false).await?;
    sync_local(api, true).await
}

/// Keeps one local APIService per group version served here: the built-in ones (`custom`
/// false: created when missing) or the custom resources' (`custom` true: created when a CRD
/// serves a new group version, deleted when none does any more, as kube's crd registration
/// controller does; priorities 1000 and 100).
async fn sync_local(api: &ApiServer, custom: bool) -> Result<(), crate::status::ApiError> {
    let collection = "/apis/apiregistration.k8s.io/v1/apiservices";
    let (_, existing) = api.internal(http::Method::GET, collection, None).await;
    let items: Vec<&Value> = existing.get("items").and_then(Value::as_array).into_iter().flatten().collect();
    let have: Vec<&str> = items.iter().filter_map(|i| i.pointer("/metadata/name").and_then(Value::as_str)).collect();
    let builtin: Vec<(String, String)> = api
        .registry()
        .all()
        .iter()
        .filter(|t| t.custom.is_none())
        .map(|t| (t.group.clone(), t.version.clone()))
        .collect();
    let mut wanted: Vec<(String, String)> = api
        .registry()
        .all()
        .iter()
        .filter(|t| t.custom.is_some() == custom)
        .map(|t| (t.group.clone(), t.version.clone()))
        // A CRD never takes over a built-in group version.
        .filter(|gv| !custom || !builtin.contains(gv))
        .collect();
    wanted.sort();
    wanted.dedup();
    let label = if custom { "true" } else { "onstart" };
    if custom {
        let wanted_names: Vec<String> = wanted.iter().map(|(g, v)| name_of(g, v)).collect();
        for i in &items {
            let name = i.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
            let ours =
                i.pointer(&format!("/metadata/labels/{}", AUTOMANAGED.replace('/', "~1"))) == Some(&json!("true"));
            if ours && !wanted_names.iter().any(|w| w == name) {
                api.internal(http::Method::DELETE, &format!("{collection}/{name}"), None).await;
            }
        }
    }
    for (group, version) in wanted {
        let name = name_of(&group, &version);
        if have.contains(&name.as_str()) {
            continue;
        }
        let (group_priority, version_priority) = if custom { (1000, 100) } else { priorities(&group, &version) };
        let obj = json!({
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": name, "labels": {AUTOMANAGED: label}},
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

/// The APIServices backed by a Service, as stored: read from the store only after an
/// APIService was written since the last read (an idle cluster reads nothing).
async fn remote(api: &ApiServer) -> Arc<Vec<Value>> {
    let state = api.aggregator();
    let generation = state.generation.load(Ordering::Acquire);
    if let Some((_, list)) =
        state.remote.lock().unwrap_or_else(|p| p.into_inner()).as_ref().filter(|(g, _)| *g == generation)
    {
        return list.clone();
    }
    let Ok(page) = api.store().list(PREFIX.as_bytes(), vt_store::ListOptions::default()).await else {
        return Arc::new(Vec::new());
    };
    let list: Arc<Vec<Value>> = Arc::new(
        page.kvs
            .iter()
            .filter(|kv| memchr::memmem::find(&kv.value, b"\"service\":{").is_some())
            .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
            .filter(|a| a.pointer("/spec/service").is_some_and(Value::is_object))
            .collect(),
    );
    *state.remote.lock().unwrap_or_else(|p| p.into_inner()) = Some((generation, list.clone()));
    list
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

/// One version of a claimed group.
pub(crate) struct ClaimedVersion {
    pub version: String,
    pub available: bool,
    /// The resources its server's discovery listed (its `APIResourceList`), once checked.
    pub resources: Option<Value>,
}

/// The groups claimed by service-backed APIServices (and not served here), each with its
/// versions by descending `versionPriority`.
pub(crate) async fn claimed_groups(api: &ApiServer) -> Vec<(String, Vec<ClaimedVersion>)> {
    let served: Vec<String> = api.registry().groups().into_iter().map(|g| g.name).collect();
    let mut by_group: std::collections::BTreeMap<String, Vec<(i64, ClaimedVersion)>> = Default::default();
    let remote = remote(api).await;
    if serves_metrics(api, &remote).await {
        let version = ClaimedVersion {
            version: metricsapi::VERSION.to_string(),
            available: true,
            resources: Some(metricsapi::resource_list()),
        };
        by_group.insert(metricsapi::GROUP.to_string(), vec![(0, version)]);
    }
    for a in remote.iter() {
        let group = spec_str(a, "group").to_string();
        if group.is_empty() || served.contains(&group) {
            continue;
        }
        let priority = a.pointer("/spec/versionPriority").and_then(Value::as_i64).unwrap_or(0);
        let name = a.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
        let version = ClaimedVersion {
            version: spec_str(a, "version").to_string(),
            available: is_available(a),
            resources: api.aggregator().discovered(name),
        };
        by_group.entry(group).or_default().push((priority, version));
    }
    by_group
        .into_iter()
        .map(|(g, mut vs)| {
            vs.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.version.cmp(&b.1.version)));
            (g, vs.into_iter().map(|(_, v)| v).collect())
        })
        .collect()
}

/// Whether this server answers `metrics.k8s.io` itself from its [`metricsapi::MetricsSource`]:
/// it has one with a metrics API behind it, and neither a CRD nor an APIService of the
/// cluster's own serves the group.
async fn serves_metrics(api: &ApiServer, remote: &[Value]) -> bool {
    let Some(source) = &api.config().metrics else { return false };
    !remote.iter().any(|a| spec_str(a, "group") == metricsapi::GROUP)
        && !api.registry().groups().iter().any(|g| g.name == metricsapi::GROUP)
        && source.available().await
}

/// What a request under a claimed group gets.
pub(crate) enum Route {
    /// An answer from here (the group document, or 503 while the API is unavailable).
    Answer(Response<Body>),
    /// Proxied to the server behind this APIService ([`forward`]).
    Proxy(Value),
    /// `metrics.k8s.io/v1beta1`, answered here from the metrics source (`metricsapi`).
    Metrics,
}

/// The route of a request under `/apis/<group>[/<version>...]` for a claimed group, or `None`
/// when the group is not claimed (served here, or nobody's).
pub(crate) async fn route(api: &ApiServer, parts: &[String]) -> Option<Route> {
    let [apis, group, rest @ ..] = parts else { return None };
    if apis != "apis" || api.registry().groups().iter().any(|g| &g.name == group) {
        return None;
    }
    match rest.first() {
        None => {
            let claimed = claimed_groups(api).await;
            let (_, versions) = claimed.iter().find(|(g, _)| g == group)?;
            let vs: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{group}/{}", v.version), "version": v.version}))
                .collect();
            let doc = json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": vs,
                             "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)});
            Some(Route::Answer(json_response(StatusCode::OK, &doc)))
        }
        Some(version) => {
            // From the cached service-backed APIServices: a proxied request reads no store.
            // Matched by spec, not by name (a dotted version could split a name another way).
            let remote = remote(api).await;
            let Some(a) = remote
                .iter()
                .find(|a| spec_str(a, "group") == group.as_str() && spec_str(a, "version") == version.as_str())
            else {
                let metrics = group == metricsapi::GROUP && version == metricsapi::VERSION;
                return (metrics && serves_metrics(api, &remote).await).then_some(Route::Metrics);
            };
            if !is_available(a) {
                // kube-aggregator's `proxyError`: http.Error's plain text, with its headers.
                return Some(Route::Answer(proxy::proxy_error(StatusCode::SERVICE_UNAVAILABLE, "service unavailable")));
            }
            Some(Route::Proxy(a.clone()))
        }
    }
}

/// The `Available` condition a service-backed APIService has now; a passed check leaves the
/// server's discovery answer with [`State::discovered`].
async fn availability(api: &ApiServer, a: &Value) -> Value {
    let namespace = a.pointer("/spec/service/namespace").and_then(Value::as_str).unwrap_or("");
    let name = a.pointer("/spec/service/name").and_then(Value::as_str).unwrap_or("");
    let apiservice = a.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    let unavailable = |reason: &str, message: String| {
        api.aggregator().set_discovered(apiservice, None);
        condition("False", reason, &message)
    };
    if api.stored(&format!("/registry/core/services/{namespace}/{name}")).await.is_none() {
        return unavailable("ServiceNotFound", format!("service/{name} in \"{namespace}\" is not present"));
    }
    let endpoints = api.stored(&format!("/registry/core/endpoints/{namespace}/{name}")).await;
    let has_address = endpoints
        .as_ref()
        .and_then(|e| e.get("subsets"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|s| s.get("addresses").and_then(Value::as_array).is_some_and(|a| !a.is_empty()));
    if !has_address {
        return unavailable(
            "MissingEndpoints",
            format!("endpoints for service/{name} in \"{namespace}\" have no addresses"),
        );
    }
    match proxy::discover(api, a).await {
        Ok(list) => {
            api.aggregator().set_discovered(apiservice, Some(list));
            condition("True", "Passed", "all checks passed")
        }
        Err(e) => unavailable("FailedDiscoveryCheck", e),
    }
}

/// Publishes what aggregated API servers need to trust this server's front proxy (kube's
/// `ClusterAuthenticationTrustController`): `kube-system/extension-apiserver-authentication`,
/// put back as it should be whenever it was changed (every availability pass looks, reading
/// the store directly: an unchanged ConfigMap costs one read).
async fn publish_authentication(api: &ApiServer) {
    let Some(fp) = api.config().front_proxy.clone() else { return };
    let data = json!({
        "client-ca-file": fp.client_ca_pem,
        "requestheader-allowed-names": "[\"front-proxy-client\"]",
        "requestheader-client-ca-file": fp.ca_pem,
        "requestheader-extra-headers-prefix": "[\"X-Remote-Extra-\"]",
        "requestheader-group-headers": "[\"X-Remote-Group\"]",
        "requestheader-username-headers": "[\"X-Remote-User\"]",
    });
    let key = "/registry/core/configmaps/kube-system/extension-apiserver-authentication";
    if api.stored(key).await.and_then(|v| v.get("data").cloned()).as_ref() == Some(&data) {
        return;
    }
    let path = "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication";
    let (code, mut current) = api.internal(http::Method::GET, path, None).await;
    if code == StatusCode::OK {
        if current.get("data") == Some(&data) {
            return;
        }
        current["data"] = data;
        api.internal(http::Method::PUT, path, Some(&current)).await;
    } else {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system"}, "data": data});
        api.internal(http::Method::POST, "/api/v1/namespaces/kube-system/configmaps", Some(&cm)).await;
    }
}

/// Publishes the front proxy's trust, then keeps the `Available` condition of
/// service-backed APIServices and the custom resources' local APIServices, until the server
/// stops. It sleeps until an APIService is written, the served types change, or — while
/// there are service-backed APIServices — the next availability pass is due; a cluster
/// without them costs nothing here.
pub(crate) async fn run(weak: crate::WeakApiServer) {
    let Some((registry_changes, apiservice_changes)) =
        weak.upgrade().map(|api| (api.registry().changes(), api.aggregator().changes.clone()))
    else {
        return;
    };
    if let Some(api) = weak.upgrade() {
        publish_authentication(&api).await;
    }
    let mut wait = CHECK_EVERY;
    let mut next_check = tokio::time::Instant::now() + wait;
    // The registry generation the custom resources' APIServices were last kept for.
    let mut synced = None;
    loop {
        let any_remote = match weak.upgrade() {
            Some(api) => !remote(&api).await.is_empty(),
            None => return,
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next_check), if any_remote => {}
            _ = registry_changes.notified() => {}
            _ = apiservice_changes.notified() => {
                // A new or changed APIService is checked at once.
                next_check = tokio::time::Instant::now();
            }
        }
        let Some(api) = weak.upgrade() else { return };
        let generation = api.registry().generation();
        if api.aggregator().local.initialized() && synced != Some(generation) {
            match sync_local(&api, true).await {
                Ok(()) => synced = Some(generation),
                Err(e) => tracing::warn!(error = %e, "custom resources' APIServices not kept"),
            }
        }
        if tokio::time::Instant::now() >= next_check {
            wait = if check(&api).await { CHECK_EVERY } else { RECHECK_EVERY };
            next_check = tokio::time::Instant::now() + wait;
            // The pass's own status writes signalled a change: not a reason to check again.
            let _ = futures::FutureExt::now_or_never(apiservice_changes.notified());
        }
    }
}

/// One pass of [`run`]: republishes the front proxy's trust if it changed, then rewrites the
/// status of each service-backed APIService whose availability changed (status, reason or
/// message; the transition time moves only with the status, as kube's). Checks run eight at
/// a time. Says whether all are available.
pub(crate) async fn check(api: &ApiServer) -> bool {
    use futures::StreamExt;
    publish_authentication(api).await;
    let remotes = remote(api).await;
    // What deleted APIServices' servers answered goes with them.
    let names: Vec<String> =
        remotes.iter().filter_map(|a| a.pointer("/metadata/name").and_then(Value::as_str).map(String::from)).collect();
    api.aggregator().discovered.lock().unwrap_or_else(|p| p.into_inner()).retain(|k, _| names.contains(k));
    let checked: Vec<(Value, Value)> = futures::stream::iter(remotes.iter().cloned())
        .map(|a| async move {
            let want = availability(api, &a).await;
            (a, want)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut all = true;
    for (a, mut want) in checked {
        all &= want.get("status").and_then(Value::as_str) == Some("True");
        let current = available_condition(&a);
        let same = current.is_some_and(|c| ["status", "reason", "message"].iter().all(|k| c.get(*k) == want.get(*k)));
        if same {
            continue;
        }
        if let Some(c) = current
            && c.get("status") == want.get("status")
            && let Some(t) = c.get("lastTransitionTime")
        {
            want["lastTransitionTime"] = t.clone();
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
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the route rule: a request goes to the APIService of exactly its group and
    /// version (by spec), never to one whose name the path happens to spell.
    #[tokio::test]
    async fn routes_by_group_and_version_not_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = vt_store::sqlite::SqliteStore::open(dir.path().join("s.db"), Default::default()).await.unwrap();
        let api = ApiServer::new(crate::Config::basic(Arc::new(store), "t")).await.unwrap();
        let collection = "/apis/apiregistration.k8s.io/v1/apiservices";
        for (group, version) in [("wardle.example.com", "v1alpha1"), ("rbac.authorization.k8s.io", "v9")] {
            let obj = json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                "metadata": {"name": name_of(group, version)},
                "spec": {"group": group, "version": version, "groupPriorityMinimum": 100, "versionPriority": 10,
                         "service": {"namespace": "default", "name": "x"}}});
            let (code, body) = api.internal(http::Method::POST, collection, Some(&obj)).await;
            assert!(code.is_success(), "{body}");
        }
        let parts = |p: &str| p.split('/').filter(|s| !s.is_empty()).map(String::from).collect::<Vec<_>>();
        // Claimed and not available yet: kube-aggregator's 503.
        let Some(Route::Answer(resp)) = route(&api, &parts("/apis/wardle.example.com/v1alpha1/flunders")).await else {
            panic!("the claimed group version is not routed");
        };
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        // `v9.rbac.authorization.k8s.io` is also `<v9.rbac.authorization>.<k8s.io>`: not routed.
        assert!(route(&api, &parts("/apis/k8s.io/v9.rbac.authorization/x")).await.is_none());
        // A group served here is never claimed.
        assert!(route(&api, &parts("/apis/rbac.authorization.k8s.io/v9/x")).await.is_none());
        // Without a metrics source, metrics.k8s.io is nobody's.
        assert!(route(&api, &parts("/apis/metrics.k8s.io/v1beta1/pods")).await.is_none());
    }
}
