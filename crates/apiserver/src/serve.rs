//! Serving over TLS: HTTP/2 and HTTP/1.1 (with upgrades), client-certificate authentication,
//! and routing of each connection to an API server by TLS server name (SNI), so one listener
//! can serve many tenants.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_rustls::LazyConfigAcceptor;

use crate::ApiServer;
use crate::auth::UserInfo;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
}

impl Endpoint {
    /// An endpoint serving `api`.
    pub fn serving(tls: Arc<rustls::ServerConfig>, api: ApiServer) -> Endpoint {
        Endpoint { tls, api: Some(api), unavailable: String::new() }
    }
}

/// Picks the endpoint for a connection from its TLS server name.
pub trait Resolver: Send + Sync + 'static {
    /// The endpoint for `server_name` (the SNI the client sent, if any).
    fn resolve(&self, server_name: Option<&str>) -> Option<Endpoint>;
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
        let _ = tcp.set_nodelay(true);
        let resolver = resolver.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(tcp, resolver).await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

async fn connection(tcp: tokio::net::TcpStream, resolver: Arc<dyn Resolver>) -> Result<(), String> {
    let handshake = async {
        let start =
            LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await.map_err(|e| e.to_string())?;
        let sni = start.client_hello().server_name().map(str::to_owned);
        let endpoint =
            resolver.resolve(sni.as_deref()).ok_or_else(|| format!("no endpoint for server name {sni:?}"))?;
        let tls = start.into_stream(endpoint.tls.clone()).await.map_err(|e| e.to_string())?;
        Ok::<_, String>((tls, endpoint))
    };
    let (tls, endpoint) = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| "TLS handshake timed out".to_string())??;
    let cert_user = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| vt_pki::subject_of(c).ok())
        .map(|s| UserInfo::new(s.common_name, s.organizations));
    let (api, unavailable) = (endpoint.api, Arc::new(endpoint.unavailable));
    let service = service_fn(move |req| {
        let (api, cert_user, unavailable) = (api.clone(), cert_user.clone(), unavailable.clone());
        async move {
            Ok::<_, Infallible>(match api {
                Some(api) => api.handle(req, cert_user).await,
                // No Retry-After: clients should not spin on a paused cluster.
                None => crate::error_response(&crate::status::ApiError::new(
                    503,
                    "ServiceUnavailable",
                    unavailable.as_str(),
                )),
            })
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http2().max_concurrent_streams(1000);
    builder.serve_connection_with_upgrades(TokioIo::new(tls), service).await.map_err(|e| e.to_string())
}
