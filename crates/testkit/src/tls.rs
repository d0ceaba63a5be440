//! A raw TLS client with a tenant's admin credentials, for tests that must control the
//! connection itself (hold it open, send half a request, never read).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

use crate::VtManager;

/// A raw TLS client holding a tenant's admin credentials (from `vt connect --print`).
#[derive(Clone)]
pub struct TenantClient {
    /// `host:port` of the tenant listener.
    pub addr: String,
    /// The tenant's TLS server name.
    pub server_name: String,
    tls: Arc<rustls::ClientConfig>,
}

impl TenantClient {
    /// The client of tenant `name` of manager `m`.
    pub fn of(m: &VtManager, name: &str) -> TenantClient {
        TenantClient::from_kubeconfig(&m.vt_ok(&["connect", name, "--print"]))
    }

    /// The client of a tenant kubeconfig (`vt connect --print`).
    pub fn from_kubeconfig(yaml: &str) -> TenantClient {
        let kc: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
        let b64 =
            |v: &serde_json::Value| base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap();
        let cluster = &kc["clusters"][0]["cluster"];
        let user = &kc["users"][0]["user"];
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(&b64(&cluster["certificate-authority-data"])) {
            roots.add(c.unwrap()).unwrap();
        }
        let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(&b64(&user["client-certificate-data"]))
            .map(Result::unwrap)
            .collect();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&b64(&user["client-key-data"])).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .unwrap();
        TenantClient {
            addr: cluster["server"].as_str().unwrap().trim_start_matches("https://").to_string(),
            server_name: cluster["tls-server-name"].as_str().unwrap().to_string(),
            tls: Arc::new(tls),
        }
    }

    /// A TLS connection (HTTP/1.1), with a small receive buffer: a client that stops reading
    /// soon stops the server's writes.
    pub async fn connect(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let addr: std::net::SocketAddr = self.addr.parse().unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from(self.server_name.clone()).unwrap();
        tokio_rustls::TlsConnector::from(self.tls.clone()).connect(name, tcp).await.unwrap()
    }

    /// Sends `GET path` on a new connection and returns the connection and the status line.
    pub async fn get(&self, path: &str) -> (tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String) {
        let mut c = self.connect().await;
        let text = self.ask(&mut c, path).await;
        (c, text)
    }

    /// Sends `GET path` on `c` and returns what the first read gives (the status line, the
    /// headers, and a small body whole).
    pub async fn ask(&self, c: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>, path: &str) -> String {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n\r\n", self.server_name);
        c.write_all(req.as_bytes()).await.unwrap();
        let mut head = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(20), c.read(&mut head)).await.unwrap().unwrap();
        String::from_utf8_lossy(&head[..n]).to_string()
    }
}
