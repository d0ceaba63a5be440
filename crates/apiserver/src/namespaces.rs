//! Namespace finalization, in process: when a namespace is being deleted, delete everything
//! in it, then remove the `kubernetes` finalizer and delete the namespace — what
//! kube-controller-manager's namespace controller does, so `kubectl delete namespace`
//! completes against a standalone API server too.

use std::sync::Weak;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{ApiServer, Inner, object, strategy};

/// Follows namespaces: keeps the namespace index (read by the NamespaceLifecycle check) and
/// finalizes the namespaces being deleted, until the server is dropped.
pub(crate) async fn run(inner: Weak<Inner>) {
    let Some(mut live) = subscribe(&inner).await else {
        return;
    };
    // The current namespaces, including those left terminating by an earlier run.
    if let Some(api) = inner.upgrade().map(|inner| ApiServer { inner }) {
        let (_, list) = api.internal(Method::GET, "/api/v1/namespaces", None).await;
        for ns in list.get("items").and_then(Value::as_array).cloned().unwrap_or_default() {
            api.index_namespace(object::name(&ns), Some(terminating(&ns)));
            if object::is_deleting(&ns) {
                spawn_finalizer(inner.clone(), object::name(&ns).to_string());
            }
        }
    }
    loop {
        let change = match live.recv().await {
            Ok(c) => c,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => return,
        };
        let name = object::name(&change.object).to_string();
        let Some(api) = inner.upgrade().map(|inner| ApiServer { inner }) else {
            return;
        };
        api.index_namespace(&name, (!change.deleted).then(|| terminating(&change.object)));
        if !change.deleted && object::is_deleting(&change.object) {
            spawn_finalizer(inner.clone(), name);
        }
    }
}

/// Finalizes one namespace in the background, retrying until it is empty (objects with
/// finalizers may take a while). Holds only a weak reference between attempts.
fn spawn_finalizer(weak: Weak<Inner>, name: String) {
    tokio::spawn(async move {
        for attempt in 0..600u32 {
            let Some(api) = weak.upgrade().map(|inner| ApiServer { inner }) else {
                return;
            };
            if finalize(&api, &name).await {
                return;
            }
            drop(api);
            tokio::time::sleep(Duration::from_millis(if attempt < 10 { 200 } else { 1000 })).await;
        }
    });
}

fn terminating(ns: &Value) -> bool {
    object::is_deleting(ns) || object::str_at(ns, &["status", "phase"]) == Some("Terminating")
}

async fn subscribe(
    inner: &Weak<Inner>,
) -> Option<tokio::sync::broadcast::Receiver<std::sync::Arc<crate::watchcache::Change>>> {
    let api = ApiServer { inner: inner.upgrade()? };
    let rt = api.registry().get("", "v1", "namespaces")?;
    let cache = api.cache(&rt.key_prefix()).await.ok()?;
    cache.subscribe(cache.head()).map(|s| s.live)
}

/// One pass: deletes the namespace's contents; once none are left, finalizes and deletes it.
/// Returns whether the namespace is gone.
async fn finalize(api: &ApiServer, ns: &str) -> bool {
    let mut remaining = 0usize;
    for rt in api.registry().all() {
        if !rt.namespaced || !rt.preferred || strategy::converts(&rt) || !rt.supports("list") || !rt.supports("delete")
        {
            continue;
        }
        let base =
            if rt.group.is_empty() { "/api/v1".to_string() } else { format!("/apis/{}/{}", rt.group, rt.version) };
        let collection = format!("{base}/namespaces/{ns}/{}", rt.plural);
        let (status, list) = api.internal(Method::GET, &collection, None).await;
        if status != StatusCode::OK {
            continue;
        }
        for item in list.get("items").and_then(Value::as_array).cloned().unwrap_or_default() {
            remaining += 1;
            if object::is_deleting(&item) {
                continue;
            }
            let path = format!("{collection}/{}", object::name(&item));
            api.internal(
                Method::DELETE,
                &path,
                Some(&json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"})),
            )
            .await;
        }
    }
    if remaining > 0 {
        return false;
    }
    let path = format!("/api/v1/namespaces/{ns}");
    let (status, current) = api.internal(Method::GET, &path, None).await;
    if status == StatusCode::NOT_FOUND {
        return true;
    }
    let mut fin = current.clone();
    let kept: Vec<Value> = object::at(&current, &["spec", "finalizers"])
        .and_then(Value::as_array)
        .map(|f| f.iter().filter(|x| x.as_str() != Some("kubernetes")).cloned().collect())
        .unwrap_or_default();
    fin["spec"]["finalizers"] = json!(kept);
    api.internal(Method::PUT, &format!("{path}/finalize"), Some(&fin)).await;
    let (status, _) = api.internal(Method::DELETE, &path, None).await;
    status == StatusCode::NOT_FOUND || {
        let (s, _) = api.internal(Method::GET, &path, None).await;
        s == StatusCode::NOT_FOUND
    }
}
