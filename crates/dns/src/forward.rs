//! Names outside the cluster zone go to the upstream resolvers (the manager's own
//! `/etc/resolv.conf`, or as configured), with a small cache per tenant: a shared cache would
//! let one tenant learn by timing which names another resolved.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::RData;
use rand::RngExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one upstream may take.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a forwarded answer is cached.
const MAX_CACHE_TTL: u32 = 300;
/// How long a negative answer without an SOA is cached.
const NEGATIVE_TTL: u32 = 5;

type Key = (String, String, u16, u16);

/// Forwards queries to the upstream resolvers.
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    cache: Mutex<HashMap<Key, (Message, Instant)>>,
    max_entries: usize,
}

impl Forwarder {
    /// A forwarder to `upstreams`, caching up to `max_entries` answers.
    pub fn new(upstreams: Vec<SocketAddr>, max_entries: usize) -> Forwarder {
        Forwarder { upstreams, cache: Mutex::new(HashMap::new()), max_entries }
    }

    /// The `nameserver` lines of a resolv.conf (port 53).
    pub fn resolv_conf(text: &str) -> Vec<SocketAddr> {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("nameserver"))
            .filter_map(|rest| rest.trim().split(['%', ' ']).next().and_then(|a| a.parse().ok()))
            .map(|ip| SocketAddr::new(ip, 53))
            .collect()
    }

    /// The upstream resolvers.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// How many answers are cached.
    pub fn cached(&self) -> usize {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The upstream answer to `query` for `tenant` (cached or asked), or `None` if no upstream
    /// answered.
    pub async fn resolve(&self, tenant: &str, query: &Query) -> Option<Message> {
        let key: Key = (
            tenant.to_string(),
            query.name().to_lowercase().to_ascii(),
            u16::from(query.query_type()),
            u16::from(query.query_class()),
        );
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            match cache.get(&key) {
                Some((m, until)) if *until > Instant::now() => return Some(m.clone()),
                Some(_) => _ = cache.remove(&key),
                None => {}
            }
        }
        for upstream in &self.upstreams {
            if let Some(answer) = ask(*upstream, query).await {
                let ttl = cache_ttl(&answer);
                if ttl > 0 {
                    let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                    if cache.len() >= self.max_entries {
                        let now = Instant::now();
                        cache.retain(|_, (_, until)| *until > now);
                        if cache.len() >= self.max_entries
                            && let Some(k) = cache.keys().next().cloned()
                        {
                            cache.remove(&k);
                        }
                    }
                    cache.insert(key, (answer.clone(), Instant::now() + Duration::from_secs(u64::from(ttl))));
                }
                return Some(answer);
            }
        }
        None
    }
}

/// How long an answer may be cached: its smallest TTL (a negative answer's SOA minimum).
fn cache_ttl(m: &Message) -> u32 {
    match m.response_code() {
        ResponseCode::NoError if !m.answers().is_empty() => {
            m.answers().iter().map(|r| r.ttl()).min().unwrap_or(0).min(MAX_CACHE_TTL)
        }
        ResponseCode::NoError | ResponseCode::NXDomain => m
            .name_servers()
            .iter()
            .find_map(|r| match r.data() {
                RData::SOA(soa) => Some(soa.minimum().min(r.ttl())),
                _ => None,
            })
            .unwrap_or(NEGATIVE_TTL)
            .min(MAX_CACHE_TTL),
        _ => 0,
    }
}

/// One question to one upstream: UDP, then TCP if the answer was truncated.
async fn ask(upstream: SocketAddr, query: &Query) -> Option<Message> {
    let id: u16 = rand::rng().random();
    let mut m = Message::new();
    m.set_id(id).set_message_type(MessageType::Query).set_op_code(OpCode::Query).set_recursion_desired(true);
    m.add_query(query.clone());
    let bytes = m.to_vec().ok()?;
    let bind: SocketAddr = if upstream.is_ipv4() { "0.0.0.0:0".parse().ok()? } else { "[::]:0".parse().ok()? };
    let socket = tokio::net::UdpSocket::bind(bind).await.ok()?;
    socket.connect(upstream).await.ok()?;
    socket.send(&bytes).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let answer = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
        loop {
            let n = socket.recv(&mut buf).await.ok()?;
            if let Ok(a) = Message::from_vec(&buf[..n])
                && a.id() == id
                && a.queries().first() == Some(query)
            {
                return Some(a);
            }
        }
    })
    .await
    .ok()??;
    if !answer.truncated() {
        return Some(answer);
    }
    let work = async {
        let mut tcp = tokio::net::TcpStream::connect(upstream).await.ok()?;
        let len = u16::try_from(bytes.len()).ok()?;
        tcp.write_all(&len.to_be_bytes()).await.ok()?;
        tcp.write_all(&bytes).await.ok()?;
        let n = tcp.read_u16().await.ok()? as usize;
        let mut body = vec![0u8; n];
        tcp.read_exact(&mut body).await.ok()?;
        Message::from_vec(&body).ok().filter(|a| a.id() == id)
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, work).await.ok().flatten()
}
