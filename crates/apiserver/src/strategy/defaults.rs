//! API defaulting as kube-apiserver 1.33 applies it (`SetDefaults_*` and declarative
//! defaults), for the kinds whose defaults clients observe.

use serde_json::{Value, json};

use super::gk;
use crate::object;
use crate::registry::ResourceType;

/// Sets `v[key]` to `default` if it is missing, null or the empty string.
fn or(v: &mut Value, key: &str, default: Value) {
    let Some(m) = v.as_object_mut() else { return };
    let missing = m.get(key).is_none_or(|x| x.is_null() || x.as_str() == Some(""));
    if missing {
        m.insert(key.to_string(), default);
    }
}

fn each<'a>(v: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    v.get_mut(key).and_then(Value::as_array_mut).into_iter().flat_map(|a| a.iter_mut())
}

/// Applies the defaults of `rt`'s kind.
pub(crate) fn apply(rt: &ResourceType, obj: &mut Value) {
    match gk(rt) {
        ("", "Secret") => {
            // stringData is write-only: merged into data (base64), as kube's Secret strategy.
            if let Some(Value::Object(plain)) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
                use base64::Engine;
                if !obj.get("data").is_some_and(Value::is_object) {
                    obj["data"] = json!({});
                }
                for (k, v) in plain {
                    let text = v.as_str().unwrap_or("").to_string();
                    obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
                }
            }
            or(obj, "type", json!("Opaque"));
        }
        ("", "Pod") => {
            pod_only(obj);
            if let Some(spec) = obj.get_mut("spec") {
                pod_spec(spec);
            }
        }
        ("", "PodTemplate") => template(obj.get_mut("template")),
        ("", "ReplicationController") => {
            let tl = object::at(obj, &["spec", "template", "metadata", "labels"]).cloned();
            if let Some(spec) = obj.get_mut("spec") {
                or(spec, "replicas", json!(1));
                if let Some(tl) = &tl
                    && spec.get("selector").is_none_or(|s| s.as_object().is_none_or(|m| m.is_empty()))
                {
                    spec["selector"] = tl.clone();
                }
                template(spec.get_mut("template"));
            }
            if let Some(tl) = tl
                && object::at(obj, &["metadata", "labels"]).is_none_or(|l| l.as_object().is_none_or(|m| m.is_empty()))
            {
                object::meta_mut(obj).insert("labels".into(), tl);
            }
        }
        ("", "Service") => service(obj),
        ("", "Endpoints") => {
            for s in each(obj, "subsets") {
                for p in each(s, "ports") {
                    or(p, "protocol", json!("TCP"));
                }
            }
        }
        ("", "PersistentVolumeClaim") => {
            if let Some(spec) = obj.get_mut("spec") {
                or(spec, "volumeMode", json!("Filesystem"));
            }
        }
        ("", "PersistentVolume") => {
            if let Some(spec) = obj.get_mut("spec") {
                or(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
                or(spec, "volumeMode", json!("Filesystem"));
            }
        }
        ("", "Namespace") => {}
        ("discovery.k8s.io", "EndpointSlice") => {
            for p in each(obj, "ports") {
                or(p, "name", json!(""));
                or(p, "protocol", json!("TCP"));
            }
        }
        ("apps", "Deployment") => {
            if let Some(spec) = obj.get_mut("spec") {
                or(spec, "replicas", json!(1));
                let strategy = spec.as_object_mut().map(|m| m.entry("strategy").or_insert_with(|| json!({})));
                if let Some(s) = strategy {
                    or(s, "type", json!("RollingUpdate"));
                    if s["type"] == "RollingUpdate" {
                        or(s, "rollingUpdate", json!({}));
                        let ru = &mut s["rollingUpdate"];
                        or(ru, "maxUnavailable", json!("25%"));
                        or(ru, "maxSurge", json!("25%"));
                    }
                }
                or(spec, "revisionHistoryLimit", json!(10));
                or(spec, "progressDeadlineSeconds", json!(600));
                template(spec.get_mut("template"));
            }
        }
        ("apps", "ReplicaSet") => {
            if let Some(spec) = obj.get_mut("spec") {
                or(spec, "replicas", json!(1));
                template(spec.get_mut("template"));
            }
        }
        ("apps", "StatefulSet") => {
            if let Some(spec) = obj.get_mut("spec") {
                or(spec, "podManagementPolicy", json!("OrderedReady"));
                let us = spec.as_object_mut().map(|m| m.entry("updateStrategy").or_insert_with(|| json!({})));
                if let Some(us) = us {
                    let was_empty = us.get("type").is_none_or(|t| t.is_null() || t == "");
                    or(us, "type", json!("RollingUpdate"));
                    if was_empty {
                        or(us, "rollingUpdate", json!({}));
                    }
                    if us["type"] == "RollingUpdate"
                        && let Some(ru) = us.get_mut("rollingUpdate").filter(|r| r.is_object())
                    {
                        or(ru, "partition", json!(0));
                    }
                }
                let retention = spec
                    .as_object_mut()
                    .map(|m| m.entry("persistentVolumeClaimRetentionPolicy").or_insert_with(|| json!({})));
                if let Some(r) = retention {
                    or(r, "whenDeleted", json!("Retain"));
                    or(r, "whenScaled", json!("Retain"));
                }
                or(spec, "replicas", json!(1));
                or(spec, "revisionHistoryLimit", json!(10));
                for t in each(spec, "volumeClaimTemplates") {
                    if let Some(s) = t.get_mut("spec") {
                        or(s, "volumeMode", json!("Filesystem"));
                    }
                    t["status"] = json!({"phase": "Pending"});
                }
                template(spec.get_mut("template"));
            }
        }
        ("apps", "DaemonSet") => {
            if let Some(spec) = obj.get_mut("spec") {
                let us = spec.as_object_mut().map(|m| m.entry("updateStrategy").or_insert_with(|| json!({})));
                if let Some(us) = us {
                    or(us, "type", json!("RollingUpdate"));
                    if us["type"] == "RollingUpdate" {
                        or(us, "rollingUpdate", json!({}));
                        or(&mut us["rollingUpdate"], "maxUnavailable", json!(1));
                        or(&mut us["rollingUpdate"], "maxSurge", json!(0));
                    }
                }
                or(spec, "revisionHistoryLimit", json!(10));
                template(spec.get_mut("template"));
            }
        }
        ("batch", "Job") => {
            let tl = object::at(obj, &["spec", "template", "metadata", "labels"]).cloned();
            if let Some(spec) = obj.get_mut("spec") {
                job_spec(spec);
            }
            if let Some(tl) = tl
                && object::at(obj, &["metadata", "labels"]).is_none_or(|l| l.as_object().is_none_or(|m| m.is_empty()))
            {
                object::meta_mut(obj).insert("labels".into(), tl);
            }
        }
        ("batch", "CronJob") => {
            if let Some(spec) = obj.get_mut("spec") {
                or(spec, "concurrencyPolicy", json!("Allow"));
                or(spec, "suspend", json!(false));
                or(spec, "successfulJobsHistoryLimit", json!(3));
                or(spec, "failedJobsHistoryLimit", json!(1));
                if let Some(jt) = spec.get_mut("jobTemplate").and_then(|j| j.get_mut("spec")) {
                    template(jt.get_mut("template"));
                }
            }
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            if let Some(spec) = obj.get_mut("spec") {
                let has_egress = spec.get("egress").and_then(Value::as_array).is_some_and(|e| !e.is_empty());
                if spec.get("policyTypes").and_then(Value::as_array).is_none_or(|p| p.is_empty()) {
                    let mut types = vec![json!("Ingress")];
                    if has_egress {
                        types.push(json!("Egress"));
                    }
                    spec["policyTypes"] = Value::Array(types);
                }
                for dir in ["ingress", "egress"] {
                    for rule in each(spec, dir) {
                        for p in each(rule, "ports") {
                            or(p, "protocol", json!("TCP"));
                        }
                    }
                }
            }
        }
        ("networking.k8s.io", "IngressClass") => {
            if let Some(p) = obj.get_mut("spec").and_then(|s| s.get_mut("parameters")).filter(|p| p.is_object()) {
                or(p, "scope", json!("Cluster"));
            }
        }
        ("autoscaling", "HorizontalPodAutoscaler") if rt.version == "v2" => {
            if let Some(spec) = obj.get_mut("spec") {
                or(spec, "minReplicas", json!(1));
                if spec.get("metrics").and_then(Value::as_array).is_none_or(|m| m.is_empty()) {
                    spec["metrics"] = json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]);
                }
            }
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            if let Some(spec) = obj.get_mut("spec") {
                or(spec, "minReplicas", json!(1));
            }
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            if let Some(r) = obj.get_mut("roleRef") {
                or(r, "apiGroup", json!("rbac.authorization.k8s.io"));
            }
            for s in each(obj, "subjects") {
                if matches!(s.get("kind").and_then(Value::as_str), Some("User" | "Group")) {
                    or(s, "apiGroup", json!("rbac.authorization.k8s.io"));
                }
            }
        }
        ("scheduling.k8s.io", "PriorityClass") => or(obj, "preemptionPolicy", json!("PreemptLowerPriority")),
        ("storage.k8s.io", "StorageClass") => {
            or(obj, "reclaimPolicy", json!("Delete"));
            or(obj, "volumeBindingMode", json!("Immediate"));
        }
        ("storage.k8s.io", "CSIDriver") => {
            if let Some(spec) = obj.get_mut("spec") {
                or(spec, "attachRequired", json!(true));
                or(spec, "podInfoOnMount", json!(false));
                or(spec, "storageCapacity", json!(false));
                or(spec, "fsGroupPolicy", json!("ReadWriteOnceWithFSType"));
                or(spec, "volumeLifecycleModes", json!(["Persistent"]));
                or(spec, "requiresRepublish", json!(false));
                or(spec, "seLinuxMount", json!(false));
            }
        }
        _ => {}
    }
}

fn job_spec(spec: &mut Value) {
    let completions = spec.get("completions").filter(|v| !v.is_null()).is_some();
    let parallelism = spec.get("parallelism").filter(|v| !v.is_null()).is_some();
    if !completions && !parallelism {
        spec["completions"] = json!(1);
        spec["parallelism"] = json!(1);
    } else {
        or(spec, "parallelism", json!(1));
    }
    let per_index = spec.get("backoffLimitPerIndex").is_some_and(|v| !v.is_null());
    or(spec, "backoffLimit", json!(if per_index { 2147483647 } else { 6 }));
    or(spec, "completionMode", json!("NonIndexed"));
    or(spec, "suspend", json!(false));
    let has_pfp = spec.get("podFailurePolicy").is_some_and(|v| !v.is_null());
    or(spec, "podReplacementPolicy", json!(if has_pfp { "Failed" } else { "TerminatingOrFailed" }));
    or(spec, "manualSelector", json!(false));
    template(spec.get_mut("template"));
}

/// A pod template: PodSpec defaults only.
fn template(t: Option<&mut Value>) {
    if let Some(spec) = t.and_then(|t| t.get_mut("spec")) {
        pod_spec(spec);
    }
}

/// `SetDefaults_Pod` (pods, not templates).
fn pod_only(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec") else {
        return;
    };
    for list in ["containers", "initContainers"] {
        for c in each(spec, list) {
            let Some(limits) = c.get("resources").and_then(|r| r.get("limits")).and_then(Value::as_object).cloned()
            else {
                continue;
            };
            let res = &mut c["resources"];
            if !res.get("requests").is_some_and(Value::is_object) {
                res["requests"] = json!({});
            }
            for (k, v) in limits {
                res["requests"].as_object_mut().map(|r| r.entry(k).or_insert(v));
            }
        }
    }
    or(spec, "enableServiceLinks", json!(true));
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        for list in ["containers", "initContainers"] {
            for c in each(spec, list) {
                for p in each(c, "ports") {
                    if p.get("hostPort").and_then(Value::as_i64).unwrap_or(0) == 0 {
                        p["hostPort"] = p.get("containerPort").cloned().unwrap_or(json!(0));
                    }
                }
            }
        }
    }
}

/// `SetDefaults_PodSpec` and the nested container, volume and probe defaults.
fn pod_spec(spec: &mut Value) {
    or(spec, "dnsPolicy", json!("ClusterFirst"));
    or(spec, "restartPolicy", json!("Always"));
    if spec.get("securityContext").is_none_or(Value::is_null) {
        spec["securityContext"] = json!({});
    }
    or(spec, "terminationGracePeriodSeconds", json!(30));
    or(spec, "schedulerName", json!("default-scheduler"));
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for c in each(spec, list) {
            container(c);
        }
    }
    for v in each(spec, "volumes") {
        volume(v);
    }
}

/// The image pull policy kube defaults: `Always` for `:latest` or no tag, else `IfNotPresent`.
fn pull_policy(image: &str) -> &'static str {
    let without_digest = image.split('@').next().unwrap_or("");
    if image.contains('@') && !without_digest.rsplit('/').next().unwrap_or("").contains(':') {
        return "IfNotPresent";
    }
    let last = without_digest.rsplit('/').next().unwrap_or("");
    match last.split_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

fn container(c: &mut Value) {
    let image = c.get("image").and_then(Value::as_str).unwrap_or("").to_string();
    or(c, "imagePullPolicy", json!(pull_policy(&image)));
    or(c, "terminationMessagePath", json!("/dev/termination-log"));
    or(c, "terminationMessagePolicy", json!("File"));
    for p in each(c, "ports") {
        or(p, "protocol", json!("TCP"));
    }
    for e in each(c, "env") {
        if let Some(fr) = e.get_mut("valueFrom").and_then(|v| v.get_mut("fieldRef")) {
            or(fr, "apiVersion", json!("v1"));
        }
    }
    if c.get("resources").is_none_or(Value::is_null) {
        c["resources"] = json!({});
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).filter(|p| p.is_object()) {
            for (k, d) in
                [("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1), ("failureThreshold", 3)]
            {
                if p.get(k).and_then(Value::as_i64).unwrap_or(0) == 0 {
                    p[k] = json!(d);
                }
            }
            http_get(p.get_mut("httpGet"));
            if let Some(g) = p.get_mut("grpc").filter(|g| g.is_object())
                && g.get("service").is_none()
            {
                g["service"] = json!("");
            }
        }
    }
    if let Some(l) = c.get_mut("lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = l.get_mut(hook) {
                http_get(h.get_mut("httpGet"));
            }
        }
    }
}

fn http_get(h: Option<&mut Value>) {
    if let Some(h) = h.filter(|h| h.is_object()) {
        or(h, "path", json!("/"));
        or(h, "scheme", json!("HTTP"));
    }
}

const VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

fn volume(v: &mut Value) {
    if !VOLUME_SOURCES.iter().any(|s| v.get(*s).is_some_and(|x| !x.is_null())) {
        v["emptyDir"] = json!({});
    }
    for src in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(s) = v.get_mut(src).filter(|s| s.is_object()) {
            or(s, "defaultMode", json!(420));
        }
    }
    if let Some(d) = v.get_mut("downwardAPI") {
        for i in each(d, "items") {
            if let Some(fr) = i.get_mut("fieldRef") {
                or(fr, "apiVersion", json!("v1"));
            }
        }
    }
    if let Some(p) = v.get_mut("projected") {
        for s in each(p, "sources") {
            if let Some(d) = s.get_mut("downwardAPI") {
                for i in each(d, "items") {
                    if let Some(fr) = i.get_mut("fieldRef") {
                        or(fr, "apiVersion", json!("v1"));
                    }
                }
            }
            if let Some(t) = s.get_mut("serviceAccountToken").filter(|t| t.is_object()) {
                or(t, "expirationSeconds", json!(3600));
            }
        }
    }
    if let Some(h) = v.get_mut("hostPath").filter(|h| h.is_object())
        && h.get("type").is_none()
    {
        h["type"] = json!("");
    }
    if let Some(s) =
        v.get_mut("ephemeral").and_then(|e| e.get_mut("volumeClaimTemplate")).and_then(|t| t.get_mut("spec"))
    {
        or(s, "volumeMode", json!("Filesystem"));
    }
}

fn service(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec") else {
        return;
    };
    or(spec, "sessionAffinity", json!("None"));
    if spec["sessionAffinity"] == "None" {
        if let Some(m) = spec.as_object_mut() {
            m.remove("sessionAffinityConfig");
        }
    } else if spec["sessionAffinity"] == "ClientIP"
        && object::at(spec, &["sessionAffinityConfig", "clientIP", "timeoutSeconds"]).is_none()
    {
        spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 10800}});
    }
    or(spec, "type", json!("ClusterIP"));
    let ty = spec["type"].as_str().unwrap_or("").to_string();
    for p in each(spec, "ports") {
        or(p, "protocol", json!("TCP"));
        let tp = p.get("targetPort");
        if tp.is_none_or(|t| t.is_null() || t == 0 || t == "") {
            p["targetPort"] = p.get("port").cloned().unwrap_or(json!(0));
        }
    }
    let external_ips = spec.get("externalIPs").and_then(Value::as_array).is_some_and(|e| !e.is_empty());
    if ty == "LoadBalancer" || ty == "NodePort" || (ty == "ClusterIP" && external_ips) {
        or(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if matches!(ty.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer") {
        or(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        or(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if ty != "ExternalName" {
        if let Some(ip) = spec.get("clusterIP").and_then(Value::as_str).filter(|s| !s.is_empty()).map(String::from)
            && spec.get("clusterIPs").and_then(Value::as_array).is_none_or(|a| a.is_empty())
        {
            spec["clusterIPs"] = json!([ip]);
        }
        let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
        let selectorless = spec.get("selector").and_then(Value::as_object).is_none_or(|m| m.is_empty());
        if spec.get("ipFamilyPolicy").is_none_or(Value::is_null) {
            spec["ipFamilyPolicy"] = json!(if headless && selectorless { "RequireDualStack" } else { "SingleStack" });
        }
        if spec.get("ipFamilies").and_then(Value::as_array).is_none_or(|a| a.is_empty()) {
            spec["ipFamilies"] = if headless && selectorless && spec["ipFamilyPolicy"] != "SingleStack" {
                json!(["IPv4", "IPv6"])
            } else {
                json!(["IPv4"])
            };
        }
    }
}

/// The pod's QoS class from its containers' cpu and memory requests and limits.
pub(crate) fn qos_class(pod: &Value) -> &'static str {
    let mut requests: std::collections::BTreeMap<String, f64> = Default::default();
    let mut limits: std::collections::BTreeMap<String, f64> = Default::default();
    let mut all_limited = true;
    let mut any = false;
    let containers = ["containers", "initContainers"]
        .iter()
        .flat_map(|l| object::at(pod, &["spec", l]).and_then(Value::as_array).cloned().unwrap_or_default())
        .collect::<Vec<_>>();
    for c in &containers {
        let mut limited = std::collections::BTreeSet::new();
        for (kind, acc) in [("requests", &mut requests), ("limits", &mut limits)] {
            if let Some(m) = c.get("resources").and_then(|r| r.get(kind)).and_then(Value::as_object) {
                for r in ["cpu", "memory"] {
                    if let Some(q) =
                        m.get(r).and_then(Value::as_str).and_then(crate::quantity::parse).filter(|q| *q > 0.0)
                    {
                        any = true;
                        *acc.entry(r.to_string()).or_default() += q;
                        if kind == "limits" {
                            limited.insert(r);
                        }
                    }
                }
            }
        }
        if limited.len() < 2 {
            all_limited = false;
        }
    }
    if !any {
        return "BestEffort";
    }
    if all_limited
        && requests.len() == limits.len()
        && requests.iter().all(|(k, v)| limits.get(k).is_some_and(|l| (l - v).abs() < 1e-9))
    {
        return "Guaranteed";
    }
    "Burstable"
}

/// Admission plugins that visibly default pods: ServiceAccount (the account name),
/// DefaultTolerationSeconds and Priority.
pub(crate) fn pod_admission(pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec") else {
        return;
    };
    or(spec, "serviceAccountName", json!("default"));
    spec["serviceAccount"] = spec["serviceAccountName"].clone();
    let tolerations = spec.as_object_mut().map(|m| m.entry("tolerations").or_insert_with(|| json!([])));
    if let Some(Value::Array(t)) = tolerations {
        for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
            let present = t.iter().any(|x| {
                (x.get("key").and_then(Value::as_str) == Some(key)
                    || x.get("key").is_none() && x.get("operator").and_then(Value::as_str) == Some("Exists"))
                    && x.get("effect").and_then(Value::as_str).is_none_or(|e| e == "NoExecute" || e.is_empty())
            });
            if !present {
                t.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
            }
        }
    }
    if spec.get("priority").is_none_or(Value::is_null) {
        let priority = match spec.get("priorityClassName").and_then(Value::as_str) {
            Some("system-node-critical") => 2_000_001_000i64,
            Some("system-cluster-critical") => 2_000_000_000,
            _ => 0,
        };
        spec["priority"] = json!(priority);
    }
    or(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_pull_policy_follows_the_tag() {
        assert_eq!(pull_policy("nginx"), "Always");
        assert_eq!(pull_policy("nginx:latest"), "Always");
        assert_eq!(pull_policy("nginx:1.27"), "IfNotPresent");
        assert_eq!(pull_policy("registry:5000/app"), "Always");
        assert_eq!(pull_policy("registry:5000/app:v1"), "IfNotPresent");
        assert_eq!(pull_policy("nginx@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn qos_classes() {
        let best = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(qos_class(&best), "BestEffort");
        let guaranteed = json!({"spec": {"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1000m", "memory": "1Gi"}}}]}});
        assert_eq!(qos_class(&guaranteed), "Guaranteed");
        let burst = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "100m"}}}]}});
        assert_eq!(qos_class(&burst), "Burstable");
    }
}
