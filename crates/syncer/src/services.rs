//! Services: created on the host first, so the host allocates the cluster IP and node ports
//! and the virtual Service shows the same ([`HostServices`], the virtual API server's Service
//! backend); kept in step afterwards (selector, ports, type), deleted with the virtual one.
//! Endpoints of selector-less Services are copied, addresses checked.

use std::sync::Arc;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use vt_apiserver::ipalloc::{BackendError, ServiceBackend};

use crate::guard::{as_seen, pinned, unless_missing};
use crate::tenant::{Error, Result, Tenant};
use crate::translate::{self, Target};

/// The virtual API server's Service backend: the tenant's Services live on the host.
pub struct HostServices {
    host: Client,
    target: Target,
}

impl HostServices {
    /// A backend creating `target`'s Services on `host`.
    pub fn new(host: Client, target: Target) -> Arc<HostServices> {
        Arc::new(HostServices { host, target })
    }
}

/// Replaces host names in a host message by the virtual ones.
fn virtual_message(msg: &str, host_name: &str, name: &str) -> String {
    msg.replace(host_name, name)
}

impl ServiceBackend for HostServices {
    fn create<'a>(&'a self, service: &'a Value) -> BoxFuture<'a, std::result::Result<Value, BackendError>> {
        Box::pin(async move {
            let name = service.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
            let ns = service.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("").to_string();
            if crate::translate::virtual_only_service(&ns, &name) {
                // The tenant's view of its DNS server: its address is the manager's DNS Service,
                // nothing is made on the host.
                let spec = service.get("spec").cloned().unwrap_or_default();
                return Ok(json!({"clusterIP": spec.get("clusterIP").cloned().unwrap_or(Value::Null),
                    "clusterIPs": spec.get("clusterIPs").cloned().unwrap_or(Value::Null),
                    "ports": spec.get("ports").cloned().unwrap_or(Value::Null)}));
            }
            translate::check_service(service, &self.target)
                .map_err(|r| BackendError { code: 403, message: r.message })?;
            let mut desired = translate::host_service(service, &self.target);
            // A node port the tenant asked for is asked of the host.
            if let (Some(want), Some(ports)) =
                (service.pointer("/spec/ports").and_then(Value::as_array), desired["spec"]["ports"].as_array_mut())
            {
                for (p, w) in ports.iter_mut().zip(want) {
                    match w.get("nodePort").and_then(Value::as_i64).filter(|n| *n != 0) {
                        Some(np) => p["nodePort"] = json!(np),
                        None => _ = p.as_object_mut().map(|m| m.remove("nodePort")),
                    }
                }
            }
            let host_name = self.target.name(&name, &ns);
            let api: Api<Service> = Api::namespaced(self.host.clone(), &self.target.namespace);
            let svc: Service = vt_apiserver::object::from_value(desired)
                .map_err(|e| BackendError { code: 400, message: format!("invalid Service: {e}") })?;
            let created = match api.create(&PostParams::default(), &svc).await {
                Ok(s) => s,
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    // Left over from a Service deleted while the syncer was away: replace it.
                    let old =
                        api.get(&host_name).await.map_err(|e| BackendError { code: 503, message: e.to_string() })?;
                    let uid = service.pointer("/metadata/uid").and_then(Value::as_str);
                    if old.annotations().get(crate::UID_ANNOTATION).map(String::as_str) == uid {
                        old
                    } else {
                        let dp = DeleteParams {
                            preconditions: Some(Preconditions { uid: old.uid(), resource_version: None }),
                            ..Default::default()
                        };
                        let _ = api.delete(&host_name, &dp).await;
                        api.create(&PostParams::default(), &svc)
                            .await
                            .map_err(|e| BackendError { code: 503, message: e.to_string() })?
                    }
                }
                Err(kube::Error::Api(s)) => {
                    return Err(BackendError { code: s.code, message: virtual_message(&s.message, &host_name, &name) });
                }
                Err(e) => {
                    return Err(BackendError { code: 503, message: format!("the host cluster is unavailable: {e}") });
                }
            };
            Ok(vt_apiserver::object::to_value(created.spec.unwrap_or_default()).unwrap_or(Value::Null))
        })
    }

    fn delete<'a>(&'a self, service: &'a Value) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let name = service.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
            let ns = service.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
            let uid = service.pointer("/metadata/uid").and_then(Value::as_str);
            let host_name = self.target.name(name, ns);
            let api: Api<Service> = Api::namespaced(self.host.clone(), &self.target.namespace);
            if let Ok(Some(h)) = api.get_opt(&host_name).await
                && h.annotations().get(crate::UID_ANNOTATION).map(String::as_str) == uid
            {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions { uid: h.uid(), resource_version: None }),
                    ..Default::default()
                };
                let _ = api.delete(&host_name, &dp).await;
            }
        })
    }
}

/// What the host's nodes and settings tell of its network: the nodes' own addresses, the pod
/// ranges of nodes outside the tenant's pool (other tenants' and the host's pods), and the
/// host's Service ranges. Every address is canonical ([`vt_net::canonical`]), so an
/// IPv4-mapped or NAT64 spelling is the IPv4 address it carries.
#[derive(Debug, Default)]
struct HostNetwork {
    node_addresses: std::collections::BTreeSet<std::net::IpAddr>,
    foreign_pod_ranges: vt_net::CidrSet,
    service_ranges: vt_net::CidrSet,
}

impl HostNetwork {
    /// Whether a selector-less Service's endpoint may be `ip`: never loopback, link-local
    /// (metadata services), unspecified or multicast (kube's own rule for Endpoints); never a
    /// node's own address (it would expose the node's services: the kubelet, etcd on a
    /// control-plane node), an address in another pool's pod range (another tenant's pods:
    /// through a host Service the traffic comes from a node, past that tenant's
    /// NetworkPolicy), or a host Service IP (another tenant's or the host's Services).
    fn allows(&self, ip: &str) -> bool {
        let Ok(addr) = vt_net::parse(ip) else { return false };
        vt_net::kind(addr) == vt_net::Kind::Unicast
            && !self.node_addresses.contains(&addr)
            && !self.foreign_pod_ranges.contains(addr)
            && !self.service_ranges.contains(addr)
    }
}

impl Tenant {
    /// The host network as the nodes tell it (see [`HostNetwork`]).
    fn host_network(&self) -> HostNetwork {
        let mut net = HostNetwork { service_ranges: self.host.service_ranges(), ..Default::default() };
        for n in self.host.nodes() {
            let status = n.status.as_ref();
            for a in status.and_then(|s| s.addresses.as_ref()).into_iter().flatten() {
                if let Ok(ip) = vt_net::parse(&a.address) {
                    net.node_addresses.insert(ip);
                }
            }
            if self.target.owns_labels(n.labels()) {
                continue;
            }
            let spec = n.spec.as_ref();
            let ranges = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
            for cidr in ranges.iter().map(String::as_str).chain(spec.and_then(|s| s.pod_cidr.as_deref())) {
                if let Ok(r) = cidr.parse() {
                    net.foreign_pod_ranges.insert(r);
                }
            }
        }
        net
    }

    pub(crate) async fn sync_service(&self, ns: &str, name: &str) -> Result<()> {
        if crate::translate::virtual_only_service(ns, name) {
            return Ok(());
        }
        let host_name = self.target.name(name, ns);
        let virt = self.services.get(&kube::runtime::reflector::ObjectRef::new(name).within(ns));
        let api: Api<Service> = Api::namespaced(self.host.client.clone(), &self.target.namespace);
        let host = api.get_opt(&host_name).await?;
        match (virt, host) {
            (None, Some(h)) => unless_missing(api.delete(&host_name, &as_seen(&h, None)).await),
            (None, None) => Ok(()),
            (Some(v), None) => {
                // Created before the syncer's backend was in place, or deleted on the host.
                let vjson = vt_apiserver::object::to_value(v.as_ref()).unwrap_or(Value::Null);
                let backend = HostServices { host: self.host.client.clone(), target: self.target.clone() };
                backend.create(&vjson).await.map_err(|e| Error::Other(e.message))?;
                Ok(())
            }
            (Some(v), Some(h)) => {
                let huid = h.annotations().get(crate::UID_ANNOTATION).cloned();
                if huid.as_deref() != v.uid().as_deref() {
                    let _ = api.delete(&host_name, &as_seen(&h, None)).await;
                    return Err(Error::Other("replacing a stale host Service".into()));
                }
                let vjson = vt_apiserver::object::to_value(v.as_ref()).unwrap_or(Value::Null);
                if let Err(refusal) = translate::check_service(&vjson, &self.target) {
                    // Changed into something the host must not get: the host keeps the last
                    // allowed state and the tenant is told why, once.
                    let uid = v.uid().unwrap_or_default();
                    let new = self
                        .refused
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(uid.clone(), refusal.message.clone())
                        != Some(refusal.message.clone());
                    if new {
                        let involved =
                            json!({"kind": "Service", "apiVersion": "v1", "namespace": ns, "name": name, "uid": uid});
                        self.warn(involved, refusal.reason, &refusal.message).await;
                    }
                    return Ok(());
                }
                let want = translate::host_service(&vjson, &self.target);
                let have = vt_apiserver::object::to_value(&h).unwrap_or(Value::Null);
                let mut patch = json!({});
                for k in [
                    "type",
                    "selector",
                    "sessionAffinity",
                    "publishNotReadyAddresses",
                    "externalTrafficPolicy",
                    "internalTrafficPolicy",
                ] {
                    let w = want["spec"].get(k).cloned().unwrap_or(Value::Null);
                    let hv = have["spec"].get(k).cloned().unwrap_or(Value::Null);
                    if !w.is_null() && w != hv {
                        patch["spec"][k] = w;
                    } else if w.is_null() && k == "selector" && !hv.is_null() {
                        patch["spec"][k] = Value::Null;
                    }
                }
                let strip = |ports: &Value| -> Value {
                    json!(
                        ports
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|p| {
                                let mut p = p.clone();
                                if let Some(m) = p.as_object_mut() {
                                    m.remove("nodePort");
                                }
                                p
                            })
                            .collect::<Vec<_>>()
                    )
                };
                if strip(&want["spec"]["ports"]) != strip(&have["spec"]["ports"]) {
                    patch["spec"]["ports"] = want["spec"]["ports"].clone();
                }
                let labels = &want["metadata"]["labels"];
                if have["metadata"]["labels"] != *labels {
                    patch["metadata"]["labels"] = labels.clone();
                }
                let h = if patch != json!({}) {
                    api.patch(&host_name, &PatchParams::default(), &Patch::Merge(pinned(patch, &h))).await?
                } else {
                    h
                };
                // Node ports the host allocated later (a type change) show in the tenant.
                let host_ports = h.spec.as_ref().and_then(|s| s.ports.clone()).unwrap_or_default();
                let virt_ports = v.spec.as_ref().and_then(|s| s.ports.clone()).unwrap_or_default();
                let differs = host_ports.len() == virt_ports.len()
                    && host_ports
                        .iter()
                        .zip(&virt_ports)
                        .any(|(hp, vp)| hp.node_port.is_some() && hp.node_port != vp.node_port);
                if differs {
                    let ports: Vec<Value> = virt_ports
                        .iter()
                        .zip(&host_ports)
                        .map(|(vp, hp)| {
                            let mut p = vt_apiserver::object::to_value(vp).unwrap_or(Value::Null);
                            p["nodePort"] = json!(hp.node_port);
                            p
                        })
                        .collect();
                    let vapi: Api<Service> = Api::namespaced(self.virt.clone(), ns);
                    let patch = json!({"spec": {"ports": ports}});
                    vapi.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await?;
                }
                Ok(())
            }
        }
    }

    /// Copies the Endpoints of a selector-less virtual Service to its host Service.
    pub(crate) async fn sync_endpoints(&self, ns: &str, name: &str) -> Result<()> {
        if crate::translate::virtual_only_service(ns, name) {
            return Ok(());
        }
        let svc = self.services.get(&kube::runtime::reflector::ObjectRef::new(name).within(ns));
        let selectorless = svc.as_ref().is_some_and(|s| {
            s.spec.as_ref().is_none_or(|sp| sp.selector.as_ref().is_none_or(|m| m.is_empty()))
                && s.spec.as_ref().and_then(|sp| sp.type_.as_deref()) != Some("ExternalName")
        });
        let host_name = self.target.name(name, ns);
        let api: Api<Endpoints> = Api::namespaced(self.host.client.clone(), &self.target.namespace);
        let vapi: Api<Endpoints> = Api::namespaced(self.virt.clone(), ns);
        let virt = if selectorless { vapi.get_opt(name).await? } else { None };
        let Some(v) = virt else {
            // Only delete what the syncer made (a selector Service's host Endpoints are the
            // host's own).
            if let Some(h) = api.get_opt(&host_name).await?
                && h.labels().get(crate::TENANT_LABEL).is_some()
                && selectorless_host(&h)
            {
                let _ = api.delete(&host_name, &as_seen(&h, None)).await;
            }
            return Ok(());
        };
        let vjson = vt_apiserver::object::to_value(&v).unwrap_or(Value::Null);
        let mut subsets = vjson.get("subsets").cloned().unwrap_or(json!([]));
        let mut refused = Vec::new();
        let network = self.host_network();
        for s in subsets.as_array_mut().into_iter().flatten() {
            for k in ["addresses", "notReadyAddresses"] {
                if let Some(Value::Array(addrs)) = s.get_mut(k) {
                    addrs.retain(|a| {
                        let ip = a.get("ip").and_then(Value::as_str).unwrap_or("");
                        let ok = network.allows(ip);
                        if !ok {
                            refused.push(ip.to_string());
                        }
                        ok
                    });
                    for a in addrs.iter_mut() {
                        if let Some(m) = a.as_object_mut() {
                            // Object references name virtual objects: meaningless on the host.
                            m.remove("targetRef");
                            m.remove("nodeName");
                        }
                    }
                }
            }
        }
        if !refused.is_empty() {
            let involved =
                json!({"kind": "Endpoints", "apiVersion": "v1", "namespace": ns, "name": name, "uid": v.uid()});
            self.warn(
                involved,
                "EndpointsRefused",
                &format!("addresses not synced to the host: {}", refused.join(", ")),
            )
            .await;
        }
        let mut meta = translate::host_meta(&vjson, &self.target);
        if let Some(m) = meta.as_object_mut() {
            m.insert(
                "annotations".into(),
                json!({crate::NAME_ANNOTATION: name, crate::NAMESPACE_ANNOTATION: ns, "vt.dev/selectorless": "true"}),
            );
        }
        let obj = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": meta, "subsets": subsets});
        let pp = PatchParams::apply(crate::MANAGER).force();
        api.patch(&host_name, &pp, &Patch::Apply(obj)).await?;
        Ok(())
    }
}

fn selectorless_host(h: &Endpoints) -> bool {
    h.annotations().contains_key("vt.dev/selectorless")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_cannot_point_at_node_local_addresses() {
        let net = HostNetwork::default();
        for bad in ["127.0.0.1", "169.254.169.254", "0.0.0.0", "::1", "fe80::1", "224.0.0.1", "not-an-ip"] {
            assert!(!net.allows(bad), "{bad}");
        }
        // The same addresses spelled as IPv6 (IPv4-mapped, IPv4-compatible, NAT64).
        for bad in ["::ffff:127.0.0.1", "::ffff:169.254.169.254", "::127.0.0.1", "64:ff9b::a9fe:a9fe", "::ffff:0.0.0.0"]
        {
            assert!(!net.allows(bad), "{bad}");
        }
        for good in ["10.1.2.3", "192.168.0.10", "fd00::1"] {
            assert!(net.allows(good), "{good}");
        }
    }

    #[test]
    fn endpoints_cannot_point_at_nodes_or_other_pools_pods() {
        let net = HostNetwork {
            node_addresses: [vt_net::parse("10.0.0.5").unwrap()].into(),
            foreign_pod_ranges: vt_net::CidrSet::parse_list("10.244.7.0/24,fd00:10:244:7::/64").unwrap(),
            service_ranges: vt_net::CidrSet::parse_list("10.96.0.0/12").unwrap(),
        };
        for bad in [
            "10.0.0.5",
            "::ffff:10.0.0.5",
            "10.244.7.12",
            "::ffff:10.244.7.12",
            "64:ff9b::10.244.7.12",
            "10.244.7.255",
            "fd00:10:244:7::9",
            "169.254.169.254",
            "10.96.0.1",
            "::ffff:10.100.3.4",
            "x",
        ] {
            assert!(!net.allows(bad), "{bad}");
        }
        for good in ["10.0.0.6", "10.244.8.1", "10.244.6.255", "192.168.1.1", "fd00:10:244:8::9", "10.112.0.1"] {
            assert!(net.allows(good), "{good}");
        }
    }
}
