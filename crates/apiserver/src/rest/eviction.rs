//! `pods/eviction` (what `kubectl drain` posts): a pod is deleted unless that would break its
//! PodDisruptionBudget, as kube-apiserver's eviction REST decides. Pods that are finished or
//! Pending, or already being deleted, go without looking at budgets; a pod under more than one
//! budget is an error (500); a budget not yet processed by the disruption controller, or with no
//! disruption allowed, answers 429 with a `DisruptionBudget` cause; otherwise the budget's
//! `disruptionsAllowed` is decremented and the pod recorded in `disruptedPods` (guarded by the
//! budget's resourceVersion, so concurrent evictions cannot both spend the last disruption)
//! before the pod is deleted. Unhealthy pods follow `unhealthyPodEvictionPolicy`.

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use serde_json::{Value, json};

use super::Op;
use super::write::decode_body;
use crate::body::Body;
use crate::object;
use crate::status::{ApiError, ApiResult, FieldError};

fn selector_matches(sel: &Value, labels: &Value) -> bool {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    sel.get("matchLabels").and_then(Value::as_object).into_iter().flatten().all(|(k, v)| label(k) == v.as_str())
        && sel.get("matchExpressions").and_then(Value::as_array).into_iter().flatten().all(|e| {
            let key = e.get("key").and_then(Value::as_str).unwrap_or("");
            let values: Vec<&str> =
                e.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
            match e.get("operator").and_then(Value::as_str) {
                Some("In") => label(key).is_some_and(|v| values.contains(&v)),
                Some("NotIn") => label(key).is_none_or(|v| !values.contains(&v)),
                Some("Exists") => label(key).is_some(),
                Some("DoesNotExist") => label(key).is_none(),
                _ => false,
            }
        })
}

fn ready(pod: &Value) -> bool {
    object::at(pod, &["status", "conditions"])
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn created() -> Response<Body> {
    crate::json_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    )
}

fn budget_error(message: String) -> ApiError {
    let mut e =
        ApiError::new(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.");
    e.causes = vec![FieldError { reason: "DisruptionBudget", field: String::new(), message }];
    e
}

pub(crate) async fn evict(op: &Op<'_>, body: &Bytes) -> ApiResult<Response<Body>> {
    let eviction = decode_body(op, body)?;
    let kind = eviction.get("kind").and_then(Value::as_str).unwrap_or("Eviction");
    if kind != "Eviction" {
        return Err(ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type Eviction): {kind}"
        )));
    }
    let named = object::name(&eviction);
    if !named.is_empty() && named != op.name {
        return Err(ApiError::bad_request("name in URL does not match name in Eviction object"));
    }
    let pod_path = format!("/api/v1/namespaces/{}/pods/{}", op.ns, op.name);
    let (code, pod) = op.api.internal(Method::GET, &pod_path, None).await;
    if code == StatusCode::NOT_FOUND {
        return Err(ApiError::not_found(&crate::status::GroupResource::new("", "pods"), &op.name));
    }
    let delete_options = eviction.get("deleteOptions").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
    let delete = |opts: Value| async move {
        let mut opts = opts;
        opts["kind"] = json!("DeleteOptions");
        opts["apiVersion"] = json!("v1");
        let (code, status) = op.api.internal(Method::DELETE, &pod_path, Some(&opts)).await;
        if code.is_success() || code == StatusCode::NOT_FOUND {
            Ok(created())
        } else {
            let message = status.get("message").and_then(Value::as_str).unwrap_or("delete failed").to_string();
            Err(ApiError::new(code.as_u16(), "Conflict", message))
        }
    };
    if object::is_deleting(&pod) {
        return Ok(created());
    }
    if matches!(object::str_at(&pod, &["status", "phase"]), Some("Succeeded" | "Failed" | "Pending")) {
        return delete(delete_options).await;
    }
    let pdbs_path = format!("/apis/policy/v1/namespaces/{}/poddisruptionbudgets", op.ns);
    let labels = object::at(&pod, &["metadata", "labels"]).cloned().unwrap_or_else(|| json!({}));
    for attempt in 0..5 {
        let (_, list) = op.api.internal(Method::GET, &pdbs_path, None).await;
        let matching: Vec<Value> = list
            .get("items")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|b| b.pointer("/spec/selector").is_some_and(|s| selector_matches(s, &labels)))
            .cloned()
            .collect();
        let budget = match matching.as_slice() {
            [] => return delete(delete_options).await,
            [one] => one.clone(),
            _ => {
                return Err(ApiError::internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                ));
            }
        };
        let name = object::name(&budget).to_string();
        let status = budget.get("status").cloned().unwrap_or_else(|| json!({}));
        let int = |k: &str| status.get(k).and_then(Value::as_i64).unwrap_or(0);
        let generation = budget.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
        if int("observedGeneration") < generation {
            return Err(budget_error(format!("The disruption budget {name} is still being processed by the server.")));
        }
        // Unhealthy pods may go when the budget is met anyway (IfHealthyBudget, the default),
        // or always (AlwaysAllow), without spending a disruption.
        if !ready(&pod) {
            let policy =
                budget.pointer("/spec/unhealthyPodEvictionPolicy").and_then(Value::as_str).unwrap_or("IfHealthyBudget");
            if policy == "AlwaysAllow" || (int("currentHealthy") >= int("desiredHealthy") && int("expectedPods") > 0) {
                return delete(delete_options).await;
            }
        }
        let allowed = int("disruptionsAllowed");
        if allowed < 0 {
            return Err(ApiError::forbidden(&op.gr(), &op.name, "pdb disruptions allowed is negative"));
        }
        if allowed == 0 {
            return Err(budget_error(format!(
                "The disruption budget {name} needs {} healthy pods and has {} currently",
                int("desiredHealthy"),
                int("currentHealthy")
            )));
        }
        let mut next = budget.clone();
        next["status"]["disruptionsAllowed"] = json!(allowed - 1);
        if !next["status"]["disruptedPods"].is_object() {
            next["status"]["disruptedPods"] = json!({});
        }
        next["status"]["disruptedPods"][op.name.as_str()] = json!(object::now_rfc3339());
        let (code, _) = op.api.internal(Method::PUT, &format!("{pdbs_path}/{name}/status"), Some(&next)).await;
        match code {
            c if c.is_success() => return delete(delete_options).await,
            StatusCode::CONFLICT if attempt < 4 => continue,
            c => return Err(ApiError::new(c.as_u16(), "Conflict", "the disruption budget changed; try again")),
        }
    }
    Err(ApiError::new(409, "Conflict", "the disruption budget changed; try again"))
}
