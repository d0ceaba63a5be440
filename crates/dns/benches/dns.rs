//! DNS server benchmark: `cargo bench -p vt-dns`. One server, 1,000 tenants with 10 Services
//! each (two of them headless with three endpoints), a UDP load client in the same process
//! (this machine's two cores are shared), queries from each tenant's pod address: 70% cluster
//! names, 20% NXDOMAIN, 10% an outside name (answered by a stub upstream once, then from the
//! cache). Prints queries/s, latency p50/p99, and memory per record.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, Record, RecordType, rdata::A};
use vt_dns::{Attribution, EndpointRecord, Forwarder, PortRecord, Server, ServiceRecord, Zone};

const TENANTS: usize = 1000;

struct Pods(HashMap<IpAddr, (String, Arc<Zone>)>);

impl Attribution for Pods {
    fn zone_for(&self, source: IpAddr) -> Option<(String, Arc<Zone>)> {
        self.0.get(&source).cloned()
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn pod(t: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 80, (t / 250) as u8, (t % 250) as u8 + 1))
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id).set_message_type(MessageType::Query).set_op_code(OpCode::Query).set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

/// A stub upstream: every name is 192.0.2.1 (TTL 300).
fn stub() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = s.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
            let mut a = Message::new();
            a.set_id(q.id()).set_message_type(MessageType::Response);
            a.add_queries(q.queries().iter().cloned());
            let name = q.queries()[0].name().clone();
            a.add_answer(Record::from_rdata(name, 300, RData::A(A("192.0.2.1".parse().unwrap()))));
            let _ = s.send_to(&a.to_vec().unwrap(), from);
        }
    });
    addr
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run());
}

async fn run() {
    let before = rss_kib();
    let mut pods = HashMap::new();
    let mut records = 0usize;
    for t in 0..TENANTS {
        let z = Arc::new(Zone::new("cluster.local"));
        for s in 0..10 {
            let headless = s >= 8;
            let ip = IpAddr::V4(Ipv4Addr::new(
                10,
                128 + (t / 4000) as u8,
                ((t * 10 + s) / 250 % 250) as u8,
                ((t * 10 + s) % 250) as u8 + 1,
            ));
            z.set_service(
                "default",
                &format!("svc-{s}"),
                Some(ServiceRecord {
                    cluster_ips: if headless { Box::new([]) } else { Box::new([ip]) },
                    ports: Box::new([PortRecord { name: "http".into(), protocol: vt_dns::Protocol::Tcp, port: 80 }]),
                    ..Default::default()
                }),
            );
            records += 1;
            if headless {
                let eps: Vec<EndpointRecord> = (0..3)
                    .map(|e| EndpointRecord {
                        ip: IpAddr::V4(Ipv4Addr::new(10, 244, (t % 250) as u8, (s * 3 + e) as u8 + 1)),
                        hostname: Some(format!("svc-{s}-{e}").into()),
                        ready: true,
                    })
                    .collect();
                records += eps.len();
                z.set_endpoints("default", &format!("svc-{s}"), Some(eps));
            }
        }
        pods.insert(pod(t), (format!("vt-t{t}"), z));
    }
    let after = rss_kib();
    println!(
        "zones: {TENANTS} tenants, {records} records (Services and endpoint addresses), {:.0} bytes per record ({:.1} MiB)",
        (after.saturating_sub(before) * 1024) as f64 / records as f64,
        after.saturating_sub(before) as f64 / 1024.0
    );
    let server = Server::new(Arc::new(Pods(pods)), Forwarder::new(vec![stub()], 100_000));
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(vt_dns::serve_udp(socket, server));

    for in_flight in [16usize, 1] {
        load(addr, in_flight).await;
    }
}

/// 64 clients (tenants' pods), each with `in_flight` queries outstanding, for 5 s.
async fn load(addr: SocketAddr, in_flight: usize) {
    // Clients: 64 sockets, each a tenant's pod, each with 16 queries in flight.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..64usize {
        let (stop, done) = (stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let tenant = c * (TENANTS / 64);
            let sock = tokio::net::UdpSocket::bind(SocketAddr::new(pod(tenant), 0)).await.unwrap();
            sock.connect(addr).await.unwrap();
            let mut sent: HashMap<u16, Instant> = HashMap::new();
            let mut lat = Vec::new();
            let mut id: u16 = 0;
            let mut buf = [0u8; 2048];
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                while sent.len() < in_flight {
                    id = id.wrapping_add(1);
                    n += 1;
                    let name = match n % 10 {
                        0..=6 => format!("svc-{}.default.svc.cluster.local.", n % 10),
                        7 | 8 => format!("missing-{}.default.svc.cluster.local.", n % 7),
                        _ => format!("www{}.example.test.", n % 20),
                    };
                    sock.send(&query(id, &name)).await.unwrap();
                    sent.insert(id, Instant::now());
                }
                match tokio::time::timeout(Duration::from_millis(200), sock.recv(&mut buf)).await {
                    Ok(Ok(len)) if len >= 2 => {
                        let rid = u16::from_be_bytes([buf[0], buf[1]]);
                        if let Some(t) = sent.remove(&rid) {
                            lat.push(t.elapsed().as_secs_f64() * 1e6);
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => sent.clear(),
                }
            }
            lat
        }));
    }
    // Warm up (fills the forwarding cache), then measure.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d0 = done.load(Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let d1 = done.load(Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut lat: Vec<f64> = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
    println!(
        "load: {:.0} queries/s (64 pods of 64 tenants, {in_flight} in flight each; 70% cluster names, 20% NXDOMAIN, 10% forwarded, cached); latency p50 {:.0} µs, p99 {:.0} µs",
        (d1 - d0) as f64 / secs,
        p(0.5),
        p(0.99)
    );
}
