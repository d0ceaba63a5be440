//! Writing kubeconfig files.

use base64::Engine;
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
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_kubeconfig_with_a_server_name() {
        let text = super::render("vt-acme", "https://127.0.0.1:6443", "CA", "CERT", "KEY", Some("acme.vt.local"));
        let v: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(v["clusters"][0]["cluster"]["tls-server-name"], "acme.vt.local");
        assert_eq!(v["clusters"][0]["cluster"]["certificate-authority-data"], "Q0E=");
        assert_eq!(v["current-context"], "vt-acme");
    }
}
