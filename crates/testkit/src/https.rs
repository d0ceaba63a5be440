//! HTTPS servers standing in for what tenants run (admission and conversion webhooks,
//! extension API servers): a listener and a TLS acceptor with a certificate from a fresh CA,
//! for tests that then serve their own handler on the accepted connections.

use std::net::IpAddr;
use std::sync::Arc;

use tokio_rustls::rustls;

/// A bound HTTPS endpoint.
pub struct Https {
    /// Where connections arrive.
    pub listener: tokio::net::TcpListener,
    /// The TLS side of each accepted connection.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// The bound port.
    pub port: u16,
    /// The CA that signed the server's certificate (PEM), for a `caBundle`.
    pub ca_pem: String,
}

/// Binds `ip`:0 with a certificate for `names` and `ips`; with `client_ca` (PEM), connections
/// must present a client certificate it signed.
pub async fn https(ip: &str, names: &[&str], ips: &[IpAddr], client_ca: Option<&str>) -> Https {
    let ca = vt_pki::Ca::generate("test-server-ca").unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = ca.issue_server("test-server", &names, ips).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().unwrap();
    let builder = match client_ca {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            let der = vt_pki::CertKey { cert_pem: pem.to_string(), key_pem: String::new() }.cert_der().unwrap();
            for c in der {
                roots.add(c).unwrap();
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let tls = builder.with_single_cert(cert.cert_der().unwrap(), cert.key_der().unwrap()).unwrap();
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    Https {
        listener,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
        port,
        ca_pem: ca.cert_pem().to_string(),
    }
}
