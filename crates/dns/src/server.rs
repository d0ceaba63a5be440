//! The DNS server: UDP and TCP listeners, attribution of each query to a tenant by its source
//! address, answers from the tenant's zone or its upstream resolvers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;

use crate::forward::Forwarder;
use crate::zone::{Lookup, Zone, reverse};

/// The largest UDP answer sent (the DNS flag day 2020 default), whatever a client offers.
const MAX_UDP: usize = 1232;
/// Forwarded queries in flight at once (beyond: SERVFAIL at once).
const MAX_FORWARDS: usize = 1024;
/// TCP connections at once (beyond: closed at once).
const MAX_TCP: usize = 512;
/// How long a TCP connection may sit without a query.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Which tenant a query belongs to, from its source address only.
pub trait Attribution: Send + Sync {
    /// The tenant (a stable name) and cluster zone of the pod with address `source`, if one has
    /// it.
    fn zone_for(&self, source: IpAddr) -> Option<(String, Arc<Zone>)>;
}

/// The DNS server of a manager.
pub struct Server {
    attribution: Arc<dyn Attribution>,
    forwarder: Forwarder,
    forwards: Semaphore,
    tcp: Arc<Semaphore>,
}

/// Whether a reverse lookup of `ip` may go upstream: only public addresses (the upstream would
/// name the host's own, and other tenants', private addresses).
fn public(ip: IpAddr) -> bool {
    let ip = vt_net::canonical(ip);
    if vt_net::kind(ip) != vt_net::Kind::Unicast {
        return false;
    }
    let private = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7", "fe80::/10"];
    !private.iter().filter_map(|c| c.parse::<vt_net::Cidr>().ok()).any(|c| c.contains(ip))
}

impl Server {
    /// A server answering for the tenants `attribution` knows, forwarding through `forwarder`.
    pub fn new(attribution: Arc<dyn Attribution>, forwarder: Forwarder) -> Arc<Server> {
        Arc::new(Server {
            attribution,
            forwarder,
            forwards: Semaphore::new(MAX_FORWARDS),
            tcp: Arc::new(Semaphore::new(MAX_TCP)),
        })
    }

    /// The forwarder.
    pub fn forwarder(&self) -> &Forwarder {
        &self.forwarder
    }

    /// The answer to one DNS message from `source` (`None`: nothing is sent back). Over UDP
    /// the answer never exceeds what the query allows (512 bytes, or its EDNS size up to 1232);
    /// a longer one is truncated (`TC`), and the client asks again over TCP.
    pub async fn handle(&self, source: IpAddr, packet: &[u8], udp: bool) -> Option<Vec<u8>> {
        let request = match Message::from_vec(packet) {
            Ok(m) => m,
            // A header we can read, of a query: FORMERR, no bigger than the header itself.
            Err(_) if packet.len() >= 12 && packet[2] & 0x80 == 0 => {
                let id = u16::from_be_bytes([packet[0], packet[1]]);
                return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr).to_vec().ok();
            }
            Err(_) => return None,
        };
        if request.message_type() != MessageType::Query {
            return None;
        }
        let mut response = Message::new();
        response
            .set_id(request.id())
            .set_message_type(MessageType::Response)
            .set_op_code(request.op_code())
            .set_recursion_desired(request.recursion_desired())
            .set_recursion_available(true);
        if let Some(edns) = request.extensions() {
            let mut ours = Edns::new();
            ours.set_max_payload(MAX_UDP as u16);
            ours.set_dnssec_ok(edns.flags().dnssec_ok);
            response.set_edns(ours);
        }
        let limit = if udp {
            request.extensions().as_ref().map(|e| (e.max_payload() as usize).clamp(512, MAX_UDP)).unwrap_or(512)
        } else {
            u16::MAX as usize
        };
        let code = self.answer(source, &request, &mut response).await;
        response.set_response_code(code);
        finish(response, limit)
    }

    /// Fills `response`; returns its code.
    async fn answer(&self, source: IpAddr, request: &Message, response: &mut Message) -> ResponseCode {
        if request.op_code() != OpCode::Query {
            return ResponseCode::NotImp;
        }
        let [query] = request.queries() else { return ResponseCode::FormErr };
        response.add_query(query.clone());
        let Some((tenant, zone)) = self.attribution.zone_for(vt_net::canonical(source)) else {
            return ResponseCode::Refused;
        };
        if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
            return ResponseCode::Refused;
        }
        if matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR) {
            // No zone transfers: a tenant has no use for them, and they are a map of its zone.
            return ResponseCode::Refused;
        }
        match zone.lookup(query.name(), query.query_type()) {
            Lookup::Found { answers, additionals } => {
                response.set_authoritative(true);
                if answers.is_empty() {
                    response.add_name_server(zone.soa());
                }
                response.add_answers(answers);
                response.add_additionals(additionals);
                ResponseCode::NoError
            }
            Lookup::NxDomain => {
                response.set_authoritative(true);
                response.add_name_server(zone.soa());
                ResponseCode::NXDomain
            }
            Lookup::Alias { cname, target } => {
                response.set_authoritative(true);
                response.add_answer(*cname);
                if !zone.owns(&target)
                    && let Some(chased) = self.forward(&tenant, &Query::query(target, query.query_type())).await
                {
                    response.add_answers(chased.answers().iter().cloned());
                }
                ResponseCode::NoError
            }
            Lookup::Elsewhere => {
                let labels: Vec<String> =
                    query.name().iter().map(|l| String::from_utf8_lossy(l).to_ascii_lowercase()).collect();
                if let Some(ip) = reverse(&labels)
                    && !public(ip)
                {
                    return ResponseCode::NXDomain;
                }
                match self.forward(&tenant, query).await {
                    Some(upstream) => {
                        response.add_answers(upstream.answers().iter().cloned());
                        response.add_name_servers(upstream.name_servers().iter().cloned());
                        response.add_additionals(
                            upstream.additionals().iter().filter(|r| r.record_type() != RecordType::OPT).cloned(),
                        );
                        upstream.response_code()
                    }
                    None => ResponseCode::ServFail,
                }
            }
        }
    }

    async fn forward(&self, tenant: &str, query: &Query) -> Option<Message> {
        let _permit = self.forwards.try_acquire().ok()?;
        self.forwarder.resolve(tenant, query).await
    }
}

/// Encodes `response`, truncated (`TC`, no records) if it exceeds `limit`.
fn finish(mut response: Message, limit: usize) -> Option<Vec<u8>> {
    let bytes = response.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    response.take_answers();
    response.take_name_servers();
    response.take_additionals();
    response.set_truncated(true);
    response.to_vec().ok()
}

/// Answers UDP queries on `socket` until it fails.
pub async fn serve_udp(socket: UdpSocket, server: Arc<Server>) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "DNS receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let packet = buf[..n].to_vec();
        let (socket, server) = (socket.clone(), server.clone());
        tokio::spawn(async move {
            if let Some(answer) = server.handle(from.ip(), &packet, true).await {
                let _ = socket.send_to(&answer, from).await;
            }
        });
    }
}

/// Answers TCP queries (length-prefixed, several per connection) on `listener`.
pub async fn serve_tcp(listener: TcpListener, server: Arc<Server>) {
    loop {
        let Ok((mut stream, from)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok(permit) = server.tcp.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let server = server.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let from: SocketAddr = from;
            loop {
                let Ok(Ok(len)) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else { return };
                let mut packet = vec![0u8; len as usize];
                if tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut packet)).await.map_or(true, |r| r.is_err()) {
                    return;
                }
                let Some(answer) = server.handle(from.ip(), &packet, false).await else { return };
                let Ok(n) = u16::try_from(answer.len()) else { return };
                if stream.write_all(&n.to_be_bytes()).await.is_err() || stream.write_all(&answer).await.is_err() {
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests;
