//! Simulated nodes: what vt's embedded host runs instead of machines, and what tests run pods
//! on. Everything here is simulation and says so: nodes are labelled `vt.dev/simulated=true`
//! and report `vt simulated node` as their OS image and `simulated://` as their runtime.
//!
//! Through the standard Kubernetes API only (kube-rs), so it drives any API server:
//! * nodes, with labels and taints per pool, Ready, capacity, addresses;
//! * a scheduler honouring nodeSelector, required node affinity, taints and tolerations,
//!   `spec.nodeName` and RuntimeClass scheduling, binding through `pods/binding` and reporting
//!   unschedulable pods in their PodScheduled condition;
//! * a kubelet: bound pods become Running with a pod IP and ready containers; pods that do not
//!   restart (`restartPolicy: Never/OnFailure`) finish after a simulated run time (annotation
//!   `vt.dev/sim-runtime`, default 1s) with the exit code of `vt.dev/sim-exit-code` (default 0);
//!   deleted pods are removed once "stopped"; each pod's lifecycle is recorded as log lines;
//! * storage: every claim gets a simulated PersistentVolume and is bound at once.

mod kubelet;
mod scheduler;
mod storage;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

/// The label marking simulated nodes.
pub const SIMULATED_LABEL: &str = "vt.dev/simulated";
/// The field manager of what the simulation writes.
pub const MANAGER: &str = "vt-nodesim";

/// One simulated node.
#[derive(Clone, Debug, Default)]
pub struct NodeSpec {
    /// Its name.
    pub name: String,
    /// Extra labels (a pool's `vt.dev/pool=<pool>`).
    pub labels: BTreeMap<String, String>,
    /// Taints, as (key, value, effect).
    pub taints: Vec<(String, String, String)>,
}

/// The simulated pods' default address range.
pub const DEFAULT_POD_CIDR: &str = "10.244.0.0/16";

/// The simulation: its nodes and what its kubelet recorded.
pub struct NodeSim {
    client: Client,
    /// The range simulated pods get addresses from: each node a `/24` of it, in order.
    pod_cidr: vt_net::Cidr,
    nodes: Mutex<Vec<String>>,
    logs: Mutex<HashMap<String, Vec<String>>>,
    ips: Mutex<HashMap<String, u32>>,
}

fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl NodeSim {
    /// A simulation driving `client`'s cluster; nodes come with [`NodeSim::add_node`].
    pub fn new(client: Client) -> Arc<NodeSim> {
        NodeSim::with_pod_cidr(client, DEFAULT_POD_CIDR.parse().expect("valid default range"))
    }

    /// A simulation whose pods get addresses from `pod_cidr` (an IPv4 range of `/24` or
    /// wider; a range in `127.0.0.0/8` makes every pod address one a test can bind, so a
    /// socket on a pod's address *is* that pod).
    pub fn with_pod_cidr(client: Client, pod_cidr: vt_net::Cidr) -> Arc<NodeSim> {
        Arc::new(NodeSim {
            client,
            pod_cidr,
            nodes: Mutex::new(Vec::new()),
            logs: Mutex::new(HashMap::new()),
            ips: Mutex::new(HashMap::new()),
        })
    }

    /// Starts the scheduler and the kubelet (and the `kata` RuntimeClass); returns at once.
    pub async fn start(self: &Arc<Self>) -> Result<(), kube::Error> {
        let rcs: Api<RuntimeClass> = Api::all(self.client.clone());
        rcs.patch(
            "kata",
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "kata"}, "handler": "kata"})),
        )
        .await?;
        // Existing simulated nodes (a restart) are ours again.
        let nodes: Api<Node> = Api::all(self.client.clone());
        let existing = nodes.list(&kube::api::ListParams::default().labels(&format!("{SIMULATED_LABEL}=true"))).await?;
        {
            let mut mine = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
            for n in existing {
                if !mine.contains(&n.name_any()) {
                    mine.push(n.name_any());
                }
            }
        }
        tokio::spawn(scheduler::run(self.clone()));
        tokio::spawn(kubelet::run(self.clone()));
        tokio::spawn(storage::run(self.clone()));
        Ok(())
    }

    /// Creates (or updates) a simulated node.
    pub async fn add_node(&self, spec: &NodeSpec) -> Result<(), kube::Error> {
        let index = {
            let mut mine = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
            if !mine.contains(&spec.name) {
                mine.push(spec.name.clone());
            }
            mine.iter().position(|n| *n == spec.name).unwrap_or(0)
        };
        let mut labels: BTreeMap<String, String> = BTreeMap::from([
            (SIMULATED_LABEL.into(), "true".into()),
            ("kubernetes.io/hostname".into(), spec.name.clone()),
            ("kubernetes.io/os".into(), "linux".into()),
            ("kubernetes.io/arch".into(), "amd64".into()),
            ("node.kubernetes.io/instance-type".into(), "simulated".into()),
        ]);
        labels.extend(spec.labels.clone());
        let taints: Vec<_> = spec.taints.iter().map(|(k, v, e)| json!({"key": k, "value": v, "effect": e})).collect();
        let ip = format!("10.240.{}.{}", (index / 250) % 250, index % 250 + 1);
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": spec.name, "labels": labels,
                "annotations": {"vt.dev/simulation": "this node is simulated by vt; it runs no containers"}},
            "spec": {"taints": taints, "podCIDR": format!("{}/24", self.node_subnet(index))},
        });
        let nodes: Api<Node> = Api::all(self.client.clone());
        let pp = PatchParams::apply(MANAGER).force();
        nodes.patch(&spec.name, &pp, &Patch::Apply(node)).await?;
        let t = now();
        let status = json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": spec.name},
            "status": {
                "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"},
                "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"},
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "SimulatedKubeletReady",
                     "message": "vt's simulated kubelet is posting ready status", "lastHeartbeatTime": t, "lastTransitionTime": t},
                    {"type": "MemoryPressure", "status": "False", "reason": "Simulated", "lastHeartbeatTime": t, "lastTransitionTime": t},
                    {"type": "DiskPressure", "status": "False", "reason": "Simulated", "lastHeartbeatTime": t, "lastTransitionTime": t},
                    {"type": "PIDPressure", "status": "False", "reason": "Simulated", "lastHeartbeatTime": t, "lastTransitionTime": t}
                ],
                "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": spec.name}],
                "nodeInfo": {
                    "machineID": format!("sim-{}", spec.name), "systemUUID": format!("sim-{}", spec.name),
                    "bootID": format!("sim-{}", spec.name),
                    "kernelVersion": "simulated", "osImage": "vt simulated node",
                    "containerRuntimeVersion": "simulated://1.0", "kubeletVersion": "v1.33.0-vt-sim",
                    "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"
                }
            }
        });
        nodes.patch_status(&spec.name, &pp, &Patch::Apply(status)).await?;
        Ok(())
    }

    /// Simulated nodes of one pool (`vt.dev/pool=<pool>`, tainted `vt.dev/pool=<pool>:NoSchedule`),
    /// `count` of them, named `sim-<pool>-<i>`.
    pub async fn ensure_pool(&self, pool: &str, count: usize) -> Result<(), kube::Error> {
        for i in 0..count {
            let spec = NodeSpec {
                name: format!("sim-{pool}-{i}"),
                labels: BTreeMap::from([("vt.dev/pool".to_string(), pool.to_string())]),
                taints: vec![("vt.dev/pool".into(), pool.into(), "NoSchedule".into())],
            };
            let known = self.nodes.lock().unwrap_or_else(|p| p.into_inner()).contains(&spec.name);
            if !known {
                self.add_node(&spec).await?;
            }
        }
        Ok(())
    }

    /// Removes a pool's simulated nodes.
    pub async fn remove_pool(&self, pool: &str) -> Result<(), kube::Error> {
        let prefix = format!("sim-{pool}-");
        let names: Vec<String> = {
            let mut mine = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
            let names: Vec<String> = mine.iter().filter(|n| n.starts_with(&prefix)).cloned().collect();
            mine.retain(|n| !n.starts_with(&prefix));
            names
        };
        let nodes: Api<Node> = Api::all(self.client.clone());
        for n in names {
            match nodes.delete(&n, &Default::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The names of the simulated nodes.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The lifecycle lines recorded for a pod (`namespace/name`), as `kubectl logs` shows them.
    pub fn logs(&self, namespace: &str, pod: &str) -> Vec<String> {
        self.logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&format!("{namespace}/{pod}"))
            .cloned()
            .unwrap_or_default()
    }

    fn record(&self, namespace: &str, pod: &str, line: String) {
        let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        let entry = logs.entry(format!("{namespace}/{pod}")).or_default();
        entry.push(format!("{} [vt simulated kubelet] {line}", now()));
        // Bounded: a few lines per pod lifecycle.
        if entry.len() > 100 {
            entry.drain(..entry.len() - 100);
        }
    }

    /// Records an event about a pod, as kube-scheduler and kubelets do (core/v1 Events).
    async fn event(&self, pod: &serde_json::Value, kind: &str, reason: &str, message: &str, component: &str) {
        let ns = pod.pointer("/metadata/namespace").and_then(|v| v.as_str()).unwrap_or("default");
        let name = pod.pointer("/metadata/name").and_then(|v| v.as_str()).unwrap_or("");
        let uid = pod.pointer("/metadata/uid").and_then(|v| v.as_str()).unwrap_or("");
        let t = now();
        let ev = json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": format!("{name}."), "namespace": ns},
            "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": ns, "name": name, "uid": uid},
            "reason": reason, "message": message, "type": kind, "count": 1,
            "source": {"component": component}, "reportingComponent": component,
            "firstTimestamp": t, "lastTimestamp": t});
        let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(self.client.clone(), ns);
        if let Ok(ev) = vt_apiserver::object::from_value(ev) {
            let _ = api.create(&Default::default(), &ev).await;
        }
    }

    fn forget(&self, namespace: &str, pod: &str) {
        self.logs.lock().unwrap_or_else(|p| p.into_inner()).remove(&format!("{namespace}/{pod}"));
    }

    /// The next pod IP on a node (its `/24`).
    fn pod_ip(&self, node: &str) -> String {
        let index = self.nodes.lock().unwrap_or_else(|p| p.into_inner()).iter().position(|n| n == node).unwrap_or(0);
        let mut ips = self.ips.lock().unwrap_or_else(|p| p.into_inner());
        let next = ips.entry(node.to_string()).or_insert(1);
        *next = if *next >= 254 { 2 } else { *next + 1 };
        let subnet = u32::from(self.node_subnet(index));
        std::net::Ipv4Addr::from(subnet | *next).to_string()
    }

    /// The network address of node `index`'s `/24` in the pod range.
    fn node_subnet(&self, index: usize) -> std::net::Ipv4Addr {
        let base = match self.pod_cidr.addr() {
            std::net::IpAddr::V4(v4) => u32::from(v4),
            std::net::IpAddr::V6(_) => u32::from(std::net::Ipv4Addr::new(10, 244, 0, 0)),
        };
        let subnets = 1u32 << (24u8.saturating_sub(self.pod_cidr.prefix()).min(16));
        std::net::Ipv4Addr::from(base | ((index as u32 % subnets) << 8))
    }

    fn client(&self) -> Client {
        self.client.clone()
    }

    fn owns(&self, node: &str) -> bool {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|n| n == node)
    }
}

/// The streaming subresources of pods on simulated nodes, for the API server the simulation
/// drives: `log` returns the lifecycle lines the simulated kubelet recorded (honouring
/// `tailLines`); `exec`, `attach` and `portforward` are refused with a clear message, since
/// nothing really runs.
#[derive(Default)]
pub struct SimConnector {
    sim: std::sync::OnceLock<std::sync::Weak<NodeSim>>,
}

impl SimConnector {
    /// A connector to attach a simulation to once it exists.
    pub fn new() -> Arc<SimConnector> {
        Arc::new(SimConnector::default())
    }

    /// Serves the pods of `sim`.
    pub fn attach(&self, sim: &Arc<NodeSim>) {
        let _ = self.sim.set(Arc::downgrade(sim));
    }
}

fn status_response(code: u16, reason: &str, message: &str) -> http::Response<vt_apiserver::body::Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code});
    vt_apiserver::json_response(http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::BAD_REQUEST), &body)
}

impl vt_apiserver::PodConnector for SimConnector {
    fn connect<'a>(
        &'a self,
        pod: &'a serde_json::Value,
        subresource: &'a str,
        req: http::Request<bytes::Bytes>,
    ) -> futures::future::BoxFuture<'a, http::Response<vt_apiserver::body::Body>> {
        Box::pin(async move {
            let ns = pod.pointer("/metadata/namespace").and_then(|v| v.as_str()).unwrap_or("");
            let name = pod.pointer("/metadata/name").and_then(|v| v.as_str()).unwrap_or("");
            let node = pod.pointer("/spec/nodeName").and_then(|v| v.as_str()).unwrap_or("");
            let Some(sim) = self.sim.get().and_then(std::sync::Weak::upgrade) else {
                return status_response(503, "ServiceUnavailable", "the node simulation is not running");
            };
            if !sim.owns(node) {
                return status_response(400, "BadRequest", &format!("node {node:?} of pod {name} is not reachable"));
            }
            if subresource != "log" {
                return status_response(
                    400,
                    "BadRequest",
                    &format!(
                        "{subresource} is not supported for pod {name}: {node} is a vt simulated node, where no container really runs"
                    ),
                );
            }
            let tail = req
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|kv| kv.strip_prefix("tailLines="))
                .and_then(|n| n.parse::<usize>().ok());
            let lines = sim.logs(ns, name);
            let lines = match tail {
                Some(n) => &lines[lines.len().saturating_sub(n)..],
                None => &lines[..],
            };
            let mut text = lines.join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            http::Response::builder()
                .status(200)
                .header(http::header::CONTENT_TYPE, "text/plain")
                .body(vt_apiserver::body::full(text))
                .unwrap_or_else(|_| status_response(500, "InternalError", "response"))
        })
    }
}
