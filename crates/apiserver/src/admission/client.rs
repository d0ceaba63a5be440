//! The webhook client: one HTTPS POST over rustls, trusting only the webhook's `caBundle`.
//! Service targets resolve through the Service's Endpoints in the same cluster (the pods
//! behind it), with `<service>.<namespace>.svc` as the TLS server name.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;

use super::Target;
use crate::rest::Op;

/// Answers larger than this are refused.
const MAX_ANSWER: usize = 3 * 1024 * 1024;

/// Where to connect and what name to verify.
struct Endpoint {
    host: String,
    port: u16,
    server_name: String,
    path: String,
}

fn parse_url(url: &str) -> Result<Endpoint, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("invalid webhook URL {url:?}: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!("webhook URL {url:?} must use https"));
    }
    let host = uri.host().ok_or_else(|| format!("webhook URL {url:?} has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    Ok(Endpoint {
        server_name: host.clone(),
        host,
        port: uri.port_u16().unwrap_or(443),
        path: uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into()),
    })
}

/// The address of a Service's first ready endpoint for `port`.
async fn resolve_service(op: &Op<'_>, namespace: &str, name: &str, path: &str, port: u16) -> Result<Endpoint, String> {
    let read = |key: String| async move {
        match op.store().get(key.as_bytes()).await {
            Ok(Some(kv)) => serde_json::from_slice::<Value>(&kv.value).ok(),
            _ => None,
        }
    };
    let svc = read(format!("/registry/core/services/{namespace}/{name}"))
        .await
        .ok_or_else(|| format!("service \"{name}\" not found"))?;
    let svc_port = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .and_then(|ps| ps.iter().find(|p| p.get("port").and_then(Value::as_u64) == Some(u64::from(port))))
        .cloned()
        .ok_or_else(|| format!("service \"{name}\" has no port {port}"))?;
    let ep = read(format!("/registry/core/endpoints/{namespace}/{name}"))
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
                path: if path.is_empty() { "/".into() } else { path.to_string() },
            });
        }
    }
    Err(format!("service \"{name}\" has no ready endpoints"))
}

/// POSTs an AdmissionReview to the webhook; returns the answer body.
pub(super) async fn post(
    op: &Op<'_>,
    target: &Target,
    ca_bundle: &[u8],
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let (ep, addr) = match (target, &op.api.config().egress) {
        (Target::Url(u), None) => (parse_url(u)?, None),
        (Target::Service { namespace, name, path, port }, None) => {
            (resolve_service(op, namespace, name, path, *port).await?, None)
        }
        // The cluster's egress policy picks the address before anything is dialed.
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
                path: if path.is_empty() { "/".into() } else { path.to_string() },
            };
            (ep, Some(addr))
        }
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_bundle) {
        let cert = cert.map_err(|e| format!("invalid caBundle: {e}"))?;
        roots.add(cert).map_err(|e| format!("invalid caBundle: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no caBundle to verify the webhook's certificate with".into());
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server_name = ServerName::try_from(ep.server_name.clone())
        .map_err(|e| format!("invalid server name {:?}: {e}", ep.server_name))?;
    let work = async {
        let tcp = match addr {
            Some(a) => tokio::net::TcpStream::connect(a).await,
            None => tokio::net::TcpStream::connect((ep.host.as_str(), ep.port)).await,
        }
        .map_err(|e| format!("dial tcp {}:{}: {e}", ep.host, ep.port))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(server_name, tcp)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::post(&ep.path)
            .header(http::header::HOST, format!("{}:{}", ep.server_name, ep.port))
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
