//! The simulated scheduler: binds pending pods to nodes that fit (node selector, required node
//! affinity, taints, RuntimeClass scheduling), spreading pods over the fitting nodes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

use crate::NodeSim;

fn tolerates(tolerations: &[Value], key: &str, value: &str, effect: &str) -> bool {
    tolerations.iter().any(|t| {
        let s = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or("");
        let key_ok = s("key").is_empty() && s("operator") == "Exists" || s("key") == key;
        let value_ok = s("operator") == "Exists" || s("value") == value;
        let effect_ok = s("effect").is_empty() || s("effect") == effect;
        key_ok && value_ok && effect_ok
    })
}

fn expression_matches(expr: &Value, labels: &BTreeMap<String, String>) -> bool {
    let key = expr.get("key").and_then(Value::as_str).unwrap_or("");
    let values: Vec<&str> =
        expr.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    let v = labels.get(key).map(String::as_str);
    match expr.get("operator").and_then(Value::as_str).unwrap_or("") {
        "In" => v.is_some_and(|v| values.contains(&v)),
        "NotIn" => v.is_none_or(|v| !values.contains(&v)),
        "Exists" => v.is_some(),
        "DoesNotExist" => v.is_none(),
        "Gt" => v
            .and_then(|v| v.parse::<i64>().ok())
            .zip(values.first().and_then(|x| x.parse::<i64>().ok()))
            .is_some_and(|(a, b)| a > b),
        "Lt" => v
            .and_then(|v| v.parse::<i64>().ok())
            .zip(values.first().and_then(|x| x.parse::<i64>().ok()))
            .is_some_and(|(a, b)| a < b),
        _ => false,
    }
}

/// Why a node does not fit a pod (`None`: it fits).
fn misfit(pod: &Value, node: &Node, runtime: Option<&Value>) -> Option<String> {
    let labels: BTreeMap<String, String> = node.labels().clone();
    let spec = &pod["spec"];
    if node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) {
        return Some("node(s) were unschedulable".into());
    }
    let mut selector: BTreeMap<String, String> = spec
        .get("nodeSelector")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
        .unwrap_or_default();
    let mut tolerations: Vec<Value> = spec.get("tolerations").and_then(Value::as_array).cloned().unwrap_or_default();
    if let Some(rc) = runtime {
        if let Some(m) = rc.pointer("/scheduling/nodeSelector").and_then(Value::as_object) {
            for (k, v) in m {
                selector.insert(k.clone(), v.as_str().unwrap_or("").to_string());
            }
        }
        tolerations
            .extend(rc.pointer("/scheduling/tolerations").and_then(Value::as_array).cloned().unwrap_or_default());
    }
    if selector.iter().any(|(k, v)| labels.get(k) != Some(v)) {
        return Some("node(s) didn't match Pod's node affinity/selector".into());
    }
    if let Some(terms) = spec
        .pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)
        && !terms.is_empty()
        && !terms.iter().any(|t| {
            // matchFields selects by node name (how DaemonSet pods are pinned to their node).
            let fields = BTreeMap::from([("metadata.name".to_string(), node.name_any())]);
            let all = |k: &str, on: &BTreeMap<String, String>| {
                t.get(k).and_then(Value::as_array).is_none_or(|es| es.iter().all(|e| expression_matches(e, on)))
            };
            all("matchExpressions", &labels) && all("matchFields", &fields)
        })
    {
        return Some("node(s) didn't match Pod's node affinity/selector".into());
    }
    for taint in node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default() {
        if taint.effect == "PreferNoSchedule" {
            continue;
        }
        if !tolerates(&tolerations, &taint.key, taint.value.as_deref().unwrap_or(""), &taint.effect) {
            return Some(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or("")
            ));
        }
    }
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if !ready {
        return Some("node(s) were not ready".into());
    }
    None
}

struct Scheduler {
    sim: Arc<NodeSim>,
    nodes: Store<Node>,
    runtime_classes: Store<RuntimeClass>,
    /// Pods bound per node (for spreading).
    load: HashMap<String, usize>,
    /// Pending pods seen, to retry when nodes change.
    pending: BTreeMap<(String, String), Value>,
}

impl Scheduler {
    async fn schedule(&mut self, pod: Value) {
        let ns = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("").to_string();
        let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
        let runtime = pod
            .pointer("/spec/runtimeClassName")
            .and_then(Value::as_str)
            .and_then(|rc| self.runtime_classes.get(&reflector::ObjectRef::new(rc)))
            .and_then(|rc| vt_apiserver::object::to_value(rc.as_ref()).ok());
        if let Some(rc_name) = pod.pointer("/spec/runtimeClassName").and_then(Value::as_str)
            && runtime.is_none()
        {
            let why = format!("RuntimeClass {rc_name:?} not found");
            if self.unschedulable(&pod, &ns, &name, why).await {
                self.pending.insert((ns, name), pod);
            }
            return;
        }
        let nodes = self.nodes.state();
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut fitting: Vec<String> = Vec::new();
        for node in &nodes {
            match misfit(&pod, node, runtime.as_ref()) {
                None => fitting.push(node.name_any()),
                Some(why) => *reasons.entry(why).or_default() += 1,
            }
        }
        let Some(chosen) = fitting.iter().min_by_key(|n| self.load.get(*n).copied().unwrap_or(0)).cloned() else {
            let detail = reasons.iter().map(|(why, n)| format!("{n} {why}")).collect::<Vec<_>>().join(", ");
            let message = format!(
                "0/{} nodes are available: {detail}. preemption: 0/{} nodes are available: {} Preemption is not helpful for scheduling.",
                nodes.len(),
                nodes.len(),
                nodes.len()
            );
            if self.unschedulable(&pod, &ns, &name, message).await {
                self.pending.insert((ns, name), pod);
            } else {
                self.pending.remove(&(ns, name));
            }
            return;
        };
        let pods: Api<Pod> = Api::namespaced(self.sim.client(), &ns);
        let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": chosen}});
        match pods.create_subresource::<Value, Value>("binding", &name, &PostParams::default(), &binding).await {
            Ok(_) => {
                let message = format!("Successfully assigned {ns}/{name} to {chosen}");
                self.sim.event(&pod, "Normal", "Scheduled", &message, "default-scheduler").await;
                *self.load.entry(chosen.clone()).or_default() += 1;
                self.pending.remove(&(ns, name));
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                // Gone, or bound meanwhile.
                self.pending.remove(&(ns, name));
            }
            Err(e) => tracing::debug!(pod = %name, error = %e, "binding failed"),
        }
    }

    /// Reports a pod as unschedulable (only when the reason changed, so the write does not
    /// trigger another attempt); returns whether the pod still waits.
    async fn unschedulable(&self, pod: &Value, ns: &str, name: &str, message: String) -> bool {
        let same = pod.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|cs| {
            cs.iter().any(|c| c["type"] == "PodScheduled" && c["reason"] == "Unschedulable" && c["message"] == message)
        });
        if same {
            return true;
        }
        self.sim.event(pod, "Warning", "FailedScheduling", &message, "default-scheduler").await;
        let pods: Api<Pod> = Api::namespaced(self.sim.client(), ns);
        let patch = json!({"status": {"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
            "lastTransitionTime": crate::now()}]}});
        !matches!(
            pods.patch_status(name, &PatchParams::default(), &Patch::Merge(patch)).await,
            Err(kube::Error::Api(ref e)) if e.code == 404
        )
    }
}

/// Runs the scheduler until the process ends.
pub(crate) async fn run(sim: Arc<NodeSim>) {
    let client = sim.client();
    let (nodes, node_writer) = reflector::store::<Node>();
    let node_stream =
        reflector::reflector(node_writer, watcher(Api::<Node>::all(client.clone()), watcher::Config::default()))
            .default_backoff()
            .touched_objects();
    let (rcs, rc_writer) = reflector::store::<RuntimeClass>();
    let rc_stream =
        reflector::reflector(rc_writer, watcher(Api::<RuntimeClass>::all(client.clone()), watcher::Config::default()))
            .default_backoff()
            .touched_objects();
    tokio::spawn(rc_stream.for_each(|_| async {}));
    let pods = watcher(Api::<Pod>::all(client), watcher::Config::default().fields("spec.nodeName="))
        .default_backoff()
        .touched_objects();
    // The node reflector runs on its own; node changes wake the scheduler up.
    let (changed_tx, mut node_changes) = tokio::sync::mpsc::channel::<()>(1);
    tokio::spawn(async move {
        let mut node_stream = Box::pin(node_stream);
        while node_stream.next().await.is_some() {
            let _ = changed_tx.try_send(());
        }
    });
    let mut pods = Box::pin(pods);
    let _ = nodes.wait_until_ready().await;
    let mut s = Scheduler { sim, nodes, runtime_classes: rcs, load: HashMap::new(), pending: BTreeMap::new() };
    let mut retry = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            Some(ev) = pods.next() => {
                let Ok(pod) = ev else { continue };
                let unscheduled = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("").is_empty();
                let deleting = pod.metadata.deletion_timestamp.is_some();
                let ours = pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()).is_none_or(|n| n == "default-scheduler");
                if unscheduled && !deleting && ours && let Ok(v) = vt_apiserver::object::to_value(&pod) {
                    s.schedule(v).await;
                }
            }
            Some(()) = node_changes.recv() => {
                // A node appeared or changed: pending pods may fit now.
                let pending: Vec<Value> = s.pending.values().cloned().collect();
                for p in pending {
                    s.schedule(p).await;
                }
            }
            _ = retry.tick() => {
                let pending: Vec<Value> = s.pending.values().cloned().collect();
                for p in pending {
                    s.schedule(p).await;
                }
            }
            else => return,
        }
    }
}
