//! Printers of kinds the control loops keep: HorizontalPodAutoscaler, ResourceQuota and
//! ControllerRevision, with kube-apiserver 1.33's columns and cell rules (`printers.go`).

use serde_json::{Value, json};

use super::{AGE, NAME, age, arr, col, name, quantity, s};
use crate::table::Printer;

/// A Quantity pointer as Go's `%s` prints it: canonical, `<nil>` when unset.
fn q(v: Option<&Value>) -> String {
    if v.is_none_or(Value::is_null) { "<nil>".into() } else { quantity(v) }
}

/// One metric of `formatHPAMetrics`: its spec, and the status at the same index.
fn hpa_metric(spec: &Value, status: Option<&Value>) -> String {
    let unknown = || "<unknown>".to_string();
    // The status's sub-struct of the same source type, when there is one.
    let current = |source: &str| status.and_then(|st| st.get(source)).filter(|v| !v.is_null());
    match s(spec, "/type") {
        source @ ("External" | "Object") => {
            let key = if source == "External" { "external" } else { "object" };
            let target = spec.pointer(&format!("/{key}/target"));
            match target.and_then(|t| t.get("averageValue")).filter(|v| !v.is_null()) {
                Some(avg) => {
                    let cur = current(key)
                        .and_then(|c| c.pointer("/current/averageValue"))
                        .filter(|v| !v.is_null())
                        .map(|v| q(Some(v)))
                        .unwrap_or_else(unknown);
                    format!("{cur}/{} (avg)", q(Some(avg)))
                }
                None => {
                    let cur = current(key).map(|c| q(c.pointer("/current/value"))).unwrap_or_else(unknown);
                    format!("{cur}/{}", q(target.and_then(|t| t.get("value"))))
                }
            }
        }
        "Pods" => {
            let cur = current("pods").map(|c| q(c.pointer("/current/averageValue"))).unwrap_or_else(unknown);
            format!("{cur}/{}", q(spec.pointer("/pods/target/averageValue")))
        }
        source @ ("Resource" | "ContainerResource") => {
            let key = if source == "Resource" { "resource" } else { "containerResource" };
            let resource = s(spec, &format!("/{key}/name"));
            let target = spec.pointer(&format!("/{key}/target"));
            match target.and_then(|t| t.get("averageValue")).filter(|v| !v.is_null()) {
                Some(avg) => {
                    let cur = current(key).map(|c| q(c.pointer("/current/averageValue"))).unwrap_or_else(unknown);
                    format!("{resource}: {cur}/{}", q(Some(avg)))
                }
                None => {
                    let cur = current(key)
                        .and_then(|c| c.pointer("/current/averageUtilization"))
                        .and_then(Value::as_i64)
                        .map(|n| format!("{n}%"))
                        .unwrap_or_else(unknown);
                    let goal = target
                        .and_then(|t| t.get("averageUtilization"))
                        .and_then(Value::as_i64)
                        .map(|n| format!("{n}%"))
                        .unwrap_or_else(|| "<auto>".into());
                    format!("{resource}: {cur}/{goal}")
                }
            }
        }
        _ => "<unknown type>".into(),
    }
}

/// `formatHPAMetrics`: each metric against the status at its index; past two, `+ N more...`.
fn hpa_metrics(o: &Value) -> String {
    let specs = arr(o, "/spec/metrics");
    if specs.is_empty() {
        return "<none>".into();
    }
    let statuses = arr(o, "/status/currentMetrics");
    let shown: Vec<String> = specs.iter().take(2).enumerate().map(|(i, m)| hpa_metric(m, statuses.get(i))).collect();
    let mut out = shown.join(", ");
    if specs.len() > 2 {
        out.push_str(&format!(" + {} more...", specs.len() - 2));
    }
    out
}

pub(super) static HPA: Printer = Printer {
    columns: &[
        NAME,
        col("Reference", "string", 0, "The target resource scaled: kind/name."),
        col("Targets", "string", 0, "Each metric's current value against its target."),
        col("MinPods", "string", 0, "The fewest replicas the autoscaler scales down to."),
        col("MaxPods", "string", 0, "The most replicas the autoscaler scales up to."),
        col("Replicas", "string", 0, "The replicas last seen by the autoscaler."),
        AGE,
    ],
    cells: |o, now| {
        let min = match o.pointer("/spec/minReplicas").and_then(Value::as_i64) {
            Some(n) => n.to_string(),
            None => "<unset>".into(),
        };
        vec![
            name(o),
            json!(format!("{}/{}", s(o, "/spec/scaleTargetRef/kind"), s(o, "/spec/scaleTargetRef/name"))),
            json!(hpa_metrics(o)),
            json!(min),
            json!(o.pointer("/spec/maxReplicas").and_then(Value::as_i64).unwrap_or(0)),
            json!(o.pointer("/status/currentReplicas").and_then(Value::as_i64).unwrap_or(0)),
            age(o, now),
        ]
        .into()
    },
};

pub(super) static RESOURCE_QUOTA: Printer = Printer {
    columns: &[
        NAME,
        col("Request", "string", 0, "Used and hard amounts of every resource but limits: used/hard."),
        col("Limit", "string", 0, "Used and hard amounts of the limits.* resources: used/hard."),
        AGE,
    ],
    cells: |o, now| {
        // Keys of status.hard, sorted (a JSON map iterates sorted); `limits.*` to Limit.
        let mut request = Vec::new();
        let mut limit = Vec::new();
        if let Some(hard) = o.pointer("/status/hard").and_then(Value::as_object) {
            for (r, h) in hard {
                let used = quantity(o.pointer("/status/used").and_then(|u| u.get(r)));
                let entry = format!("{r}: {used}/{}", quantity(Some(h)));
                let parts: Vec<&str> = r.split('.').collect();
                if parts.len() > 1 && parts[0] == "limits" { limit.push(entry) } else { request.push(entry) }
            }
        }
        vec![name(o), json!(request.join(", ")), json!(limit.join(", ")), age(o, now)].into()
    },
};

/// The controller owner as `kind.group/name` (lowercased kind and group), `<none>` without one.
/// (kube's printer fails on an apiVersion with two slashes; validation of owner references
/// refuses those, so they are never stored.)
fn controller_of(o: &Value) -> String {
    let Some(owner) =
        arr(o, "/metadata/ownerReferences").iter().find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
    else {
        return "<none>".into();
    };
    let group = s(owner, "/apiVersion").split_once('/').map(|(g, _)| g).unwrap_or("");
    let kind = s(owner, "/kind");
    let owner_name = s(owner, "/name");
    if group.is_empty() && kind.is_empty() {
        return owner_name.to_string();
    }
    let group_kind = if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") };
    format!("{}/{owner_name}", group_kind.to_lowercase())
}

pub(super) static CONTROLLER_REVISION: Printer = Printer {
    columns: &[
        NAME,
        col("Controller", "string", 0, "Controller of the object"),
        col("Revision", "string", 0, "The revision of the state this object holds."),
        AGE,
    ],
    cells: |o, now| {
        vec![
            name(o),
            json!(controller_of(o)),
            json!(o.get("revision").and_then(Value::as_i64).unwrap_or(0)),
            age(o, now),
        ]
        .into()
    },
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpa_targets_follow_format_hpa_metrics() {
        let hpa = json!({"spec": {"metrics": [
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}},
            {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "1k"}}},
            {"type": "External", "external": {"metric": {"name": "q"}, "target": {"type": "Value", "value": "10"}}}
        ]}, "status": {"currentMetrics": [
            {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 45, "averageValue": "100m"}}}
        ]}});
        assert_eq!(hpa_metrics(&hpa), "cpu: 45%/80%, <unknown>/1k + 1 more...");
        assert_eq!(hpa_metrics(&json!({"spec": {}})), "<none>");
        let avg = json!({"spec": {"metrics": [{"type": "Object", "object": {"target": {"averageValue": "5"}}}]}});
        assert_eq!(hpa_metrics(&avg), "<unknown>/5 (avg)");
    }

    #[test]
    fn controller_revisions_name_their_controller() {
        let o = json!({"metadata": {"ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "controller": true}]}});
        assert_eq!(controller_of(&o), "statefulset.apps/web");
        assert_eq!(controller_of(&json!({})), "<none>");
        let core = json!({"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "p", "controller": true}]}});
        assert_eq!(controller_of(&core), "pod/p");
    }
}
