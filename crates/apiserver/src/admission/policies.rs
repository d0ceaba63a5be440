//! ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1, GA in 1.30): CEL validations
//! bound to requests by ValidatingAdmissionPolicyBindings, evaluated here as kube-apiserver's
//! `validatingadmissionpolicy` plugin evaluates them, before the validating webhooks:
//!
//! - a binding applies its policy when the request matches the policy's `matchConstraints`
//!   and the binding's `matchResources` (rules, excluded rules, namespace and object
//!   selectors) and the policy's `matchConditions` hold;
//! - with a `paramKind`, the binding's `paramRef` picks the parameter objects (by name or
//!   selector; `parameterNotFoundAction` says what none means), and the validations run once
//!   per parameter (`params`);
//! - `variables` are available as `variables.<name>`;
//! - a validation that is false (or fails to evaluate under `failurePolicy: Fail`) is a
//!   decision the binding's `validationActions` act on: `Deny` refuses the request with kube's
//!   message and the validation's `reason` (422 `Invalid` by default), `Warn` adds a warning,
//!   `Audit` is logged (vt keeps no audit log).
//!
//! Not evaluated: the `authorizer` variable (an expression using it fails to evaluate, and
//! the failure policy decides) and `auditAnnotations`. Policies are not type-checked at
//! creation (kube reports that in `status.typeChecking`).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use super::Request;
use super::conditions::{self, Subject};
use crate::cel::{self, Outcome};
use crate::mirror::Change;
use crate::object;
use crate::rest::Op;
use crate::selector::LabelSelector;
use crate::status::{ApiError, ApiResult, FieldError, GroupResource};
use crate::strategy::admission::{inline_variables, variables_of};

/// Where policies and bindings are stored; the mirror follows their common prefix.
pub(super) const PREFIX: &str = "/registry/admissionregistration.k8s.io/validatingadmissionpolic";
const POLICIES: &str = "/registry/admissionregistration.k8s.io/validatingadmissionpolicies/";
const BINDINGS: &str = "/registry/admissionregistration.k8s.io/validatingadmissionpolicybindings/";

/// The cluster's policies and bindings, by name, mirrored from the store.
#[derive(Default)]
pub(super) struct Policies {
    policies: RwLock<BTreeMap<String, Arc<Value>>>,
    bindings: RwLock<BTreeMap<String, Arc<Value>>>,
}

impl Policies {
    pub(super) fn apply(&self, change: Change<'_>) {
        let parse = |v: &[u8]| serde_json::from_slice::<Value>(v).ok().map(Arc::new);
        let split = |k: &[u8]| -> Option<(bool, String)> {
            let k = std::str::from_utf8(k).ok()?;
            if let Some(n) = k.strip_prefix(POLICIES) {
                Some((true, n.to_string()))
            } else {
                k.strip_prefix(BINDINGS).map(|n| (false, n.to_string()))
            }
        };
        let mut policies = self.policies.write().unwrap_or_else(|p| p.into_inner());
        let mut bindings = self.bindings.write().unwrap_or_else(|p| p.into_inner());
        match change {
            Change::Reset(items) => {
                policies.clear();
                bindings.clear();
                for (k, v) in items {
                    if let (Some((is_policy, name)), Some(v)) = (split(&k), parse(&v)) {
                        if is_policy { &mut policies } else { &mut bindings }.insert(name, v);
                    }
                }
            }
            Change::Put(k, v) => {
                if let (Some((is_policy, name)), Some(v)) = (split(k), parse(v)) {
                    if is_policy { &mut policies } else { &mut bindings }.insert(name, v);
                }
            }
            Change::Delete(k) => {
                if let Some((is_policy, name)) = split(k) {
                    if is_policy { &mut policies } else { &mut bindings }.remove(&name);
                }
            }
        }
    }

    /// The bindings (by name) with their policies.
    fn bound(&self) -> Vec<(Arc<Value>, Arc<Value>)> {
        let policies = self.policies.read().unwrap_or_else(|p| p.into_inner());
        let bindings = self.bindings.read().unwrap_or_else(|p| p.into_inner());
        bindings
            .values()
            .filter_map(|b| {
                let name = b.pointer("/spec/policyName").and_then(Value::as_str)?;
                Some((policies.get(name)?.clone(), b.clone()))
            })
            .collect()
    }
}

/// Whether a rule (`resourceRules` item) covers the request.
fn rule_matches(r: &Value, a: &Request<'_>, name: &str) -> bool {
    let any = |list: Option<&Value>, v: &str| {
        list.and_then(Value::as_array).is_some_and(|l| l.iter().any(|x| x == "*" || x == v))
    };
    let resource_ok = r.get("resources").and_then(Value::as_array).is_some_and(|rs| {
        rs.iter().filter_map(Value::as_str).any(|res| {
            let (rr, rs) = res.split_once('/').unwrap_or((res, ""));
            let res_match = rr == "*" || rr == a.resource;
            let sub_match = if a.subresource.is_empty() { rs.is_empty() } else { rs == "*" || rs == a.subresource };
            res_match && sub_match
        })
    });
    let names_ok =
        r.get("resourceNames").and_then(Value::as_array).is_none_or(|ns| ns.is_empty() || ns.iter().any(|n| n == name));
    let scope_ok = match r.get("scope").and_then(Value::as_str).unwrap_or("*") {
        "Cluster" => a.namespace.is_empty(),
        "Namespaced" => !a.namespace.is_empty(),
        _ => true,
    };
    any(r.get("operations"), a.operation)
        && any(r.get("apiGroups"), a.group)
        && any(r.get("apiVersions"), a.version)
        && resource_ok
        && names_ok
        && scope_ok
}

/// What the selectors of a `matchResources` see.
struct Labels {
    /// The object's and the old object's labels (`None`: there is no such object, which no
    /// object selector matches).
    object: Option<BTreeMap<String, String>>,
    old: Option<BTreeMap<String, String>>,
    /// The namespace's labels; `None` for cluster-scoped requests other than namespaces.
    namespace: Option<BTreeMap<String, String>>,
}

/// Whether a `matchConstraints`/`matchResources` covers the request. No `resourceRules`
/// constrains nothing (a binding's `matchResources` may give only selectors; a policy's
/// `matchConstraints` always has rules).
fn resources_match(m: &Value, a: &Request<'_>, name: &str, labels: &Labels) -> bool {
    let rules = |k: &str| m.get(k).and_then(Value::as_array).cloned().unwrap_or_default();
    let include = rules("resourceRules");
    if !include.is_empty() && !include.iter().any(|r| rule_matches(r, a, name)) {
        return false;
    }
    if rules("excludeResourceRules").iter().any(|r| rule_matches(r, a, name)) {
        return false;
    }
    let selector =
        |k: &str| m.get(k).filter(|v| v.as_object().is_some_and(|o| !o.is_empty())).and_then(LabelSelector::from_api);
    if let Some(sel) = selector("objectSelector")
        && !labels.object.as_ref().is_some_and(|l| sel.matches(l))
        && !labels.old.as_ref().is_some_and(|l| sel.matches(l))
    {
        return false;
    }
    if let (Some(sel), Some(ns)) = (selector("namespaceSelector"), &labels.namespace)
        && !sel.matches(ns)
    {
        return false;
    }
    true
}

/// One decision: a validation that did not pass.
#[derive(Debug)]
struct Decision {
    message: String,
    reason: &'static str,
}

fn reason_of(v: &Value) -> &'static str {
    match v.get("reason").and_then(Value::as_str) {
        Some("Unauthorized") => "Unauthorized",
        Some("Forbidden") => "Forbidden",
        Some("RequestEntityTooLarge") => "RequestEntityTooLarge",
        _ => "Invalid",
    }
}

fn code_of(reason: &str) -> u16 {
    match reason {
        "Unauthorized" => 401,
        "Forbidden" => 403,
        "RequestEntityTooLarge" => 413,
        _ => 422,
    }
}

/// The validations of `policy` for one evaluation context; what did not pass. Runs on a
/// [`cel::deep`] thread; spends from the binding's `budget`.
fn evaluate(policy: &Value, env: &cel::Env, fail: bool, budget: &mut u64) -> Vec<Decision> {
    let variables = variables_of(&policy["spec"]);
    let validations = policy.pointer("/spec/validations").and_then(Value::as_array).into_iter().flatten();
    let mut out = Vec::new();
    for v in validations {
        let original = v.get("expression").and_then(Value::as_str).unwrap_or("");
        let outcome = match inline_variables(original, &variables).and_then(|e| cel::compile(&e)) {
            Ok(e) => env.eval(&e, budget),
            Err(why) => Outcome::Error(why),
        };
        // Anything but `true` denies (kube's validator: `EvalResult != True`); an error is
        // the failure policy's to decide.
        let why = match outcome {
            Outcome::Value(cel::Value::Bool(true)) => continue,
            Outcome::Value(_) => None,
            Outcome::Error(why) => Some(why),
        };
        if let Some(why) = why {
            let spent = why == cel::BUDGET_EXHAUSTED;
            if fail {
                let message = if spent { why } else { format!("expression '{original}' resulted in error: {why}") };
                out.push(Decision { message, reason: "Invalid" });
            }
            // Once the budget is spent, no further validation is run (as kube).
            if spent {
                break;
            }
            continue;
        }
        // The message: the messageExpression's string, trimmed — unless blank, longer than
        // kube's limit or multi-line; else the static message, trimmed; else the expression.
        // A messageExpression that spends the binding's budget is an error, as in kube.
        let mut dynamic = None;
        if let Some(me) = v.get("messageExpression").and_then(Value::as_str).filter(|m| !m.is_empty())
            && let Ok(e) = inline_variables(me, &variables).and_then(|e| cel::compile(&e))
        {
            match env.eval(&e, budget) {
                Outcome::Value(cel::Value::String(m)) => {
                    let m = m.trim();
                    if !m.is_empty() && m.len() <= MAX_EVALUATED_MESSAGE && !m.contains('\n') {
                        dynamic = Some(m.to_string());
                    }
                }
                Outcome::Error(why) if why == cel::BUDGET_EXHAUSTED => {
                    if fail {
                        out.push(Decision { message: format!("failed messageExpression: {why}"), reason: "Invalid" });
                    }
                    break;
                }
                _ => {}
            }
        }
        let message = dynamic
            .or_else(|| {
                v.get("message").and_then(Value::as_str).map(str::trim).filter(|m| !m.is_empty()).map(String::from)
            })
            .unwrap_or_else(|| format!("failed expression: {}", original.trim()));
        out.push(Decision { message, reason: reason_of(v) });
    }
    out
}

/// kube's `MaxEvaluatedMessageExpressionSizeBytes`.
const MAX_EVALUATED_MESSAGE: usize = 5 * 1024;

/// The parameter objects a binding gives its policy, or the decision when there are none and
/// the binding says to deny. `Ok(None)`: the policy takes no parameters.
async fn params(op: &Op<'_>, policy: &Value, binding: &Value) -> Result<Option<Vec<Value>>, String> {
    let Some(kind) = policy.pointer("/spec/paramKind") else { return Ok(None) };
    let api_version = kind.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let (group, _) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let kind = kind.get("kind").and_then(Value::as_str).unwrap_or("");
    let Some(rt) = op.api.registry().by_kind(group, kind) else {
        return Err(format!("paramKind {api_version}, Kind={kind} is not served"));
    };
    let Some(param_ref) = binding.pointer("/spec/paramRef") else {
        return Err("no paramRef given for a policy with paramKind".into());
    };
    let s = |k: &str| param_ref.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let namespace = if !rt.namespaced {
        String::new()
    } else if !s("namespace").is_empty() {
        s("namespace")
    } else if !op.ns.is_empty() {
        op.ns.clone()
    } else {
        return Err("cannot use a namespaced paramRef for a cluster-scoped request without paramRef.namespace".into());
    };
    let mut found = Vec::new();
    if !s("name").is_empty() {
        let key = rt.key(&namespace, &s("name"));
        if let Ok(Some(kv)) = op.store().get(key.as_bytes()).await
            && let Ok(v) = serde_json::from_slice::<Value>(&kv.value)
        {
            found.push(v);
        }
    } else {
        let selector = param_ref.get("selector").and_then(LabelSelector::from_api);
        let page = op
            .store()
            .list(rt.list_prefix(&namespace).as_bytes(), vt_store::ListOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        for kv in &page.kvs {
            if let Ok(v) = serde_json::from_slice::<Value>(&kv.value)
                && selector.as_ref().is_none_or(|sel| sel.matches(&object::labels(&v)))
            {
                found.push(v);
            }
        }
    }
    if found.is_empty() && s("parameterNotFoundAction") == "Deny" {
        return Err("no params found for policy binding with `Deny` parameterNotFoundAction".into());
    }
    Ok(Some(found))
}

/// Runs the cluster's policies on a write (validating phase).
pub(super) async fn validate(
    op: &Op<'_>,
    policies: &Policies,
    a: &Request<'_>,
    obj: Option<&Value>,
    old: Option<&Value>,
    dry: bool,
    cel_budget: &mut u64,
) -> ApiResult<()> {
    let bound = policies.bound();
    if bound.is_empty() {
        return Ok(());
    }
    let name = obj.or(old).map(object::name).unwrap_or(&op.name).to_string();
    let is_namespace = op.rt.group.is_empty() && op.rt.plural == "namespaces";
    let namespace_object = match op.ns.as_str() {
        "" => None,
        ns => op.api.stored(&format!("/registry/core/namespaces/{ns}")).await,
    };
    let labels = Labels {
        object: obj.map(object::labels),
        old: old.map(object::labels),
        namespace: if is_namespace {
            Some(obj.or(old).map(object::labels).unwrap_or_default())
        } else if op.ns.is_empty() {
            None
        } else {
            Some(namespace_object.as_ref().map(object::labels).unwrap_or_default())
        },
    };
    let subject = Subject {
        operation: a.operation,
        user: op.user,
        name: &name,
        namespace: &op.ns,
        dry_run: dry,
        kind: (&op.rt.group, &op.rt.version, &op.rt.kind),
        resource: (&op.rt.group, &op.rt.version, &op.rt.plural),
        object: obj,
        old,
    };
    // The variables every binding sees, converted for CEL once per request (on first use).
    let mut shared = conditions::vars(&subject);
    shared.extend(namespace_object.clone().map(|ns| ("namespaceObject", ns)));
    let mut env: Option<cel::Env<'static>> = None;
    let mut denied: Option<(String, Decision)> = None;
    for (policy, binding) in bound {
        let policy_name = object::name(&policy).to_string();
        let binding_name = object::name(&binding).to_string();
        let fail = policy.pointer("/spec/failurePolicy").and_then(Value::as_str) != Some("Ignore");
        // The request's CEL total spent: refused, whatever the failure policy.
        if *cel_budget == 0 {
            return Err(ApiError::forbidden(&op.gr(), &name, cel::REQUEST_EXHAUSTED));
        }
        let constraints = policy.pointer("/spec/matchConstraints").cloned().unwrap_or(Value::Null);
        if !resources_match(&constraints, a, &name, &labels) {
            continue;
        }
        if let Some(m) =
            binding.pointer("/spec/matchResources").filter(|m| m.as_object().is_some_and(|o| !o.is_empty()))
            && !resources_match(m, a, &name, &labels)
        {
            continue;
        }
        let mut decisions = Vec::new();
        let env = env.get_or_insert_with(|| cel::Env::new(&shared));
        match conditions::matches(&conditions::parse(&policy["spec"]), env, cel_budget) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) if fail => decisions.push(Decision { message: e, reason: "Invalid" }),
            Err(_) => continue,
        }
        if decisions.is_empty() {
            let contexts: Vec<Option<Value>> = match params(op, &policy, &binding).await {
                Ok(None) => vec![None],
                Ok(Some(ps)) => ps.into_iter().map(Some).collect(),
                // A binding that cannot be configured (no parameters under `Deny`, ...) denies
                // under failurePolicy Fail whatever its actions, and is skipped under Ignore,
                // as kube's dispatcher treats configuration errors.
                Err(e) if fail => {
                    if denied.is_none() {
                        let message = format!(
                            "ValidatingAdmissionPolicy '{policy_name}' with binding '{binding_name}' denied request: failed to configure binding: {e}"
                        );
                        denied = Some((message, Decision { message: e, reason: "Invalid" }));
                    }
                    continue;
                }
                Err(_) => continue,
            };
            // The binding's validations share kube's runtime cost budget, over all its
            // parameter objects; the request's total is taken from too.
            let mut budget = cel::RUNTIME_BUDGET;
            let found = cel::deep(|| {
                let mut found = Vec::new();
                for p in contexts {
                    let scoped = env.with(&p.map(|p| ("params", p)).into_iter().collect::<Vec<_>>());
                    found.extend(evaluate(&policy, &scoped, fail, &mut budget));
                }
                found
            });
            decisions.extend(found.unwrap_or_else(|| {
                vec![Decision { message: "internal error evaluating the policy".into(), reason: "Invalid" }]
            }));
            *cel_budget = cel_budget.saturating_sub(cel::RUNTIME_BUDGET - budget);
        }
        let actions: Vec<&str> = binding
            .pointer("/spec/validationActions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for d in decisions {
            for action in &actions {
                match *action {
                    "Deny" if denied.is_none() => {
                        let message = format!(
                            "ValidatingAdmissionPolicy '{policy_name}' with binding '{binding_name}' denied request: {}",
                            d.message
                        );
                        denied = Some((message, Decision { message: d.message.clone(), reason: d.reason }));
                    }
                    "Warn" => op.warn(format!(
                        "Validation failed for ValidatingAdmissionPolicy '{policy_name}' with binding '{binding_name}': {}",
                        d.message
                    )),
                    "Audit" => tracing::debug!(tenant = %op.api.config().name, policy = %policy_name, binding = %binding_name, message = %d.message, "validation failed (audit)"),
                    _ => {}
                }
            }
        }
    }
    match denied {
        None => Ok(()),
        // admission.NewForbidden's message, with the decision's reason and its code.
        Some((message, d)) => {
            let gr = GroupResource::new(op.rt.group.clone(), op.rt.plural.clone());
            let mut e = ApiError::forbidden(&gr, &name, &message);
            e.reason = d.reason;
            e.code = code_of(d.reason);
            e.causes = vec![FieldError { reason: "", field: String::new(), message }];
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Pins kube's matcher: a missing object (a create's old one, a delete's new one) matches
    /// no object selector, even `DoesNotExist`; a binding's matchResources without rules
    /// constrains only by its selectors.
    #[test]
    fn missing_objects_match_no_selector_and_rule_less_match_resources_match_all() {
        let a = Request {
            operation: "CREATE",
            group: "",
            version: "v1",
            resource: "configmaps",
            subresource: "",
            namespace: "d",
        };
        let selector = json!({"objectSelector": {"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}});
        let created = Labels { object: Some(BTreeMap::new()), old: None, namespace: Some(BTreeMap::new()) };
        assert!(resources_match(&selector, &a, "c", &created));
        let nothing = Labels { object: None, old: None, namespace: Some(BTreeMap::new()) };
        assert!(!resources_match(&selector, &a, "c", &nothing));
        let other = json!({"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["*"], "operations": ["*"], "resources": ["*"]}]});
        assert!(!resources_match(&other, &a, "c", &created));
    }

    /// A binding's validations spend from what the request has left: past it, kube's
    /// out-of-budget error ends the binding's evaluation (one decision, not one per
    /// validation), and later validations are not run.
    #[test]
    fn validations_spend_a_shared_budget() {
        let ten = "[0,1,2,3,4,5,6,7,8,9]";
        let spin = format!("{ten}.all(a, {ten}.all(b, {ten}.all(c, {ten}.all(d, {ten}.all(e, {ten}.all(f, true))))))");
        let policy =
            json!({"spec": {"validations": [{"expression": spin}, {"expression": spin}, {"expression": "true"}]}});
        let env = cel::Env::new(&[]);
        // A full budget: each runaway validation is cancelled at the per-call limit.
        let mut budget = cel::RUNTIME_BUDGET;
        let decisions = evaluate(&policy, &env, true, &mut budget);
        assert_eq!(decisions.len(), 2, "{decisions:?}");
        assert!(decisions.iter().all(|d| d.message.ends_with(cel::COST_EXCEEDED)), "{decisions:?}");
        assert!(budget <= cel::RUNTIME_BUDGET - 2 * cel::PER_CALL_LIMIT, "{budget}");
        // What is left of a request's budget: the first runaway spends it.
        let mut left = cel::PER_CALL_LIMIT / 2;
        let decisions = evaluate(&policy, &env, true, &mut left);
        assert_eq!(decisions.len(), 1, "{decisions:?}");
        assert_eq!(decisions[0].message, cel::BUDGET_EXHAUSTED);
        assert_eq!(left, 0);
    }

    /// kube's messageExpression rules: a message longer than
    /// `MaxEvaluatedMessageExpressionSizeBytes`, with a line break, blank, or not a string
    /// falls back to the static message.
    #[test]
    fn message_expressions_fall_back_as_kube_does() {
        let env = cel::Env::new(&[]);
        let message = |me: &str| {
            let policy = json!({"spec": {"validations": [
                {"expression": "false", "message": "static", "messageExpression": me}]}});
            let mut budget = cel::RUNTIME_BUDGET;
            evaluate(&policy, &env, true, &mut budget).remove(0).message
        };
        assert_eq!(message("'dynamic ' + string(1)"), "dynamic 1");
        assert_eq!(message(&format!("'{}'", "x".repeat(MAX_EVALUATED_MESSAGE + 1))), "static");
        assert_eq!(message("'two\\nlines'"), "static");
        assert_eq!(message("'  '"), "static");
        assert_eq!(message("1"), "static");
        assert_eq!(message("'  padded\\n'"), "padded");
        // A non-bool result denies, as kube's `EvalResult != True`.
        let policy = json!({"spec": {"validations": [{"expression": "'not a bool'"}]}});
        let decisions = evaluate(&policy, &env, true, &mut { cel::RUNTIME_BUDGET });
        assert_eq!(decisions[0].message, "failed expression: 'not a bool'");
    }

    #[test]
    fn reasons_map_to_kube_codes() {
        for (reason, code) in
            [("Forbidden", 403), ("Unauthorized", 401), ("RequestEntityTooLarge", 413), ("Invalid", 422)]
        {
            assert_eq!(code_of(reason_of(&json!({"reason": reason}))), code);
        }
        assert_eq!(reason_of(&json!({})), "Invalid");
    }
}
