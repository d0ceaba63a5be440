//! CRD conversion webhooks (`spec.conversion.strategy: Webhook`): objects are stored in the
//! storage version and every read or write in another version goes through the CRD's
//! webhook, in one `ConversionReview` per request (a list converts all its items at once),
//! as kube-apiserver's webhook converter calls it:
//!
//! - only objects not already in the desired version are sent;
//! - the answer must carry the request's `uid`, `result.status: Success` and one converted
//!   object per object sent, each in the desired version and of the same kind;
//! - a converted object may change only `labels` and `annotations` in its metadata (the rest
//!   is restored from the original, as kube restores it).
//!
//! A failed conversion fails the request with kube's 500 `conversion webhook for <gvk>
//! failed: <why>`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::ApiServer;
use crate::outbound::{self, Target};
use crate::registry::ResourceType;
use crate::status::{ApiError, ApiResult, FieldError};

/// How long a conversion may take (kube-apiserver's conversion webhook timeout).
const TIMEOUT: Duration = Duration::from_secs(30);

/// A CRD's conversion webhook.
#[derive(Debug)]
pub struct Webhook {
    target: Target,
    ca_bundle: Vec<u8>,
    /// The ConversionReview version it speaks: `v1`, else `v1beta1` (the same shape).
    review_version: &'static str,
}

/// kube's rules for `spec.conversion`.
pub(crate) fn validate(spec: &Value, errs: &mut Vec<FieldError>) {
    let Some(conversion) = spec.get("conversion").filter(|c| !c.is_null()) else { return };
    match conversion.get("strategy").and_then(Value::as_str) {
        None | Some("None") => {}
        Some("Webhook") => {
            let config = conversion.pointer("/webhook/clientConfig").filter(|c| c.is_object());
            match config {
                None => errs.push(FieldError::required(
                    "spec.conversion.webhook.clientConfig",
                    "required when strategy is set to Webhook",
                )),
                Some(c) if c.get("url").is_some() == c.get("service").is_some() => errs.push(FieldError::required(
                    "spec.conversion.webhook.clientConfig",
                    "exactly one of url or service is required",
                )),
                Some(_) => {}
            }
            let versions: Vec<&str> = conversion
                .pointer("/webhook/conversionReviewVersions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if !versions.iter().any(|v| *v == "v1" || *v == "v1beta1") {
                errs.push(FieldError::invalid(
                    "spec.conversion.webhook.conversionReviewVersions",
                    &json!(versions),
                    "must include at least one of v1, v1beta1",
                ));
            }
        }
        Some(other) => {
            errs.push(FieldError::not_supported("spec.conversion.strategy", &json!(other), &["None", "Webhook"]))
        }
    }
}

/// The webhook of a CRD whose conversion strategy is `Webhook`.
pub(crate) fn of(crd: &Value) -> Option<Arc<Webhook>> {
    let conversion = crd.pointer("/spec/conversion")?;
    if conversion.get("strategy").and_then(Value::as_str) != Some("Webhook") {
        return None;
    }
    let config = conversion.pointer("/webhook/clientConfig")?;
    let (target, ca_bundle) = Target::of_client_config(Some(config));
    let speaks_v1 = conversion
        .pointer("/webhook/conversionReviewVersions")
        .and_then(Value::as_array)
        .is_none_or(|vs| vs.iter().any(|v| v == "v1"));
    Some(Arc::new(Webhook { target, ca_bundle, review_version: if speaks_v1 { "v1" } else { "v1beta1" } }))
}

/// The converting webhook of `rt`, if its CRD has one.
pub(crate) fn webhook(rt: &ResourceType) -> Option<&Arc<Webhook>> {
    rt.custom.as_ref().and_then(|c| c.conversion.as_ref())
}

/// `rt`'s group with `version`.
fn api_version(rt: &ResourceType, version: &str) -> String {
    format!("{}/{version}", rt.group)
}

fn failed(rt: &ResourceType, desired: &str, why: &str) -> ApiError {
    let version = desired.rsplit('/').next().unwrap_or(desired);
    ApiError::internal(format!("conversion webhook for {}/{version}, Kind={} failed: {why}", rt.group, rt.kind))
}

/// The most object bytes one ConversionReview carries: a page of large objects goes in
/// several reviews (each answer must stay under the answer limit of webhook calls).
const MAX_REVIEW: usize = 1 << 20;

/// Converts `objects` to `desired` (an apiVersion) with `rt`'s webhook; objects already in
/// that version (and every object, without a webhook) are returned as they are.
pub(crate) async fn convert(
    api: &ApiServer,
    rt: &ResourceType,
    mut objects: Vec<Value>,
    desired: &str,
) -> ApiResult<Vec<Value>> {
    let Some(hook) = webhook(rt) else { return Ok(objects) };
    let pending: Vec<usize> =
        (0..objects.len()).filter(|&i| objects[i].get("apiVersion").and_then(Value::as_str) != Some(desired)).collect();
    let mut chunk: Vec<usize> = Vec::new();
    let mut bytes = 0;
    for (n, &i) in pending.iter().enumerate() {
        chunk.push(i);
        bytes += serde_json::to_vec(&objects[i]).map(|v| v.len()).unwrap_or(0);
        if bytes >= MAX_REVIEW || n + 1 == pending.len() {
            let converted = review(api, rt, hook, &objects, &chunk, desired).await?;
            for (i, c) in chunk.drain(..).zip(converted) {
                objects[i] = c;
            }
            bytes = 0;
        }
    }
    Ok(objects)
}

/// One ConversionReview of `objects[i]` for each `i` in `which`; the converted objects, in
/// that order, checked as kube checks them.
async fn review(
    api: &ApiServer,
    rt: &ResourceType,
    hook: &Webhook,
    objects: &[Value],
    which: &[usize],
    desired: &str,
) -> ApiResult<Vec<Value>> {
    let uid = uuid::Uuid::new_v4().to_string();
    let sent: Vec<&Value> = which.iter().map(|&i| &objects[i]).collect();
    let review = json!({"kind": "ConversionReview", "apiVersion": format!("apiextensions.k8s.io/{}", hook.review_version),
        "request": {"uid": uid, "desiredAPIVersion": desired, "objects": sent}});
    let body = serde_json::to_vec(&review).map_err(|e| ApiError::internal(e.to_string()))?;
    let answer = crate::fairness::waiting(outbound::post_review(api, &hook.target, &hook.ca_bundle, body, TIMEOUT))
        .await
        .map_err(|e| failed(rt, desired, &e))?;
    let answer: Value =
        serde_json::from_slice(&answer).map_err(|e| failed(rt, desired, &format!("invalid ConversionReview: {e}")))?;
    let response = answer.get("response").ok_or_else(|| failed(rt, desired, "no response in the ConversionReview"))?;
    if response.get("uid").and_then(Value::as_str) != Some(uid.as_str()) {
        return Err(failed(rt, desired, &format!("expected response.uid={uid:?}")));
    }
    if response.pointer("/result/status").and_then(Value::as_str) != Some("Success") {
        let message = response.pointer("/result/message").and_then(Value::as_str).unwrap_or("");
        return Err(failed(rt, desired, message));
    }
    let converted = response.get("convertedObjects").and_then(Value::as_array).cloned().unwrap_or_default();
    if converted.len() != which.len() {
        return Err(failed(rt, desired, &format!("returned {} objects, expected {}", converted.len(), which.len())));
    }
    let mut out = Vec::with_capacity(converted.len());
    for (&i, mut c) in which.iter().zip(converted) {
        let original = &objects[i];
        if c.get("apiVersion").and_then(Value::as_str) != Some(desired) {
            return Err(failed(rt, desired, &format!("invalid converted object: expected apiVersion {desired:?}")));
        }
        if c.get("kind") != original.get("kind") {
            return Err(failed(rt, desired, "invalid converted object: the kind changed"));
        }
        // Only labels and annotations may change in metadata, and only to string maps.
        let mut meta = original.get("metadata").cloned().unwrap_or_else(|| json!({}));
        for k in ["labels", "annotations"] {
            match c.pointer(&format!("/metadata/{k}")) {
                Some(Value::Object(m)) if m.values().all(Value::is_string) => meta[k] = Value::Object(m.clone()),
                None | Some(Value::Null) => {
                    if let Some(m) = meta.as_object_mut() {
                        m.remove(k);
                    }
                }
                Some(_) => {
                    return Err(failed(
                        rt,
                        desired,
                        &format!("invalid converted object: metadata.{k} must be a map of strings"),
                    ));
                }
            }
        }
        c["metadata"] = meta;
        out.push(c);
    }
    Ok(out)
}

/// Stored objects as `rt` serves them: converted by the webhook, then defaulted by the
/// served version's schema (kube defaults after converting). Without a webhook, as they are
/// (the synchronous decode did the rest).
pub(crate) async fn served_all(api: &ApiServer, rt: &ResourceType, objects: Vec<Value>) -> ApiResult<Vec<Value>> {
    if webhook(rt).is_none() {
        return Ok(objects);
    }
    let mut out = convert(api, rt, objects, &rt.api_version()).await?;
    if let Some(c) = &rt.custom
        && c.has_defaults
        && let Some(schema) = &c.schema
    {
        for o in &mut out {
            super::schema::apply_defaults(o, schema);
        }
    }
    Ok(out)
}

/// One stored object as `rt` serves it (see [`served_all`]).
pub(crate) async fn served(api: &ApiServer, rt: &ResourceType, obj: Value) -> ApiResult<Value> {
    if webhook(rt).is_none() {
        return Ok(obj);
    }
    Ok(served_all(api, rt, vec![obj]).await?.pop().unwrap_or(Value::Null))
}

/// An object in the version `rt` serves, converted to its CRD's storage version when a
/// webhook converts it (`None`: store it as it is).
pub(crate) async fn storable(api: &ApiServer, rt: &ResourceType, obj: &Value) -> ApiResult<Option<Value>> {
    let Some(c) = rt.custom.as_ref().filter(|c| c.conversion.is_some()) else { return Ok(None) };
    let desired = api_version(rt, &c.storage_version);
    Ok(convert(api, rt, vec![obj.clone()], &desired).await?.pop())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins apiextensions' validation of `spec.conversion`.
    #[test]
    fn webhook_conversion_is_validated_as_kube_validates_it() {
        let errs = |conversion: Value| {
            let mut errs = Vec::new();
            validate(&json!({"conversion": conversion}), &mut errs);
            errs.into_iter().map(|e| e.field).collect::<Vec<_>>()
        };
        assert!(errs(json!({"strategy": "None"})).is_empty());
        assert_eq!(
            errs(json!({"strategy": "Webhook"})),
            ["spec.conversion.webhook.clientConfig", "spec.conversion.webhook.conversionReviewVersions"]
        );
        let hook = |versions: Value| {
            json!({"strategy": "Webhook", "webhook": {"conversionReviewVersions": versions,
                "clientConfig": {"url": "https://c.example.com/convert"}}})
        };
        assert!(errs(hook(json!(["v1beta1"]))).is_empty());
        assert_eq!(errs(hook(json!(["v2"]))), ["spec.conversion.webhook.conversionReviewVersions"]);
        assert_eq!(errs(json!({"strategy": "Magic"})), ["spec.conversion.strategy"]);
        // A webhook speaking only v1beta1 gets v1beta1 reviews.
        let crd = json!({"spec": {"conversion": hook(json!(["v1beta1"]))}});
        assert_eq!(of(&crd).unwrap().review_version, "v1beta1");
    }
}
