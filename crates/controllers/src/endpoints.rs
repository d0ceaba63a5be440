//! Endpoints and EndpointSlices for Services with selectors: the pods they select, ready ones
//! as addresses and the rest as not-ready addresses, with ports resolved from named target
//! ports (what kube-controller-manager's endpoints and endpointslice controllers maintain).
//! A deleted Service's Endpoints are deleted with it, as kube's endpoints controller deletes
//! them (its EndpointSlices go with it through their owner reference); after a restart,
//! Endpoints this controller wrote whose Service is gone are removed.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::util::{self, Result};

const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

struct Ctx {
    client: Client,
}

/// One Endpoints subset in the making: ready addresses, not-ready addresses, ports.
type Subset = (Vec<Value>, Vec<Value>, Vec<Value>);

fn selector_of(svc: &Service) -> Option<BTreeMap<String, String>> {
    svc.spec.as_ref()?.selector.clone().filter(|s| !s.is_empty())
}

/// Runs the controller until the client's server goes away.
pub async fn run(client: Client) {
    futures::join!(reconcile_all(client.clone()), follow_deletions(client));
}

/// The field manager of the Endpoints this controller writes.
const ENDPOINTS_MANAGER: &str = "endpoint-controller";

/// Deletes the Endpoints of Services as they are deleted, and, once the Services are listed,
/// Endpoints this controller wrote for Services that no longer exist.
async fn follow_deletions(client: Client) {
    let services: Api<Service> = Api::all(client.clone());
    let mut events = watcher(services, watcher::Config::default()).boxed();
    let mut listed: std::collections::HashSet<(String, String)> = Default::default();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Delete(svc)) => {
                let ns = svc.namespace().unwrap_or_default();
                // Unless a Service of the same name is already back (its reconcile owns them).
                let again: Api<Service> = Api::namespaced(client.clone(), &ns);
                if matches!(again.get_opt(&svc.name_any()).await, Ok(None)) {
                    delete_endpoints(&client, &ns, &svc.name_any()).await;
                }
            }
            Ok(watcher::Event::Init) => listed.clear(),
            Ok(watcher::Event::InitApply(svc)) => {
                listed.insert((svc.namespace().unwrap_or_default(), svc.name_any()));
            }
            Ok(watcher::Event::InitDone) => {
                let all: Api<Endpoints> = Api::all(client.clone());
                let Ok(eps) = all.list(&ListParams::default()).await else { continue };
                for ep in eps.items {
                    let key = (ep.namespace().unwrap_or_default(), ep.name_any());
                    let ours = ep.managed_fields().iter().any(|f| f.manager.as_deref() == Some(ENDPOINTS_MANAGER));
                    if ours && !listed.contains(&key) {
                        delete_endpoints(&client, &key.0, &key.1).await;
                    }
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(std::time::Duration::from_secs(1)).await,
        }
    }
}

async fn delete_endpoints(client: &Client, ns: &str, name: &str) {
    let api: Api<Endpoints> = Api::namespaced(client.clone(), ns);
    match api.delete(name, &Default::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => tracing::debug!(namespace = ns, name, error = %e, "could not delete a Service's Endpoints"),
    }
}

/// Keeps every Service's Endpoints and EndpointSlices.
async fn reconcile_all(client: Client) {
    let services: Api<Service> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let controller = Controller::new(services, watcher::Config::default());
    let store = controller.store();
    controller
        .watches(pods, watcher::Config::default(), move |pod: Pod| {
            let ns = pod.namespace().unwrap_or_default();
            let labels = pod.labels().clone();
            store
                .state()
                .iter()
                .filter(|s| s.namespace().as_deref() == Some(ns.as_str()))
                .filter(|s| selector_of(s).is_some_and(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v))))
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect::<Vec<_>>()
        })
        .run(reconcile, util::retry, Arc::new(Ctx { client }))
        .for_each(|_| async {})
        .await;
}

/// The port a pod serves a Service port on (a number, or a container port's name).
fn target_port(pod: &Pod, target: Option<&IntOrString>, port: i32) -> Option<i32> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(p)) => Some(*p),
        Some(IntOrString::String(name)) => pod.spec.as_ref()?.containers.iter().find_map(|c| {
            c.ports.as_ref()?.iter().find(|p| p.name.as_deref() == Some(name.as_str())).map(|p| p.container_port)
        }),
    }
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action> {
    let Some(selector) = selector_of(&svc) else { return Ok(Action::await_change()) };
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let sel = selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    let pods: Vec<Pod> = pods
        .list(&ListParams::default().labels(&sel))
        .await?
        .items
        .into_iter()
        .filter(|p| !util::terminal(p) && !util::deleting(p))
        .filter(|p| p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some_and(|ip| !ip.is_empty()))
        .collect();
    let svc_ports = svc.spec.as_ref().and_then(|s| s.ports.clone()).unwrap_or_default();
    // Endpoints: one subset per distinct port set (all pods of one template share it).
    let mut subsets: BTreeMap<String, Subset> = BTreeMap::new();
    let mut slice_eps = Vec::new();
    let mut slice_ports: BTreeMap<String, Value> = BTreeMap::new();
    for pod in &pods {
        let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default();
        let ports: Vec<Value> = svc_ports
            .iter()
            .filter_map(|p| {
                target_port(pod, p.target_port.as_ref(), p.port).map(|tp| {
                    json!({"name": p.name.clone().unwrap_or_default(), "port": tp, "protocol": p.protocol.clone().unwrap_or_else(|| "TCP".into())})
                })
            })
            .collect();
        for p in &ports {
            slice_ports.entry(p["name"].as_str().unwrap_or("").to_string()).or_insert_with(|| p.clone());
        }
        let mut address = json!({
            "ip": ip,
            "nodeName": pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            "targetRef": {"kind": "Pod", "namespace": ns, "name": pod.name_any(), "uid": pod.uid()},
        });
        // A pod whose subdomain is this Service is reachable by its hostname under it
        // (`<hostname>.<service>.<ns>.svc`, StatefulSets' stable names), as kube's
        // endpoints controller publishes it.
        let hostname = pod
            .spec
            .as_ref()
            .filter(|s| s.subdomain.as_deref() == Some(name.as_str()))
            .and_then(|s| s.hostname.clone())
            .filter(|h| !h.is_empty());
        if let Some(h) = &hostname {
            address["hostname"] = json!(h);
        }
        let key = serde_json::to_string(&ports).unwrap_or_default();
        let entry = subsets.entry(key).or_insert_with(|| (Vec::new(), Vec::new(), ports.clone()));
        let ready = util::ready(pod);
        if ready {
            entry.0.push(address);
        } else {
            entry.1.push(address);
        }
        let mut slice_ep = json!({
            "addresses": [ip],
            "conditions": {"ready": ready, "serving": ready, "terminating": false},
            "nodeName": pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            "targetRef": {"kind": "Pod", "namespace": ns, "name": pod.name_any(), "uid": pod.uid()},
        });
        if let Some(h) = hostname {
            slice_ep["hostname"] = json!(h);
        }
        slice_eps.push(slice_ep);
    }
    let subsets: Vec<Value> = subsets
        .into_values()
        .map(|(ready, not_ready, ports)| {
            let mut s = json!({"ports": ports});
            if !ready.is_empty() {
                s["addresses"] = json!(ready);
            }
            if !not_ready.is_empty() {
                s["notReadyAddresses"] = json!(not_ready);
            }
            s
        })
        .collect();
    let owner = util::controller_ref(svc.as_ref());
    let labels = svc.labels().clone();
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "subsets": subsets,
    });
    let pp = PatchParams::apply(ENDPOINTS_MANAGER).force();
    let ep_api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    ep_api.patch(&name, &pp, &Patch::Apply(endpoints)).await?;
    let mut slice_labels = labels.clone();
    slice_labels.insert("kubernetes.io/service-name".into(), name.clone());
    slice_labels.insert("endpointslice.kubernetes.io/managed-by".into(), MANAGED_BY.into());
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-vt"), "namespace": ns, "labels": slice_labels,
            "ownerReferences": [owner]},
        "addressType": "IPv4",
        "endpoints": slice_eps,
        "ports": slice_ports.into_values().collect::<Vec<_>>(),
    });
    let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    slices
        .patch(&format!("{name}-vt"), &PatchParams::apply("endpointslice-controller").force(), &Patch::Apply(slice))
        .await?;
    Ok(Action::await_change())
}
