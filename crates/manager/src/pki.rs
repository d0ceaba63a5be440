//! A tenant's credentials: its own CA, the API server's serving certificate, the cluster-admin
//! client certificate (`O=system:masters`), the ServiceAccount token signing key and the front
//! proxy's CA (aggregated API servers trust it for the requests the tenant's API server
//! proxies to them). They live in a Secret in the manager's namespace, so a manager restart
//! serves the same cluster.

use std::collections::BTreeMap;
use std::net::IpAddr;

use vt_pki::{Ca, CertKey};

/// Secret keys.
const CA_CRT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
const ADMIN_CRT: &str = "admin.crt";
const ADMIN_KEY: &str = "admin.key";
const SA_KEY: &str = "sa.key";
const FRONT_PROXY_CRT: &str = "front-proxy-ca.crt";
const FRONT_PROXY_KEY: &str = "front-proxy-ca.key";

/// The credentials of one tenant.
pub struct TenantPki {
    /// The tenant's CA.
    pub ca: Ca,
    /// The API server's serving certificate.
    pub serving: CertKey,
    /// The cluster-admin client certificate.
    pub admin: CertKey,
    /// The ServiceAccount token signing key (PKCS#8 PEM).
    pub sa_key: String,
    /// The front proxy's CA; `None` in credentials an earlier version created (see
    /// [`TenantPki::front_proxy_data`]).
    pub front_proxy: Option<Ca>,
}

impl TenantPki {
    /// New credentials; the serving certificate names `server_names` and `ips`.
    pub fn generate(tenant: &str, server_names: &[String], ips: &[IpAddr]) -> Result<TenantPki, String> {
        let ca = Ca::generate(&format!("vt-{tenant}-ca")).map_err(|e| e.to_string())?;
        let serving =
            ca.issue_server(&format!("vt-{tenant}-apiserver"), server_names, ips).map_err(|e| e.to_string())?;
        let admin =
            ca.issue_client("vt-admin", Some("system:masters"), vt_pki::DEFAULT_VALIDITY).map_err(|e| e.to_string())?;
        let sa_key = vt_pki::generate_signing_key().map_err(|e| e.to_string())?;
        Ok(TenantPki { ca, serving, admin, sa_key, front_proxy: Some(new_front_proxy_ca(tenant)?) })
    }

    /// Gives credentials without a front proxy CA a new one; returns the Secret data to add
    /// (`stringData` form), or `None` when they have one.
    pub fn front_proxy_data(&mut self, tenant: &str) -> Result<Option<BTreeMap<String, String>>, String> {
        if self.front_proxy.is_some() {
            return Ok(None);
        }
        let ca = new_front_proxy_ca(tenant)?;
        let data = front_proxy_entries(&ca).collect();
        self.front_proxy = Some(ca);
        Ok(Some(data))
    }

    /// The Secret data (`stringData` form).
    pub fn to_data(&self) -> BTreeMap<String, String> {
        let m = self.ca.material();
        [
            (CA_CRT, m.cert_pem.clone()),
            (CA_KEY, m.key_pem.clone()),
            (TLS_CRT, self.serving.cert_pem.clone()),
            (TLS_KEY, self.serving.key_pem.clone()),
            (ADMIN_CRT, self.admin.cert_pem.clone()),
            (ADMIN_KEY, self.admin.key_pem.clone()),
            (SA_KEY, self.sa_key.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .chain(self.front_proxy.iter().flat_map(front_proxy_entries))
        .collect()
    }

    /// Credentials from a Secret's (decoded) data.
    pub fn from_data(data: &BTreeMap<String, Vec<u8>>) -> Result<TenantPki, String> {
        let get = |k: &str| -> Result<String, String> {
            let v = data.get(k).ok_or_else(|| format!("the tenant secret has no {k}"))?;
            String::from_utf8(v.clone()).map_err(|_| format!("{k} is not text"))
        };
        let ca = Ca::load(CertKey { cert_pem: get(CA_CRT)?, key_pem: get(CA_KEY)? }).map_err(|e| e.to_string())?;
        Ok(TenantPki {
            ca,
            serving: CertKey { cert_pem: get(TLS_CRT)?, key_pem: get(TLS_KEY)? },
            admin: CertKey { cert_pem: get(ADMIN_CRT)?, key_pem: get(ADMIN_KEY)? },
            sa_key: get(SA_KEY)?,
            front_proxy: match (get(FRONT_PROXY_CRT), get(FRONT_PROXY_KEY)) {
                (Ok(cert_pem), Ok(key_pem)) => {
                    Some(Ca::load(CertKey { cert_pem, key_pem }).map_err(|e| e.to_string())?)
                }
                _ => None,
            },
        })
    }
}

fn new_front_proxy_ca(tenant: &str) -> Result<Ca, String> {
    Ca::generate(&format!("vt-{tenant}-front-proxy-ca")).map_err(|e| e.to_string())
}

fn front_proxy_entries(ca: &Ca) -> impl Iterator<Item = (String, String)> + use<> {
    let m = ca.material();
    [(FRONT_PROXY_CRT.to_string(), m.cert_pem.clone()), (FRONT_PROXY_KEY.to_string(), m.key_pem.clone())].into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_secret_data() {
        let pki = TenantPki::generate("acme", &["acme.vt.local".into()], &["127.0.0.1".parse().unwrap()]).unwrap();
        let data: BTreeMap<String, Vec<u8>> = pki.to_data().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
        let back = TenantPki::from_data(&data).unwrap();
        assert_eq!(back.serving, pki.serving);
        assert_eq!(back.ca.cert_pem(), pki.ca.cert_pem());
        assert_eq!(back.front_proxy.as_ref().map(|c| c.cert_pem()), pki.front_proxy.as_ref().map(|c| c.cert_pem()));
        let mut broken = data.clone();
        broken.remove("sa.key");
        assert!(TenantPki::from_data(&broken).is_err());
        // Credentials from before the front proxy get one, once.
        let mut old = data.clone();
        old.remove("front-proxy-ca.crt");
        let mut upgraded = TenantPki::from_data(&old).unwrap();
        assert!(upgraded.front_proxy.is_none());
        let added = upgraded.front_proxy_data("acme").unwrap().unwrap();
        assert_eq!(added.len(), 2);
        assert!(upgraded.front_proxy_data("acme").unwrap().is_none());
    }
}
