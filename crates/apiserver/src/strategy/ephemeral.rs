//! `pods/ephemeralcontainers` (what `kubectl debug` writes), as kube-apiserver's strategy and
//! validation treat it: only `spec.ephemeralContainers` changes; ephemeral containers are only
//! ever added (an existing one is neither changed nor removed); each new one has a name unique
//! in the pod, none of the fields an ephemeral container may not set, and a target container
//! that exists.

use serde_json::{Value, json};

use crate::status::FieldError;

/// Fields an ephemeral container may not set (kube's `validateEphemeralContainers`).
const FORBIDDEN: [&str; 6] = ["ports", "livenessProbe", "readinessProbe", "startupProbe", "lifecycle", "resources"];

/// The stored pod with the body's ephemeral containers (and its resourceVersion, a
/// precondition), nothing else of it.
pub(crate) fn split(body: &Value, current: &Value) -> Value {
    let mut new = current.clone();
    match body.pointer("/spec/ephemeralContainers") {
        Some(list) => new["spec"]["ephemeralContainers"] = list.clone(),
        None => _ = new["spec"].as_object_mut().map(|s| s.remove("ephemeralContainers")),
    }
    match body.pointer("/metadata/resourceVersion") {
        Some(rv) => _ = crate::object::meta_mut(&mut new).insert("resourceVersion".into(), rv.clone()),
        None => _ = crate::object::meta_mut(&mut new).remove("resourceVersion"),
    }
    new
}

fn list<'a>(pod: &'a Value, key: &str) -> &'a [Value] {
    pod.pointer(&format!("/spec/{key}")).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn name(c: &Value) -> &str {
    c.get("name").and_then(Value::as_str).unwrap_or("")
}

/// What an update through `pods/ephemeralcontainers` may change.
pub(crate) fn validate_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    let (now, before) = (list(new, "ephemeralContainers"), list(old, "ephemeralContainers"));
    for o in before {
        match now.iter().find(|c| name(c) == name(o)) {
            None => errs.push(FieldError::forbidden(
                "spec.ephemeralContainers",
                &format!("existing ephemeral containers {:?} may not be removed", name(o)),
            )),
            Some(c) if c != o => errs.push(FieldError::forbidden(
                "spec.ephemeralContainers",
                &format!("existing ephemeral containers {:?} may not be changed", name(o)),
            )),
            Some(_) => {}
        }
    }
    let regular: Vec<&str> = list(new, "containers").iter().chain(list(new, "initContainers")).map(name).collect();
    let mut seen: Vec<&str> = regular.clone();
    for (i, c) in now.iter().enumerate() {
        let field = format!("spec.ephemeralContainers[{i}]");
        let n = name(c);
        if n.is_empty() {
            errs.push(FieldError::required(format!("{field}.name"), ""));
        } else if seen.contains(&n) {
            errs.push(FieldError::duplicate(format!("{field}.name"), &json!(n)));
        }
        seen.push(n);
        if before.iter().any(|o| name(o) == n) {
            continue;
        }
        if c.get("image").and_then(Value::as_str).is_none_or(str::is_empty) {
            errs.push(FieldError::required(format!("{field}.image"), ""));
        }
        // Set means non-empty, as Go sees its zero values (kubectl sends `resources: {}`).
        let set = |v: &Value| match v {
            Value::Null => false,
            Value::Object(m) => !m.is_empty(),
            Value::Array(a) => !a.is_empty(),
            _ => true,
        };
        for f in FORBIDDEN {
            if c.get(f).is_some_and(set) {
                errs.push(FieldError::forbidden(format!("{field}.{f}"), "cannot be set for an Ephemeral Container"));
            }
        }
        if let Some(t) = c.get("targetContainerName").and_then(Value::as_str)
            && !t.is_empty()
            && !regular.contains(&t)
        {
            errs.push(FieldError::not_found(format!("{field}.targetContainerName"), &json!(t)));
        }
    }
}
