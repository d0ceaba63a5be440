//! Helpers the controllers share: controller references, label selectors, pod readiness and
//! availability, and kube's pod-template hash.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::Resource;

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed.
    #[error("api: {0}")]
    Kube(#[from] kube::Error),
    /// The object cannot be reconciled as it is.
    #[error("{0}")]
    Invalid(String),
}

/// A controller's result.
pub type Result<T> = std::result::Result<T, Error>;

/// Retries a failed reconcile soon.
pub fn retry<T>(_: std::sync::Arc<T>, e: &Error, _: std::sync::Arc<impl Sized>) -> kube::runtime::controller::Action {
    tracing::debug!(error = %e, "reconcile failed; retrying");
    kube::runtime::controller::Action::requeue(Duration::from_secs(1))
}

/// The controller reference to `owner`.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The uid of an object's controller, if it has one.
pub fn controller_uid(meta: &ObjectMeta) -> Option<&str> {
    meta.owner_references.as_ref()?.iter().find(|r| r.controller == Some(true)).map(|r| r.uid.as_str())
}

/// A label selector as a list-request string (`a=b,c in (d,e)`); `None` if it selects nothing.
pub fn selector_string(sel: &LabelSelector) -> Option<String> {
    let mut parts = Vec::new();
    for (k, v) in sel.match_labels.iter().flatten() {
        parts.push(format!("{k}={v}"));
    }
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            _ => return None,
        });
    }
    if parts.is_empty() { None } else { Some(parts.join(",")) }
}

/// Whether `sel` selects `labels` (an empty selector selects everything, as for
/// PodDisruptionBudgets and NetworkPolicies).
pub fn selector_matches(sel: &LabelSelector, labels: &std::collections::BTreeMap<String, String>) -> bool {
    sel.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v))
        && sel.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or(&[]);
            let v = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => v.is_some_and(|v| values.contains(v)),
                "NotIn" => v.is_none_or(|v| !values.contains(v)),
                "Exists" => v.is_some(),
                "DoesNotExist" => v.is_none(),
                _ => false,
            }
        })
}

/// Whether the pod is being deleted.
pub fn deleting(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Whether the pod has finished (Succeeded or Failed).
pub fn terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// When the pod's Ready condition became True, if it is ready.
pub fn ready_since(pod: &Pod) -> Option<jiff::Timestamp> {
    let c = pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")?;
    if c.status != "True" {
        return None;
    }
    Some(c.last_transition_time.as_ref().map(|t| t.0).unwrap_or_else(jiff::Timestamp::now))
}

/// Whether the pod is ready.
pub fn ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Whether the pod has been ready for `min_ready` seconds at `now`; else how long until then.
pub fn available(pod: &Pod, min_ready: i64, now: jiff::Timestamp) -> Result2 {
    match ready_since(pod) {
        None => Result2::No,
        Some(t) if min_ready <= 0 => {
            let _ = t;
            Result2::Yes
        }
        Some(t) => {
            let at = t + jiff::SignedDuration::from_secs(min_ready);
            if at <= now { Result2::Yes } else { Result2::After(now.duration_until(at).unsigned_abs()) }
        }
    }
}

/// Availability of a pod.
#[derive(Debug, PartialEq, Eq)]
pub enum Result2 {
    /// Available.
    Yes,
    /// Not ready.
    No,
    /// Ready, available after this long.
    After(Duration),
}

/// A template with its zero values dropped (`""`, `false`, `0`, `null`, empty lists and
/// maps), so templates compare as kube compares Go structs (a value-type field's zero value is
/// the same as its absence), whether they arrived as JSON or as protobuf.
pub fn normalized(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    fn zero(v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::Bool(b) => !b,
            Value::Number(n) => n.as_f64() == Some(0.0),
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(m) => m.is_empty(),
        }
    }
    match v {
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), normalized(v))).filter(|(_, v)| !zero(v)).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

/// kube's pod-template hash: FNV-1a (32 bit) of the template, as a string of kube's safe
/// alphabet (`rand.SafeEncodeString`).
pub fn template_hash(template: &serde_json::Value, collisions: i64) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(normalized(template).to_string().as_bytes());
    if collisions > 0 {
        feed(&(collisions as u32).to_le_bytes());
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string().bytes().map(|b| ALPHABET[(b as usize) % ALPHABET.len()] as char).collect()
}

/// Resolves an int-or-percent (`maxSurge: 25%`) against `total`, rounding up or down.
pub fn int_or_percent(
    v: Option<&k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
    total: i32,
    default: &str,
    round_up: bool,
) -> i32 {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let s = match v {
        Some(IntOrString::Int(i)) => return *i,
        Some(IntOrString::String(s)) => s.clone(),
        None => default.to_string(),
    };
    match s.strip_suffix('%').and_then(|p| p.parse::<f64>().ok()) {
        Some(p) => {
            let x = p * f64::from(total) / 100.0;
            (if round_up { x.ceil() } else { x.floor() }) as i32
        }
        None => s.parse().unwrap_or(0),
    }
}

/// Now, as kube writes times (`2006-01-02T15:04:05Z`).
pub fn now() -> String {
    timestamp(jiff::Timestamp::now())
}

/// A time as kube writes it.
pub fn timestamp(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Sets condition `type_` in `conds` (JSON conditions), keeping its `lastTransitionTime` when
/// the status does not change; `extra` fields (e.g. `lastProbeTime`) are merged in.
pub fn set_condition(
    conds: &mut Vec<serde_json::Value>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    extra: serde_json::Value,
) {
    use serde_json::json;
    let prior = conds.iter().position(|c| c["type"] == type_);
    let since = prior
        .map(|i| &conds[i])
        .filter(|c| c["status"] == status)
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(now()));
    let mut c = json!({"type": type_, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": since});
    if let (Some(m), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            m.insert(k.clone(), v.clone());
        }
    }
    match prior {
        Some(i) => conds[i] = c,
        None => conds.push(c),
    }
}

/// A pod from a workload's template: its labels and annotations, the owner as controller.
pub fn pod_from_template(
    template: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>,
    ns: &str,
    owner: &OwnerReference,
) -> Pod {
    let template = template.cloned().unwrap_or_default();
    let mut meta = template.metadata.unwrap_or_default();
    meta.namespace = Some(ns.to_string());
    meta.owner_references = Some(vec![owner.clone()]);
    meta.finalizers = None;
    Pod { metadata: meta, spec: template.spec, status: None }
}

/// The phase of a pod.
pub fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

/// Deletes an object, taking "already gone" for done.
pub async fn delete<K>(api: &kube::Api<K>, name: &str, dp: &kube::api::DeleteParams) -> Result<()>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, dp).await {
        Ok(_) => Ok(()),
        Err(e) if gone(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Creates a pod for `owner` (e.g. `job web`); a refusal (quota, admission, a ServiceAccount
/// not there yet) is an error, so the owner is reconciled again soon.
pub async fn create_pod(api: &kube::Api<Pod>, pod: &Pod, owner: &str) -> Result<()> {
    match api.create(&kube::api::PostParams::default(), pod).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 403 || e.code == 422 => {
            Err(Error::Invalid(format!("{owner}: pod creation refused: {}", e.message)))
        }
        Err(e) => Err(e.into()),
    }
}

/// Records a Warning event about `object` from `component` (as kube's controllers record
/// `FailedCreate` and the like). One event per distinct message: a repeat is not recorded
/// again (the event's name is derived from the message).
pub async fn warn<K: Resource<DynamicType = ()>>(
    client: &kube::Client,
    object: &K,
    component: &str,
    reason: &str,
    message: &str,
) {
    use std::hash::{Hash, Hasher};
    let meta = object.meta();
    let ns = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let name = meta.name.clone().unwrap_or_default();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (reason, message, &meta.uid).hash(&mut h);
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let event = serde_json::json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{name}.{:016x}", h.finish()), "namespace": ns},
        "involvedObject": {"apiVersion": K::api_version(&()), "kind": K::kind(&()), "namespace": ns,
            "name": name, "uid": meta.uid},
        "reason": reason, "message": message, "type": "Warning",
        "source": {"component": component}, "reportingComponent": component,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    });
    let events: kube::Api<k8s_openapi::api::core::v1::Event> = kube::Api::namespaced(client.clone(), &ns);
    if let Ok(e) = vt_apiserver::object::from_value(event) {
        let _ = events.create(&kube::api::PostParams::default(), &e).await;
    }
}

/// Whether a failed API call means the object is already gone (or already there).
pub fn gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 || s.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    #[test]
    fn percentages_round_like_kube() {
        assert_eq!(int_or_percent(Some(&IntOrString::String("25%".into())), 10, "25%", true), 3);
        assert_eq!(int_or_percent(Some(&IntOrString::String("25%".into())), 10, "25%", false), 2);
        assert_eq!(int_or_percent(Some(&IntOrString::Int(2)), 10, "25%", false), 2);
        assert_eq!(int_or_percent(None, 4, "25%", true), 1);
    }

    #[test]
    fn hashes_are_stable_and_safe() {
        let t = serde_json::json!({"spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        let a = template_hash(&t, 0);
        assert_eq!(a, template_hash(&t, 0));
        assert_ne!(a, template_hash(&t, 1));
        assert!(a.bytes().all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)));
    }

    #[test]
    fn selectors() {
        let sel: LabelSelector = vt_apiserver::object::from_value(serde_json::json!({"matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}))
        .unwrap();
        assert_eq!(selector_string(&sel).unwrap(), "app=web,tier in (a,b)");
        assert!(
            selector_string(&LabelSelector::default()).is_none(),
            "an empty selector selects nothing for controllers"
        );
    }
}
