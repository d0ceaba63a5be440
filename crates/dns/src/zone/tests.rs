//! Each record type of the Kubernetes DNS specification (kubernetes/dns
//! `docs/specification.md`, schema 1.0.1), pinned: section numbers name what each test pins.

use super::*;

fn zone() -> Zone {
    let z = Zone::new("cluster.local");
    let tcp = |name: &str, port: u16| PortRecord { name: name.into(), protocol: Protocol::Tcp, port };
    z.set_service(
        "default",
        "web",
        Some(ServiceRecord {
            cluster_ips: vec!["10.128.0.10".parse().unwrap()].into(),
            ports: vec![tcp("http", 80), tcp("", 8080)].into(),
            ..Default::default()
        }),
    );
    z.set_service("db", "pg", Some(ServiceRecord { ports: vec![tcp("postgres", 5432)].into(), ..Default::default() }));
    z.set_endpoints(
        "db",
        "pg",
        Some(vec![
            EndpointRecord { ip: "10.244.1.5".parse().unwrap(), hostname: Some("pg-0".into()), ready: true },
            EndpointRecord { ip: "10.244.1.6".parse().unwrap(), hostname: Some("pg-1".into()), ready: true },
            EndpointRecord { ip: "10.244.1.7".parse().unwrap(), hostname: Some("pg-2".into()), ready: false },
            EndpointRecord { ip: "10.244.1.8".parse().unwrap(), hostname: None, ready: true },
        ]),
    );
    z.set_service(
        "default",
        "ext",
        Some(ServiceRecord { external_name: Some("api.example.com".into()), ..Default::default() }),
    );
    z.set_service("empty", "none", Some(ServiceRecord::default()));
    z.set_api(vec!["10.0.0.5".parse().unwrap()]);
    z
}

fn q(z: &Zone, name: &str, t: RecordType) -> Lookup {
    z.lookup(&Name::from_ascii(name).unwrap(), t)
}

fn data(l: &Lookup) -> Vec<String> {
    match l {
        Lookup::Found { answers, .. } => answers.iter().map(|r| r.data().to_string()).collect(),
        other => panic!("not found: {other:?}"),
    }
}

#[test]
fn schema_version_2_2() {
    assert_eq!(data(&q(&zone(), "dns-version.cluster.local.", RecordType::TXT)), ["1.0.1"]);
}

#[test]
fn cluster_ip_service_a_2_3_1() {
    let z = zone();
    assert_eq!(data(&q(&z, "web.default.svc.cluster.local.", RecordType::A)), ["10.128.0.10"]);
    // Case-insensitive, and the answer carries the question's spelling.
    let l = q(&z, "WeB.DeFault.SVC.cluster.LOCAL.", RecordType::A);
    let Lookup::Found { answers, .. } = &l else { panic!() };
    assert_eq!(answers[0].name().to_ascii(), "WeB.DeFault.SVC.cluster.LOCAL.");
    // No AAAA: NODATA, not NXDOMAIN.
    assert_eq!(data(&q(&z, "web.default.svc.cluster.local.", RecordType::AAAA)), Vec::<String>::new());
    assert_eq!(q(&z, "nope.default.svc.cluster.local.", RecordType::A), Lookup::NxDomain);
}

#[test]
fn cluster_ip_service_srv_2_3_2() {
    let z = zone();
    let l = q(&z, "_http._tcp.web.default.svc.cluster.local.", RecordType::SRV);
    assert_eq!(data(&l), ["0 100 80 web.default.svc.cluster.local."]);
    let Lookup::Found { additionals, .. } = &l else { panic!() };
    assert_eq!(additionals[0].data().to_string(), "10.128.0.10", "the target's A in the additional section");
    // Unnamed ports have no SRV record; protocols must match.
    assert_eq!(q(&z, "__tcp.web.default.svc.cluster.local.", RecordType::SRV), Lookup::NxDomain);
    assert_eq!(q(&z, "_http._udp.web.default.svc.cluster.local.", RecordType::SRV), Lookup::NxDomain);
}

#[test]
fn cluster_ip_service_ptr_2_3_3() {
    let z = zone();
    assert_eq!(data(&q(&z, "10.0.128.10.in-addr.arpa.", RecordType::PTR)), ["web.default.svc.cluster.local."]);
    // Addresses that are not the tenant's are not answered from its zone.
    assert_eq!(q(&z, "99.0.128.10.in-addr.arpa.", RecordType::PTR), Lookup::Elsewhere);
}

#[test]
fn headless_service_a_2_4_1() {
    let z = zone();
    let mut ips = data(&q(&z, "pg.db.svc.cluster.local.", RecordType::A));
    ips.sort();
    assert_eq!(ips, ["10.244.1.5", "10.244.1.6", "10.244.1.8"], "ready endpoints only");
    assert_eq!(data(&q(&z, "pg-1.pg.db.svc.cluster.local.", RecordType::A)), ["10.244.1.6"]);
    assert_eq!(data(&q(&z, "10-244-1-8.pg.db.svc.cluster.local.", RecordType::A)), ["10.244.1.8"]);
    assert_eq!(q(&z, "pg-2.pg.db.svc.cluster.local.", RecordType::A), Lookup::NxDomain, "not ready");
    // No ready endpoint: NXDOMAIN.
    assert_eq!(q(&z, "none.empty.svc.cluster.local.", RecordType::A), Lookup::NxDomain);
    // publishNotReadyAddresses publishes them all.
    z.set_service("db", "pg", Some(ServiceRecord { publish_not_ready: true, ..Default::default() }));
    assert_eq!(data(&q(&z, "pg-2.pg.db.svc.cluster.local.", RecordType::A)), ["10.244.1.7"]);
}

#[test]
fn headless_service_srv_2_4_2() {
    let z = zone();
    let mut targets = data(&q(&z, "_postgres._tcp.pg.db.svc.cluster.local.", RecordType::SRV));
    targets.sort();
    assert_eq!(
        targets,
        [
            "0 33 5432 10-244-1-8.pg.db.svc.cluster.local.",
            "0 33 5432 pg-0.pg.db.svc.cluster.local.",
            "0 33 5432 pg-1.pg.db.svc.cluster.local.",
        ]
    );
}

#[test]
fn headless_service_ptr_2_4_3() {
    assert_eq!(data(&q(&zone(), "6.1.244.10.in-addr.arpa.", RecordType::PTR)), ["pg-1.pg.db.svc.cluster.local."]);
}

#[test]
fn external_name_2_5() {
    let z = zone();
    match q(&z, "ext.default.svc.cluster.local.", RecordType::A) {
        Lookup::Alias { cname, target } => {
            assert_eq!(cname.data().to_string(), "api.example.com.");
            assert_eq!(target.to_ascii(), "api.example.com.");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(data(&q(&z, "ext.default.svc.cluster.local.", RecordType::CNAME)), ["api.example.com."]);
}

#[test]
fn pod_records_2_6() {
    let z = zone();
    assert_eq!(data(&q(&z, "10-244-3-7.shop.pod.cluster.local.", RecordType::A)), ["10.244.3.7"]);
    assert_eq!(data(&q(&z, "fd00--7.shop.pod.cluster.local.", RecordType::AAAA)), ["fd00::7"]);
    assert_eq!(q(&z, "10-244-3.shop.pod.cluster.local.", RecordType::A), Lookup::NxDomain);
}

#[test]
fn the_tenants_own_api_server() {
    let z = zone();
    assert_eq!(data(&q(&z, "kubernetes.default.svc.cluster.local.", RecordType::A)), ["10.0.0.5"]);
    assert_eq!(data(&q(&z, "5.0.0.10.in-addr.arpa.", RecordType::PTR)), ["kubernetes.default.svc.cluster.local."]);
}

#[test]
fn names_outside_the_zone_and_wildcards() {
    let z = zone();
    assert_eq!(q(&z, "example.com.", RecordType::A), Lookup::Elsewhere);
    assert_eq!(q(&z, "*.default.svc.cluster.local.", RecordType::A), Lookup::NxDomain, "no wildcards");
    assert_eq!(q(&z, "svc.cluster.local.", RecordType::A), Lookup::Found { answers: vec![], additionals: vec![] });
    assert_eq!(
        q(&z, "default.svc.cluster.local.", RecordType::A),
        Lookup::Found { answers: vec![], additionals: vec![] }
    );
    assert_eq!(q(&z, "nons.svc.cluster.local.", RecordType::A), Lookup::NxDomain);
    assert_eq!(q(&z, "a.b.c.d.e.f.svc.cluster.local.", RecordType::A), Lookup::NxDomain);
}

#[test]
fn reverse_names_parse_strictly() {
    let l = |s: &str| s.split('.').map(String::from).collect::<Vec<_>>();
    assert_eq!(reverse(&l("4.3.2.1.in-addr.arpa")), Some("1.2.3.4".parse().unwrap()));
    assert_eq!(reverse(&l("04.3.2.1.in-addr.arpa")), None);
    assert_eq!(reverse(&l("300.3.2.1.in-addr.arpa")), None);
    let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa";
    assert_eq!(reverse(&l(v6)), Some("fd00::1".parse().unwrap()));
}
