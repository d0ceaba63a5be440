//! The namespace index: which namespaces exist and which are terminating, kept from the
//! namespaces watch so the NamespaceLifecycle admission check needs no store read. Emptying
//! and finalizing deleted namespaces is the namespace controller's (`vt-controllers`).

use http::Method;
use serde_json::Value;
use std::sync::Weak;

use crate::{ApiServer, Inner, object};

/// Follows namespaces into the namespace index until the server is dropped.
pub(crate) async fn run(inner: Weak<Inner>) {
    loop {
        let Some(mut live) = subscribe(&inner).await else {
            return;
        };
        // The current namespaces, including those left terminating by an earlier run.
        if let Some(api) = inner.upgrade().map(|inner| ApiServer { inner }) {
            let (_, list) = api.internal(Method::GET, "/api/v1/namespaces", None).await;
            for ns in list.get("items").and_then(Value::as_array).cloned().unwrap_or_default() {
                api.index_namespace(object::name(&ns), Some(terminating(&ns)));
            }
        }
        loop {
            let change = match live.recv().await {
                Ok(c) => c,
                // Fell behind: subscribe again and catch up from a fresh list.
                Err(crate::watchcache::Ended::Lagged) => break,
                Err(crate::watchcache::Ended::Closed) => return,
            };
            let name = object::name(&change.object).to_string();
            let Some(api) = inner.upgrade().map(|inner| ApiServer { inner }) else {
                return;
            };
            api.index_namespace(&name, (!change.deleted).then(|| terminating(&change.object)));
        }
    }
}

fn terminating(ns: &Value) -> bool {
    object::is_deleting(ns) || object::str_at(ns, &["status", "phase"]) == Some("Terminating")
}

async fn subscribe(inner: &Weak<Inner>) -> Option<crate::watchcache::Subscription> {
    let api = ApiServer { inner: inner.upgrade()? };
    let rt = api.registry().get("", "v1", "namespaces")?;
    let cache = api.cache(&rt.key_prefix()).await.ok()?;
    cache.subscribe(cache.head())
}
