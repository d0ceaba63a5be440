//! The tenant's cluster DNS, fed from the syncer's own watches of its virtual Services and
//! Endpoints (no polling: a change is in the zone as soon as the watch delivers it), and the
//! DNS settings of its pods on the host.

use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::ResourceExt;
use kube::runtime::watcher;
use serde_json::{Map, Value, json};
use vt_dns::{EndpointRecord, PortRecord, Protocol, ServiceRecord, Zone};

use crate::CLUSTER_DOMAIN;

/// A Service as its zone needs it.
pub(crate) fn service_record(s: &Service) -> ServiceRecord {
    let spec = s.spec.clone().unwrap_or_default();
    let external_name: Option<Box<str>> =
        (spec.type_.as_deref() == Some("ExternalName")).then(|| spec.external_name.clone()).flatten().map(Into::into);
    let mut ips: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
    if ips.is_empty()
        && let Some(ip) = &spec.cluster_ip
    {
        ips.push(ip.clone());
    }
    let cluster_ips: Box<[std::net::IpAddr]> = if external_name.is_some() {
        Box::new([])
    } else {
        ips.iter().filter(|i| *i != "None").filter_map(|i| vt_net::parse(i).ok()).collect()
    };
    let ports = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            Some(PortRecord {
                name: p.name.unwrap_or_default().into(),
                protocol: Protocol::parse(p.protocol.as_deref().unwrap_or("TCP")),
                port: u16::try_from(p.port).ok()?,
            })
        })
        .collect();
    ServiceRecord {
        cluster_ips,
        external_name,
        ports,
        publish_not_ready: spec.publish_not_ready_addresses == Some(true),
    }
}

/// The addresses of an Endpoints object, ready and not.
pub(crate) fn endpoint_records(e: &Endpoints) -> Vec<EndpointRecord> {
    let mut out = Vec::new();
    for subset in e.subsets.iter().flatten() {
        for (list, ready) in [(&subset.addresses, true), (&subset.not_ready_addresses, false)] {
            for a in list.iter().flatten() {
                if let Ok(ip) = vt_net::parse(&a.ip) {
                    out.push(EndpointRecord { ip, hostname: a.hostname.clone().map(Into::into), ready });
                }
            }
        }
    }
    out
}

/// Follows one kind's watch events into the zone, rebuilding it whole after a re-list.
pub(crate) struct Feed<R> {
    relist: Option<Vec<((String, String), R)>>,
}

impl<R> Default for Feed<R> {
    fn default() -> Self {
        Feed { relist: None }
    }
}

impl Feed<ServiceRecord> {
    pub(crate) fn services(&mut self, zone: &Zone, ev: &watcher::Event<Service>) {
        let key = |s: &Service| (s.namespace().unwrap_or_default(), s.name_any());
        match ev {
            watcher::Event::Apply(s) => zone.set_service(&key(s).0, &key(s).1, Some(service_record(s))),
            watcher::Event::Delete(s) => zone.set_service(&key(s).0, &key(s).1, None),
            watcher::Event::Init => self.relist = Some(Vec::new()),
            watcher::Event::InitApply(s) => {
                if let Some(r) = self.relist.as_mut() {
                    r.push((key(s), service_record(s)));
                }
            }
            watcher::Event::InitDone => {
                if let Some(all) = self.relist.take() {
                    zone.replace_services(all);
                }
            }
        }
    }
}

impl Feed<Vec<EndpointRecord>> {
    pub(crate) fn endpoints(&mut self, zone: &Zone, ev: &watcher::Event<Endpoints>) {
        let key = |e: &Endpoints| (e.namespace().unwrap_or_default(), e.name_any());
        match ev {
            watcher::Event::Apply(e) => zone.set_endpoints(&key(e).0, &key(e).1, Some(endpoint_records(e))),
            watcher::Event::Delete(e) => zone.set_endpoints(&key(e).0, &key(e).1, None),
            watcher::Event::Init => self.relist = Some(Vec::new()),
            watcher::Event::InitApply(e) => {
                if let Some(r) = self.relist.as_mut() {
                    r.push((key(e), endpoint_records(e)));
                }
            }
            watcher::Event::InitDone => {
                if let Some(all) = self.relist.take() {
                    zone.replace_endpoints(all);
                }
            }
        }
    }
}

/// The kubelet's limits on a pod's resolver settings.
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

/// A host pod's DNS: a pod that resolves cluster names (`dnsPolicy` `ClusterFirst`, the
/// default, or `ClusterFirstWithHostNet`) gets the tenant's DNS server instead of the host's —
/// `dnsPolicy: None` with the tenant's search path (its virtual namespace first), `ndots:5`, and
/// the pod's own `dnsConfig` merged as the kubelet merges it (nameservers and searches after
/// ours, options by name, the pod's winning). `Default` (the node's resolver) and `None` (the
/// pod's own settings) stay as written.
pub(crate) fn rewrite(spec: &mut Map<String, Value>, namespace: &str, server: &str) {
    let policy = spec.get("dnsPolicy").and_then(Value::as_str).unwrap_or("ClusterFirst").to_string();
    if !matches!(policy.as_str(), "ClusterFirst" | "ClusterFirstWithHostNet") {
        return;
    }
    let own = spec.get("dnsConfig").cloned().unwrap_or_else(|| json!({}));
    let strings = |k: &str| -> Vec<String> {
        own.get(k).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(String::from).collect()
    };
    let mut nameservers = vec![server.to_string()];
    for n in strings("nameservers") {
        if !nameservers.contains(&n) {
            nameservers.push(n);
        }
    }
    nameservers.truncate(MAX_NAMESERVERS);
    let mut searches =
        vec![format!("{namespace}.svc.{CLUSTER_DOMAIN}"), format!("svc.{CLUSTER_DOMAIN}"), CLUSTER_DOMAIN.to_string()];
    for s in strings("searches") {
        if !searches.contains(&s) {
            searches.push(s);
        }
    }
    searches.truncate(MAX_SEARCHES);
    let mut options: Vec<(String, Option<Value>)> = vec![("ndots".into(), Some(json!("5")))];
    for o in own.get("options").and_then(Value::as_array).into_iter().flatten() {
        let Some(name) = o.get("name").and_then(Value::as_str) else { continue };
        options.retain(|(n, _)| n != name);
        options.push((name.to_string(), o.get("value").cloned()));
    }
    let options: Vec<Value> = options
        .into_iter()
        .map(|(name, value)| match value {
            Some(v) => json!({"name": name, "value": v}),
            None => json!({"name": name}),
        })
        .collect();
    spec.insert("dnsPolicy".into(), json!("None"));
    spec.insert("dnsConfig".into(), json!({"nameservers": nameservers, "searches": searches, "options": options}));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn cluster_first_pods_resolve_through_the_tenants_dns() {
        let mut s = spec(json!({"containers": []}));
        rewrite(&mut s, "shop", "10.96.0.10");
        assert_eq!(s["dnsPolicy"], "None");
        assert_eq!(
            s["dnsConfig"],
            json!({"nameservers": ["10.96.0.10"],
                "searches": ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local"],
                "options": [{"name": "ndots", "value": "5"}]})
        );
    }

    #[test]
    fn the_pods_own_settings_merge_as_the_kubelet_merges_them() {
        let mut s = spec(json!({"dnsPolicy": "ClusterFirst", "dnsConfig": {
            "nameservers": ["1.1.1.1", "10.96.0.10"], "searches": ["corp.example", "svc.cluster.local"],
            "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}));
        rewrite(&mut s, "shop", "10.96.0.10");
        assert_eq!(s["dnsConfig"]["nameservers"], json!(["10.96.0.10", "1.1.1.1"]));
        assert_eq!(
            s["dnsConfig"]["searches"],
            json!(["shop.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example"])
        );
        assert_eq!(s["dnsConfig"]["options"], json!([{"name": "ndots", "value": "2"}, {"name": "edns0"}]));
    }

    #[test]
    fn default_and_none_are_kept() {
        for policy in ["Default", "None"] {
            let mut s = spec(json!({"dnsPolicy": policy, "dnsConfig": {"nameservers": ["9.9.9.9"]}}));
            let before = s.clone();
            rewrite(&mut s, "shop", "10.96.0.10");
            assert_eq!(s, before, "{policy}");
        }
    }

    #[test]
    fn services_and_endpoints_become_zone_records() {
        let svc: Service = vt_apiserver::object::from_value(json!({"metadata": {"name": "pg", "namespace": "db"},
            "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}], "publishNotReadyAddresses": true}}))
        .unwrap();
        let r = service_record(&svc);
        assert!(r.cluster_ips.is_empty() && r.publish_not_ready);
        assert_eq!(r.ports[0].protocol, Protocol::Tcp);
        let ext: Service = vt_apiserver::object::from_value(json!({"metadata": {"name": "e", "namespace": "d"},
            "spec": {"type": "ExternalName", "externalName": "api.example.com"}}))
        .unwrap();
        assert_eq!(service_record(&ext).external_name.as_deref(), Some("api.example.com"));
        let ep: Endpoints = vt_apiserver::object::from_value(json!({"metadata": {"name": "pg", "namespace": "db"},
            "subsets": [{"addresses": [{"ip": "10.244.1.5", "hostname": "pg-0"}],
                "notReadyAddresses": [{"ip": "::ffff:10.244.1.6"}]}]}))
        .unwrap();
        let e = endpoint_records(&ep);
        assert_eq!(e.len(), 2);
        assert!(e[0].ready && e[0].hostname.as_deref() == Some("pg-0"));
        assert_eq!(e[1].ip, "10.244.1.6".parse::<std::net::IpAddr>().unwrap(), "canonical");
        assert!(!e[1].ready);
    }
}
