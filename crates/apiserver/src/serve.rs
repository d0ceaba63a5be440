//! Serving over TLS: HTTP/2 and HTTP/1.1 (with upgrades), client-certificate authentication,
//! and routing of each connection to an API server by TLS server name (SNI), so one listener
//! can serve many tenants.
//!
//! Connection hygiene, because every connection costs the whole process a file descriptor and
//! memory: a source may have only so many connections in the TLS handshake at once (and the
//! listener as a whole), the handshake and the first request's headers have deadlines, a
//! connection with no request in flight is closed after an idle timeout, HTTP/2 streams and
//! header lists are bounded, and each cluster has a cap on its connections (beyond it, its
//! requests get 429 and the connection closes). None of these cuts a request in progress: a
//! watch, `logs -f` or an exec stream counts as in flight for as long as it lasts.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_rustls::LazyConfigAcceptor;

use crate::ApiServer;
use crate::auth::UserInfo;

/// Bounds of the listener and its connections.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// How long a client may take to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// How long a client may take to send a request's headers (the first one included).
    pub header_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// Connections in the TLS handshake at once, from one source address.
    pub max_handshakes_per_source: usize,
    /// Connections in the TLS handshake at once, in all.
    pub max_handshakes: usize,
    /// HTTP/2 streams per connection.
    pub max_streams: u32,
    /// Bytes of request headers (HTTP/2 header list; HTTP/1.1 read buffer).
    pub max_header_bytes: u32,
    /// Bytes of response a connection buffers while its client does not read (HTTP/1.1
    /// write buffer, HTTP/2 per-stream send buffer, TLS records), beyond a watch's own.
    pub max_send_buffer: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_handshakes_per_source: 64,
            max_handshakes: 2048,
            max_streams: 250,
            max_header_bytes: 32 << 10,
            max_send_buffer: 16 << 10,
        }
    }
}

/// Where a connection goes: the TLS configuration to finish the handshake with, and the API
/// server to hand its requests to.
#[derive(Clone)]
pub struct Endpoint {
    /// TLS settings: serving certificate and trusted client CA.
    pub tls: Arc<rustls::ServerConfig>,
    /// The API server, or `None` while it is unavailable (a paused tenant): requests then get
    /// 503 with `unavailable` as the message.
    pub api: Option<ApiServer>,
    /// Why there is no API server.
    pub unavailable: String,
    /// When a client's request last started here (milliseconds since the Unix epoch), for
    /// whoever decides that the cluster is idle.
    pub last_request: Option<Arc<AtomicU64>>,
}

impl Endpoint {
    /// An endpoint serving `api`.
    pub fn serving(tls: Arc<rustls::ServerConfig>, api: ApiServer) -> Endpoint {
        Endpoint { tls, api: Some(api), unavailable: String::new(), last_request: None }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A future a resolver answers a wake with.
pub type Waking = std::pin::Pin<Box<dyn std::future::Future<Output = Option<Endpoint>> + Send>>;

/// Picks the endpoint for a connection from its TLS server name.
pub trait Resolver: Send + Sync + 'static {
    /// The endpoint for `server_name` (the SNI the client sent, if any), if it is ready.
    fn resolve(&self, server_name: Option<&str>) -> Option<Endpoint>;

    /// Wakes the sleeping endpoint of `server_name`, if there is one: the connection (or the
    /// request) that asked waits for it. Concurrent wakes of one endpoint share one start.
    fn wake(&self, _server_name: &str) -> Waking {
        Box::pin(std::future::ready(None))
    }

    /// Whether some connections may belong elsewhere (then each connection's ClientHello is
    /// read before TLS starts, to decide).
    fn forwards(&self) -> bool {
        false
    }

    /// Where a connection for `server_name` belongs: here, another replica (its connection
    /// is passed on untouched), or nowhere yet (its cluster is changing hands).
    fn forward(&self, _server_name: &str) -> Forward {
        Forward::Here
    }

    /// Whether `server_name`'s cluster, not served here, is served (or about to be) by
    /// another replica: requests on open connections are then told to retry elsewhere.
    fn moved(&self, server_name: &str) -> bool {
        self.forward(server_name) != Forward::Here
    }
}

/// Where a connection for a server name belongs, when several replicas share the clusters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Forward {
    /// Here (or nowhere): the TLS handshake goes on here.
    Here,
    /// Another replica serves it, at `host:port`.
    To(String),
    /// Its cluster is changing hands: no replica serves it yet, one will shortly.
    Moving,
}

/// How often a connection for a moving cluster looks again for its new home.
const MOVING_POLL: Duration = Duration::from_millis(50);

/// The server name of the connection's ClientHello, read without consuming it (`None`: no
/// name, or not TLS — the TLS acceptor then deals with it).
async fn peek_server_name(tcp: &tokio::net::TcpStream) -> Option<String> {
    let mut buf = vec![0u8; crate::sni::MAX_HELLO];
    loop {
        let n = tcp.peek(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        match crate::sni::parse(&buf[..n]) {
            crate::sni::Hello::Complete(name) => return name,
            crate::sni::Hello::NotTls => return None,
            // The rest of the hello is on its way (peek would return the same bytes at once).
            crate::sni::Hello::Incomplete(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// Passes a connection, bytes untouched, to `to` (TLS ends there: client certificates work).
async fn pass(mut tcp: tokio::net::TcpStream, to: &str, opts: &ServeOptions) -> Result<(), String> {
    let mut upstream = tokio::time::timeout(opts.handshake_timeout, tokio::net::TcpStream::connect(to))
        .await
        .map_err(|_| format!("connecting to {to} timed out"))?
        .map_err(|e| format!("connecting to {to}: {e}"))?;
    let _ = upstream.set_nodelay(true);
    tokio::io::copy_bidirectional(&mut tcp, &mut upstream).await.map(|_| ()).map_err(|e| e.to_string())
}

/// The endpoint for `sni`: ready, or woken.
async fn find(resolver: &dyn Resolver, sni: Option<&str>) -> Option<Endpoint> {
    match resolver.resolve(sni) {
        Some(e) => Some(e),
        None => resolver.wake(sni?).await,
    }
}

/// A resolver with one endpoint for every connection.
pub struct Single(pub Endpoint);

impl Resolver for Single {
    fn resolve(&self, _: Option<&str>) -> Option<Endpoint> {
        Some(self.0.clone())
    }
}

/// Builds the rustls configuration of an API server: its serving certificate, and client
/// certificates verified against `client_ca_pem` (optional, so bearer tokens work too).
pub fn tls_config(serving: &vt_pki::CertKey, client_ca_pem: &str) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let ca = vt_pki::CertKey { cert_pem: client_ca_pem.to_string(), key_pem: String::new() };
    for der in ca.cert_der().map_err(|e| e.to_string())? {
        roots.add(der).map_err(|e| format!("client CA: {e}"))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| format!("client verifier: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(serving.cert_der().map_err(|e| e.to_string())?, serving.key_der().map_err(|e| e.to_string())?)
        .map_err(|e| format!("serving certificate: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts connections on `listener` forever, routing each through `resolver`.
pub async fn serve(listener: TcpListener, resolver: Arc<dyn Resolver>) {
    serve_with(listener, resolver, ServeOptions::default()).await
}

/// Connections in the TLS handshake, per source and in all.
#[derive(Default)]
struct Handshakes {
    per_source: Mutex<HashMap<IpAddr, usize>>,
    total: AtomicUsize,
}

/// A connection counted in [`Handshakes`] until the handshake is over.
struct Handshaking {
    table: Arc<Handshakes>,
    source: IpAddr,
}

impl Handshakes {
    fn enter(self: &Arc<Self>, source: IpAddr, opts: &ServeOptions) -> Option<Handshaking> {
        let source = vt_net::canonical(source);
        let mut per = self.per_source.lock().unwrap_or_else(|p| p.into_inner());
        let n = per.entry(source).or_insert(0);
        if *n >= opts.max_handshakes_per_source || self.total.load(Ordering::Acquire) >= opts.max_handshakes {
            if *n == 0 {
                per.remove(&source);
            }
            return None;
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::AcqRel);
        Some(Handshaking { table: self.clone(), source })
    }
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.table.total.fetch_sub(1, Ordering::AcqRel);
        let mut per = self.table.per_source.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.source);
            }
        }
    }
}

/// [`serve`] with `opts`.
pub async fn serve_with(listener: TcpListener, resolver: Arc<dyn Resolver>, opts: ServeOptions) {
    let opts = Arc::new(opts);
    let handshakes = Arc::new(Handshakes::default());
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(handshaking) = handshakes.enter(peer.ip(), &opts) else {
            // Too many half-open connections from there (or in all): drop this one now.
            tracing::debug!(%peer, "refusing a connection: too many TLS handshakes in progress");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (resolver, opts) = (resolver.clone(), opts.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(tcp, resolver, &opts, handshaking).await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

/// Where a connection's requests go: its cluster (weakly held), found again through the
/// resolver once it stopped or slept.
struct Route {
    /// The cluster (weakly) and its clock of client requests, under one lock.
    current: Mutex<(Option<crate::WeakApiServer>, Option<Arc<AtomicU64>>)>,
    resolver: Arc<dyn Resolver>,
    sni: Option<String>,
}

impl Route {
    /// The cluster to hand a request to, its clock of last requests set; or why there is
    /// none.
    async fn api(&self) -> Result<ApiServer, Unavailable> {
        {
            let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
            match current.0.as_ref().map(crate::WeakApiServer::upgrade) {
                Some(Some(api)) => {
                    touch(current.1.as_ref());
                    return Ok(api);
                }
                Some(None) => {}
                None => return Err(Unavailable::Connection),
            }
        }
        let Some(endpoint) = find(self.resolver.as_ref(), self.sni.as_deref()).await else {
            // Stopped here: served elsewhere now (or shortly), or stopped for good.
            let moved = self.sni.as_deref().is_some_and(|n| self.resolver.moved(n));
            return Err(if moved { Unavailable::Moved } else { Unavailable::Stopped });
        };
        let Some(api) = endpoint.api else { return Err(Unavailable::Why(endpoint.unavailable)) };
        touch(endpoint.last_request.as_ref());
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = (Some(api.downgrade()), endpoint.last_request);
        Ok(api)
    }
}

/// Why a connection's request finds no cluster.
enum Unavailable {
    /// The reason the connection's endpoint gave (e.g. paused).
    Connection,
    /// The reason a new endpoint gives.
    Why(String),
    /// The cluster stopped here and is (or will shortly be) served by another replica.
    Moved,
    /// The cluster stopped.
    Stopped,
}

/// The answer to a request whose cluster moved to another replica: what kube-apiserver
/// answers while it shuts down (429, `Retry-After`, the connection closed), so that clients
/// retry on a new connection, which reaches the new owner. The wait is one second rather than
/// kube's 4–12: the new owner serves within about a second.
fn moved_response() -> http::Response<crate::body::Body> {
    let mut e = crate::status::ApiError::new(
        429,
        "TooManyRequests",
        "The cluster is moving to another replica, please try again later.",
    );
    e.retry_after = Some(1);
    let mut r = crate::error_response(&e);
    r.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    r
}

fn touch(clock: Option<&Arc<AtomicU64>>) {
    if let Some(t) = clock {
        t.store(now_millis(), Ordering::Relaxed);
    }
}

/// Requests in flight on one connection, and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    started: AtomicUsize,
    last: Mutex<tokio::time::Instant>,
}

/// A request in flight (until its response body is done).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(a: &Arc<Activity>) -> InFlight {
        a.in_flight.fetch_add(1, Ordering::AcqRel);
        a.started.fetch_add(1, Ordering::AcqRel);
        InFlight(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.last.lock().unwrap_or_else(|p| p.into_inner()) = tokio::time::Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    resolver: Arc<dyn Resolver>,
    opts: &ServeOptions,
    handshaking: Handshaking,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + opts.handshake_timeout;
    if resolver.forwards() {
        let name = tokio::time::timeout_at(deadline, peek_server_name(&tcp))
            .await
            .map_err(|_| "TLS handshake timed out".to_string())?;
        // A cluster changing hands: the connection waits (within the handshake's time) for
        // its new owner rather than failing.
        while let Some(n) = name.as_deref() {
            match resolver.forward(n) {
                Forward::To(to) => {
                    drop(handshaking);
                    return pass(tcp, &to, opts).await;
                }
                Forward::Moving if tokio::time::Instant::now() + MOVING_POLL < deadline => {
                    tokio::time::sleep(MOVING_POLL).await
                }
                _ => break,
            }
        }
    }
    let handshake = async {
        let start =
            LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await.map_err(|e| e.to_string())?;
        let sni = start.client_hello().server_name().map(str::to_owned);
        // A sleeping cluster wakes here, before the handshake goes on.
        let endpoint = find(resolver.as_ref(), sni.as_deref())
            .await
            .ok_or_else(|| format!("no endpoint for server name {sni:?}"))?;
        let tls = start.into_stream(endpoint.tls.clone()).await.map_err(|e| e.to_string())?;
        Ok::<_, String>((tls, endpoint, sni))
    };
    let (mut tls, endpoint, sni) =
        tokio::time::timeout_at(deadline, handshake).await.map_err(|_| "TLS handshake timed out".to_string())??;
    drop(handshaking);
    tls.get_mut().1.set_buffer_limit(Some(opts.max_send_buffer));
    let cert_user = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| vt_pki::subject_of(c).ok())
        .map(|s| UserInfo::new(s.common_name, s.organizations));
    // The cluster's connection cap: beyond it, requests are refused and the connection closes.
    let mut over_cap = false;
    let _connection_slot = match endpoint.api.as_ref().and_then(|a| a.config().limits.clone()) {
        Some(limits) => match limits.connection() {
            Some(slot) => Some(slot),
            None => {
                over_cap = true;
                None
            }
        },
        None => None,
    };
    // The connection does not keep its cluster running: a cluster put to sleep (or stopped)
    // while the connection is open is found again, woken if need be, by the next request.
    let route = Arc::new(Route {
        current: Mutex::new((endpoint.api.as_ref().map(ApiServer::downgrade), endpoint.last_request.clone())),
        resolver: resolver.clone(),
        sni,
    });
    let unavailable = Arc::new(endpoint.unavailable);
    drop(endpoint.api);
    let activity = Arc::new(Activity {
        in_flight: AtomicUsize::new(0),
        started: AtomicUsize::new(0),
        last: Mutex::new(tokio::time::Instant::now()),
    });
    let tracker = activity.clone();
    // Told when a request found its cluster moved: the connection then closes (gracefully).
    let moved_signal = Arc::new(tokio::sync::Notify::new());
    let moved_tx = moved_signal.clone();
    let service = service_fn(move |req| {
        let (route, cert_user, unavailable) = (route.clone(), cert_user.clone(), unavailable.clone());
        let moved = moved_tx.clone();
        let in_flight = InFlight::new(&tracker);
        async move {
            let api = route.api().await;
            let resp = match api {
                _ if over_cap => {
                    let mut r = crate::error_response(&crate::status::ApiError::too_many_requests(1));
                    r.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                    r
                }
                Ok(api) => api.handle(req, cert_user).await,
                Err(Unavailable::Moved) => {
                    // HTTP/2 has no `Connection: close`: the connection ends gracefully instead.
                    moved.notify_one();
                    moved_response()
                }
                Err(Unavailable::Why(why)) => crate::error_response(&crate::status::ApiError::unavailable(why)),
                Err(Unavailable::Stopped) => crate::error_response(&crate::status::ApiError::unavailable(
                    "the cluster has stopped; connect again",
                )),
                // No Retry-After: clients should not spin on a paused cluster.
                Err(Unavailable::Connection) => {
                    crate::error_response(&crate::status::ApiError::unavailable(unavailable.as_str()))
                }
            };
            // In flight until the body is done: a watch or a log stream is never idle.
            Ok::<_, Infallible>(resp.map(|b| crate::body::guarded(b, in_flight)))
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout)
        .max_buf_size((opts.max_header_bytes as usize).max(opts.max_send_buffer).max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(opts.max_streams)
        .max_header_list_size(opts.max_header_bytes)
        .max_send_buf_size(opts.max_send_buffer)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    tokio::pin!(conn);
    let opened = tokio::time::Instant::now();
    let over_cap_deadline = opened + Duration::from_secs(2);
    let mut check = tokio::time::interval(Duration::from_millis(if over_cap { 100 } else { 1000 }));
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => return r.map_err(|e| e.to_string()),
            _ = moved_signal.notified(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = check.tick(), if !closing => {
                let now = tokio::time::Instant::now();
                let idle = activity.in_flight.load(Ordering::Acquire) == 0;
                let never_asked = activity.started.load(Ordering::Acquire) == 0;
                let last = *activity.last.lock().unwrap_or_else(|p| p.into_inner());
                let expired = if over_cap {
                    now >= over_cap_deadline || (idle && !never_asked)
                } else if never_asked {
                    now.duration_since(opened) >= opts.header_timeout
                } else {
                    idle && now.duration_since(last) >= opts.idle_timeout
                };
                if expired {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}
