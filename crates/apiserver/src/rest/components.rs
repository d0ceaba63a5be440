//! `componentstatuses` (v1, deprecated since 1.19 but still served by kube-apiserver, and
//! still what `kubectl get componentstatuses` asks): computed on each read, never stored, with
//! kube's deprecation warning. A tenant's scheduler and controller manager are vt's: pods are
//! scheduled by the host (through the syncer) and the controllers run in the manager with this
//! API server, so both answer when it does; `etcd-0` is the tenant's store, healthy when it
//! answers a read.

use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::Op;
use crate::body::Body;
use crate::status::{ApiError, ApiResult};

/// What kube-apiserver warns on every read of the kind.
const DEPRECATED: &str = "v1 ComponentStatus is deprecated in v1.19+";

fn component(name: &str, healthy: Result<(), String>) -> Value {
    let condition = match healthy {
        Ok(()) => json!({"type": "Healthy", "status": "True", "message": "ok"}),
        Err(e) => json!({"type": "Healthy", "status": "False", "error": e}),
    };
    json!({"kind": "ComponentStatus", "apiVersion": "v1", "metadata": {"name": name}, "conditions": [condition]})
}

/// `GET` (one, by name) or `LIST` of the components.
pub(crate) async fn serve(op: &Op<'_>, list: bool) -> ApiResult<Response<Body>> {
    op.warn(DEPRECATED);
    let store = op.store().current_revision().await.map(|_| ()).map_err(|e| e.to_string());
    let all = [component("scheduler", Ok(())), component("controller-manager", Ok(())), component("etcd-0", store)];
    if list {
        let items: Vec<Value> = all.into_iter().collect();
        let out = json!({"kind": "ComponentStatusList", "apiVersion": "v1", "metadata": {}, "items": items});
        return Ok(op.respond(StatusCode::OK, &out));
    }
    match all.into_iter().find(|c| c["metadata"]["name"] == op.name.as_str()) {
        Some(c) => Ok(op.respond(StatusCode::OK, &c)),
        None => Err(ApiError::not_found(&op.gr(), &op.name)),
    }
}
