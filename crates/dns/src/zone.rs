//! One tenant's cluster zone: the records of the Kubernetes DNS specification (kubernetes/dns
//! `docs/specification.md`, schema 1.0.1) computed from the tenant's Services and Endpoints as
//! the syncer sees them. Lookups are pure and in memory; names compare case-insensitively and
//! answers carry the question's own spelling.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::RwLock;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// The schema version `dns-version.<zone>` answers.
pub const SCHEMA_VERSION: &str = "1.0.1";
/// The TTL of cluster records (CoreDNS's kubernetes plugin uses 5 s too: they change often).
pub const TTL: u32 = 5;

/// A Service as DNS needs it (boxed slices and strings: a manager holds thousands of zones).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceRecord {
    /// Its cluster IPs (none: headless, or an ExternalName).
    pub cluster_ips: Box<[IpAddr]>,
    /// `spec.externalName` of an ExternalName Service.
    pub external_name: Option<Box<str>>,
    /// Its ports.
    pub ports: Box<[PortRecord]>,
    /// `spec.publishNotReadyAddresses`: not-ready endpoints are published too.
    pub publish_not_ready: bool,
}

impl ServiceRecord {
    fn headless(&self) -> bool {
        self.cluster_ips.is_empty() && self.external_name.is_none()
    }
}

/// A Service port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortRecord {
    /// Its name (unnamed ports have no SRV record).
    pub name: Box<str>,
    /// Its protocol.
    pub protocol: Protocol,
    /// The port number.
    pub port: u16,
}

/// A port's protocol (the `_<proto>` label of SRV names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// TCP (Kubernetes' default).
    #[default]
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// The protocol a Service port names (`TCP` if unset or unknown).
    pub fn parse(s: &str) -> Protocol {
        match s.to_ascii_uppercase().as_str() {
            "UDP" => Protocol::Udp,
            "SCTP" => Protocol::Sctp,
            _ => Protocol::Tcp,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One address of a Service's Endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointRecord {
    /// The address (a pod's).
    pub ip: IpAddr,
    /// The endpoint's `hostname` (a pod's `hostname` with a matching `subdomain`).
    pub hostname: Option<Box<str>>,
    /// Whether it is ready.
    pub ready: bool,
}

impl EndpointRecord {
    /// The endpoint's name under its Service: its hostname, else its address with dashes (the
    /// system-assigned identifier the specification allows, as CoreDNS names them).
    fn label(&self) -> String {
        match &self.hostname {
            Some(h) if !h.is_empty() => h.to_ascii_lowercase(),
            _ => dashed(self.ip),
        }
    }
}

fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

type Key = (Box<str>, Box<str>);

fn key(namespace: &str, name: &str) -> Key {
    (namespace.to_ascii_lowercase().into(), name.to_ascii_lowercase().into())
}

#[derive(Default)]
struct Data {
    services: HashMap<Key, ServiceRecord>,
    endpoints: HashMap<Key, Box<[EndpointRecord]>>,
    /// Where `kubernetes.default.svc` leads: the tenant's API server.
    api: Vec<IpAddr>,
}

/// What a lookup found.
#[derive(Debug, PartialEq)]
pub enum Lookup {
    /// The zone's answer: records (none: the name exists without records of that type).
    Found {
        /// The answer section.
        answers: Vec<Record>,
        /// The additional section (addresses of SRV targets).
        additionals: Vec<Record>,
    },
    /// No such name in the zone.
    NxDomain,
    /// An ExternalName: a CNAME to a name outside the zone, whose records follow.
    Alias {
        /// The CNAME record.
        cname: Box<Record>,
        /// Its target.
        target: Name,
    },
    /// Not a name of this zone.
    Elsewhere,
}

/// One tenant's cluster zone.
pub struct Zone {
    domain: Vec<String>,
    data: RwLock<Data>,
}

fn labels_of(name: &Name) -> Vec<String> {
    name.iter().map(|l| String::from_utf8_lossy(l).to_ascii_lowercase()).collect()
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap_or_else(|_| Name::root())
}

impl Zone {
    /// An empty zone for the cluster domain `domain` (e.g. `cluster.local`).
    pub fn new(domain: &str) -> Zone {
        let domain = domain.trim_end_matches('.').split('.').map(str::to_ascii_lowercase).collect();
        Zone { domain, data: RwLock::new(Data::default()) }
    }

    /// The cluster domain.
    pub fn domain(&self) -> String {
        self.domain.join(".")
    }

    fn fqdn(&self, rel: &str) -> Name {
        let mut s = String::new();
        if !rel.is_empty() {
            s.push_str(rel);
            s.push('.');
        }
        s.push_str(&self.domain());
        s.push('.');
        name(&s)
    }

    /// Sets (or with `None` removes) the Service `namespace/name`.
    pub fn set_service(&self, namespace: &str, name: &str, record: Option<ServiceRecord>) {
        let key = key(namespace, name);
        let mut d = self.data.write().unwrap_or_else(|p| p.into_inner());
        match record {
            Some(r) => _ = d.services.insert(key, r),
            None => _ = d.services.remove(&key),
        }
    }

    /// Sets (or with `None` removes) the Endpoints of `namespace/name`.
    pub fn set_endpoints(&self, namespace: &str, name: &str, records: Option<Vec<EndpointRecord>>) {
        let key = key(namespace, name);
        let mut d = self.data.write().unwrap_or_else(|p| p.into_inner());
        match records {
            Some(r) => _ = d.endpoints.insert(key, r.into_boxed_slice()),
            None => _ = d.endpoints.remove(&key),
        }
    }

    /// Replaces every Service (after a re-list).
    pub fn replace_services(&self, all: Vec<((String, String), ServiceRecord)>) {
        let map = all.into_iter().map(|((ns, n), r)| (key(&ns, &n), r)).collect();
        self.data.write().unwrap_or_else(|p| p.into_inner()).services = map;
    }

    /// Replaces every Endpoints (after a re-list).
    pub fn replace_endpoints(&self, all: Vec<((String, String), Vec<EndpointRecord>)>) {
        let map = all.into_iter().map(|((ns, n), r)| (key(&ns, &n), r.into_boxed_slice())).collect();
        self.data.write().unwrap_or_else(|p| p.into_inner()).endpoints = map;
    }

    /// Sets where `kubernetes.default.svc` leads (the tenant's API server).
    pub fn set_api(&self, addresses: Vec<IpAddr>) {
        self.data.write().unwrap_or_else(|p| p.into_inner()).api = addresses;
    }

    /// How many Services and endpoint addresses the zone holds.
    pub fn counts(&self) -> (usize, usize) {
        let d = self.data.read().unwrap_or_else(|p| p.into_inner());
        (d.services.len(), d.endpoints.values().map(|e| e.len()).sum())
    }

    /// The zone's SOA record (for the authority section of negative answers).
    pub fn soa(&self) -> Record {
        let apex = self.fqdn("");
        let soa = SOA::new(self.fqdn("ns.dns"), self.fqdn("hostmaster"), 1, 7200, 1800, 86400, TTL);
        Record::from_rdata(apex, TTL, RData::SOA(soa))
    }

    /// Whether `qname` is in this zone (or is a reverse name).
    pub fn owns(&self, qname: &Name) -> bool {
        let labels = labels_of(qname);
        labels.len() >= self.domain.len() && labels[labels.len() - self.domain.len()..] == self.domain[..]
    }

    /// Looks up `qname`/`qtype` in the zone.
    pub fn lookup(&self, qname: &Name, qtype: RecordType) -> Lookup {
        let labels = labels_of(qname);
        if let Some(ip) = reverse(&labels) {
            return self.ptr(qname, ip, qtype);
        }
        if !self.owns(qname) {
            return Lookup::Elsewhere;
        }
        let rel: Vec<&str> = labels[..labels.len() - self.domain.len()].iter().map(String::as_str).collect();
        let d = self.data.read().unwrap_or_else(|p| p.into_inner());
        let found = |answers: Vec<Record>| Lookup::Found { answers, additionals: Vec::new() };
        match rel.as_slice() {
            [] => match qtype {
                RecordType::SOA | RecordType::ANY => found(vec![self.soa()]),
                _ => found(Vec::new()),
            },
            ["dns-version"] => match qtype {
                RecordType::TXT | RecordType::ANY => found(vec![Record::from_rdata(
                    qname.clone(),
                    28800,
                    RData::TXT(TXT::new(vec![SCHEMA_VERSION.into()])),
                )]),
                _ => found(Vec::new()),
            },
            ["svc"] | ["pod"] => found(Vec::new()),
            [ns, "svc"] => {
                if d.services.keys().any(|(n, _)| &**n == *ns) {
                    found(Vec::new())
                } else {
                    Lookup::NxDomain
                }
            }
            [svc, ns, "svc"] => self.service(&d, qname, ns, svc, qtype),
            [host, svc, ns, "svc"] => self.endpoint_host(&d, qname, ns, svc, host, qtype),
            [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
                self.srv(&d, qname, ns, svc, &port[1..], &proto[1..], qtype)
            }
            [ip, _ns, "pod"] => match pod_ip(ip) {
                Some(ip) => found(addresses(qname, &[ip], qtype)),
                None => Lookup::NxDomain,
            },
            _ => Lookup::NxDomain,
        }
    }

    fn service(&self, d: &Data, qname: &Name, ns: &str, svc: &str, qtype: RecordType) -> Lookup {
        if ns == "default" && svc == "kubernetes" && !d.api.is_empty() {
            return Lookup::Found { answers: addresses(qname, &d.api, qtype), additionals: Vec::new() };
        }
        let Some(s) = d.services.get(&key(ns, svc)) else { return Lookup::NxDomain };
        if let Some(ext) = &s.external_name {
            let target = name(&format!("{}.", ext.trim_end_matches('.')));
            let cname = Record::from_rdata(qname.clone(), TTL, RData::CNAME(CNAME(target.clone())));
            return match qtype {
                RecordType::CNAME | RecordType::ANY => Lookup::Found { answers: vec![cname], additionals: Vec::new() },
                _ => Lookup::Alias { cname: Box::new(cname), target },
            };
        }
        let ips: Vec<IpAddr> = if s.headless() {
            let ready: Vec<IpAddr> = published(d, ns, svc, s).map(|e| e.ip).collect();
            if ready.is_empty() {
                return Lookup::NxDomain;
            }
            ready
        } else {
            s.cluster_ips.to_vec()
        };
        Lookup::Found { answers: addresses(qname, &ips, qtype), additionals: Vec::new() }
    }

    fn endpoint_host(&self, d: &Data, qname: &Name, ns: &str, svc: &str, host: &str, qtype: RecordType) -> Lookup {
        let Some(s) = d.services.get(&key(ns, svc)) else { return Lookup::NxDomain };
        if !s.headless() {
            return Lookup::NxDomain;
        }
        let ips: Vec<IpAddr> = published(d, ns, svc, s).filter(|e| e.label() == host).map(|e| e.ip).collect();
        if ips.is_empty() {
            return Lookup::NxDomain;
        }
        Lookup::Found { answers: addresses(qname, &ips, qtype), additionals: Vec::new() }
    }

    #[allow(clippy::too_many_arguments)]
    fn srv(&self, d: &Data, qname: &Name, ns: &str, svc: &str, port: &str, proto: &str, qtype: RecordType) -> Lookup {
        let Some(s) = d.services.get(&key(ns, svc)) else { return Lookup::NxDomain };
        let ports: Vec<&PortRecord> = s
            .ports
            .iter()
            .filter(|p| !p.name.is_empty() && p.name.eq_ignore_ascii_case(port) && p.protocol.label() == proto)
            .collect();
        if ports.is_empty() || s.external_name.is_some() {
            return Lookup::NxDomain;
        }
        if !matches!(qtype, RecordType::SRV | RecordType::ANY) {
            return Lookup::Found { answers: Vec::new(), additionals: Vec::new() };
        }
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        let service_name = self.fqdn(&format!("{svc}.{ns}.svc"));
        if s.headless() {
            let eps: Vec<&EndpointRecord> = published(d, ns, svc, s).collect();
            let weight = (100 / eps.len().max(1)) as u16;
            for e in eps {
                let target = self.fqdn(&format!("{}.{svc}.{ns}.svc", e.label()));
                for p in &ports {
                    answers.push(Record::from_rdata(
                        qname.clone(),
                        TTL,
                        RData::SRV(SRV::new(0, weight, p.port, target.clone())),
                    ));
                }
                additionals.extend(addresses(&target, &[e.ip], RecordType::ANY));
            }
        } else {
            for p in &ports {
                answers.push(Record::from_rdata(
                    qname.clone(),
                    TTL,
                    RData::SRV(SRV::new(0, 100, p.port, service_name.clone())),
                ));
            }
            additionals.extend(addresses(&service_name, &s.cluster_ips, RecordType::ANY));
        }
        Lookup::Found { answers, additionals }
    }

    fn ptr(&self, qname: &Name, ip: IpAddr, qtype: RecordType) -> Lookup {
        let d = self.data.read().unwrap_or_else(|p| p.into_inner());
        let mut targets = Vec::new();
        if d.api.contains(&ip) {
            targets.push(self.fqdn("kubernetes.default.svc"));
        }
        for ((ns, svc), s) in &d.services {
            if s.cluster_ips.contains(&ip) {
                targets.push(self.fqdn(&format!("{svc}.{ns}.svc")));
            } else if s.headless() {
                for e in published(&d, ns, svc, s).filter(|e| e.ip == ip) {
                    targets.push(self.fqdn(&format!("{}.{svc}.{ns}.svc", e.label())));
                }
            }
        }
        if targets.is_empty() {
            // Not one of the tenant's addresses: the caller decides (never another tenant's).
            return Lookup::Elsewhere;
        }
        targets.sort();
        targets.dedup();
        let answers = match qtype {
            RecordType::PTR | RecordType::ANY => {
                targets.into_iter().map(|t| Record::from_rdata(qname.clone(), TTL, RData::PTR(PTR(t)))).collect()
            }
            _ => Vec::new(),
        };
        Lookup::Found { answers, additionals: Vec::new() }
    }
}

/// The endpoints a headless Service publishes: ready ones, or all with
/// `publishNotReadyAddresses`.
fn published<'a>(d: &'a Data, ns: &str, svc: &str, s: &'a ServiceRecord) -> impl Iterator<Item = &'a EndpointRecord> {
    d.endpoints.get(&key(ns, svc)).into_iter().flat_map(|e| e.iter()).filter(|e| e.ready || s.publish_not_ready)
}

/// A/AAAA records of `ips` for `qtype` (both for ANY).
fn addresses(owner: &Name, ips: &[IpAddr], qtype: RecordType) -> Vec<Record> {
    ips.iter()
        .filter_map(|ip| match (ip, qtype) {
            (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => {
                Some(Record::from_rdata(owner.clone(), TTL, RData::A(A(*v4))))
            }
            (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => {
                Some(Record::from_rdata(owner.clone(), TTL, RData::AAAA(AAAA(*v6))))
            }
            _ => None,
        })
        .collect()
}

/// `a-b-c-d` (or an IPv6 address with `-` for `:`) as the address it spells.
fn pod_ip(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label.replace('-', ":").parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// The address a reverse name (`d.c.b.a.in-addr.arpa`, nibbles `.ip6.arpa`) asks about.
pub fn reverse(labels: &[String]) -> Option<IpAddr> {
    match labels {
        [d, c, b, a, in_addr, arpa] if in_addr == "in-addr" && arpa == "arpa" => {
            let octet = |s: &str| -> Option<u8> {
                if s.len() > 1 && s.starts_with('0') {
                    return None;
                }
                s.parse().ok()
            };
            Some(IpAddr::V4(Ipv4Addr::new(octet(a)?, octet(b)?, octet(c)?, octet(d)?)))
        }
        [nibbles @ .., ip6, arpa] if ip6 == "ip6" && arpa == "arpa" && nibbles.len() == 32 => {
            let mut v: u128 = 0;
            for n in nibbles.iter().rev() {
                if n.len() != 1 {
                    return None;
                }
                v = (v << 4) | u128::from(u8::from_str_radix(n, 16).ok()?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(v)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
