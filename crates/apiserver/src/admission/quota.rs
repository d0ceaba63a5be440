//! LimitRange and ResourceQuota admission inside a tenant, as kube-apiserver's `LimitRanger`
//! and `ResourceQuota` plugins: container defaults and min/max from LimitRanges; counts and
//! compute sums checked against every ResourceQuota of the namespace, whose `status.used` is
//! refreshed after each admitted change.

use std::collections::BTreeMap;

use http::Method;
use serde_json::{Value, json};

use crate::quantity;
use crate::rest::Op;
use crate::status::{ApiError, ApiResult};
use crate::{ApiServer, object};

async fn list(api: &ApiServer, resource_prefix: &str, ns: &str) -> Vec<Value> {
    let prefix = format!("{resource_prefix}{ns}/");
    let mut out = Vec::new();
    let mut opts = vt_store::ListOptions::default();
    loop {
        let Ok(page) = api.store().list(prefix.as_bytes(), opts.clone()).await else { return out };
        out.extend(page.kvs.iter().filter_map(|kv| {
            let mut v = serde_json::from_slice::<Value>(&kv.value).ok()?;
            object::set_resource_version(&mut v, kv.mod_revision);
            Some(v)
        }));
        if !page.more {
            return out;
        }
        opts.revision = page.revision;
        opts.start = page.kvs.last().map(|kv| vt_store::key_successor(&kv.key));
    }
}

fn containers(pod: &Value) -> Vec<&Value> {
    let spec = &pod["spec"];
    spec.get("containers").and_then(Value::as_array).into_iter().flatten().collect()
}

fn q(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_str).and_then(quantity::parse).or_else(|| v.and_then(Value::as_f64))
}

/// Formats a value back as a quantity (whole numbers plain, fractions in milli-units).
fn show(v: f64) -> String {
    if v.fract() == 0.0 {
        quantity::canonical(&format!("{}", v as i64)).unwrap_or_else(|| format!("{}", v as i64))
    } else {
        quantity::canonical(&format!("{}m", (v * 1000.0).round() as i64)).unwrap_or_else(|| v.to_string())
    }
}

// ---- LimitRanger -----------------------------------------------------------------------------

/// Applies the namespace's LimitRange defaults to a pod's containers and checks min/max.
pub(crate) async fn limit_ranges(op: &Op<'_>, pod: &mut Value) -> ApiResult<()> {
    if !(op.rt.group.is_empty() && op.rt.plural == "pods" && op.sub.is_empty()) || op.ns.is_empty() {
        return Ok(());
    }
    let ranges = list(op.api, "/registry/core/limitranges/", &op.ns).await;
    if ranges.is_empty() {
        return Ok(());
    }
    let mut problems = Vec::new();
    for range in &ranges {
        for item in range.pointer("/spec/limits").and_then(Value::as_array).into_iter().flatten() {
            if item.get("type").and_then(Value::as_str) != Some("Container") {
                continue;
            }
            let default = item.get("default").and_then(Value::as_object).cloned().unwrap_or_default();
            let default_request =
                item.get("defaultRequest").and_then(Value::as_object).cloned().unwrap_or_else(|| default.clone());
            for field in ["containers", "initContainers"] {
                let Some(list) = pod["spec"].get_mut(field).and_then(Value::as_array_mut) else { continue };
                for c in list {
                    if !c["resources"].is_object() {
                        c["resources"] = json!({});
                    }
                    for (key, values) in [("limits", &default), ("requests", &default_request)] {
                        for (res, v) in values {
                            let absent = c["resources"].get(key).and_then(|m| m.get(res)).is_none();
                            if absent {
                                if !c["resources"][key].is_object() {
                                    c["resources"][key] = json!({});
                                }
                                c["resources"][key][res] = v.clone();
                            }
                        }
                    }
                }
            }
            for c in containers(pod) {
                for (res, max) in item.get("max").and_then(Value::as_object).into_iter().flatten() {
                    let limit = q(c.pointer(&format!("/resources/limits/{res}")));
                    match (limit, q(Some(max))) {
                        (Some(l), Some(m)) if l > m => problems.push(format!(
                            "maximum {res} usage per Container is {}, but limit is {}",
                            max.as_str().unwrap_or(""),
                            c.pointer(&format!("/resources/limits/{res}")).and_then(Value::as_str).unwrap_or("")
                        )),
                        (None, Some(_)) => problems.push(format!(
                            "maximum {res} usage per Container is {}.  No limit is specified",
                            max.as_str().unwrap_or("")
                        )),
                        _ => {}
                    }
                }
                for (res, min) in item.get("min").and_then(Value::as_object).into_iter().flatten() {
                    let request = q(c.pointer(&format!("/resources/requests/{res}")));
                    match (request, q(Some(min))) {
                        (Some(r), Some(m)) if r < m => problems.push(format!(
                            "minimum {res} usage per Container is {}, but request is {}",
                            min.as_str().unwrap_or(""),
                            c.pointer(&format!("/resources/requests/{res}")).and_then(Value::as_str).unwrap_or("")
                        )),
                        (None, Some(_)) => problems.push(format!(
                            "minimum {res} usage per Container is {}.  No request is specified",
                            min.as_str().unwrap_or("")
                        )),
                        _ => {}
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ApiError::forbidden(&op.gr(), object::name(pod), &problems.join(", ")))
    }
}

// ---- ResourceQuota ---------------------------------------------------------------------------

fn terminal(pod: &Value) -> bool {
    matches!(pod.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed"))
}

/// The compute a pod requests and limits, by quota key.
fn pod_usage(pod: &Value) -> BTreeMap<String, f64> {
    let mut u = BTreeMap::new();
    u.insert("pods".to_string(), 1.0);
    for c in containers(pod) {
        for (key, section) in [("requests", "requests"), ("limits", "limits")] {
            for (res, v) in c.pointer(&format!("/resources/{section}")).and_then(Value::as_object).into_iter().flatten()
            {
                if let Some(x) = q(Some(v)) {
                    *u.entry(format!("{key}.{res}")).or_insert(0.0) += x;
                    if key == "requests" && (res == "cpu" || res == "memory") {
                        *u.entry(res.clone()).or_insert(0.0) += x;
                    }
                }
            }
        }
    }
    u
}

/// The quota keys an object of this resource counts against, and its contribution.
fn usage_of(group: &str, plural: &str, obj: &Value) -> BTreeMap<String, f64> {
    let mut u = BTreeMap::new();
    let count_key = if group.is_empty() { format!("count/{plural}") } else { format!("count/{plural}.{group}") };
    u.insert(count_key, 1.0);
    if group.is_empty() {
        match plural {
            "pods" => u.extend(pod_usage(obj)),
            "services" => {
                // As kube's service evaluator: node ports count ports, not Services; a load
                // balancer takes a node port per port too, unless it asks for none
                // (`allocateLoadBalancerNodePorts: false`, then only explicit ones count).
                u.insert("services".into(), 1.0);
                let ports = obj.pointer("/spec/ports").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
                let explicit = ports.iter().filter(|p| p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) > 0);
                match obj.pointer("/spec/type").and_then(Value::as_str) {
                    Some("LoadBalancer") => {
                        u.insert("services.loadbalancers".into(), 1.0);
                        let node_ports = if obj.pointer("/spec/allocateLoadBalancerNodePorts") == Some(&json!(false)) {
                            explicit.count()
                        } else {
                            ports.len()
                        };
                        u.insert("services.nodeports".into(), node_ports as f64);
                    }
                    Some("NodePort") => _ = u.insert("services.nodeports".into(), ports.len() as f64),
                    _ => {}
                }
            }
            "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" => {
                u.insert(plural.to_string(), 1.0);
            }
            "persistentvolumeclaims" => {
                u.insert("persistentvolumeclaims".into(), 1.0);
                if let Some(s) = q(obj.pointer("/spec/resources/requests/storage")) {
                    u.insert("requests.storage".into(), s);
                }
            }
            _ => {}
        }
    }
    u
}

/// Current usage in a namespace for the keys of `hard`.
async fn used(api: &ApiServer, ns: &str, hard: &serde_json::Map<String, Value>) -> BTreeMap<String, f64> {
    let mut total: BTreeMap<String, f64> = hard.keys().map(|k| (k.clone(), 0.0)).collect();
    let mut resources: Vec<(String, String)> = Vec::new();
    for key in hard.keys() {
        let (group, plural) = match key.strip_prefix("count/") {
            Some(r) => match r.split_once('.') {
                Some((p, g)) => (g.to_string(), p.to_string()),
                None => (String::new(), r.to_string()),
            },
            None => match key.as_str() {
                "pods" | "cpu" | "memory" => (String::new(), "pods".to_string()),
                k if k.starts_with("requests.") && k != "requests.storage" || k.starts_with("limits.") => {
                    (String::new(), "pods".to_string())
                }
                "requests.storage" => (String::new(), "persistentvolumeclaims".to_string()),
                "services.loadbalancers" | "services.nodeports" => (String::new(), "services".to_string()),
                other => (String::new(), other.to_string()),
            },
        };
        if !resources.contains(&(group.clone(), plural.clone())) {
            resources.push((group, plural));
        }
    }
    for (group, plural) in resources {
        let Some(rt) = api.registry().all().into_iter().find(|t| t.group == group && t.plural == plural && t.preferred)
        else {
            continue;
        };
        for obj in list(api, &rt.key_prefix(), ns).await {
            if plural == "pods" && group.is_empty() && terminal(&obj) {
                continue;
            }
            for (k, v) in usage_of(&group, &plural, &obj) {
                if let Some(t) = total.get_mut(&k) {
                    *t += v;
                }
            }
        }
    }
    total
}

/// One quota key a create would exceed.
struct Over {
    key: String,
    add: f64,
    used: f64,
    limit: f64,
}

/// Checks a create against every ResourceQuota of the namespace; returns whether the
/// namespace has any (their status then needs a refresh after the write).
pub(crate) async fn check_quota(op: &Op<'_>, obj: &Value) -> ApiResult<bool> {
    check_quota_change(op, obj, None).await
}

/// Checks an update of `old` to `obj` as a create of what it adds (a Service turned into a
/// NodePort or LoadBalancer, more ports, a bigger claim): kube's quota admission evaluates
/// updates too, so a type change cannot slip past `services.nodeports`.
pub(crate) async fn check_quota_update(op: &Op<'_>, obj: &Value, old: &Value) -> ApiResult<bool> {
    if !(op.rt.group.is_empty() && matches!(op.rt.plural.as_str(), "services" | "persistentvolumeclaims")) {
        return Ok(false);
    }
    check_quota_change(op, obj, Some(old)).await
}

async fn check_quota_change(op: &Op<'_>, obj: &Value, old: Option<&Value>) -> ApiResult<bool> {
    if op.ns.is_empty() || !op.sub.is_empty() {
        return Ok(false);
    }
    let quotas = list(op.api, "/registry/core/resourcequotas/", &op.ns).await;
    if quotas.is_empty() {
        return Ok(false);
    }
    let mut adding = usage_of(&op.rt.group, &op.rt.plural, obj);
    if let Some(old) = old {
        let before = usage_of(&op.rt.group, &op.rt.plural, old);
        adding = adding
            .into_iter()
            .map(|(k, v)| {
                let was = before.get(&k).copied().unwrap_or(0.0);
                (k, v - was)
            })
            .filter(|(_, d)| *d > 1e-9)
            .collect();
        if adding.is_empty() {
            return Ok(true);
        }
    }
    for quota in &quotas {
        let Some(hard) = quota.pointer("/spec/hard").and_then(Value::as_object) else { continue };
        let relevant: Vec<&String> = hard.keys().filter(|k| adding.contains_key(*k)).collect();
        let pod = op.rt.group.is_empty() && op.rt.plural == "pods";
        if pod {
            // Compute quotas need every container to say what it wants.
            let missing: Vec<&str> =
                ["requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "cpu", "memory"]
                    .into_iter()
                    .filter(|k| hard.contains_key(*k) && !adding.contains_key(*k))
                    .collect();
            if !missing.is_empty() {
                return Err(ApiError::forbidden(
                    &op.gr(),
                    object::name(obj),
                    &format!("failed quota: {}: must specify {}", object::name(quota), missing.join(",")),
                ));
            }
        }
        if relevant.is_empty() {
            continue;
        }
        charge(op, obj, quota, &relevant, &adding).await?;
    }
    Ok(true)
}

/// Checks a create against one quota and charges it, as kube's quota admission does: the
/// quota's `status.used` (computed from the namespace only when it lacks a key) plus what the
/// object adds must fit under `spec.hard`, and the new usage is written back guarded by the
/// quota's resourceVersion, so concurrent creates cannot both take the last unit. Usage is
/// made exact again by [`refresh_later`] after each write.
async fn charge(
    op: &Op<'_>,
    obj: &Value,
    quota: &Value,
    relevant: &[&String],
    adding: &BTreeMap<String, f64>,
) -> ApiResult<()> {
    let dry = op.query.get("dryRun").is_some_and(|d| d == "All");
    let path = format!("/api/v1/namespaces/{}/resourcequotas/{}/status", op.ns, object::name(quota));
    let mut quota = quota.clone();
    for _attempt in 0..8 {
        let Some(hard) = quota.pointer("/spec/hard").and_then(Value::as_object).cloned() else { return Ok(()) };
        let recorded = quota.pointer("/status/used").and_then(Value::as_object).cloned().unwrap_or_default();
        let recorded_all = relevant.iter().all(|k| recorded.contains_key(k.as_str()));
        let mut current: BTreeMap<String, f64> = if recorded_all {
            recorded.iter().filter_map(|(k, v)| Some((k.clone(), q(Some(v))?))).collect()
        } else {
            used(op.api, &op.ns, &hard).await
        };
        let exceeded = |current: &BTreeMap<String, f64>| -> Vec<Over> {
            let mut over = Vec::new();
            for k in relevant {
                let limit = q(hard.get(k.as_str())).unwrap_or(0.0);
                let now = current.get(k.as_str()).copied().unwrap_or(0.0);
                let add = adding.get(k.as_str()).copied().unwrap_or(0.0);
                if now + add > limit + 1e-9 {
                    over.push(Over { key: (*k).clone(), add, used: now, limit });
                }
            }
            over
        };
        let mut over = exceeded(&current);
        if !over.is_empty() && recorded_all {
            // The recorded usage may lag behind deletions: count again before refusing.
            current = used(op.api, &op.ns, &hard).await;
            over = exceeded(&current);
        }
        if !over.is_empty() {
            let join = |pick: fn(&Over) -> f64| {
                over.iter().map(|o| format!("{}={}", o.key, show(pick(o)))).collect::<Vec<_>>().join(",")
            };
            return Err(ApiError::forbidden(
                &op.gr(),
                object::name(obj),
                &format!(
                    "exceeded quota: {}, requested: {}, used: {}, limited: {}",
                    object::name(&quota),
                    join(|o| o.add),
                    join(|o| o.used),
                    join(|o| o.limit),
                ),
            ));
        }
        if dry {
            return Ok(());
        }
        let mut used_now: serde_json::Map<String, Value> =
            current.iter().filter(|(k, _)| hard.contains_key(*k)).map(|(k, v)| (k.clone(), json!(show(*v)))).collect();
        for k in relevant {
            let total =
                current.get(k.as_str()).copied().unwrap_or(0.0) + adding.get(k.as_str()).copied().unwrap_or(0.0);
            used_now.insert((*k).clone(), json!(show(total)));
        }
        let mut next = quota.clone();
        next["status"] = json!({"hard": hard, "used": used_now});
        // Boxed: the status write goes through the API server, whose creates come back here.
        let (code, answer) = Box::pin(op.api.internal(Method::PUT, &path, Some(&next))).await;
        if code.is_success() {
            return Ok(());
        }
        if code != http::StatusCode::CONFLICT {
            return Err(ApiError::internal(format!(
                "resourcequota {}: {}",
                object::name(&quota),
                answer.get("message").and_then(Value::as_str).unwrap_or("update failed")
            )));
        }
        // Someone else charged it meanwhile: read it again.
        let (_, fresh) = Box::pin(op.api.internal(Method::GET, path.trim_end_matches("/status"), None)).await;
        if !fresh.is_object() || fresh.get("kind").and_then(Value::as_str) == Some("Status") {
            return Ok(());
        }
        quota = fresh;
    }
    Err(ApiError::new(409, "Conflict", "the resource quota changed too often; try again"))
}

/// Rewrites `status.hard` and `status.used` of the namespace's quotas (after a change).
pub(crate) async fn refresh_status(api: &ApiServer, ns: &str) {
    for quota in list(api, "/registry/core/resourcequotas/", ns).await {
        let Some(hard) = quota.pointer("/spec/hard").and_then(Value::as_object).cloned() else { continue };
        let used = used(api, ns, &hard).await;
        let used: serde_json::Map<String, Value> = used.into_iter().map(|(k, v)| (k, json!(show(v)))).collect();
        let status = json!({"hard": hard, "used": used});
        if quota.get("status") == Some(&status) {
            continue;
        }
        let mut next = quota.clone();
        next["status"] = status;
        object::meta_mut(&mut next).remove("resourceVersion");
        let path = format!("/api/v1/namespaces/{ns}/resourcequotas/{}/status", object::name(&quota));
        api.internal(Method::PUT, &path, Some(&next)).await;
    }
}

/// Namespaces whose quota refresh is queued (`false`) or running with another one due (`true`).
static REFRESHING: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<(usize, String), bool>>> =
    std::sync::LazyLock::new(Default::default);

/// Refreshes the namespace's quota status in the background (after a create or delete): one
/// refresh at a time per namespace, and one more after it if writes happened meanwhile, so a
/// burst of creates costs two recounts, not one per create.
pub(crate) fn refresh_later(op: &Op<'_>) {
    if op.ns.is_empty() || (op.rt.group.is_empty() && op.rt.plural == "resourcequotas" && op.sub == "status") {
        return;
    }
    let key = (op.api.id(), op.ns.clone());
    {
        let mut pending = REFRESHING.lock().unwrap_or_else(|p| p.into_inner());
        match pending.get_mut(&key) {
            Some(again) => {
                *again = true;
                return;
            }
            None => _ = pending.insert(key.clone(), false),
        }
    }
    let api = op.api.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            {
                let mut pending = REFRESHING.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(again) = pending.get_mut(&key) {
                    *again = false;
                }
            }
            refresh_status(&api, &key.1).await;
            let mut pending = REFRESHING.lock().unwrap_or_else(|p| p.into_inner());
            if pending.get(&key) == Some(&true) {
                continue;
            }
            pending.remove(&key);
            return;
        }
    });
}
