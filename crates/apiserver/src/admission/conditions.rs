//! Webhooks' `matchConditions`: CEL expressions over `object`, `oldObject` and `request` that
//! decide whether a webhook is called, evaluated as kube-apiserver evaluates them
//! (`admission/plugin/webhook/matchconditions`): any condition that is false skips the webhook
//! — even when another failed to evaluate; otherwise an evaluation error is the webhook's
//! failure, which its `failurePolicy` decides.

use kube_core::cel::{AdmissionRequest, GroupVersionKind, GroupVersionResource, VapEvaluator, VapExpression};
use serde_json::Value;

use crate::auth::UserInfo;

/// A named condition.
#[derive(Clone, Debug)]
pub(super) struct Condition {
    pub name: String,
    pub expression: String,
}

/// The conditions of a webhook's `matchConditions`.
pub(super) fn parse(w: &Value) -> Vec<Condition> {
    w.get("matchConditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| Condition {
            name: c.get("name").and_then(Value::as_str).unwrap_or("").to_string(),
            expression: c.get("expression").and_then(Value::as_str).unwrap_or("").to_string(),
        })
        .collect()
}

/// What the admitted request looks like to the conditions.
pub(super) struct Subject<'a> {
    pub operation: &'a str,
    pub user: &'a UserInfo,
    pub name: &'a str,
    pub namespace: &'a str,
    pub dry_run: bool,
    pub kind: (&'a str, &'a str, &'a str),
    pub resource: (&'a str, &'a str, &'a str),
    pub object: Option<&'a Value>,
    pub old: Option<&'a Value>,
}

/// The request as CEL's `request` variable sees it.
pub(super) fn request(s: &Subject<'_>) -> AdmissionRequest {
    AdmissionRequest {
        operation: s.operation.into(),
        username: s.user.name.clone(),
        uid: s.user.uid.clone(),
        groups: s.user.groups.clone(),
        name: s.name.into(),
        namespace: s.namespace.into(),
        dry_run: s.dry_run,
        kind: GroupVersionKind { group: s.kind.0.into(), version: s.kind.1.into(), kind: s.kind.2.into() },
        resource: GroupVersionResource {
            group: s.resource.0.into(),
            version: s.resource.1.into(),
            resource: s.resource.2.into(),
        },
    }
}

/// Whether the conditions hold: `Ok(false)` skips the webhook, `Err` says which condition
/// failed to evaluate and why.
pub(super) fn matches(conditions: &[Condition], s: &Subject<'_>) -> Result<bool, String> {
    if conditions.is_empty() {
        return Ok(true);
    }
    let mut builder = VapEvaluator::builder().object(s.object.cloned().unwrap_or(Value::Null)).request(request(s));
    if let Some(old) = s.old {
        builder = builder.old_object(old.clone());
    }
    let expressions: Vec<VapExpression> = conditions
        .iter()
        .map(|c| VapExpression { expression: c.expression.clone(), message: None, message_expression: None })
        .collect();
    let results = builder.build().evaluate(&expressions);
    let mut error = None;
    for (c, r) in conditions.iter().zip(&results) {
        if r.passed {
            continue;
        }
        // The evaluator's words for a plain `false` (no message was given).
        let is_false =
            r.message.as_deref() == Some(&format!("validation expression '{}' evaluated to false", c.expression));
        if is_false {
            return Ok(false);
        }
        error.get_or_insert_with(|| {
            format!("failed to evaluate match condition {:?}: {}", c.name, r.message.as_deref().unwrap_or("no result"))
        });
    }
    error.map_or(Ok(true), Err)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn subject<'a>(user: &'a UserInfo, object: &'a Value) -> Subject<'a> {
        Subject {
            operation: "CREATE",
            user,
            name: "c",
            namespace: "d",
            dry_run: false,
            kind: ("", "v1", "ConfigMap"),
            resource: ("", "v1", "configmaps"),
            object: Some(object),
            old: None,
        }
    }

    fn conds(exprs: &[&str]) -> Vec<Condition> {
        exprs.iter().enumerate().map(|(i, e)| Condition { name: format!("c{i}"), expression: e.to_string() }).collect()
    }

    #[test]
    fn false_skips_true_calls_errors_fail() {
        let user = UserInfo::new("jane", ["dev"]);
        let obj = json!({"metadata": {"name": "c", "labels": {"team": "a"}}});
        let s = subject(&user, &obj);
        assert_eq!(matches(&[], &s), Ok(true));
        assert_eq!(
            matches(&conds(&["object.metadata.labels.team == 'a'", "request.userInfo.username == 'jane'"]), &s),
            Ok(true)
        );
        assert_eq!(matches(&conds(&["request.operation == 'UPDATE'"]), &s), Ok(false));
        let err = matches(&conds(&["object.metadata.missing == 1"]), &s).unwrap_err();
        assert!(err.starts_with("failed to evaluate match condition \"c0\""), "{err}");
        // False wins over an error.
        assert_eq!(matches(&conds(&["object.metadata.missing == 1", "false"]), &s), Ok(false));
    }
}
