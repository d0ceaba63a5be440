//! The printers of the built-in kinds: kube-apiserver's columns and cell rules, over JSON.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{Column, Printer, Row};
use crate::registry::ResourceType;

mod admin;
mod control;

const fn col(name: &'static str, ty: &'static str, priority: u8, description: &'static str) -> Column {
    Column { name, ty, format: "", priority, description }
}

const NAME: Column = Column {
    name: "Name",
    ty: "string",
    format: "name",
    priority: 0,
    description: "Name must be unique within a namespace.",
};
const AGE: Column = col("Age", "string", 0, "Time since the object was created.");
const CONTAINERS: Column = col("Containers", "string", 1, "Names of each container in the template.");
const IMAGES: Column = col("Images", "string", 1, "Images referenced by each container in the template.");
const SELECTOR: Column = col("Selector", "string", 1, "Label query over the pods.");

/// The default convertor: name and creation time (Role, ClusterRole, CRDs, kinds without a printer).
pub(crate) static DEFAULT: Printer = Printer {
    columns: &[NAME, col("Created At", "date", 0, "Time the object was created (RFC 3339, UTC).")],
    cells: |o, _| vec![name(o), json!(created_rfc3339(o))].into(),
};

/// The printer for a resource (or its `scale` subresource).
pub(crate) fn for_kind(rt: &ResourceType, subresource: &str) -> &'static Printer {
    if subresource == "scale" {
        return &SCALE;
    }
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Pod") => &POD,
        ("", "PodTemplate") => &POD_TEMPLATE,
        ("", "ReplicationController") => &REPLICATION_CONTROLLER,
        ("", "Service") => &SERVICE,
        ("", "Endpoints") => &ENDPOINTS,
        ("", "Node") => &NODE,
        ("", "Namespace") => &NAMESPACE,
        ("", "ConfigMap") => &CONFIG_MAP,
        ("", "Secret") => &SECRET,
        ("", "ServiceAccount") => &SERVICE_ACCOUNT,
        ("", "Event") | ("events.k8s.io", "Event") => &EVENT,
        ("", "PersistentVolumeClaim") => &PVC,
        ("", "PersistentVolume") => &PV,
        ("apps", "Deployment") => &DEPLOYMENT,
        ("apps", "ReplicaSet") => &REPLICA_SET,
        ("apps", "StatefulSet") => &STATEFUL_SET,
        ("apps", "DaemonSet") => &DAEMON_SET,
        ("batch", "Job") => &JOB,
        ("batch", "CronJob") => &CRON_JOB,
        ("networking.k8s.io", "Ingress") => &INGRESS,
        ("networking.k8s.io", "IngressClass") => &INGRESS_CLASS,
        ("networking.k8s.io", "NetworkPolicy") => &NETWORK_POLICY,
        ("networking.k8s.io", "ServiceCIDR") => &SERVICE_CIDR,
        ("discovery.k8s.io", "EndpointSlice") => &ENDPOINT_SLICE,
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => &BINDING,
        ("coordination.k8s.io", "Lease") => &LEASE,
        ("storage.k8s.io", "StorageClass") => &STORAGE_CLASS,
        ("scheduling.k8s.io", "PriorityClass") => &PRIORITY_CLASS,
        ("node.k8s.io", "RuntimeClass") => &RUNTIME_CLASS,
        ("policy", "PodDisruptionBudget") => &PDB,
        ("certificates.k8s.io", "CertificateSigningRequest") => &admin::CSR,
        ("", "ComponentStatus") => &admin::COMPONENT_STATUS,
        ("apiregistration.k8s.io", "APIService") => &admin::API_SERVICE,
        ("autoscaling", "HorizontalPodAutoscaler") => &control::HPA,
        ("", "ResourceQuota") => &control::RESOURCE_QUOTA,
        ("apps", "ControllerRevision") => &control::CONTROLLER_REVISION,
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration") => {
            &WEBHOOK_CONFIGURATION
        }
        _ => &DEFAULT,
    }
}

// ---- helpers ---------------------------------------------------------------------------------

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn i(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn arr<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn or<'a>(s: &'a str, default: &'a str) -> &'a str {
    if s.is_empty() { default } else { s }
}

fn name(o: &Value) -> Value {
    json!(s(o, "/metadata/name"))
}

fn timestamp(v: Option<&Value>) -> Option<Timestamp> {
    v.and_then(Value::as_str).and_then(|t| t.parse().ok())
}

/// `translateTimestampSince`: `<unknown>` when unset.
fn since(v: Option<&Value>, now: Timestamp) -> String {
    match timestamp(v) {
        Some(t) => super::human_duration(now.duration_since(t)),
        None => "<unknown>".into(),
    }
}

fn age(o: &Value, now: Timestamp) -> Value {
    json!(since(o.pointer("/metadata/creationTimestamp"), now))
}

fn created_rfc3339(o: &Value) -> String {
    match timestamp(o.pointer("/metadata/creationTimestamp")) {
        Some(t) => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => "0001-01-01T00:00:00Z".into(),
    }
}

/// `labels.FormatLabels`: sorted `k=v` joined by commas, `<none>` when empty.
fn format_labels(m: Option<&Value>) -> String {
    let Some(m) = m.and_then(Value::as_object).filter(|m| !m.is_empty()) else {
        return "<none>".into();
    };
    let mut pairs: Vec<String> = m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect();
    pairs.sort();
    pairs.join(",")
}

/// A label selector's string form (requirements sorted by key); `None` if malformed.
fn selector_string(sel: Option<&Value>) -> Option<String> {
    let Some(sel) = sel.filter(|v| !v.is_null()) else { return Some(String::new()) };
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    for e in sel.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
        let key = s(e, "/key").to_string();
        let mut values: Vec<&str> = arr(e, "/values").iter().filter_map(Value::as_str).collect();
        values.sort_unstable();
        let text = match s(e, "/operator") {
            "In" if !values.is_empty() => format!("{key} in ({})", values.join(",")),
            "NotIn" if !values.is_empty() => format!("{key} notin ({})", values.join(",")),
            "Exists" if values.is_empty() => key.clone(),
            "DoesNotExist" if values.is_empty() => format!("!{key}"),
            _ => return None,
        };
        reqs.push((key, text));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    Some(reqs.into_iter().map(|r| r.1).collect::<Vec<_>>().join(","))
}

/// `metav1.FormatLabelSelector`: `<none>` when empty, `<error>` when malformed.
fn format_label_selector(sel: Option<&Value>) -> String {
    match selector_string(sel) {
        Some(s) if s.is_empty() => "<none>".into(),
        Some(s) => s,
        None => "<error>".into(),
    }
}

/// Container names and images of a pod spec, comma-joined.
fn containers(spec: &Value) -> (Value, Value) {
    let cs = arr(spec, "/containers");
    let names: Vec<&str> = cs.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, "/image")).collect();
    (json!(names.join(",")), json!(images.join(",")))
}

fn bool_ptr(v: Option<&Value>) -> &'static str {
    match v.and_then(Value::as_bool) {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    }
}

fn quantity(v: Option<&Value>) -> String {
    match v.and_then(Value::as_str) {
        Some(q) => crate::quantity::canonical(q).unwrap_or_else(|| q.to_string()),
        None => "0".into(),
    }
}

/// `GetAccessModesAsString`: RWO, ROX, RWX, RWOP in that order.
fn access_modes(v: &[Value]) -> String {
    let have: BTreeSet<&str> = v.iter().filter_map(Value::as_str).collect();
    [("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"), ("ReadWriteOncePod", "RWOP")]
        .iter()
        .filter(|(m, _)| have.contains(m))
        .map(|(_, short)| *short)
        .collect::<Vec<_>>()
        .join(",")
}

/// Load-balancer ingress addresses: sorted, deduplicated IPs (or hostnames).
fn load_balancer(v: &Value) -> String {
    let set: BTreeSet<&str> = arr(v, "/status/loadBalancer/ingress")
        .iter()
        .map(|i| if !s(i, "/ip").is_empty() { s(i, "/ip") } else { s(i, "/hostname") })
        .filter(|a| !a.is_empty())
        .collect();
    set.into_iter().collect::<Vec<_>>().join(",")
}

fn first_condition<'a>(conds: &'a [Value], ty: &str) -> Option<&'a Value> {
    conds.iter().find(|c| s(c, "/type") == ty)
}

fn condition_true(conds: &[Value], ty: &str) -> bool {
    first_condition(conds, ty).is_some_and(|c| s(c, "/status") == "True")
}

// ---- core ------------------------------------------------------------------------------------

static POD: Printer = Printer {
    columns: &[
        NAME,
        col("Ready", "string", 0, "The aggregate readiness state of this pod for accepting traffic."),
        col("Status", "string", 0, "The aggregate status of the containers in this pod."),
        col("Restarts", "string", 0, "The number of times the containers in this pod have been restarted."),
        AGE,
        col("IP", "string", 1, "The pod's IP address."),
        col("Node", "string", 1, "The node the pod is bound to."),
        col("Nominated Node", "string", 1, "The node the scheduler nominated after preemption."),
        col("Readiness Gates", "string", 1, "The readiness gates that are true, of all of them."),
    ],
    cells: pod,
};

fn later(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    }
}

fn pod(p: &Value, now: Timestamp) -> Row {
    let spec = &p["spec"];
    let status = &p["status"];
    let conditions = arr(status, "/conditions");
    let init_specs = arr(spec, "/initContainers");
    let restartable =
        |name: &str| init_specs.iter().any(|c| s(c, "/name") == name && s(c, "/restartPolicy") == "Always");
    let mut restarts = 0i64;
    let mut restartable_restarts = 0i64;
    let total =
        arr(spec, "/containers").len() + init_specs.iter().filter(|c| s(c, "/restartPolicy") == "Always").count();
    let mut ready = 0usize;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_restartable_restart: Option<Timestamp> = None;
    let mut reason = s(status, "/phase").to_string();
    if !s(status, "/reason").is_empty() {
        reason = s(status, "/reason").to_string();
    }
    for c in conditions {
        if s(c, "/type") == "PodScheduled" && s(c, "/reason") == "SchedulingGated" {
            reason = "SchedulingGated".into();
        }
    }
    let mut initializing = false;
    for (idx, cs) in arr(status, "/initContainerStatuses").iter().enumerate() {
        let sidecar = restartable(s(cs, "/name"));
        let finished = timestamp(cs.pointer("/lastState/terminated/finishedAt"));
        restarts += i(cs, "/restartCount");
        last_restart = later(last_restart, finished);
        if sidecar {
            restartable_restarts += i(cs, "/restartCount");
            last_restartable_restart = later(last_restartable_restart, finished);
        }
        let terminated = cs.pointer("/state/terminated").filter(|t| t.is_object());
        if terminated.is_some_and(|t| i(t, "/exitCode") == 0) {
            continue;
        }
        if sidecar && cs.get("started").and_then(Value::as_bool) == Some(true) {
            if cs.get("ready").and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
            continue;
        }
        let waiting = s(cs, "/state/waiting/reason");
        reason = if let Some(t) = terminated {
            match s(t, "/reason") {
                "" if i(t, "/signal") != 0 => format!("Init:Signal:{}", i(t, "/signal")),
                "" => format!("Init:ExitCode:{}", i(t, "/exitCode")),
                r => format!("Init:{r}"),
            }
        } else if !waiting.is_empty() && waiting != "PodInitializing" {
            format!("Init:{waiting}")
        } else {
            format!("Init:{idx}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }
    let initialized = first_condition(conditions, "Initialized").is_some_and(|c| s(c, "/status") == "True");
    if !initializing || initialized {
        restarts = restartable_restarts;
        last_restart = last_restartable_restart;
        let mut has_running = false;
        for cs in arr(status, "/containerStatuses").iter().rev() {
            restarts += i(cs, "/restartCount");
            last_restart = later(last_restart, timestamp(cs.pointer("/lastState/terminated/finishedAt")));
            let terminated = cs.pointer("/state/terminated").filter(|t| t.is_object());
            if !s(cs, "/state/waiting/reason").is_empty() {
                reason = s(cs, "/state/waiting/reason").to_string();
            } else if let Some(t) = terminated {
                reason = match s(t, "/reason") {
                    "" if i(t, "/signal") != 0 => format!("Signal:{}", i(t, "/signal")),
                    "" => format!("ExitCode:{}", i(t, "/exitCode")),
                    r => r.to_string(),
                };
            } else if cs.get("ready").and_then(Value::as_bool) == Some(true)
                && cs.pointer("/state/running").is_some_and(Value::is_object)
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let ready = conditions.iter().any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True");
            reason = if ready { "Running".into() } else { "NotReady".into() };
        }
    }
    let deleting = p.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null());
    let phase = s(status, "/phase");
    if deleting && s(status, "/reason") == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting && phase != "Failed" && phase != "Succeeded" {
        reason = "Terminating".into();
    }
    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", super::human_duration(now.duration_since(t))),
        _ => restarts.to_string(),
    };
    let ip = match s(status, "/podIP") {
        "" => or(s(status, "/podIPs/0/ip"), "<none>"),
        ip => ip,
    };
    let gates = arr(spec, "/readinessGates");
    let gates_cell = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let ok = gates.iter().filter(|g| condition_true(conditions, s(g, "/conditionType"))).count();
        format!("{ok}/{}", gates.len())
    };
    let row_conditions = match phase {
        "Succeeded" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."}]),
        ),
        "Failed" => {
            Some(json!([{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}]))
        }
        _ => None,
    };
    Row {
        cells: vec![
            name(p),
            json!(format!("{ready}/{total}")),
            json!(reason),
            json!(restarts_cell),
            age(p, now),
            json!(ip),
            json!(or(s(spec, "/nodeName"), "<none>")),
            json!(or(s(status, "/nominatedNodeName"), "<none>")),
            json!(gates_cell),
        ],
        conditions: row_conditions,
    }
}

static POD_TEMPLATE: Printer = Printer {
    columns: &[
        NAME,
        col("Containers", "string", 0, "Names of each container in the template."),
        col("Images", "string", 0, "Images referenced by each container in the template."),
        col("Pod Labels", "string", 0, "The labels of the pod template."),
    ],
    cells: |o, _| {
        let (c, im) = containers(&o["template"]["spec"]);
        vec![name(o), c, im, json!(format_labels(o.pointer("/template/metadata/labels")))].into()
    },
};

static REPLICATION_CONTROLLER: Printer = Printer {
    columns: &[
        NAME,
        col("Desired", "integer", 0, "Number of desired pods."),
        col("Current", "integer", 0, "Number of actually running pods."),
        col("Ready", "integer", 0, "Number of pods ready."),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    cells: |o, now| {
        let (c, im) = containers(&o["spec"]["template"]["spec"]);
        vec![
            name(o),
            json!(i(o, "/spec/replicas")),
            json!(i(o, "/status/replicas")),
            json!(i(o, "/status/readyReplicas")),
            age(o, now),
            c,
            im,
            json!(format_labels(o.pointer("/spec/selector"))),
        ]
        .into()
    },
};

static SERVICE: Printer = Printer {
    columns: &[
        NAME,
        col("Type", "string", 0, "How the service is exposed."),
        col("Cluster-IP", "string", 0, "The IP address of the service inside the cluster."),
        col("External-IP", "string", 0, "The addresses the service is reachable at from outside."),
        col("Port(s)", "string", 0, "The ports the service exposes."),
        AGE,
        col("Selector", "string", 1, "The labels of the pods the service routes to."),
    ],
    cells: service,
};

fn service(o: &Value, now: Timestamp) -> Row {
    let ty = s(o, "/spec/type");
    let external_ips: Vec<&str> = arr(o, "/spec/externalIPs").iter().filter_map(Value::as_str).collect();
    let external = match ty {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_string()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = load_balancer(o);
            if !external_ips.is_empty() {
                let mut all: Vec<&str> = if lb.is_empty() { Vec::new() } else { lb.split(',').collect() };
                all.extend(external_ips.iter());
                all.join(",")
            } else if !lb.is_empty() {
                lb
            } else {
                "<pending>".into()
            }
        }
        "ExternalName" => s(o, "/spec/externalName").to_string(),
        _ => "<unknown>".into(),
    };
    let ports: Vec<String> = arr(o, "/spec/ports")
        .iter()
        .map(|p| {
            let proto = s(p, "/protocol");
            match i(p, "/nodePort") {
                n if n > 0 => format!("{}:{n}/{proto}", i(p, "/port")),
                _ => format!("{}/{proto}", i(p, "/port")),
            }
        })
        .collect();
    vec![
        name(o),
        json!(ty),
        json!(or(s(o, "/spec/clusterIPs/0"), "<none>")),
        json!(external),
        json!(if ports.is_empty() { "<none>".to_string() } else { ports.join(",") }),
        age(o, now),
        json!(format_labels(o.pointer("/spec/selector"))),
    ]
    .into()
}

fn join_host_port(ip: &str, port: i64) -> String {
    if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") }
}

static ENDPOINTS: Printer = Printer {
    columns: &[NAME, col("Endpoints", "string", 0, "Endpoints of the service."), AGE],
    cells: |o, now| vec![name(o), json!(endpoints(o)), age(o, now)].into(),
};

fn endpoints(o: &Value) -> String {
    let subsets = arr(o, "/subsets");
    if subsets.is_empty() {
        return "<none>".into();
    }
    const MAX: usize = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for ss in subsets {
        let addrs = arr(ss, "/addresses");
        let ports = arr(ss, "/ports");
        if ports.is_empty() {
            count += addrs.len();
            for a in addrs {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(s(a, "/ip").to_string());
            }
            continue;
        }
        for port in ports {
            count += addrs.len();
            for a in addrs {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(join_host_port(s(a, "/ip"), i(port, "/port")));
            }
        }
    }
    let joined = list.join(",");
    if more { format!("{joined} + {} more...", count - MAX) } else { joined }
}

static NODE: Printer = Printer {
    columns: &[
        NAME,
        col("Status", "string", 0, "The readiness of the node."),
        col("Roles", "string", 0, "The roles of the node."),
        AGE,
        col("Version", "string", 0, "Kubelet version."),
        col("Internal-IP", "string", 1, "The node's internal IP address."),
        col("External-IP", "string", 1, "The node's external IP address."),
        col("OS-Image", "string", 1, "The OS image the node reports."),
        col("Kernel-Version", "string", 1, "The kernel version the node reports."),
        col("Container-Runtime", "string", 1, "The container runtime the node reports."),
    ],
    cells: node,
};

fn node(o: &Value, now: Timestamp) -> Row {
    let conditions = arr(o, "/status/conditions");
    // A later condition of the same type wins, as in the Go map.
    let ready = conditions.iter().rev().find(|c| s(c, "/type") == "Ready");
    let mut status: Vec<&str> = Vec::new();
    if let Some(c) = ready {
        status.push(if s(c, "/status") == "True" { "Ready" } else { "NotReady" });
    }
    if status.is_empty() {
        status.push("Unknown");
    }
    if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled");
    }
    let mut roles: BTreeSet<&str> = BTreeSet::new();
    if let Some(labels) = o.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/").filter(|r| !r.is_empty()) {
                roles.insert(role);
            } else if k == "kubernetes.io/role" && !v.as_str().unwrap_or("").is_empty() {
                roles.insert(v.as_str().unwrap_or(""));
            }
        }
    }
    let address = |ty: &str| {
        arr(o, "/status/addresses").iter().find(|a| s(a, "/type") == ty).map(|a| s(a, "/address")).unwrap_or("<none>")
    };
    vec![
        name(o),
        json!(status.join(",")),
        json!(if roles.is_empty() { "<none>".to_string() } else { roles.into_iter().collect::<Vec<_>>().join(",") }),
        age(o, now),
        json!(s(o, "/status/nodeInfo/kubeletVersion")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(or(s(o, "/status/nodeInfo/osImage"), "<unknown>")),
        json!(or(s(o, "/status/nodeInfo/kernelVersion"), "<unknown>")),
        json!(or(s(o, "/status/nodeInfo/containerRuntimeVersion"), "<unknown>")),
    ]
    .into()
}

static NAMESPACE: Printer = Printer {
    columns: &[NAME, col("Status", "string", 0, "The status of the namespace."), AGE],
    cells: |o, now| vec![name(o), json!(s(o, "/status/phase")), age(o, now)].into(),
};

fn count(o: &Value, key: &str) -> usize {
    o.get(key).and_then(Value::as_object).map_or(0, |m| m.len())
}

static CONFIG_MAP: Printer = Printer {
    columns: &[NAME, col("Data", "string", 0, "Number of keys."), AGE],
    cells: |o, now| vec![name(o), json!(count(o, "data") + count(o, "binaryData")), age(o, now)].into(),
};

static SECRET: Printer = Printer {
    columns: &[
        NAME,
        col("Type", "string", 0, "The type of the secret."),
        col("Data", "string", 0, "Number of keys."),
        AGE,
    ],
    cells: |o, now| vec![name(o), json!(s(o, "/type")), json!(count(o, "data")), age(o, now)].into(),
};

static SERVICE_ACCOUNT: Printer = Printer {
    columns: &[NAME, col("Secrets", "string", 0, "Number of secrets listed."), AGE],
    cells: |o, now| vec![name(o), json!(arr(o, "/secrets").len()), age(o, now)].into(),
};

static EVENT: Printer = Printer {
    columns: &[
        col("Last Seen", "string", 0, "Time since the event was last seen."),
        col("Type", "string", 0, "Type of this event (Normal, Warning)."),
        col("Reason", "string", 0, "Why the action was taken."),
        col("Object", "string", 0, "The object this event is about."),
        col("Subobject", "string", 1, "The part of the object this event is about."),
        col("Source", "string", 1, "The component reporting this event."),
        col("Message", "string", 0, "A description of the event."),
        col("First Seen", "string", 1, "Time since the event was first seen."),
        col("Count", "string", 1, "The number of times this event has occurred."),
        Column { priority: 1, ..NAME },
    ],
    cells: event,
};

fn event(o: &Value, now: Timestamp) -> Row {
    // core/v1 fields, or their events.k8s.io/v1 names.
    let pick = |core: &str, events: &str| -> Option<&Value> {
        o.pointer(core).filter(|v| !v.is_null()).or_else(|| o.pointer(events).filter(|v| !v.is_null()))
    };
    let first = match pick("/firstTimestamp", "/deprecatedFirstTimestamp") {
        Some(t) => since(Some(t), now),
        None => since(o.get("eventTime"), now),
    };
    let mut last = match pick("/lastTimestamp", "/deprecatedLastTimestamp") {
        Some(t) => since(Some(t), now),
        None => first.clone(),
    };
    let mut count = pick("/count", "/deprecatedCount").and_then(Value::as_i64).unwrap_or(0);
    if let Some(series) = o.get("series").filter(|v| v.is_object()) {
        last = since(series.get("lastObservedTime"), now);
        count = i(series, "/count");
    } else if count == 0 {
        count = 1;
    }
    let involved = pick("/involvedObject", "/regarding").cloned().unwrap_or(Value::Null);
    let kind = s(&involved, "/kind").to_lowercase();
    let object = match s(&involved, "/name") {
        "" => kind,
        n => format!("{kind}/{n}"),
    };
    let component = match pick("/source/component", "/deprecatedSource/component").and_then(Value::as_str) {
        Some(c) if !c.is_empty() => c.to_string(),
        _ => or(s(o, "/reportingComponent"), s(o, "/reportingController")).to_string(),
    };
    let instance = match pick("/source/host", "/deprecatedSource/host").and_then(Value::as_str) {
        Some(h) if !h.is_empty() => h.to_string(),
        _ => s(o, "/reportingInstance").to_string(),
    };
    let source = if instance.is_empty() { component } else { format!("{component}, {instance}") };
    let message = pick("/message", "/note").and_then(Value::as_str).unwrap_or("").trim();
    vec![
        json!(last),
        json!(s(o, "/type")),
        json!(s(o, "/reason")),
        json!(object),
        json!(s(&involved, "/fieldPath")),
        json!(source),
        json!(message),
        json!(first),
        json!(count),
        name(o),
    ]
    .into()
}

static PVC: Printer = Printer {
    columns: &[
        NAME,
        col("Status", "string", 0, "The phase of the claim."),
        col("Volume", "string", 0, "The volume bound to the claim."),
        col("Capacity", "string", 0, "The capacity of the bound volume."),
        col("Access Modes", "string", 0, "The access modes of the bound volume."),
        col("StorageClass", "string", 0, "The storage class of the claim."),
        col("VolumeAttributesClass", "string", 0, "The volume attributes class of the claim."),
        AGE,
        col("VolumeMode", "string", 1, "Filesystem or Block."),
    ],
    cells: |o, now| {
        let deleting = o.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null());
        let volume = s(o, "/spec/volumeName");
        let (capacity, modes) = if volume.is_empty() {
            (String::new(), String::new())
        } else {
            (quantity(o.pointer("/status/capacity/storage")), access_modes(arr(o, "/status/accessModes")))
        };
        vec![
            name(o),
            json!(if deleting { "Terminating" } else { s(o, "/status/phase") }),
            json!(volume),
            json!(capacity),
            json!(modes),
            json!(storage_class(o)),
            json!(o.pointer("/spec/volumeAttributesClassName").and_then(Value::as_str).unwrap_or("<unset>")),
            age(o, now),
            json!(or(s(o, "/spec/volumeMode"), "<unset>")),
        ]
        .into()
    },
};

fn storage_class(o: &Value) -> &str {
    match o.pointer("/metadata/annotations/volume.beta.kubernetes.io~1storage-class").and_then(Value::as_str) {
        Some(c) => c,
        None => s(o, "/spec/storageClassName"),
    }
}

static PV: Printer = Printer {
    columns: &[
        NAME,
        col("Capacity", "string", 0, "The capacity of the volume."),
        col("Access Modes", "string", 0, "The access modes of the volume."),
        col("Reclaim Policy", "string", 0, "What happens to the volume when released."),
        col("Status", "string", 0, "The phase of the volume."),
        col("Claim", "string", 0, "The claim bound to the volume."),
        col("StorageClass", "string", 0, "The storage class of the volume."),
        col("VolumeAttributesClass", "string", 0, "The volume attributes class of the volume."),
        col("Reason", "string", 0, "Why the volume is in this phase."),
        AGE,
        col("VolumeMode", "string", 1, "Filesystem or Block."),
    ],
    cells: |o, now| {
        let deleting = o.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null());
        let claim = match o.pointer("/spec/claimRef").filter(|c| c.is_object()) {
            Some(c) => format!("{}/{}", s(c, "/namespace"), s(c, "/name")),
            None => String::new(),
        };
        vec![
            name(o),
            json!(quantity(o.pointer("/spec/capacity/storage"))),
            json!(access_modes(arr(o, "/spec/accessModes"))),
            json!(s(o, "/spec/persistentVolumeReclaimPolicy")),
            json!(if deleting { "Terminating" } else { s(o, "/status/phase") }),
            json!(claim),
            json!(storage_class(o)),
            json!(or(s(o, "/spec/volumeAttributesClassName"), "<unset>")),
            json!(s(o, "/status/reason")),
            age(o, now),
            json!(or(s(o, "/spec/volumeMode"), "<unset>")),
        ]
        .into()
    },
};

// ---- workloads -------------------------------------------------------------------------------

static DEPLOYMENT: Printer = Printer {
    columns: &[
        NAME,
        col("Ready", "string", 0, "Number of ready replicas, of those desired."),
        col("Up-to-date", "string", 0, "Number of replicas updated to the latest template."),
        col("Available", "string", 0, "Number of available replicas."),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    cells: |o, now| {
        let (c, im) = containers(&o["spec"]["template"]["spec"]);
        let desired = o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
        vec![
            name(o),
            json!(format!("{}/{desired}", i(o, "/status/readyReplicas"))),
            json!(i(o, "/status/updatedReplicas")),
            json!(i(o, "/status/availableReplicas")),
            age(o, now),
            c,
            im,
            json!(selector_string(o.pointer("/spec/selector")).unwrap_or_else(|| "<invalid>".into())),
        ]
        .into()
    },
};

static REPLICA_SET: Printer = Printer {
    columns: REPLICATION_CONTROLLER.columns,
    cells: |o, now| {
        let (c, im) = containers(&o["spec"]["template"]["spec"]);
        vec![
            name(o),
            json!(o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)),
            json!(i(o, "/status/replicas")),
            json!(i(o, "/status/readyReplicas")),
            age(o, now),
            c,
            im,
            json!(format_label_selector(o.pointer("/spec/selector"))),
        ]
        .into()
    },
};

static STATEFUL_SET: Printer = Printer {
    columns: &[NAME, col("Ready", "string", 0, "Number of ready replicas, of those desired."), AGE, CONTAINERS, IMAGES],
    cells: |o, now| {
        let (c, im) = containers(&o["spec"]["template"]["spec"]);
        let desired = o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
        vec![name(o), json!(format!("{}/{desired}", i(o, "/status/readyReplicas"))), age(o, now), c, im].into()
    },
};

static DAEMON_SET: Printer = Printer {
    columns: &[
        NAME,
        col("Desired", "integer", 0, "Number of nodes that should run the daemon pod."),
        col("Current", "integer", 0, "Number of nodes running at least one daemon pod."),
        col("Ready", "integer", 0, "Number of nodes with a ready daemon pod."),
        col("Up-to-date", "integer", 0, "Number of nodes running the updated daemon pod."),
        col("Available", "integer", 0, "Number of nodes with an available daemon pod."),
        col("Node Selector", "string", 0, "The node selector of the pod template."),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    cells: |o, now| {
        let (c, im) = containers(&o["spec"]["template"]["spec"]);
        vec![
            name(o),
            json!(i(o, "/status/desiredNumberScheduled")),
            json!(i(o, "/status/currentNumberScheduled")),
            json!(i(o, "/status/numberReady")),
            json!(i(o, "/status/updatedNumberScheduled")),
            json!(i(o, "/status/numberAvailable")),
            json!(format_labels(o.pointer("/spec/template/spec/nodeSelector"))),
            age(o, now),
            c,
            im,
            json!(format_label_selector(o.pointer("/spec/selector"))),
        ]
        .into()
    },
};

static JOB: Printer = Printer {
    columns: &[
        NAME,
        col("Status", "string", 0, "The state of the job."),
        col("Completions", "string", 0, "Succeeded pods, of the completions wanted."),
        col("Duration", "string", 0, "How long the job ran or has been running."),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    cells: |o, now| {
        let (c, im) = containers(&o["spec"]["template"]["spec"]);
        let succeeded = i(o, "/status/succeeded");
        let completions = match o.pointer("/spec/completions").and_then(Value::as_i64) {
            Some(n) => format!("{succeeded}/{n}"),
            None => match i(o, "/spec/parallelism") {
                p if p > 1 => format!("{succeeded}/1 of {p}"),
                _ => format!("{succeeded}/1"),
            },
        };
        let duration = match timestamp(o.pointer("/status/startTime")) {
            None => String::new(),
            Some(start) => match timestamp(o.pointer("/status/completionTime")) {
                None => super::human_duration(now.duration_since(start)),
                Some(end) => super::human_duration(end.duration_since(start)),
            },
        };
        let conds = arr(o, "/status/conditions");
        let status = if condition_true(conds, "Complete") {
            "Complete"
        } else if condition_true(conds, "Failed") {
            "Failed"
        } else if o.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
            "Terminating"
        } else if condition_true(conds, "Suspended") {
            "Suspended"
        } else if condition_true(conds, "FailureTarget") {
            "FailureTarget"
        } else {
            "Running"
        };
        vec![
            name(o),
            json!(status),
            json!(completions),
            json!(duration),
            age(o, now),
            c,
            im,
            json!(format_label_selector(o.pointer("/spec/selector"))),
        ]
        .into()
    },
};

static CRON_JOB: Printer = Printer {
    columns: &[
        NAME,
        col("Schedule", "string", 0, "The schedule in Cron format."),
        col("Timezone", "string", 0, "The time zone of the schedule."),
        col("Suspend", "boolean", 0, "Whether new runs are suspended."),
        col("Active", "integer", 0, "Number of running jobs."),
        col("Last Schedule", "string", 0, "Time since the job was last scheduled."),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    cells: |o, now| {
        let (c, im) = containers(&o["spec"]["jobTemplate"]["spec"]["template"]["spec"]);
        let last = match o.pointer("/status/lastScheduleTime").filter(|v| !v.is_null()) {
            Some(t) => since(Some(t), now),
            None => "<none>".into(),
        };
        vec![
            name(o),
            json!(s(o, "/spec/schedule")),
            json!(or(s(o, "/spec/timeZone"), "<none>")),
            json!(bool_ptr(o.pointer("/spec/suspend"))),
            json!(arr(o, "/status/active").len()),
            json!(last),
            age(o, now),
            c,
            im,
            json!(format_label_selector(o.pointer("/spec/jobTemplate/spec/selector"))),
        ]
        .into()
    },
};

static SCALE: Printer = Printer {
    columns: &[
        NAME,
        col("Desired", "integer", 0, "Number of desired replicas."),
        col("Available", "integer", 0, "Number of actual replicas."),
        AGE,
    ],
    cells: |o, now| vec![name(o), json!(i(o, "/spec/replicas")), json!(i(o, "/status/replicas")), age(o, now)].into(),
};

static PDB: Printer = Printer {
    columns: &[
        NAME,
        col("Min Available", "string", 0, "Pods that must stay available."),
        col("Max Unavailable", "string", 0, "Pods that may be unavailable."),
        col("Allowed Disruptions", "integer", 0, "Disruptions currently allowed."),
        AGE,
    ],
    cells: |o, now| {
        let int_or_string = |p: &str| match o.pointer(p) {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) => s.clone(),
            _ => "N/A".into(),
        };
        vec![
            name(o),
            json!(int_or_string("/spec/minAvailable")),
            json!(int_or_string("/spec/maxUnavailable")),
            json!(i(o, "/status/disruptionsAllowed")),
            age(o, now),
        ]
        .into()
    },
};

// ---- networking, discovery -------------------------------------------------------------------

static INGRESS: Printer = Printer {
    columns: &[
        NAME,
        col("Class", "string", 0, "The ingress class."),
        col("Hosts", "string", 0, "The hosts the rules match."),
        col("Address", "string", 0, "The load balancer's addresses."),
        col("Ports", "string", 0, "The ports the ingress serves."),
        AGE,
    ],
    cells: |o, now| {
        let rules = arr(o, "/spec/rules");
        let mut hosts: Vec<&str> = Vec::new();
        let mut more = false;
        for r in rules {
            if hosts.len() == 3 {
                more = true;
            }
            if !more && !s(r, "/host").is_empty() {
                hosts.push(s(r, "/host"));
            }
        }
        let hosts = if hosts.is_empty() {
            "*".to_string()
        } else if more {
            format!("{} + {} more...", hosts.join(","), rules.len() - 3)
        } else {
            hosts.join(",")
        };
        let ports = if arr(o, "/spec/tls").is_empty() { "80" } else { "80, 443" };
        vec![
            name(o),
            json!(or(s(o, "/spec/ingressClassName"), "<none>")),
            json!(hosts),
            json!(load_balancer(o)),
            json!(ports),
            age(o, now),
        ]
        .into()
    },
};

static INGRESS_CLASS: Printer = Printer {
    columns: &[
        NAME,
        col("Controller", "string", 0, "The controller implementing the class."),
        col("Parameters", "string", 0, "The class's parameters resource."),
        AGE,
    ],
    cells: |o, now| {
        let params = match o.pointer("/spec/parameters").filter(|p| p.is_object()) {
            Some(p) => {
                let group = s(p, "/apiGroup");
                let kind =
                    if group.is_empty() { s(p, "/kind").to_string() } else { format!("{}.{group}", s(p, "/kind")) };
                format!("{kind}/{}", s(p, "/name"))
            }
            None => "<none>".into(),
        };
        vec![name(o), json!(s(o, "/spec/controller")), json!(params), age(o, now)].into()
    },
};

static NETWORK_POLICY: Printer = Printer {
    columns: &[NAME, col("Pod-Selector", "string", 0, "The pods the policy applies to."), AGE],
    cells: |o, now| {
        let sel = o.pointer("/spec/podSelector").cloned().unwrap_or(json!({}));
        vec![name(o), json!(format_label_selector(Some(&sel))), age(o, now)].into()
    },
};

static SERVICE_CIDR: Printer = Printer {
    columns: &[NAME, col("CIDRs", "string", 0, "The service CIDRs."), AGE],
    cells: |o, now| {
        let cidrs: Vec<&str> = arr(o, "/spec/cidrs").iter().filter_map(Value::as_str).collect();
        vec![name(o), json!(cidrs.join(",")), age(o, now)].into()
    },
};

/// First three entries, then `+ N more...`; `<unset>` when empty.
fn first_three(items: Vec<String>) -> String {
    match items.len() {
        0 => "<unset>".into(),
        n if n > 3 => format!("{} + {} more...", items[..3].join(","), n - 3),
        _ => items.join(","),
    }
}

static ENDPOINT_SLICE: Printer = Printer {
    columns: &[
        NAME,
        col("AddressType", "string", 0, "The type of the addresses."),
        col("Ports", "string", 0, "The ports of the endpoints."),
        col("Endpoints", "string", 0, "The endpoints' addresses."),
        AGE,
    ],
    cells: |o, now| {
        let ports = arr(o, "/ports")
            .iter()
            .map(|p| match p.get("port").and_then(Value::as_i64) {
                Some(n) => n.to_string(),
                None => or(s(p, "/name"), "*").to_string(),
            })
            .collect();
        let addrs = arr(o, "/endpoints")
            .iter()
            .flat_map(|e| arr(e, "/addresses").iter().filter_map(Value::as_str).map(str::to_string))
            .collect();
        vec![name(o), json!(s(o, "/addressType")), json!(first_three(ports)), json!(first_three(addrs)), age(o, now)]
            .into()
    },
};

// ---- RBAC, coordination, storage, scheduling, node, admission ----------------------------------

static BINDING: Printer = Printer {
    columns: &[
        NAME,
        col("Role", "string", 0, "The role the binding grants."),
        AGE,
        col("Users", "string", 1, "Users in the binding."),
        col("Groups", "string", 1, "Groups in the binding."),
        col("ServiceAccounts", "string", 1, "Service accounts in the binding."),
    ],
    cells: |o, now| {
        let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
        for sub in arr(o, "/subjects") {
            match s(sub, "/kind") {
                "User" => users.push(s(sub, "/name").to_string()),
                "Group" => groups.push(s(sub, "/name").to_string()),
                "ServiceAccount" => sas.push(format!("{}/{}", s(sub, "/namespace"), s(sub, "/name"))),
                _ => {}
            }
        }
        vec![
            name(o),
            json!(format!("{}/{}", s(o, "/roleRef/kind"), s(o, "/roleRef/name"))),
            age(o, now),
            json!(users.join(", ")),
            json!(groups.join(", ")),
            json!(sas.join(", ")),
        ]
        .into()
    },
};

static LEASE: Printer = Printer {
    columns: &[NAME, col("Holder", "string", 0, "The holder of the lease."), AGE],
    cells: |o, now| vec![name(o), json!(s(o, "/spec/holderIdentity")), age(o, now)].into(),
};

static STORAGE_CLASS: Printer = Printer {
    columns: &[
        NAME,
        col("Provisioner", "string", 0, "The volume plugin provisioning volumes."),
        col("ReclaimPolicy", "string", 0, "What happens to released volumes."),
        col("VolumeBindingMode", "string", 0, "When volumes are bound."),
        col("AllowVolumeExpansion", "string", 0, "Whether volumes can be expanded."),
        AGE,
    ],
    cells: |o, now| {
        let default =
            ["storageclass.kubernetes.io~1is-default-class", "storageclass.beta.kubernetes.io~1is-default-class"]
                .iter()
                .any(|a| s(o, &format!("/metadata/annotations/{a}")) == "true");
        let n = s(o, "/metadata/name");
        vec![
            json!(if default { format!("{n} (default)") } else { n.to_string() }),
            json!(s(o, "/provisioner")),
            json!(or(s(o, "/reclaimPolicy"), "Delete")),
            json!(or(s(o, "/volumeBindingMode"), "Immediate")),
            json!(o.get("allowVolumeExpansion").and_then(Value::as_bool).unwrap_or(false)),
            age(o, now),
        ]
        .into()
    },
};

static PRIORITY_CLASS: Printer = Printer {
    columns: &[
        NAME,
        col("Value", "integer", 0, "The priority of pods using the class."),
        col("Global-Default", "boolean", 0, "Whether pods without a class get this one."),
        AGE,
        col("PreemptionPolicy", "string", 0, "Whether pods of this class preempt others."),
    ],
    cells: |o, now| {
        vec![
            name(o),
            json!(i(o, "/value")),
            json!(o.get("globalDefault").and_then(Value::as_bool).unwrap_or(false)),
            age(o, now),
            json!(s(o, "/preemptionPolicy")),
        ]
        .into()
    },
};

static RUNTIME_CLASS: Printer = Printer {
    columns: &[NAME, col("Handler", "string", 0, "The CRI handler running the pods."), AGE],
    cells: |o, now| vec![name(o), json!(s(o, "/handler")), age(o, now)].into(),
};

static WEBHOOK_CONFIGURATION: Printer = Printer {
    columns: &[NAME, col("Webhooks", "integer", 0, "Number of webhooks."), AGE],
    cells: |o, now| vec![name(o), json!(arr(o, "/webhooks").len()), age(o, now)].into(),
};

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-01-01T00:10:00Z".parse().unwrap()
    }

    fn cells(printer: &Printer, o: Value) -> Vec<Value> {
        assert_eq!((printer.cells)(&o, now()).cells.len(), printer.columns.len(), "one cell per column");
        (printer.cells)(&o, now()).cells
    }

    /// Pins kube's printPod on its documented cases: running with a restart, init containers,
    /// completion conditions, terminating, readiness gates.
    #[test]
    fn pod_rows() {
        let running = json!({
            "metadata": {"name": "web", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}], "readinessGates": [{"conditionType": "g"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "conditions": [{"type": "g", "status": "True"}],
                "containerStatuses": [
                    {"name": "a", "ready": true, "restartCount": 3, "state": {"running": {}},
                     "lastState": {"terminated": {"finishedAt": "2026-01-01T00:09:50Z"}}},
                    {"name": "b", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
        });
        assert_eq!(
            cells(&POD, running),
            json!(["web", "1/2", "CrashLoopBackOff", "3 (10s ago)", "10m", "10.0.0.5", "n1", "<none>", "1/1"])
                .as_array()
                .unwrap()
                .clone()
        );
        let init = json!({
            "metadata": {"name": "p"},
            "spec": {"initContainers": [{"name": "i1"}, {"name": "i2"}], "containers": [{"name": "c"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [
                {"name": "i1", "state": {"terminated": {"exitCode": 0}}},
                {"name": "i2", "state": {"running": {}}}]}
        });
        let c = cells(&POD, init);
        assert_eq!((c[1].as_str(), c[2].as_str(), c[4].as_str()), (Some("0/1"), Some("Init:1/2"), Some("<unknown>")));
        let done = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": "Succeeded", "containerStatuses": [{"name": "c", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}});
        let row = (POD.cells)(&done, now());
        assert_eq!(row.cells[2], "Completed");
        assert_eq!(row.conditions.unwrap()[0]["reason"], "Succeeded");
        let deleting = json!({"metadata": {"name": "p", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Running"}});
        assert_eq!(cells(&POD, deleting)[2], "Terminating");
        let gated = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}, {"name": "d"}]},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "reason": "SchedulingGated"}]}});
        assert_eq!(cells(&POD, gated)[1..4], [json!("0/2"), json!("SchedulingGated"), json!("0")]);
    }

    #[test]
    fn service_rows() {
        let lb = json!({"metadata": {"name": "s"}, "spec": {"type": "LoadBalancer", "clusterIPs": ["10.9.8.7"],
            "ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "nodePort": 30001, "protocol": "TCP"}],
            "selector": {"b": "2", "a": "1"}},
            "status": {"loadBalancer": {"ingress": [{"ip": "80.11.12.10"}, {"ip": "3.4.5.6"}]}}});
        let c = cells(&SERVICE, lb);
        assert_eq!(c[2..5], [json!("10.9.8.7"), json!("3.4.5.6,80.11.12.10"), json!("80/TCP,443:30001/TCP")]);
        assert_eq!(c[6], "a=1,b=2");
        let pending = json!({"metadata": {"name": "s"}, "spec": {"type": "LoadBalancer", "clusterIPs": ["10.0.0.1"]}});
        assert_eq!(cells(&SERVICE, pending)[3..5], [json!("<pending>"), json!("<none>")]);
        let ext =
            json!({"metadata": {"name": "s"}, "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        assert_eq!(cells(&SERVICE, ext)[2..4], [json!("<none>"), json!("db.example.com")]);
    }

    #[test]
    fn workload_rows_and_selectors() {
        let d = json!({"metadata": {"name": "d"}, "spec": {"replicas": 3,
            "selector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "back"]}]},
            "template": {"spec": {"containers": [{"name": "a", "image": "i:1"}, {"name": "b", "image": "i:2"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        assert_eq!(
            cells(&DEPLOYMENT, d),
            vec![
                json!("d"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("<unknown>"),
                json!("a,b"),
                json!("i:1,i:2"),
                json!("app=web,tier in (back,front)")
            ]
        );
        let job = json!({"metadata": {"name": "j"}, "spec": {"parallelism": 2},
            "status": {"succeeded": 1, "startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:03:10Z",
                "conditions": [{"type": "Complete", "status": "True"}]}});
        assert_eq!(cells(&JOB, job)[1..4], [json!("Complete"), json!("1/1 of 2"), json!("3m10s")]);
        let cj = json!({"metadata": {"name": "c"}, "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {}}}}}});
        assert_eq!(
            cells(&CRON_JOB, cj)[1..6],
            [json!("*/5 * * * *"), json!("<none>"), json!("<unset>"), json!(0), json!("<none>")]
        );
    }

    #[test]
    fn cluster_rows() {
        let n = json!({"metadata": {"name": "n", "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "master"}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "addresses": [{"type": "InternalIP", "address": "10.1.1.1"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0"}}});
        assert_eq!(
            cells(&NODE, n),
            vec![
                json!("n"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,master"),
                json!("<unknown>"),
                json!("v1.33.0"),
                json!("10.1.1.1"),
                json!("<none>"),
                json!("<unknown>"),
                json!("<unknown>"),
                json!("<unknown>")
            ]
        );
        let ev = json!({"metadata": {"name": "e1"}, "type": "Warning", "reason": "BackOff", "message": " restarting \n",
            "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{a}"},
            "source": {"component": "kubelet", "host": "n1"}, "count": 4,
            "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:09:00Z"});
        assert_eq!(
            cells(&EVENT, ev),
            vec![
                json!("60s"),
                json!("Warning"),
                json!("BackOff"),
                json!("pod/web"),
                json!("spec.containers{a}"),
                json!("kubelet, n1"),
                json!("restarting"),
                json!("10m"),
                json!(4),
                json!("e1")
            ]
        );
        let ep = json!({"metadata": {"name": "e"}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}, {"port": 443}]}]});
        assert_eq!(cells(&ENDPOINTS, ep)[1], "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more...");
        let pv = json!({"metadata": {"name": "test1"}, "spec": {"capacity": {"storage": "4096Mi"}, "accessModes": ["ReadOnlyMany"],
            "claimRef": {"namespace": "default", "name": "test"}}, "status": {"phase": "Bound"}});
        assert_eq!(
            cells(&PV, pv),
            vec![
                json!("test1"),
                json!("4Gi"),
                json!("ROX"),
                json!(""),
                json!("Bound"),
                json!("default/test"),
                json!(""),
                json!("<unset>"),
                json!(""),
                json!("<unknown>"),
                json!("<unset>")
            ]
        );
        let rb = json!({"metadata": {"name": "b"}, "roleRef": {"kind": "ClusterRole", "name": "admin"},
            "subjects": [{"kind": "User", "name": "u1"}, {"kind": "User", "name": "u2"}, {"kind": "ServiceAccount", "namespace": "ns", "name": "sa"}]});
        assert_eq!(
            cells(&BINDING, rb)[1..],
            [json!("ClusterRole/admin"), json!("<unknown>"), json!("u1, u2"), json!(""), json!("ns/sa")]
        );
        let cm = json!({"metadata": {"name": "c", "creationTimestamp": "2026-01-01T00:00:00Z"}, "data": {"a": "1"}, "binaryData": {"b": ""}});
        assert_eq!(cells(&CONFIG_MAP, cm), vec![json!("c"), json!(2), json!("10m")]);
        let role = json!({"metadata": {"name": "r", "creationTimestamp": "2026-01-01T00:00:00Z"}});
        assert_eq!(cells(&DEFAULT, role), vec![json!("r"), json!("2026-01-01T00:00:00Z")]);
    }
}
