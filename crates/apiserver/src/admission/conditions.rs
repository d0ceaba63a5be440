//! Webhooks' `matchConditions`: CEL expressions over `object`, `oldObject` and `request` that
//! decide whether a webhook is called, evaluated as kube-apiserver evaluates them
//! (`admission/plugin/webhook/matchconditions`): any condition that is false skips the webhook
//! — even when another failed to evaluate; otherwise an evaluation error is the webhook's
//! failure, which its `failurePolicy` decides. The conditions of one webhook share kube's
//! runtime cost budget (`crate::cel`).

use serde_json::{Value, json};

use crate::auth::UserInfo;
use crate::cel::{self, Outcome};

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

/// The request as CEL's `request` variable sees it (admission.k8s.io/v1 AdmissionRequest's
/// fields).
pub(super) fn request(s: &Subject<'_>) -> Value {
    let kind = json!({"group": s.kind.0, "version": s.kind.1, "kind": s.kind.2});
    let resource = json!({"group": s.resource.0, "version": s.resource.1, "resource": s.resource.2});
    json!({
        "kind": kind, "resource": resource, "requestKind": kind, "requestResource": resource,
        "name": s.name, "namespace": s.namespace, "operation": s.operation,
        "userInfo": {"username": s.user.name, "uid": s.user.uid, "groups": s.user.groups},
        "dryRun": s.dry_run,
    })
}

/// The variables the conditions see: `object`, `oldObject`, `request`.
pub(super) fn vars(s: &Subject<'_>) -> Vec<(&'static str, Value)> {
    vec![
        ("object", s.object.cloned().unwrap_or(Value::Null)),
        ("oldObject", s.old.cloned().unwrap_or(Value::Null)),
        ("request", request(s)),
    ]
}

/// Whether the conditions hold in `env` (at least [`vars`]): `Ok(false)` skips the webhook,
/// `Err` says which condition failed to evaluate and why. They have kube's budget of their
/// own, and what they spend is taken from `budget` (the request's).
pub(super) fn matches(conditions: &[Condition], env: &cel::Env<'_>, budget: &mut u64) -> Result<bool, String> {
    if conditions.is_empty() {
        return Ok(true);
    }
    let outcomes = cel::deep(|| {
        let mut own = cel::RUNTIME_BUDGET;
        let before = own;
        let outcomes = conditions
            .iter()
            .map(|c| match cel::compile(&c.expression) {
                Ok(e) => env.eval(&e, &mut own),
                Err(why) => Outcome::Error(why),
            })
            .collect::<Vec<_>>();
        *budget = budget.saturating_sub(before - own);
        outcomes
    })
    .ok_or("internal error evaluating the match conditions")?;
    let mut error = None;
    for (c, outcome) in conditions.iter().zip(outcomes) {
        let why = match outcome.truth() {
            Ok(true) => continue,
            Ok(false) => return Ok(false),
            Err(why) => why,
        };
        error.get_or_insert_with(|| format!("failed to evaluate match condition {:?}: {why}", c.name));
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
        assert_eq!(matches(&[], &cel::Env::new(&vars(&s)), &mut { cel::RUNTIME_BUDGET }), Ok(true));
        assert_eq!(
            matches(
                &conds(&["object.metadata.labels.team == 'a'", "request.userInfo.username == 'jane'"]),
                &cel::Env::new(&vars(&s)),
                &mut { cel::RUNTIME_BUDGET }
            ),
            Ok(true)
        );
        assert_eq!(
            matches(&conds(&["request.operation == 'UPDATE'"]), &cel::Env::new(&vars(&s)), &mut {
                cel::RUNTIME_BUDGET
            }),
            Ok(false)
        );
        let err =
            matches(&conds(&["object.metadata.missing == 1"]), &cel::Env::new(&vars(&s)), &mut { cel::RUNTIME_BUDGET })
                .unwrap_err();
        assert!(err.starts_with("failed to evaluate match condition \"c0\""), "{err}");
        // False wins over an error.
        assert_eq!(
            matches(&conds(&["object.metadata.missing == 1", "false"]), &cel::Env::new(&vars(&s)), &mut {
                cel::RUNTIME_BUDGET
            }),
            Ok(false)
        );
    }
}
