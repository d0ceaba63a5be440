//! The tenant's `metrics.k8s.io` from the host's: the host's `PodMetrics` of the tenant's host
//! namespace, renamed to the tenant's pods (by the host pods' own annotations — a host pod
//! that is not the tenant's never shows), and the `NodeMetrics` of the nodes of the tenant's
//! pool. Whether the host has a metrics API is asked at most every 10 s, in the background.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde_json::{Value, json};
use vt_apiserver::metricsapi::MetricsSource;

use crate::host::Host;
use crate::translate::Target;
use crate::{NAME_ANNOTATION, NAMESPACE_ANNOTATION};

/// How long the host's answer to "is there a metrics API" is kept.
const AVAILABILITY_TTL: Duration = Duration::from_secs(10);

/// How long a host metrics request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What is known of the host's metrics API: the last answer and when, and whether a check is
/// under way.
#[derive(Default)]
struct Availability {
    last: Option<(Instant, bool)>,
    checking: bool,
}

/// A tenant's resource usage, from the host.
pub struct HostMetrics {
    host: Arc<Host>,
    target: Target,
    available: Arc<Mutex<Availability>>,
}

async fn get(host: &Host, path: &str) -> Result<Value, String> {
    let req = http::Request::get(path).body(Vec::new()).map_err(|e| e.to_string())?;
    match tokio::time::timeout(TIMEOUT, host.client.request::<Value>(req)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("{path}: no answer within {}s", TIMEOUT.as_secs())),
    }
}

impl HostMetrics {
    /// The metrics of `target`'s pods and nodes on `host`.
    pub fn new(host: Arc<Host>, target: Target) -> Arc<HostMetrics> {
        Arc::new(HostMetrics { host, target, available: Default::default() })
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        get(&self.host, path).await
    }

    async fn items(&self, path: &str) -> Result<Vec<Value>, String> {
        let list = self.get(path).await?;
        Ok(list.get("items").and_then(Value::as_array).cloned().unwrap_or_default())
    }
}

/// A metrics object's metadata reduced to what metrics-server writes, under `name` (and
/// `namespace`).
fn renamed(mut m: Value, name: &str, namespace: Option<&str>) -> Value {
    let created = m.pointer("/metadata/creationTimestamp").cloned().unwrap_or(Value::Null);
    let mut meta = json!({"name": name, "creationTimestamp": created});
    if let Some(ns) = namespace {
        meta["namespace"] = json!(ns);
    }
    m["metadata"] = meta;
    m
}

impl MetricsSource for HostMetrics {
    /// The last answer, at once: a stale one starts one check in the background (discovery
    /// never waits on a slow host).
    fn available(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let mut state = self.available.lock().unwrap_or_else(|p| p.into_inner());
            let fresh = state.last.is_some_and(|(at, _)| at.elapsed() < AVAILABILITY_TTL);
            if !fresh && !state.checking {
                state.checking = true;
                let (host, shared) = (self.host.clone(), self.available.clone());
                tokio::spawn(async move {
                    let up = get(&host, "/apis/metrics.k8s.io/v1beta1").await.is_ok();
                    let mut state = shared.lock().unwrap_or_else(|p| p.into_inner());
                    state.last = Some((Instant::now(), up));
                    state.checking = false;
                });
            }
            state.last.is_some_and(|(_, up)| up)
        })
    }

    fn pods(&self) -> BoxFuture<'_, Result<Vec<Value>, String>> {
        Box::pin(async move {
            let ns = &self.target.namespace;
            let items = self.items(&format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods")).await?;
            Ok(items
                .into_iter()
                .filter_map(|m| {
                    let host_name = m.pointer("/metadata/name").and_then(Value::as_str)?;
                    let pod = self.host.pod(ns, host_name)?;
                    let annotations = pod.metadata.annotations.as_ref()?;
                    let (name, namespace) = (annotations.get(NAME_ANNOTATION)?, annotations.get(NAMESPACE_ANNOTATION)?);
                    Some(renamed(m, name, Some(namespace)))
                })
                .collect())
        })
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<Value>, String>> {
        Box::pin(async move {
            let items = self.items("/apis/metrics.k8s.io/v1beta1/nodes").await?;
            Ok(items
                .into_iter()
                .filter_map(|m| {
                    let name = m.pointer("/metadata/name").and_then(Value::as_str)?.to_string();
                    let node = self.host.node(&name)?;
                    let node = vt_apiserver::object::to_value(node.as_ref()).ok()?;
                    self.target.owns_node(&node).then(|| renamed(m, &name, None))
                })
                .collect())
        })
    }
}
