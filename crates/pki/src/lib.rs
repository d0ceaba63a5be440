//! Certificates for vt.
//!
//! Every tenant (and every standalone API server) has its own certificate authority. The CA
//! signs the API server's serving certificate and client certificates whose subject carries the
//! user (common name) and groups (organizations), as Kubernetes reads them. A certificate from
//! one CA is worthless at a server that trusts another.

mod csr;
mod der;

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use csr::{Csr, KeyKind};
pub use der::{Subject, subject_of};
/// Key usages a signed certificate may carry.
pub use rcgen::KeyUsagePurpose as KeyUsage;

/// Errors of certificate operations.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen failed to build or sign a certificate.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM or DER input could not be read.
    #[error("invalid certificate material: {0}")]
    Invalid(String),
}

/// A certificate and its private key, PEM-encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertKey {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key (PKCS#8), PEM.
    pub key_pem: String,
}

impl CertKey {
    /// The certificate chain in DER form, for rustls.
    pub fn cert_der(&self) -> Result<Vec<CertificateDer<'static>>, PkiError> {
        CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PkiError::Invalid(format!("certificate PEM: {e}")))
    }

    /// The private key in DER form, for rustls.
    pub fn key_der(&self) -> Result<PrivateKeyDer<'static>, PkiError> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|e| PkiError::Invalid(format!("key PEM: {e}")))
    }
}

/// A new ECDSA P-256 private key (PKCS#8 PEM) for signing ServiceAccount tokens.
pub fn generate_signing_key() -> Result<String, PkiError> {
    Ok(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?.serialize_pem())
}

/// The PKCS#8 DER of a PEM private key.
pub fn pkcs8_der(pem: &str) -> Result<Vec<u8>, PkiError> {
    match PrivateKeyDer::from_pem_slice(pem.as_bytes()) {
        Ok(PrivateKeyDer::Pkcs8(k)) => Ok(k.secret_pkcs8_der().to_vec()),
        Ok(_) => Err(PkiError::Invalid("the signing key is not PKCS#8".into())),
        Err(e) => Err(PkiError::Invalid(format!("key PEM: {e}"))),
    }
}

/// A certificate authority that can issue serving and client certificates.
pub struct Ca {
    material: CertKey,
    issuer: Issuer<'static, KeyPair>,
}

/// How long issued certificates are valid.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

pub(crate) fn validity(params: &mut CertificateParams, valid_for: Duration) -> Result<(), PkiError> {
    let now = jiff::Timestamp::now();
    // Backdate an hour for clock skew between client and server.
    let not_before = now.as_second() - 3600;
    let not_after = now.as_second().saturating_add(valid_for.as_secs() as i64);
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(not_before.max(0) as u64);
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(not_after.max(0) as u64);
    Ok(())
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

impl Ca {
    /// Generates a new CA with the given common name (ECDSA P-256).
    pub fn generate(common_name: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = ca_params(common_name);
        validity(&mut params, DEFAULT_VALIDITY)?;
        let cert = params.self_signed(&key)?;
        let material = CertKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() };
        Ok(Ca { material, issuer: Issuer::new(ca_params(common_name), key) })
    }

    /// Loads a CA from its PEM certificate and key (as produced by [`Ca::generate`]).
    pub fn load(material: CertKey) -> Result<Ca, PkiError> {
        let ders = material.cert_der()?;
        let first = ders.first().ok_or_else(|| PkiError::Invalid("no certificate in CA PEM".into()))?;
        let subject = subject_of(first).map_err(PkiError::Invalid)?;
        let key = KeyPair::from_pem(&material.key_pem)?;
        Ok(Ca { issuer: Issuer::new(ca_params(&subject.common_name), key), material })
    }

    /// The CA certificate and key.
    pub fn material(&self) -> &CertKey {
        &self.material
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.material.cert_pem
    }

    /// Issues a serving certificate for the given DNS names and IP addresses.
    pub fn issue_server(&self, common_name: &str, dns_names: &[String], ips: &[IpAddr]) -> Result<CertKey, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.subject_alt_names = dns_names
            .iter()
            .map(|d| Ok(SanType::DnsName(d.clone().try_into()?)))
            .chain(ips.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
            .collect::<Result<_, rcgen::Error>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, DEFAULT_VALIDITY)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Issues a client certificate for `user`, optionally in `group` (Kubernetes reads the
    /// subject's common name as the user name and its organizations as the groups). rcgen
    /// writes one value per attribute type, so a certificate carries at most one group; give a
    /// user more through RBAC bindings.
    pub fn issue_client(&self, user: &str, group: Option<&str>, valid_for: Duration) -> Result<CertKey, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        if let Some(g) = group {
            params.distinguished_name.push(DnType::OrganizationName, g);
        }
        params.distinguished_name.push(DnType::CommonName, user);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, valid_for)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertKey { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;

    #[test]
    fn client_certificate_subject_carries_user_and_groups() {
        let ca = Ca::generate("vt-test-ca").unwrap();
        let client = ca.issue_client("alice", Some("system:masters"), DEFAULT_VALIDITY).unwrap();
        let der = client.cert_der().unwrap();
        let subject = subject_of(&der[0]).unwrap();
        assert_eq!(subject.common_name, "alice");
        assert_eq!(subject.organizations, vec!["system:masters".to_string()]);
        let nobody = ca.issue_client("bob", None, DEFAULT_VALIDITY).unwrap();
        let subject = subject_of(&nobody.cert_der().unwrap()[0]).unwrap();
        assert_eq!((subject.common_name.as_str(), subject.organizations.len()), ("bob", 0));
    }

    #[test]
    fn loaded_ca_issues_certificates_chaining_to_the_same_root() {
        let ca = Ca::generate("vt-acme-ca").unwrap();
        let again = Ca::load(ca.material().clone()).unwrap();
        let server =
            again.issue_server("vt-apiserver", &["acme.vt.local".into()], &["127.0.0.1".parse().unwrap()]).unwrap();
        // Verify the chain with rustls' verifier.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.material().cert_der().unwrap().remove(0)).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(std::sync::Arc::new(roots), provider)
                .build()
                .unwrap();
        let cert = server.cert_der().unwrap().remove(0);
        let name = rustls::pki_types::ServerName::try_from("acme.vt.local").unwrap();
        verifier
            .verify_server_cert(&cert, &[], &name, &[], rustls::pki_types::UnixTime::now())
            .expect("server certificate chains to the CA");
        assert_eq!(subject_of(&ca.material().cert_der().unwrap()[0]).unwrap().common_name, "vt-acme-ca");
    }
}
