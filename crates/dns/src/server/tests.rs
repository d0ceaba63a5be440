use std::collections::HashMap;

use hickory_proto::rr::Name;
use rand::RngExt;

use super::*;
use crate::zone::{ServiceRecord, Zone};

/// Two tenants' pods: 127.77.0.2 is acme's, 127.77.1.2 is beta's.
struct Pods(HashMap<IpAddr, (String, Arc<Zone>)>);

impl Attribution for Pods {
    fn zone_for(&self, source: IpAddr) -> Option<(String, Arc<Zone>)> {
        self.0.get(&source).cloned()
    }
}

fn server() -> Arc<Server> {
    let acme = Arc::new(Zone::new("cluster.local"));
    acme.set_service(
        "default",
        "web",
        Some(ServiceRecord { cluster_ips: vec!["10.128.0.10".parse().unwrap()].into(), ..Default::default() }),
    );
    let beta = Arc::new(Zone::new("cluster.local"));
    beta.set_service(
        "default",
        "secret",
        Some(ServiceRecord { cluster_ips: vec!["10.128.0.99".parse().unwrap()].into(), ..Default::default() }),
    );
    let pods = Pods(HashMap::from([
        ("127.77.0.2".parse().unwrap(), ("acme".to_string(), acme)),
        ("127.77.1.2".parse().unwrap(), ("beta".to_string(), beta)),
    ]));
    // No upstream at all: forwarding fails fast (SERVFAIL).
    Server::new(Arc::new(pods), Forwarder::new(Vec::new(), 16))
}

fn query(name: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(7).set_message_type(MessageType::Query).set_op_code(OpCode::Query).set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m.to_vec().unwrap()
}

async fn ask(s: &Server, from: &str, packet: &[u8]) -> Message {
    Message::from_vec(&s.handle(from.parse().unwrap(), packet, true).await.unwrap()).unwrap()
}

#[tokio::test]
async fn queries_are_answered_only_for_the_asking_pods_tenant() {
    let s = server();
    let a = ask(&s, "127.77.0.2", &query("web.default.svc.cluster.local.", RecordType::A)).await;
    assert_eq!(a.response_code(), ResponseCode::NoError);
    assert!(a.authoritative());
    assert_eq!(a.answers()[0].data().to_string(), "10.128.0.10");
    // Spelled as IPv4-mapped IPv6, the source is the same pod.
    let a = ask(&s, "::ffff:127.77.0.2", &query("web.default.svc.cluster.local.", RecordType::A)).await;
    assert_eq!(a.answers().len(), 1);
    // Another tenant's names do not exist for acme, however asked.
    for (name, t) in [
        ("secret.default.svc.cluster.local.", RecordType::A),
        ("SECRET.default.svc.cluster.local.", RecordType::ANY),
        ("_http._tcp.secret.default.svc.cluster.local.", RecordType::SRV),
    ] {
        let a = ask(&s, "127.77.0.2", &query(name, t)).await;
        assert_eq!(a.response_code(), ResponseCode::NXDomain, "{name}");
        assert!(a.answers().is_empty());
    }
    // Nor do its addresses: a private address not acme's is NXDOMAIN, never forwarded.
    let a = ask(&s, "127.77.0.2", &query("99.0.128.10.in-addr.arpa.", RecordType::PTR)).await;
    assert_eq!(a.response_code(), ResponseCode::NXDomain);
    assert!(a.answers().is_empty());
    // Zone transfers are refused.
    for t in [RecordType::AXFR, RecordType::IXFR] {
        let a = ask(&s, "127.77.0.2", &query("cluster.local.", t)).await;
        assert_eq!(a.response_code(), ResponseCode::Refused);
    }
    // Unknown sources get REFUSED, whatever they ask.
    for from in ["127.0.0.1", "10.0.0.1", "127.77.0.3"] {
        let a = ask(&s, from, &query("web.default.svc.cluster.local.", RecordType::A)).await;
        assert_eq!(a.response_code(), ResponseCode::Refused, "{from}");
        assert!(a.answers().is_empty());
    }
}

#[tokio::test]
async fn hostile_packets_never_panic_or_amplify() {
    let s = server();
    let mut rng = rand::rng();
    let base = query("web.default.svc.cluster.local.", RecordType::A);
    for i in 0..20_000 {
        let mut p: Vec<u8> = if i % 2 == 0 {
            let mut p = base.clone();
            for _ in 0..rng.random_range(1..6) {
                let at = rng.random_range(0..p.len());
                p[at] = rng.random();
            }
            p
        } else {
            (0..rng.random_range(0..64)).map(|_| rng.random()).collect()
        };
        if rng.random_bool(0.1) {
            p.truncate(rng.random_range(0..p.len().max(1)));
        }
        if let Some(answer) = s.handle("127.77.0.2".parse().unwrap(), &p, true).await {
            assert!(answer.len() <= 512, "a UDP answer of {} bytes without EDNS", answer.len());
            if Message::from_vec(&p).is_err() {
                assert!(answer.len() <= p.len().max(12), "an error answer larger than the query");
            }
        }
    }
    // A response is never answered (no reflection loops); other opcodes are NOTIMP.
    let mut m = Message::from_vec(&base).unwrap();
    m.set_message_type(MessageType::Response);
    assert!(s.handle("127.77.0.2".parse().unwrap(), &m.to_vec().unwrap(), true).await.is_none());
    let mut m = Message::from_vec(&base).unwrap();
    m.set_op_code(OpCode::Update);
    let a = ask(&s, "127.77.0.2", &m.to_vec().unwrap()).await;
    assert_eq!(a.response_code(), ResponseCode::NotImp);
    // Two questions: FORMERR.
    let mut m = Message::from_vec(&base).unwrap();
    m.add_query(Query::query(Name::from_ascii("x.").unwrap(), RecordType::A));
    assert_eq!(ask(&s, "127.77.0.2", &m.to_vec().unwrap()).await.response_code(), ResponseCode::FormErr);
}

#[tokio::test]
async fn large_answers_are_truncated_over_udp() {
    let zone = Arc::new(Zone::new("cluster.local"));
    zone.set_service("default", "big", Some(ServiceRecord::default()));
    let eps = (0..200)
        .map(|i| crate::zone::EndpointRecord {
            ip: IpAddr::V4(std::net::Ipv4Addr::new(10, 244, (i / 250) as u8, (i % 250) as u8 + 1)),
            hostname: None,
            ready: true,
        })
        .collect();
    zone.set_endpoints("default", "big", Some(eps));
    let pods = Pods(HashMap::from([("127.77.0.2".parse().unwrap(), ("acme".to_string(), zone))]));
    let s = Server::new(Arc::new(pods), Forwarder::new(Vec::new(), 16));
    let p = query("big.default.svc.cluster.local.", RecordType::A);
    let udp = s.handle("127.77.0.2".parse().unwrap(), &p, true).await.unwrap();
    assert!(udp.len() <= 512);
    let m = Message::from_vec(&udp).unwrap();
    assert!(m.truncated() && m.answers().is_empty());
    let tcp = Message::from_vec(&s.handle("127.77.0.2".parse().unwrap(), &p, false).await.unwrap()).unwrap();
    assert_eq!(tcp.answers().len(), 200);
}
