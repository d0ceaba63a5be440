//! Admission: the tenant's own webhooks (MutatingWebhookConfiguration and
//! ValidatingWebhookConfiguration, called with AdmissionReview v1), then LimitRange and
//! ResourceQuota (`admission/quota.rs`).
//!
//! Webhooks run as kube-apiserver runs them: mutating ones after defaulting and before
//! validation, in configuration-name order, with `reinvocationPolicy: IfNeeded` honoured once;
//! validating ones after validation, just before the write, all at once (the first to fail, in
//! the order they answer, is the request's error). Matching follows `rules`
//! (operations, groups, versions, resources with `*` and subresources, scope),
//! `namespaceSelector`, `objectSelector`, `matchPolicy` and `matchConditions` (CEL,
//! `admission/conditions.rs`); calls honour `timeoutSeconds`,
//! `failurePolicy`, `sideEffects` on dry runs, and a URL or Service target verified with
//! `caBundle`. Webhook configurations themselves are never sent to webhooks.

mod conditions;
pub(crate) mod podsecurity;
mod policies;
pub(crate) mod quota;
pub mod serviceaccount;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use vt_store::Store;

use crate::cel;
use crate::mirror::{self, Change};
use crate::rest::Op;
use crate::selector::LabelSelector;
use crate::status::{ApiError, ApiResult};
use crate::{auth::UserInfo, object};

const MUTATING: &str = "/registry/admissionregistration.k8s.io/mutatingwebhookconfigurations/";
const VALIDATING: &str = "/registry/admissionregistration.k8s.io/validatingwebhookconfigurations/";

use crate::outbound::Target;

/// One webhook of a configuration.
#[derive(Clone, Debug)]
struct Hook {
    name: String,
    rules: Vec<Value>,
    namespace_selector: Option<LabelSelector>,
    object_selector: Option<LabelSelector>,
    fail: bool,
    equivalent: bool,
    side_effects: String,
    timeout: Duration,
    target: Target,
    ca_bundle: Vec<u8>,
    if_needed: bool,
    review_versions: Vec<String>,
    match_conditions: Vec<conditions::Condition>,
}

impl Hook {
    fn parse(w: &Value) -> Hook {
        let s = |p: &str| w.pointer(p).and_then(Value::as_str).unwrap_or("").to_string();
        let selector = |p: &str| {
            w.pointer(p)
                .filter(|v| v.is_object() && v.as_object().is_some_and(|m| !m.is_empty()))
                .and_then(LabelSelector::from_api)
        };
        let (target, ca_bundle) = Target::of_client_config(w.get("clientConfig"));
        Hook {
            name: s("/name"),
            rules: w.get("rules").and_then(Value::as_array).cloned().unwrap_or_default(),
            namespace_selector: selector("/namespaceSelector"),
            object_selector: selector("/objectSelector"),
            fail: s("/failurePolicy") != "Ignore",
            equivalent: s("/matchPolicy") != "Exact",
            side_effects: s("/sideEffects"),
            timeout: Duration::from_secs(w.get("timeoutSeconds").and_then(Value::as_u64).unwrap_or(10).clamp(1, 30)),
            target,
            ca_bundle,
            if_needed: s("/reinvocationPolicy") == "IfNeeded",
            review_versions: w
                .get("admissionReviewVersions")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
                .unwrap_or_else(|| vec!["v1".into()]),
            match_conditions: conditions::parse(w),
        }
    }

    /// Whether one of the hook's rules covers the request.
    fn matches_rules(&self, a: &Request<'_>) -> bool {
        let any = |list: Option<&Value>, v: &str| {
            list.and_then(Value::as_array).is_some_and(|l| l.iter().any(|x| x == "*" || x == v))
        };
        self.rules.iter().any(|r| {
            let ops_ok = any(r.get("operations"), a.operation);
            let group_ok = any(r.get("apiGroups"), a.group);
            let version_ok = self.equivalent || any(r.get("apiVersions"), a.version);
            let resource_ok = r.get("resources").and_then(Value::as_array).is_some_and(|rs| {
                rs.iter().filter_map(Value::as_str).any(|res| {
                    let (rr, rs) = res.split_once('/').unwrap_or((res, ""));
                    let res_match = rr == "*" || rr == a.resource;
                    let sub_match =
                        if a.subresource.is_empty() { rs.is_empty() } else { rs == "*" || rs == a.subresource };
                    res_match && sub_match
                })
            });
            let scope_ok = match r.get("scope").and_then(Value::as_str).unwrap_or("*") {
                "Cluster" => a.namespace.is_empty(),
                "Namespaced" => !a.namespace.is_empty(),
                _ => true,
            };
            ops_ok && group_ok && version_ok && resource_ok && scope_ok
        })
    }
}

/// The webhooks of a cluster, mirrored from its store.
#[derive(Default)]
pub struct Webhooks {
    /// Configuration key → its hooks.
    mutating: RwLock<BTreeMap<String, Vec<Hook>>>,
    validating: RwLock<BTreeMap<String, Vec<Hook>>>,
    /// ValidatingAdmissionPolicies and their bindings.
    policies: policies::Policies,
    /// The mirror tasks, stopped with the webhooks.
    tasks: std::sync::Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Drop for Webhooks {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            t.abort();
        }
    }
}

fn apply(map: &RwLock<BTreeMap<String, Vec<Hook>>>, change: Change<'_>) {
    let parse = |v: &[u8]| -> Vec<Hook> {
        serde_json::from_slice::<Value>(v)
            .ok()
            .and_then(|c| c.get("webhooks").and_then(Value::as_array).map(|ws| ws.iter().map(Hook::parse).collect()))
            .unwrap_or_default()
    };
    let mut m = map.write().unwrap_or_else(|p| p.into_inner());
    match change {
        Change::Reset(items) => {
            *m = items.iter().map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), parse(v))).collect();
        }
        Change::Put(k, v) => _ = m.insert(String::from_utf8_lossy(k).into_owned(), parse(v)),
        Change::Delete(k) => _ = m.remove(String::from_utf8_lossy(k).as_ref()),
    }
}

/// Where every admission configuration kind is stored: one mirror follows them all.
const ADMISSION_PREFIX: &str = "/registry/admissionregistration.k8s.io/";

/// Hands a change under [`ADMISSION_PREFIX`] to the mirror of its kind.
fn apply_admission(w: &Webhooks, change: Change<'_>) {
    match change {
        Change::Reset(items) => {
            let of = |prefix: &str| -> Vec<(bytes::Bytes, bytes::Bytes)> {
                items.iter().filter(|(k, _)| k.starts_with(prefix.as_bytes())).cloned().collect()
            };
            apply(&w.mutating, Change::Reset(of(MUTATING)));
            apply(&w.validating, Change::Reset(of(VALIDATING)));
            w.policies.apply(Change::Reset(of(policies::PREFIX)));
        }
        Change::Put(k, _) | Change::Delete(k) => {
            if k.starts_with(MUTATING.as_bytes()) {
                apply(&w.mutating, change);
            } else if k.starts_with(VALIDATING.as_bytes()) {
                apply(&w.validating, change);
            } else if k.starts_with(policies::PREFIX.as_bytes()) {
                w.policies.apply(change);
            }
        }
    }
}

impl Webhooks {
    /// Mirrors the webhook configurations and admission policies of `store` (one watch).
    pub async fn start(store: Arc<dyn Store>) -> Result<Arc<Webhooks>, vt_store::StoreError> {
        let w = Arc::new(Webhooks::default());
        let task = mirror::follow(store, ADMISSION_PREFIX, &w, apply_admission).await?;
        w.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(task);
        Ok(w)
    }

    fn hooks(&self, mutating: bool) -> Vec<Hook> {
        let map = if mutating { &self.mutating } else { &self.validating };
        map.read().unwrap_or_else(|p| p.into_inner()).values().flatten().cloned().collect()
    }
}

/// What is being admitted.
struct Request<'a> {
    operation: &'a str,
    group: &'a str,
    version: &'a str,
    resource: &'a str,
    subresource: &'a str,
    namespace: &'a str,
}

fn user_json(u: &UserInfo) -> Value {
    let mut v = json!({"username": u.name, "groups": u.groups});
    if !u.uid.is_empty() {
        v["uid"] = json!(u.uid);
    }
    if !u.extra.is_empty() {
        v["extra"] = json!(u.extra);
    }
    v
}

/// Runs the webhooks that match a write. `obj` is the new object (mutated in place by mutating
/// webhooks), `old` the stored one; `mutating` picks the phase.
pub(crate) async fn webhooks(
    op: &Op<'_>,
    operation: &str,
    obj: Option<&mut Value>,
    old: Option<&Value>,
    mutating: bool,
    dry: bool,
) -> ApiResult<()> {
    let Some(w) = op.api.webhooks() else { return Ok(()) };
    // Webhooks never admit their own configurations (kube-apiserver's rule, so a broken
    // webhook cannot lock itself in).
    if op.rt.group == "admissionregistration.k8s.io" {
        return Ok(());
    }
    let req = Request {
        operation,
        group: &op.rt.group,
        version: &op.rt.version,
        resource: &op.rt.plural,
        subresource: &op.sub,
        namespace: &op.ns,
    };
    // ValidatingAdmissionPolicies run before the validating webhooks, as in kube-apiserver.
    // What the request's CEL (policies, match conditions) may spend in this phase: each
    // binding and webhook has kube's budget; the phase's total is bounded too (`cel.rs`).
    let mut cel_budget = cel::REQUEST_BUDGET;
    if !mutating {
        policies::validate(op, &w.policies, &req, obj.as_deref(), old, dry, &mut cel_budget).await?;
    }
    let candidates: Vec<Hook> = w.hooks(mutating).into_iter().filter(|h| h.matches_rules(&req)).collect();
    if candidates.is_empty() {
        return Ok(());
    }
    let mut obj = obj;
    let mut ns_labels: Option<BTreeMap<String, String>> = None;
    let mut called: Vec<(usize, bool)> = Vec::new();
    let mut last_mutation: Option<usize> = None;
    let mut queue: Vec<usize> = (0..candidates.len()).collect();
    let mut reinvoked = false;
    // Validating webhooks that match, called together below.
    let mut parallel: Vec<usize> = Vec::new();
    while !queue.is_empty() {
        for i in std::mem::take(&mut queue) {
            let hook = &candidates[i];
            if let Some(sel) = &hook.object_selector {
                // A missing object (no old object on create, no new one on delete) matches no
                // selector, as kube's matcher has it (`NotIn` would match empty labels).
                let current = obj.as_deref().map(object::labels);
                let previous = old.map(object::labels);
                if !current.as_ref().is_some_and(|l| sel.matches(l))
                    && !previous.as_ref().is_some_and(|l| sel.matches(l))
                {
                    continue;
                }
            }
            if let Some(sel) = &hook.namespace_selector {
                let is_namespace = op.rt.group.is_empty() && op.rt.plural == "namespaces";
                // Other cluster-scoped objects always match a namespace selector.
                if is_namespace || !op.ns.is_empty() {
                    let labels = if is_namespace {
                        obj.as_deref().or(old).map(object::labels).unwrap_or_default()
                    } else {
                        if ns_labels.is_none() {
                            ns_labels = Some(namespace_labels(op).await);
                        }
                        ns_labels.clone().unwrap_or_default()
                    };
                    if !sel.matches(&labels) {
                        continue;
                    }
                }
            }
            let subject = conditions::Subject {
                operation,
                user: op.user,
                name: obj.as_deref().or(old).map(object::name).unwrap_or(&op.name),
                namespace: &op.ns,
                dry_run: dry,
                kind: (&op.rt.group, &op.rt.version, &op.rt.kind),
                resource: (&op.rt.group, &op.rt.version, &op.rt.plural),
                object: obj.as_deref(),
                old,
            };
            if cel_budget == 0 {
                return Err(ApiError::forbidden(&op.gr(), &op.name, cel::REQUEST_EXHAUSTED));
            }
            let matched = if hook.match_conditions.is_empty() {
                Ok(true)
            } else {
                conditions::matches(
                    &hook.match_conditions,
                    &cel::Env::new(&conditions::vars(&subject)),
                    &mut cel_budget,
                )
            };
            match matched {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) if hook.fail => return Err(failure(hook, &e)),
                Err(e) => {
                    tracing::warn!(webhook = %hook.name, error = %e, "match condition failed; webhook skipped (failurePolicy Ignore)");
                    continue;
                }
            }
            if dry && !matches!(hook.side_effects.as_str(), "None" | "NoneOnDryRun") {
                return Err(ApiError::bad_request(format!(
                    "admission webhook {:?} does not support dry run",
                    hook.name
                )));
            }
            if !mutating {
                parallel.push(i);
                continue;
            }
            let mutated = call(op, hook, &req, obj.as_deref_mut(), old, mutating, dry).await?;
            called.push((i, mutated));
            if mutated {
                last_mutation = Some(called.len() - 1);
            }
        }
        // reinvocationPolicy IfNeeded: webhooks called before the last mutation run once more.
        if mutating
            && !reinvoked
            && let Some(last) = last_mutation
        {
            reinvoked = true;
            queue = called[..last].iter().map(|(i, _)| *i).filter(|i| candidates[*i].if_needed).collect();
            last_mutation = None;
        }
    }
    // Validating webhooks are called in parallel, as kube-apiserver calls them; all are waited
    // for, and the first to fail (in the order they answer) is the request's error.
    let shown = obj.as_deref().cloned();
    let candidates = &candidates;
    let req = &req;
    let mut calls: futures::stream::FuturesUnordered<_> = parallel
        .iter()
        .map(|&i| {
            let mut copy = shown.clone();
            async move { call(op, &candidates[i], req, copy.as_mut(), old, false, dry).await }
        })
        .collect();
    let mut first_error = None;
    while let Some(answer) = futures::StreamExt::next(&mut calls).await {
        if let Err(e) = answer
            && first_error.is_none()
        {
            first_error = Some(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

async fn namespace_labels(op: &Op<'_>) -> BTreeMap<String, String> {
    op.api.stored(&format!("/registry/core/namespaces/{}", op.ns)).await.map(|v| object::labels(&v)).unwrap_or_default()
}

fn failure(hook: &Hook, why: &str) -> ApiError {
    ApiError::internal(format!("failed calling webhook {:?}: {why}", hook.name))
}

/// Calls one webhook; returns whether it changed the object.
async fn call(
    op: &Op<'_>,
    hook: &Hook,
    req: &Request<'_>,
    obj: Option<&mut Value>,
    old: Option<&Value>,
    mutating: bool,
    dry: bool,
) -> ApiResult<bool> {
    let uid = uuid::Uuid::new_v4().to_string();
    let version = if hook.review_versions.iter().any(|v| v == "v1") { "v1" } else { "v1beta1" };
    let options_kind = match req.operation {
        "CREATE" => "CreateOptions",
        "DELETE" => "DeleteOptions",
        _ => "UpdateOptions",
    };
    let name = obj.as_deref().or(old).map(object::name).unwrap_or(&op.name).to_string();
    let gvk = json!({"group": op.rt.group, "version": op.rt.version, "kind": op.rt.kind});
    let gvr = json!({"group": op.rt.group, "version": op.rt.version, "resource": op.rt.plural});
    let mut request = json!({
        "uid": uid,
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "name": name,
        "operation": req.operation,
        "userInfo": user_json(op.user),
        "object": obj.as_deref().cloned().unwrap_or(Value::Null),
        "oldObject": old.cloned().unwrap_or(Value::Null),
        "dryRun": dry,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": options_kind},
    });
    if !op.ns.is_empty() {
        request["namespace"] = json!(op.ns);
    }
    if !op.sub.is_empty() {
        request["subResource"] = json!(op.sub);
        request["requestSubResource"] = json!(op.sub);
    }
    let review =
        json!({"apiVersion": format!("admission.k8s.io/{version}"), "kind": "AdmissionReview", "request": request});
    let body = serde_json::to_vec(&review).unwrap_or_default();
    let answer = match crate::fairness::waiting(crate::outbound::post_review(
        op.api,
        &hook.target,
        &hook.ca_bundle,
        body,
        hook.timeout,
    ))
    .await
    {
        Ok(a) => a,
        Err(e) if hook.fail => return Err(failure(hook, &format!("failed to call webhook: {e}"))),
        Err(e) => {
            tracing::warn!(webhook = %hook.name, error = %e, "webhook failed; ignored (failurePolicy Ignore)");
            return Ok(false);
        }
    };
    let parsed: Result<Value, _> = serde_json::from_slice(&answer);
    let response = match parsed.as_ref().ok().and_then(|v| v.get("response")) {
        Some(r) if r.get("uid").and_then(Value::as_str) == Some(uid.as_str()) => r.clone(),
        _ if hook.fail => return Err(failure(hook, "expected response.uid to match the request.uid")),
        _ => return Ok(false),
    };
    for w in response.get("warnings").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        op.warn(w.to_string());
    }
    if response.get("allowed").and_then(Value::as_bool) != Some(true) {
        let status = response.get("status").cloned().unwrap_or(json!({}));
        let code = status.get("code").and_then(Value::as_u64).filter(|c| (400..600).contains(c)).unwrap_or(403) as u16;
        let reason = status.get("reason").and_then(Value::as_str).unwrap_or("").to_string();
        let message = status.get("message").and_then(Value::as_str).unwrap_or("");
        let mut text = format!("admission webhook {:?} denied the request", hook.name);
        if !message.is_empty() {
            text.push_str(": ");
            text.push_str(message);
        }
        // Status reasons are Kubernetes' fixed set; others pass as none.
        const REASONS: &[&str] = &[
            "Unauthorized",
            "Forbidden",
            "NotFound",
            "AlreadyExists",
            "Conflict",
            "Gone",
            "Invalid",
            "ServerTimeout",
            "Timeout",
            "TooManyRequests",
            "BadRequest",
            "MethodNotAllowed",
            "NotAcceptable",
            "RequestEntityTooLarge",
            "UnsupportedMediaType",
            "InternalError",
            "Expired",
            "ServiceUnavailable",
        ];
        let reason: &'static str = match REASONS.iter().find(|r| **r == reason) {
            Some(r) => r,
            None if code == 403 => "Forbidden",
            None if code == 400 => "BadRequest",
            None => "",
        };
        return Err(ApiError::new(code, reason, text));
    }
    let Some(patch) = response.get("patch").and_then(Value::as_str) else { return Ok(false) };
    if !mutating {
        return Ok(false);
    }
    let Some(obj) = obj else { return Ok(false) };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .map_err(|e| failure(hook, &format!("the patch is not base64: {e}")))?;
    let ops: json_patch::Patch =
        serde_json::from_slice(&bytes).map_err(|e| failure(hook, &format!("the patch is not a JSON patch: {e}")))?;
    let before = obj.clone();
    json_patch::patch(obj, &ops).map_err(|e| failure(hook, &format!("the JSON patch does not apply: {e}")))?;
    Ok(*obj != before)
}
