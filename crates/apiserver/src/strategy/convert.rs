//! Conversion between a served version and the storage version, for the built-in types served
//! in a version other than the one they are stored in: `events.k8s.io/v1` Events (stored as
//! core `v1` Events, so both APIs see the same events) and `autoscaling/v1`
//! HorizontalPodAutoscalers (stored as `autoscaling/v2`).

use serde_json::{Map, Value, json};

use crate::registry::ResourceType;

/// (events.k8s.io/v1 field, core/v1 field) pairs that only differ by name.
const EVENT_RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename(obj: &mut Value, pairs: &[(&str, &str)], forward: bool) {
    let Some(m) = obj.as_object_mut() else { return };
    for (a, b) in pairs {
        let (from, to) = if forward { (a, b) } else { (b, a) };
        if let Some(v) = m.remove(*from) {
            m.insert(to.to_string(), v);
        }
    }
}

/// Whether `rt`'s version differs from its storage version.
pub(crate) fn converts(rt: &ResourceType) -> bool {
    // Custom resources with several versions are stored in whichever version was the storage
    // version at write time, so reads always rewrite apiVersion (conversion strategy None);
    // schemas with defaults default what is read.
    if let Some(c) = &rt.custom {
        return c.versions > 1 || c.storage_version != rt.version || c.has_defaults || c.conversion.is_some();
    }
    matches!(
        (rt.group.as_str(), rt.version.as_str(), rt.kind.as_str()),
        ("events.k8s.io", "v1", "Event") | ("autoscaling", "v1", "HorizontalPodAutoscaler")
    )
}

/// Converts an object of `rt`'s version to its storage version, if they differ.
pub(crate) fn to_storage(rt: &ResourceType, obj: &mut Value) {
    if let Some(c) = &rt.custom {
        // A conversion webhook converted it already (`crd::conversion::storable`).
        if obj.is_object() && c.conversion.is_none() {
            obj["apiVersion"] = json!(format!("{}/{}", rt.group, c.storage_version));
        }
        return;
    }
    match (rt.group.as_str(), rt.version.as_str(), rt.kind.as_str()) {
        ("events.k8s.io", "v1", "Event") => {
            rename(obj, EVENT_RENAMES, true);
            obj["apiVersion"] = json!("v1");
        }
        ("autoscaling", "v1", "HorizontalPodAutoscaler") => hpa_v1_to_v2(obj),
        _ => {}
    }
}

/// Converts a stored object to `rt`'s version, if they differ.
pub(crate) fn from_storage(rt: &ResourceType, obj: &mut Value) {
    if let Some(c) = &rt.custom {
        // With a conversion webhook the stored version stays until the webhook converts it
        // (`crd::conversion::served`, which also defaults).
        if c.conversion.is_some() {
            return;
        }
        if obj.is_object() {
            obj["apiVersion"] = json!(rt.api_version());
        }
        // Defaults on read (kube's structural defaulting when decoding from storage): an
        // object stored before its schema gained a default reads with it.
        if c.has_defaults
            && let Some(schema) = &c.schema
        {
            crate::crd::schema::apply_defaults(obj, schema);
        }
        return;
    }
    match (rt.group.as_str(), rt.version.as_str(), rt.kind.as_str()) {
        ("events.k8s.io", "v1", "Event") => {
            rename(obj, EVENT_RENAMES, false);
            obj["apiVersion"] = json!("events.k8s.io/v1");
            if let Some(m) = obj.as_object_mut() {
                m.remove("reportingInstance").map(|v| m.insert("reportingInstance".into(), v));
            }
        }
        ("autoscaling", "v1", "HorizontalPodAutoscaler") => hpa_v2_to_v1(obj),
        _ => {}
    }
}

fn hpa_v1_to_v2(obj: &mut Value) {
    obj["apiVersion"] = json!("autoscaling/v2");
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(cpu) = spec.remove("targetCPUUtilizationPercentage") {
        spec.insert(
            "metrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}}}]),
        );
    }
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut)
        && let Some(cpu) = status.remove("currentCPUUtilizationPercentage")
    {
        status.insert(
            "currentMetrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": cpu}}}]),
        );
    }
}

fn hpa_v2_to_v1(obj: &mut Value) {
    obj["apiVersion"] = json!("autoscaling/v1");
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        let metrics = spec.remove("metrics");
        spec.remove("behavior");
        let cpu = metrics.as_ref().and_then(Value::as_array).and_then(|ms| {
            ms.iter().find_map(|m| {
                (m.get("type")? == "Resource" && m.get("resource")?.get("name")? == "cpu")
                    .then(|| m["resource"]["target"]["averageUtilization"].clone())
                    .filter(|v| !v.is_null())
            })
        });
        spec.insert("targetCPUUtilizationPercentage".into(), cpu.unwrap_or(json!(80)));
    }
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
        let current = status.remove("currentMetrics");
        status.remove("conditions");
        if let Some(cpu) = current.as_ref().and_then(Value::as_array).and_then(|ms| {
            ms.iter().find_map(|m| {
                m.get("resource")
                    .filter(|r| r.get("name").is_some_and(|n| n == "cpu"))?
                    .get("current")?
                    .get("averageUtilization")
                    .cloned()
            })
        }) {
            status.insert("currentCPUUtilizationPercentage".into(), cpu);
        }
        let _: &Map<String, Value> = status;
    }
}
