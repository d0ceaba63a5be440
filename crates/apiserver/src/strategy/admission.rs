//! The admission configuration kinds (`admissionregistration.k8s.io/v1`): their defaults, as
//! kube's defaulting functions set them (visible in `kubectl get -o yaml`), and the
//! validation of ValidatingAdmissionPolicies and their bindings kube does at write time —
//! CEL expressions that do not compile are refused then, not at admission.

use serde_json::{Value, json};

use crate::status::FieldError;

fn or(v: &mut Value, key: &str, default: Value) {
    if let Some(m) = v.as_object_mut()
        && m.get(key).is_none_or(Value::is_null)
    {
        m.insert(key.to_string(), default);
    }
}

/// Defaults of a `matchConstraints`/`matchResources` (and of a webhook, which has the same
/// fields): `matchPolicy: Equivalent`, empty selectors, rules of any scope.
fn match_defaults(m: &mut Value) {
    or(m, "matchPolicy", json!("Equivalent"));
    or(m, "namespaceSelector", json!({}));
    or(m, "objectSelector", json!({}));
    for key in ["rules", "resourceRules", "excludeResourceRules"] {
        for r in m.get_mut(key).and_then(Value::as_array_mut).into_iter().flatten() {
            or(r, "scope", json!("*"));
        }
    }
}

/// Defaults of the admission configuration kinds.
pub(super) fn defaults(kind: &str, obj: &mut Value) {
    match kind {
        "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration" => {
            for w in obj.get_mut("webhooks").and_then(Value::as_array_mut).into_iter().flatten() {
                or(w, "failurePolicy", json!("Fail"));
                or(w, "timeoutSeconds", json!(10));
                if kind == "MutatingWebhookConfiguration" {
                    or(w, "reinvocationPolicy", json!("Never"));
                }
                match_defaults(w);
                if let Some(svc) = w.pointer_mut("/clientConfig/service") {
                    or(svc, "port", json!(443));
                }
            }
        }
        "ValidatingAdmissionPolicy" => {
            if let Some(spec) = obj.get_mut("spec") {
                or(spec, "failurePolicy", json!("Fail"));
                if let Some(m) = spec.get_mut("matchConstraints") {
                    match_defaults(m);
                }
            }
        }
        "ValidatingAdmissionPolicyBinding" => {
            if let Some(m) = obj.pointer_mut("/spec/matchResources") {
                match_defaults(m);
            }
        }
        _ => {}
    }
}

/// The longest an expression may become once its variables are inlined: a chain of variables
/// each using the previous one twice would otherwise grow exponentially.
const MAX_INLINED: usize = 64 * 1024;

/// A policy spec's `variables`: (name, expression), in order.
pub(crate) fn variables_of(spec: &Value) -> Vec<(String, String)> {
    let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    spec.get("variables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|v| (field(v, "name"), field(v, "expression")))
        .collect()
}

/// `variables.<name>` replaced by the variable's expression (earlier variables may be used by
/// later ones), so the evaluator (which binds no variables) sees one self-contained
/// expression; an error when the result would exceed [`MAX_INLINED`].
pub(crate) fn inline_variables(expression: &str, variables: &[(String, String)]) -> Result<String, String> {
    let mut out = expression.to_string();
    for (name, expr) in variables.iter().rev() {
        let token = format!("variables.{name}");
        let mut result = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(i) = rest.find(&token) {
            let after = rest[i + token.len()..].chars().next();
            let before = rest[..i].chars().next_back();
            let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            result.push_str(&rest[..i]);
            if ident(after) || ident(before) || before == Some('.') {
                result.push_str(&token);
            } else {
                result.push('(');
                result.push_str(expr);
                result.push(')');
            }
            if result.len() > MAX_INLINED {
                return Err(format!("the expression exceeds {MAX_INLINED} characters once its variables are inlined"));
            }
            rest = &rest[i + token.len()..];
        }
        result.push_str(rest);
        out = result;
    }
    Ok(out)
}

/// Why `expression` does not compile, if it does not.
fn compile_error(expression: &str) -> Option<String> {
    crate::cel::deep(|| crate::cel::parse(expression).err()).unwrap_or_else(|| Some("compilation failed".into()))
}

/// The expressions of `list` (each item's `field`), checked to compile.
fn check_expressions(spec: &Value, list: &str, field: &str, errs: &mut Vec<FieldError>) {
    for (i, item) in spec.get(list).and_then(Value::as_array).into_iter().flatten().enumerate() {
        let Some(expr) = item.get(field).and_then(Value::as_str) else {
            if field == "expression" {
                errs.push(FieldError::required(format!("spec.{list}[{i}].{field}"), ""));
            }
            continue;
        };
        if expr.trim().is_empty() {
            errs.push(FieldError::required(format!("spec.{list}[{i}].{field}"), ""));
        } else if let Some(why) = compile_error(expr) {
            errs.push(FieldError::invalid(format!("spec.{list}[{i}].{field}"), &json!(expr), &why));
        }
    }
}

/// Validation of ValidatingAdmissionPolicies and their bindings.
pub(super) fn validate(kind: &str, obj: &Value, errs: &mut Vec<FieldError>) {
    if kind != "ValidatingAdmissionPolicy" && kind != "ValidatingAdmissionPolicyBinding" {
        return;
    }
    let Some(spec) = obj.get("spec") else {
        errs.push(FieldError::required("spec", ""));
        return;
    };
    match kind {
        "ValidatingAdmissionPolicy" => {
            let empty = |k: &str| spec.get(k).and_then(Value::as_array).is_none_or(|a| a.is_empty());
            if empty("validations") && empty("auditAnnotations") {
                errs.push(FieldError::required(
                    "spec.validations",
                    "validations or auditAnnotations must contain at least one item",
                ));
            }
            if spec.pointer("/matchConstraints/resourceRules").and_then(Value::as_array).is_none_or(|a| a.is_empty()) {
                errs.push(FieldError::required("spec.matchConstraints.resourceRules", ""));
            }
            if let Some(p) = spec.get("failurePolicy").and_then(Value::as_str)
                && p != "Fail"
                && p != "Ignore"
            {
                errs.push(FieldError::not_supported("spec.failurePolicy", &json!(p), &["Fail", "Ignore"]));
            }
            let variables = variables_of(spec);
            for (i, v) in spec.get("validations").and_then(Value::as_array).into_iter().flatten().enumerate() {
                for field in ["expression", "messageExpression"] {
                    if let Some(e) = v.get(field).and_then(Value::as_str)
                        && let Err(why) = inline_variables(e, &variables)
                    {
                        errs.push(FieldError::invalid(format!("spec.validations[{i}].{field}"), &json!(e), &why));
                    }
                }
            }
            check_expressions(spec, "validations", "expression", errs);
            check_expressions(spec, "validations", "messageExpression", errs);
            check_expressions(spec, "matchConditions", "expression", errs);
            check_expressions(spec, "variables", "expression", errs);
        }
        "ValidatingAdmissionPolicyBinding" => {
            if spec.get("policyName").and_then(Value::as_str).is_none_or(str::is_empty) {
                errs.push(FieldError::required("spec.policyName", ""));
            }
            let actions: Vec<&str> = spec
                .get("validationActions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if actions.is_empty() {
                errs.push(FieldError::required("spec.validationActions", "at least one validation action is required"));
            }
            for (i, a) in actions.iter().enumerate() {
                if !["Deny", "Warn", "Audit"].contains(a) {
                    errs.push(FieldError::not_supported(
                        format!("spec.validationActions[{i}]"),
                        &json!(a),
                        &["Audit", "Deny", "Warn"],
                    ));
                }
            }
            if actions.contains(&"Deny") && actions.contains(&"Warn") {
                errs.push(FieldError::invalid(
                    "spec.validationActions",
                    &json!(actions),
                    "must not contain both Deny and Warn (repeating the same validation failure information in the API response and headers serves no purpose)",
                ));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_inlined_whole_tokens_only_and_bounded() {
        let vars = vec![("a".to_string(), "object.x".to_string()), ("ab".to_string(), "variables.a + 1".to_string())];
        assert_eq!(
            inline_variables("variables.ab > 2 && variables.a < 9", &vars).unwrap(),
            "((object.x) + 1) > 2 && (object.x) < 9"
        );
        assert_eq!(inline_variables("other.variables.a", &vars).unwrap(), "other.variables.a");
        // Each variable using the previous one twice: refused long before it explodes.
        let mut chain = vec![("v0".to_string(), "object.spec.replicas".to_string())];
        for i in 1..40 {
            chain.push((format!("v{i}"), format!("variables.v{} + variables.v{}", i - 1, i - 1)));
        }
        assert!(inline_variables("variables.v39 > 0", &chain).is_err());
    }

    #[test]
    fn policies_are_defaulted_and_their_expressions_compiled() {
        let mut p = json!({"spec": {"matchConstraints": {"resourceRules": [{"apiGroups": ["apps"]}]},
            "validations": [{"expression": "object.spec.replicas <= 5"}, {"expression": "object.spec.replicas <="}]}});
        defaults("ValidatingAdmissionPolicy", &mut p);
        assert_eq!(p["spec"]["failurePolicy"], "Fail");
        assert_eq!(p["spec"]["matchConstraints"]["matchPolicy"], "Equivalent");
        assert_eq!(p["spec"]["matchConstraints"]["resourceRules"][0]["scope"], "*");
        let mut errs = Vec::new();
        validate("ValidatingAdmissionPolicy", &p, &mut errs);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "spec.validations[1].expression");
        assert!(errs[0].message.contains("compilation failed"), "{errs:?}");
        let mut errs = Vec::new();
        validate(
            "ValidatingAdmissionPolicyBinding",
            &json!({"spec": {"policyName": "p", "validationActions": ["Deny", "Warn"]}}),
            &mut errs,
        );
        assert_eq!(errs.len(), 1, "{errs:?}");
    }
}
