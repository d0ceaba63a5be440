//! PodSecurity admission, as kube-apiserver's plugin: a pod that breaks its namespace's
//! `pod-security.kubernetes.io/enforce` level is refused (403, kube's message), one that breaks
//! the `warn` level is admitted with a warning; pod templates of workloads are only warned
//! about (their pods are checked when created). A cluster may have a floor no namespace label
//! can loosen (a virtual cluster's: the level its host enforces on all of its pods), while
//! labels may tighten it.

use serde_json::Value;

use crate::podsecurity::{Level, check};
use crate::rest::Op;
use crate::status::{ApiError, ApiResult};

const ENFORCE: &str = "pod-security.kubernetes.io/enforce";
const WARN: &str = "pod-security.kubernetes.io/warn";

/// The levels of namespace `ns`: (enforce, warn), each at least the cluster's floor.
async fn levels(op: &Op<'_>, floor: Level) -> (Level, Option<Level>) {
    let key = format!("/registry/core/namespaces/{}", op.ns);
    let labels = match op.store().get(key.as_bytes()).await {
        Ok(Some(kv)) => serde_json::from_slice::<Value>(&kv.value)
            .ok()
            .and_then(|v| v.pointer("/metadata/labels").cloned())
            .unwrap_or(Value::Null),
        _ => Value::Null,
    };
    let label = |k: &str| labels.get(k).and_then(Value::as_str).map(Level::parse_strict);
    let enforce = label(ENFORCE).flatten().unwrap_or(Level::Privileged).max(floor);
    let warn = label(WARN).flatten().map(|w| w.max(enforce)).filter(|w| *w > enforce);
    (enforce, warn)
}

/// The pod spec a create of `op`'s kind carries: a pod's, or a workload's template's.
fn pod_spec<'a>(op: &Op<'_>, obj: &'a Value) -> Option<(&'a Value, bool)> {
    let g = op.rt.group.as_str();
    match (g, op.rt.plural.as_str()) {
        ("", "pods") => obj.get("spec").map(|s| (s, true)),
        ("", "podtemplates") => obj.pointer("/template/spec").map(|s| (s, false)),
        ("", "replicationcontrollers")
        | ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets")
        | ("batch", "jobs") => obj.pointer("/spec/template/spec").map(|s| (s, false)),
        ("batch", "cronjobs") => obj.pointer("/spec/jobTemplate/spec/template/spec").map(|s| (s, false)),
        _ => None,
    }
}

/// kube's warning for a violation: `would violate PodSecurity "<level>:latest": ...`.
fn would(why: &str) -> String {
    format!("would {}", why.replacen("violates", "violate", 1))
}

/// Checks a created (or updated) object against its namespace's levels.
pub(crate) async fn admit(op: &Op<'_>, obj: &Value) -> ApiResult<()> {
    let Some(floor) = op.api.config().pod_security else { return Ok(()) };
    if op.ns.is_empty() || !(op.sub.is_empty() || op.sub == "ephemeralcontainers") {
        return Ok(());
    }
    let Some((spec, is_pod)) = pod_spec(op, obj) else { return Ok(()) };
    let (enforce, warn) = levels(op, floor).await;
    if let Err(why) = check(spec, enforce) {
        if is_pod {
            let name = crate::object::name(obj);
            return Err(ApiError::forbidden(&op.gr(), name, &why));
        }
        op.warn(would(&why));
        return Ok(());
    }
    if let Some(w) = warn
        && let Err(why) = check(spec, w)
    {
        op.warn(would(&why));
    }
    Ok(())
}
