//! Calls this server makes to servers its users name: admission webhooks (one POST each) and
//! aggregated API servers (any request, proxied). One HTTPS connection per call over rustls,
//! verified against the caller's `caBundle` (or not at all, where the API has
//! `insecureSkipTLSVerify`), optionally presenting a client certificate. Service targets
//! resolve through the cluster's egress policy when it has one, else through the Service's
//! Endpoints in this cluster, with `<service>.<namespace>.svc` as the TLS server name.

use std::sync::Arc;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::Value;

use crate::ApiServer;

/// Where a call goes.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// A URL (`clientConfig.url`).
    Url(String),
    /// A Service of this cluster (`clientConfig.service`, an APIService's `service`).
    Service { namespace: String, name: String, path: String, port: u16 },
}

impl Target {
    /// The target and `caBundle` (decoded) of a webhook `clientConfig` (admission and
    /// conversion webhooks share the shape).
    pub(crate) fn of_client_config(config: Option<&Value>) -> (Target, Vec<u8>) {
        let at = |p: &str| config.and_then(|c| c.pointer(p));
        let s = |p: &str| at(p).and_then(Value::as_str).unwrap_or("").to_string();
        let target = match at("/url").and_then(Value::as_str) {
            Some(u) => Target::Url(u.to_string()),
            None => Target::Service {
                namespace: s("/service/namespace"),
                name: s("/service/name"),
                path: s("/service/path"),
                port: at("/service/port").and_then(Value::as_u64).map_or(443, |p| u16::try_from(p).unwrap_or(0)),
            },
        };
        use base64::Engine;
        let ca_bundle = at("/caBundle")
            .and_then(Value::as_str)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .unwrap_or_default();
        (target, ca_bundle)
    }
}

/// How the other end is verified, and what this server presents.
pub(crate) struct Trust<'a> {
    /// PEM certificates the server's certificate must chain to.
    pub ca_bundle: &'a [u8],
    /// Accept any server certificate (an APIService's `insecureSkipTLSVerify`).
    pub insecure: bool,
    /// The client certificate and key to present (the front proxy's).
    pub client: Option<&'a vt_pki::CertKey>,
}

/// Where a call connected: the address, the TLS server name and the target's path.
pub(crate) struct Endpoint {
    host: String,
    port: u16,
    pub server_name: String,
    pub path: String,
}

impl Endpoint {
    /// The `Host` header of requests on this connection.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.server_name, self.port)
    }

    /// `https://<address>` as kube writes it in errors.
    pub fn url(&self) -> String {
        if self.host.contains(':') {
            format!("https://[{}]:{}", self.host, self.port)
        } else {
            format!("https://{}:{}", self.host, self.port)
        }
    }
}

/// The sending half of a connection.
pub(crate) type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

fn parse_url(url: &str) -> Result<Endpoint, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!("URL {url:?} must use https"));
    }
    let host = uri.host().ok_or_else(|| format!("URL {url:?} has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    Ok(Endpoint {
        server_name: host.clone(),
        host,
        port: uri.port_u16().unwrap_or(443),
        path: uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into()),
    })
}

fn service_path(path: &str) -> String {
    if path.is_empty() { "/".into() } else { path.to_string() }
}

/// The address of a Service's first ready endpoint for `port`, from this cluster's store.
async fn resolve_service(
    api: &ApiServer,
    namespace: &str,
    name: &str,
    path: &str,
    port: u16,
) -> Result<Endpoint, String> {
    let svc = api
        .stored(&format!("/registry/core/services/{namespace}/{name}"))
        .await
        .ok_or_else(|| format!("service \"{name}\" not found"))?;
    let svc_port = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .and_then(|ps| ps.iter().find(|p| p.get("port").and_then(Value::as_u64) == Some(u64::from(port))))
        .cloned()
        .ok_or_else(|| format!("service \"{name}\" has no port {port}"))?;
    let ep = api
        .stored(&format!("/registry/core/endpoints/{namespace}/{name}"))
        .await
        .ok_or_else(|| format!("service \"{name}\" has no endpoints"))?;
    let port_name = svc_port.get("name").and_then(Value::as_str).unwrap_or("");
    for subset in ep.get("subsets").and_then(Value::as_array).into_iter().flatten() {
        let Some(ip) = subset.pointer("/addresses/0/ip").and_then(Value::as_str) else { continue };
        let target = subset
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| p.get("name").and_then(Value::as_str).unwrap_or("") == port_name)
            .and_then(|p| p.get("port").and_then(Value::as_u64));
        if let Some(target) = target {
            return Ok(Endpoint {
                host: ip.to_string(),
                port: target as u16,
                server_name: format!("{name}.{namespace}.svc"),
                path: service_path(path),
            });
        }
    }
    Err(format!("service \"{name}\" has no ready endpoints"))
}

/// Accepts any server certificate (`insecureSkipTLSVerify`), still checking that the
/// handshake is signed by the certificate's key.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config(trust: &Trust<'_>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if trust.insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(trust.ca_bundle) {
            let cert = cert.map_err(|e| format!("invalid caBundle: {e}"))?;
            roots.add(cert).map_err(|e| format!("invalid caBundle: {e}"))?;
        }
        if roots.is_empty() {
            return Err("no caBundle to verify the server's certificate with".into());
        }
        builder.with_root_certificates(roots)
    };
    match trust.client {
        None => Ok(builder.with_no_client_auth()),
        Some(c) => {
            let chain = c.cert_der().map_err(|e| e.to_string())?;
            let key = c.key_der().map_err(|e| e.to_string())?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("the client certificate: {e}"))
        }
    }
}

/// Opens an HTTP/1.1 connection over TLS to `target`. The cluster's egress policy, when it
/// has one, picks the address before anything is dialed.
pub(crate) async fn connect(api: &ApiServer, target: &Target, trust: &Trust<'_>) -> Result<(Sender, Endpoint), String> {
    let (ep, addr) = match (target, &api.config().egress) {
        (Target::Url(u), None) => (parse_url(u)?, None),
        (Target::Service { namespace, name, path, port }, None) => {
            (resolve_service(api, namespace, name, path, *port).await?, None)
        }
        (Target::Url(u), Some(egress)) => {
            let ep = parse_url(u)?;
            let addr = egress.url(&ep.host, ep.port).await?;
            (ep, Some(addr))
        }
        (Target::Service { namespace, name, path, port }, Some(egress)) => {
            let addr = egress.service(namespace, name, *port).await?;
            let ep = Endpoint {
                host: addr.ip().to_string(),
                port: addr.port(),
                server_name: format!("{name}.{namespace}.svc"),
                path: service_path(path),
            };
            (ep, Some(addr))
        }
    };
    let tls = tls_config(trust)?;
    let server_name = ServerName::try_from(ep.server_name.clone())
        .map_err(|e| format!("invalid server name {:?}: {e}", ep.server_name))?;
    let tcp = match addr {
        Some(a) => tokio::net::TcpStream::connect(a).await,
        None => tokio::net::TcpStream::connect((ep.host.as_str(), ep.port)).await,
    }
    .map_err(|e| format!("dial tcp {}:{}: {e}", ep.host, ep.port))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    // With upgrades: an aggregated API's streaming subresources switch protocols.
    tokio::spawn(conn.with_upgrades());
    Ok((sender, ep))
}

/// Answers larger than this are refused.
const MAX_ANSWER: usize = 3 * 1024 * 1024;

/// POSTs a JSON review (AdmissionReview, ConversionReview) to `target`, trusting only
/// `ca_bundle`, within `timeout`; returns the answer body.
pub(crate) async fn post_review(
    api: &ApiServer,
    target: &Target,
    ca_bundle: &[u8],
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let work = async {
        let trust = Trust { ca_bundle, insecure: false, client: None };
        let (mut sender, ep) = connect(api, target, &trust).await?;
        let req = http::Request::post(&ep.path)
            .header(http::header::HOST, ep.authority())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let bytes = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("the server responded with {status}"));
        }
        Ok(bytes.to_vec())
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("context deadline exceeded (timeout {}s)", timeout.as_secs())),
    }
}
