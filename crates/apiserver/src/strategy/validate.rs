//! Kind-specific validation, with kube-apiserver's field paths and messages, for the kinds
//! tenants write most (pods and workloads, services, config, RBAC bindings).

use serde_json::{Value, json};

use super::gk;
use crate::object;
use crate::registry::ResourceType;
use crate::selector::LabelSelector;
use crate::status::FieldError;
use crate::validation::{dns1123_label, dns1123_subdomain};

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// Validates a whole object of `rt`'s kind.
pub(crate) fn object(rt: &ResourceType, obj: &Value, _old: Option<&Value>, errs: &mut Vec<FieldError>) {
    match gk(rt) {
        ("", "Pod") => {
            if let Some(spec) = obj.get("spec") {
                pod_spec(spec, "spec", errs);
            } else {
                errs.push(FieldError::required("spec.containers", ""));
            }
        }
        ("", "PodTemplate") => template(obj.get("template"), "template", errs),
        ("", "ReplicationController") => {
            let spec = obj.get("spec").cloned().unwrap_or(json!({}));
            replicas(&spec, errs);
            template(spec.get("template"), "spec.template", errs);
        }
        ("", "Service") => service(obj, errs),
        ("", "ConfigMap") => data_keys(obj, &["data", "binaryData"], errs),
        ("", "Secret") => data_keys(obj, &["data", "stringData"], errs),
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") => workload(rt, obj, errs),
        ("batch", "Job") => {
            let spec = obj.get("spec").cloned().unwrap_or(json!({}));
            template(spec.get("template"), "spec.template", errs);
            let rp = object::str_at(&spec, &["template", "spec", "restartPolicy"]).unwrap_or("");
            if !matches!(rp, "OnFailure" | "Never") {
                errs.push(FieldError::not_supported(
                    "spec.template.spec.restartPolicy",
                    &json!(rp),
                    &["OnFailure", "Never"],
                ));
            }
            for f in ["parallelism", "completions", "backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"]
            {
                if let Some(n) = spec.get(f).and_then(Value::as_i64).filter(|n| *n < 0) {
                    errs.push(FieldError::invalid(
                        format!("spec.{f}"),
                        &json!(n),
                        "must be greater than or equal to 0",
                    ));
                }
            }
        }
        ("batch", "CronJob") => {
            let name = object::name(obj);
            if name.len() > 52 {
                errs.push(FieldError::invalid("metadata.name", &json!(name), "must be no more than 52 characters"));
            }
            let schedule = object::str_at(obj, &["spec", "schedule"]).unwrap_or("");
            if schedule.is_empty() {
                errs.push(FieldError::required("spec.schedule", ""));
            } else if schedule.contains("TZ") {
                // kube refuses time zones inside the schedule for new objects (use spec.timeZone).
                errs.push(FieldError::invalid(
                    "spec.schedule",
                    &json!(schedule),
                    "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
                ));
            } else if !valid_schedule(schedule) {
                errs.push(FieldError::invalid("spec.schedule", &json!(schedule), "unparseable schedule"));
            }
            if let Some(tz) = object::str_at(obj, &["spec", "timeZone"]) {
                if tz.eq_ignore_ascii_case("local") || tz.is_empty() {
                    errs.push(FieldError::invalid(
                        "spec.timeZone",
                        &json!(tz),
                        "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
                    ));
                } else if jiff::tz::TimeZone::get(tz).is_err() {
                    errs.push(FieldError::invalid("spec.timeZone", &json!(tz), &format!("unknown time zone {tz}")));
                }
            }
            let tpl = object::at(obj, &["spec", "jobTemplate", "spec", "template"]);
            template(tpl, "spec.jobTemplate.spec.template", errs);
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            let kind = object::str_at(obj, &["roleRef", "kind"]).unwrap_or("");
            let allowed: &[&str] = if rt.kind == "RoleBinding" { &["Role", "ClusterRole"] } else { &["ClusterRole"] };
            if !allowed.contains(&kind) {
                errs.push(FieldError::not_supported("roleRef.kind", &json!(kind), allowed));
            }
            if object::str_at(obj, &["roleRef", "name"]).unwrap_or("").is_empty() {
                errs.push(FieldError::required("roleRef.name", ""));
            }
        }
        ("", "Namespace") => {}
        _ => {}
    }
}

/// Validates what an update of `rt`'s kind may change.
pub(crate) fn update(rt: &ResourceType, new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    match gk(rt) {
        ("", "Pod") => pod_update(new, old, errs),
        ("", "Service") => {
            let ty = object::str_at(new, &["spec", "type"]).unwrap_or("");
            let old_ty = object::str_at(old, &["spec", "type"]).unwrap_or("");
            let (n, o) = (object::at(new, &["spec", "clusterIP"]), object::at(old, &["spec", "clusterIP"]));
            if ty != "ExternalName" && old_ty != "ExternalName" && n != o && o.is_some_and(|v| v != "") {
                errs.push(FieldError::immutable("spec.clusterIP", n.unwrap_or(&Value::Null)));
            }
        }
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") | ("batch", "Job") => {
            let (n, o) = (object::at(new, &["spec", "selector"]), object::at(old, &["spec", "selector"]));
            if n != o {
                errs.push(FieldError::immutable("spec.selector", n.unwrap_or(&Value::Null)));
            }
        }
        ("", "ConfigMap" | "Secret") => {
            if old.get("immutable").and_then(Value::as_bool) == Some(true) {
                for f in ["data", "binaryData", "stringData"] {
                    if new.get(f) != old.get(f) {
                        errs.push(FieldError::forbidden(f, "field is immutable when `immutable` is set"));
                    }
                }
                if new.get("immutable") != old.get("immutable") {
                    errs.push(FieldError::forbidden("immutable", "field is immutable when `immutable` is set"));
                }
            }
            if gk(rt).1 == "Secret" && new.get("type") != old.get("type") {
                errs.push(FieldError::immutable("type", new.get("type").unwrap_or(&Value::Null)));
            }
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding")
            if new.get("roleRef") != old.get("roleRef") =>
        {
            errs.push(FieldError::invalid(
                "roleRef",
                new.get("roleRef").unwrap_or(&Value::Null),
                "cannot change roleRef",
            ));
        }
        _ => {}
    }
}

fn replicas(spec: &Value, errs: &mut Vec<FieldError>) {
    if let Some(n) = spec.get("replicas").and_then(Value::as_i64).filter(|n| *n < 0) {
        errs.push(FieldError::invalid("spec.replicas", &json!(n), "must be greater than or equal to 0"));
    }
}

fn template(t: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) {
    match t.and_then(|t| t.get("spec")) {
        Some(spec) => pod_spec(spec, &format!("{path}.spec"), errs),
        None => errs.push(FieldError::required(format!("{path}.spec.containers"), "")),
    }
}

fn workload(rt: &ResourceType, obj: &Value, errs: &mut Vec<FieldError>) {
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    replicas(&spec, errs);
    let labels = object::at(&spec, &["template", "metadata", "labels"]).cloned().unwrap_or(json!({}));
    match spec.get("selector") {
        None | Some(Value::Null) => errs.push(FieldError::required("spec.selector", "")),
        Some(sel) => {
            let empty = sel.get("matchLabels").and_then(Value::as_object).is_none_or(|m| m.is_empty())
                && sel.get("matchExpressions").and_then(Value::as_array).is_none_or(|m| m.is_empty());
            if empty {
                errs.push(FieldError::invalid("spec.selector", sel, "empty selector is invalid for deployment"));
            } else if let Some(parsed) = LabelSelector::from_api(sel) {
                let map = labels
                    .as_object()
                    .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
                    .unwrap_or_default();
                if !parsed.matches(&map) {
                    errs.push(FieldError::invalid(
                        "spec.template.metadata.labels",
                        &labels,
                        "`selector` does not match template `labels`",
                    ));
                }
            }
        }
    }
    template(spec.get("template"), "spec.template", errs);
    if rt.kind != "StatefulSet" {
        let rp = object::str_at(&spec, &["template", "spec", "restartPolicy"]).unwrap_or("Always");
        if rp != "Always" {
            errs.push(FieldError::not_supported("spec.template.spec.restartPolicy", &json!(rp), &["Always"]));
        }
    }
}

fn pod_spec(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let containers = spec.get("containers").and_then(Value::as_array).cloned().unwrap_or_default();
    if containers.is_empty() {
        errs.push(FieldError::required(format!("{path}.containers"), ""));
    }
    let mut names = std::collections::HashSet::new();
    for list in ["initContainers", "containers"] {
        for (i, c) in spec.get(list).and_then(Value::as_array).cloned().unwrap_or_default().iter().enumerate() {
            let p = format!("{path}.{list}[{i}]");
            let name = str_of(c, "name");
            if name.is_empty() {
                errs.push(FieldError::required(format!("{p}.name"), ""));
            } else if let Some(d) = dns1123_label(name) {
                errs.push(FieldError::invalid(format!("{p}.name"), &json!(name), &d));
            } else if !names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(format!("{p}.name"), &json!(name)));
            }
            if str_of(c, "image").trim().is_empty() {
                errs.push(FieldError::required(format!("{p}.image"), ""));
            }
            for (j, port) in c.get("ports").and_then(Value::as_array).cloned().unwrap_or_default().iter().enumerate() {
                let n = port.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
                if !(1..=65535).contains(&n) {
                    errs.push(FieldError::invalid(
                        format!("{p}.ports[{j}].containerPort"),
                        &json!(n),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
                let proto = str_of(port, "protocol");
                if !proto.is_empty() && !matches!(proto, "TCP" | "UDP" | "SCTP") {
                    errs.push(FieldError::not_supported(
                        format!("{p}.ports[{j}].protocol"),
                        &json!(proto),
                        &["SCTP", "TCP", "UDP"],
                    ));
                }
            }
        }
    }
    let rp = str_of(spec, "restartPolicy");
    if !rp.is_empty() && !matches!(rp, "Always" | "OnFailure" | "Never") {
        errs.push(FieldError::not_supported(
            format!("{path}.restartPolicy"),
            &json!(rp),
            &["Always", "OnFailure", "Never"],
        ));
    }
    let dns = str_of(spec, "dnsPolicy");
    if !dns.is_empty() && !matches!(dns, "ClusterFirstWithHostNet" | "ClusterFirst" | "Default" | "None") {
        errs.push(FieldError::not_supported(
            format!("{path}.dnsPolicy"),
            &json!(dns),
            &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"],
        ));
    }
    let mut vols = std::collections::HashSet::new();
    for (i, v) in spec.get("volumes").and_then(Value::as_array).cloned().unwrap_or_default().iter().enumerate() {
        let name = str_of(v, "name");
        if name.is_empty() {
            errs.push(FieldError::required(format!("{path}.volumes[{i}].name"), ""));
        } else if let Some(d) = dns1123_label(name) {
            errs.push(FieldError::invalid(format!("{path}.volumes[{i}].name"), &json!(name), &d));
        } else if !vols.insert(name.to_string()) {
            errs.push(FieldError::duplicate(format!("{path}.volumes[{i}].name"), &json!(name)));
        }
    }
}

/// Pods may only change images, `activeDeadlineSeconds`, additional tolerations and a few
/// scheduling gates after creation.
fn pod_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    let mask = |spec: &Value| {
        let mut s = spec.clone();
        for list in ["containers", "initContainers"] {
            if let Some(cs) = s.get_mut(list).and_then(Value::as_array_mut) {
                for c in cs {
                    c["image"] = json!("");
                    if let Some(m) = c.as_object_mut() {
                        m.remove("resources");
                    }
                }
            }
        }
        if let Some(m) = s.as_object_mut() {
            for f in [
                "activeDeadlineSeconds",
                "tolerations",
                "schedulingGates",
                "terminationGracePeriodSeconds",
                "ephemeralContainers",
            ] {
                m.remove(f);
            }
        }
        s
    };
    let (n, o) = (new.get("spec").cloned().unwrap_or(json!({})), old.get("spec").cloned().unwrap_or(json!({})));
    // A pod is bound once, through pods/binding; afterwards nodeName is fixed.
    let mut n_masked = mask(&n);
    let o_masked = mask(&o);
    if str_of(&o, "nodeName").is_empty() && !str_of(&n, "nodeName").is_empty() {
        n_masked["nodeName"] = o_masked.get("nodeName").cloned().unwrap_or(Value::Null);
        if o_masked.get("nodeName").is_none()
            && let Some(m) = n_masked.as_object_mut()
        {
            m.remove("nodeName");
        }
    }
    if n_masked != o_masked {
        errs.push(FieldError::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
}

fn service(obj: &Value, errs: &mut Vec<FieldError>) {
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    let ty = str_of(&spec, "type");
    if !matches!(ty, "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName") {
        errs.push(FieldError::not_supported(
            "spec.type",
            &json!(ty),
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
    }
    let ports = spec.get("ports").and_then(Value::as_array).cloned().unwrap_or_default();
    let headless = str_of(&spec, "clusterIP") == "None";
    if ty == "ExternalName" {
        let name = str_of(&spec, "externalName");
        if name.is_empty() {
            errs.push(FieldError::required("spec.externalName", ""));
        } else if let Some(d) = dns1123_subdomain(name.trim_end_matches('.')) {
            errs.push(FieldError::invalid("spec.externalName", &json!(name), &d));
        }
    } else if ports.is_empty() && !headless {
        errs.push(FieldError::required("spec.ports", ""));
    }
    let mut names = std::collections::HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let n = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&n) {
            errs.push(FieldError::invalid(
                format!("spec.ports[{i}].port"),
                &json!(n),
                "must be between 1 and 65535, inclusive",
            ));
        }
        let name = str_of(p, "name");
        if ports.len() > 1 && name.is_empty() {
            errs.push(FieldError::required(format!("spec.ports[{i}].name"), ""));
        } else if !name.is_empty() && !names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(format!("spec.ports[{i}].name"), &json!(name)));
        }
        let proto = str_of(p, "protocol");
        if !matches!(proto, "TCP" | "UDP" | "SCTP") {
            errs.push(FieldError::not_supported(
                format!("spec.ports[{i}].protocol"),
                &json!(proto),
                &["SCTP", "TCP", "UDP"],
            ));
        }
        if let Some(np) = p.get("nodePort").and_then(Value::as_i64).filter(|np| *np != 0) {
            if ty == "ClusterIP" {
                errs.push(FieldError::forbidden(
                    format!("spec.ports[{i}].nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else if !(30000..=32767).contains(&np) {
                errs.push(FieldError::invalid(
                    format!("spec.ports[{i}].nodePort"),
                    &json!(np),
                    "provided port is not in the valid range. The range of valid ports is 30000-32767",
                ));
            }
        }
    }
}

fn data_keys(obj: &Value, fields: &[&str], errs: &mut Vec<FieldError>) {
    let valid = |k: &str| {
        !k.is_empty()
            && k.len() <= 253
            && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && k != "."
            && k != ".."
    };
    for f in fields {
        if let Some(m) = obj.get(*f).and_then(Value::as_object) {
            for k in m.keys() {
                if !valid(k) {
                    errs.push(FieldError::invalid(
                        f.to_string(),
                        &json!(k),
                        "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                    ));
                }
            }
        }
    }
}

/// A cron schedule: five fields, or one of the `@` macros, optionally with `CRON_TZ=`/`TZ=`.
fn valid_schedule(s: &str) -> bool {
    let s = s.trim();
    let s = match s.split_once(' ') {
        Some((tz, rest)) if tz.starts_with("TZ=") || tz.starts_with("CRON_TZ=") => rest.trim(),
        _ => s,
    };
    if s.starts_with('@') {
        return matches!(s, "@yearly" | "@annually" | "@monthly" | "@weekly" | "@daily" | "@midnight" | "@hourly")
            || s.starts_with("@every ");
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    fields.len() == 5
        && fields
            .iter()
            .all(|f| f.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | '/' | ',' | '-' | '?')))
}
