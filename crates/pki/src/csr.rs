//! PKCS#10 certificate signing requests, as Kubernetes' CSR API carries them: parsed with the
//! small DER reader (subject, public key), their signature checked (proof the requester
//! holds the key), and signed by a tenant's CA for the `kubernetes.io/kube-apiserver-client`
//! signer. Anything malformed is an error, never a panic.

use std::time::Duration;

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose, PublicKeyData, SignatureAlgorithm};

use crate::der::{Subject, expect, read_name, tlv};
use crate::{Ca, PkiError};

const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const OID_ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const OID_ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
const OID_RSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
const OID_RSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
const OID_RSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];

/// The kinds of keys a request may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on P-256.
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// RSA (what `openssl req` makes by default).
    Rsa,
    /// Ed25519.
    Ed25519,
}

/// A parsed certificate signing request whose signature was checked.
#[derive(Clone, Debug)]
pub struct Csr {
    /// Its subject: the user (CN) and groups (O) the certificate will name.
    pub subject: Subject,
    /// Its public key's kind.
    pub key: KeyKind,
    /// The public key (the SubjectPublicKeyInfo's bit string).
    public_key: Vec<u8>,
}

impl PublicKeyData for Csr {
    fn der_bytes(&self) -> &[u8] {
        &self.public_key
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        match self.key {
            KeyKind::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyKind::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyKind::Rsa => &rcgen::PKCS_RSA_SHA256,
            KeyKind::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

/// The content of a BIT STRING with no unused bits.
fn bits(content: &[u8]) -> Result<&[u8], String> {
    match content.split_first() {
        Some((0, rest)) => Ok(rest),
        _ => Err("a bit string with unused bits".into()),
    }
}

impl Csr {
    /// Parses a PEM `CERTIFICATE REQUEST` and checks its signature.
    pub fn from_pem(pem: &[u8]) -> Result<Csr, String> {
        use rustls::pki_types::pem::{PemObject, SectionKind};
        let mut found = None;
        for item in <(SectionKind, Vec<u8>) as PemObject>::pem_slice_iter(pem) {
            let (kind, der) = item.map_err(|e| format!("invalid PEM: {e:?}"))?;
            if kind == SectionKind::Csr {
                found = Some(der);
                break;
            }
        }
        let der = found.ok_or("PEM block type must be CERTIFICATE REQUEST")?;
        Csr::from_der(&der)
    }

    /// Parses a DER certification request and checks its signature.
    pub fn from_der(der: &[u8]) -> Result<Csr, String> {
        let (request, _) = expect(der, 0x30)?;
        let (_, info, after_info) = tlv(request)?;
        let signed = &request[..request.len() - after_info.len()];
        let (alg, after_alg) = expect(after_info, 0x30)?;
        let (sig_oid, _) = expect(alg, 0x06)?;
        let (signature, _) = expect(after_alg, 0x03)?;
        let signature = bits(signature)?;
        // certificationRequestInfo: version, subject, subjectPKInfo, attributes.
        let (_version, rest) = expect(info, 0x02)?;
        let (name, rest) = expect(rest, 0x30)?;
        let subject = read_name(name)?;
        let (spki, _) = expect(rest, 0x30)?;
        let (key_alg, rest) = expect(spki, 0x30)?;
        let (key_oid, params) = expect(key_alg, 0x06)?;
        let (public_key, _) = expect(rest, 0x03)?;
        let public_key = bits(public_key)?.to_vec();
        let key = match key_oid {
            OID_EC_PUBLIC_KEY => match expect(params, 0x06)?.0 {
                OID_P256 => KeyKind::EcdsaP256,
                OID_P384 => KeyKind::EcdsaP384,
                _ => return Err("unsupported elliptic curve (want P-256 or P-384)".into()),
            },
            OID_RSA => KeyKind::Rsa,
            OID_ED25519 => KeyKind::Ed25519,
            _ => return Err("unsupported public key algorithm (want ECDSA, RSA or Ed25519)".into()),
        };
        use ring::signature as s;
        let verify: &dyn s::VerificationAlgorithm = match (key, sig_oid) {
            (KeyKind::EcdsaP256, OID_ECDSA_SHA256) => &s::ECDSA_P256_SHA256_ASN1,
            (KeyKind::EcdsaP256, OID_ECDSA_SHA384) => &s::ECDSA_P256_SHA384_ASN1,
            (KeyKind::EcdsaP384, OID_ECDSA_SHA256) => &s::ECDSA_P384_SHA256_ASN1,
            (KeyKind::EcdsaP384, OID_ECDSA_SHA384) => &s::ECDSA_P384_SHA384_ASN1,
            (KeyKind::Rsa, OID_RSA_SHA256) => &s::RSA_PKCS1_2048_8192_SHA256,
            (KeyKind::Rsa, OID_RSA_SHA384) => &s::RSA_PKCS1_2048_8192_SHA384,
            (KeyKind::Rsa, OID_RSA_SHA512) => &s::RSA_PKCS1_2048_8192_SHA512,
            (KeyKind::Ed25519, OID_ED25519) => &s::ED25519,
            _ => return Err("unsupported signature algorithm for this key".into()),
        };
        s::UnparsedPublicKey::new(verify, &public_key)
            .verify(signed, signature)
            .map_err(|_| "the request's signature does not verify with its public key".to_string())?;
        Ok(Csr { subject, key, public_key })
    }
}

impl Ca {
    /// Signs `csr` as a client certificate (`client auth`, and the key usages given) valid
    /// for `valid_for`, its subject the request's: the user and groups Kubernetes reads.
    /// rcgen writes one value per attribute type; a second organization is written under
    /// the same OID as a custom attribute, so at most two groups fit.
    pub fn sign_client(&self, csr: &Csr, usages: &[KeyUsagePurpose], valid_for: Duration) -> Result<String, PkiError> {
        let mut params = CertificateParams::default();
        let orgs = &csr.subject.organizations;
        if orgs.len() > 2 {
            return Err(PkiError::Invalid("at most two organizations (groups) can be signed".into()));
        }
        if let Some(o) = orgs.first() {
            params.distinguished_name.push(DnType::OrganizationName, o.as_str());
        }
        if let Some(o) = orgs.get(1) {
            params.distinguished_name.push(DnType::CustomDnType(vec![2, 5, 4, 10]), o.as_str());
        }
        if !csr.subject.common_name.is_empty() {
            params.distinguished_name.push(DnType::CommonName, csr.subject.common_name.as_str());
        }
        params.key_usages = usages.to_vec();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        crate::validity(&mut params, valid_for)?;
        Ok(params.signed_by(csr, &self.issuer)?.pem())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(key: &rcgen::KeyPair, cn: &str, orgs: &[&str]) -> String {
        let mut params = CertificateParams::default();
        for (i, o) in orgs.iter().enumerate() {
            let ty = if i == 0 { DnType::OrganizationName } else { DnType::CustomDnType(vec![2, 5, 4, 10]) };
            params.distinguished_name.push(ty, *o);
        }
        params.distinguished_name.push(DnType::CommonName, cn);
        params.serialize_request(key).unwrap().pem().unwrap()
    }

    #[test]
    fn a_request_is_signed_with_its_subject_and_key() {
        let ca = Ca::generate("vt-acme-ca").unwrap();
        for alg in [&rcgen::PKCS_ECDSA_P256_SHA256, &rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
            let key = rcgen::KeyPair::generate_for(alg).unwrap();
            let csr = Csr::from_pem(request(&key, "jane", &["dev", "ops"]).as_bytes()).unwrap();
            assert_eq!(csr.subject.common_name, "jane");
            assert_eq!(csr.subject.organizations, ["dev", "ops"]);
            let pem = ca.sign_client(&csr, &[KeyUsagePurpose::DigitalSignature], crate::DEFAULT_VALIDITY).unwrap();
            let der = crate::CertKey { cert_pem: pem, key_pem: String::new() }.cert_der().unwrap();
            let subject = crate::subject_of(&der[0]).unwrap();
            assert_eq!((subject.common_name.as_str(), subject.organizations.len()), ("jane", 2));
            // The certificate carries the request's key.
            let spki = key.subject_public_key_info();
            assert!(der[0].windows(spki.len()).any(|w| w == spki.as_slice()), "{alg:?}");
        }
    }

    #[test]
    fn a_forged_or_broken_request_is_an_error_not_a_panic() {
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = request(&key, "jane", &[]);
        use rustls::pki_types::pem::{PemObject, SectionKind};
        let der = <(SectionKind, Vec<u8>) as PemObject>::pem_slice_iter(pem.as_bytes()).next().unwrap().unwrap().1;
        // Flip a byte of the subject: the signature no longer verifies.
        let at = der.windows(4).position(|w| w == b"jane").unwrap();
        let mut forged = der.clone();
        forged[at] = b'J';
        assert!(Csr::from_der(&forged).unwrap_err().contains("signature"));
        for cut in 0..der.len() {
            assert!(Csr::from_der(&der[..cut]).is_err());
        }
        assert!(Csr::from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err());
        assert!(Csr::from_pem(b"garbage").is_err());
    }
}
