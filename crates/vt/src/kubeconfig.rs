//! Writing kubeconfig files.

use serde_json::json;

/// A kubeconfig for one cluster and one client certificate, as YAML.
pub fn render(
    cluster: &str,
    server: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    tls_server_name: Option<&str>,
) -> String {
    use base64_encode as b64;
    let mut cluster_entry = json!({"server": server, "certificate-authority-data": b64(ca_pem)});
    if let Some(name) = tls_server_name {
        cluster_entry["tls-server-name"] = json!(name);
    }
    let cfg = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": cluster_entry}],
        "users": [{"name": format!("{cluster}-admin"), "user": {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": format!("{cluster}-admin")}}],
        "current-context": cluster,
        "preferences": {},
    });
    serde_saphyr::to_string(&cfg).unwrap_or_else(|_| cfg.to_string())
}

/// Standard base64 (no dependency for one use).
fn base64_encode(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for chunk in b.chunks(3) {
        let n =
            (chunk[0] as u32) << 16 | (*chunk.get(1).unwrap_or(&0) as u32) << 8 | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(super::base64_encode(""), "");
        assert_eq!(super::base64_encode("f"), "Zg==");
        assert_eq!(super::base64_encode("fo"), "Zm8=");
        assert_eq!(super::base64_encode("foo"), "Zm9v");
        assert_eq!(super::base64_encode("foobar"), "Zm9vYmFy");
    }
}
