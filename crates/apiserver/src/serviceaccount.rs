//! ServiceAccount tokens: the cluster's token issuer (ES256 JWTs signed with the cluster's own
//! key), the TokenRequest subresource, bearer authentication of those tokens, the OIDC
//! discovery documents, and legacy token Secrets.
//!
//! Tokens carry kube-apiserver's claims (`iss`, `sub`, `aud`, `exp`, `iat`, `nbf`, `jti` and
//! the `kubernetes.io` private claim naming the namespace, the ServiceAccount and the object
//! the token is bound to). A token authenticates only while its ServiceAccount (and bound pod
//! or secret) still exists with the same uid, as in kube-apiserver.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use futures::future::BoxFuture;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use vt_store::Store;

use crate::auth::{TokenAuthenticator, UserInfo};

/// Signs and verifies the tokens of one cluster.
pub struct Issuer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    kid: String,
    /// The `iss` claim (and the OIDC issuer).
    pub issuer: String,
    /// The audiences the API server accepts (and gives tokens by default).
    pub audiences: Vec<String>,
    /// Where the JWKS lives (`https://<server>/openid/v1/jwks`).
    pub jwks_uri: String,
    /// The cluster CA (PEM), for legacy token Secrets' `ca.crt`.
    pub ca_pem: String,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer").field("issuer", &self.issuer).field("kid", &self.kid).finish()
    }
}

/// kube-apiserver's default issuer and API audience.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The issuer of legacy (Secret-based) tokens.
const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl Issuer {
    /// An issuer signing with `key_pkcs8` (an ECDSA P-256 key, PKCS#8 DER).
    pub fn new(key_pkcs8: &[u8], issuer: &str, jwks_uri: &str, ca_pem: &str) -> Result<Issuer, String> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, key_pkcs8, &rng)
            .map_err(|e| format!("invalid service account signing key: {e}"))?;
        // kube's key id: the unpadded base64url SHA-256 of the public key.
        let kid = B64.encode(ring::digest::digest(&ring::digest::SHA256, key.public_key().as_ref()));
        Ok(Issuer {
            key,
            rng,
            kid,
            issuer: issuer.to_string(),
            audiences: vec![issuer.to_string()],
            jwks_uri: jwks_uri.to_string(),
            ca_pem: ca_pem.to_string(),
        })
    }

    /// A signed JWT of `claims`.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let signing_input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let sig =
            self.key.sign(&self.rng, signing_input.as_bytes()).map(|s| B64.encode(s.as_ref())).unwrap_or_default();
        format!("{signing_input}.{sig}")
    }

    /// The claims of a token this issuer signed, if the signature holds.
    pub fn verify(&self, token: &str) -> Option<Value> {
        let mut parts = token.split('.');
        let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&B64.decode(h).ok()?).ok()?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256") {
            return None;
        }
        let sig = B64.decode(s).ok()?;
        let public =
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref());
        public.verify(format!("{h}.{c}").as_bytes(), &sig).ok()?;
        serde_json::from_slice(&B64.decode(c).ok()?).ok()
    }

    /// The JWKS document (`/openid/v1/jwks`).
    pub fn jwks(&self) -> Value {
        let point = self.key.public_key().as_ref();
        // Uncompressed point: 0x04 || x (32) || y (32).
        let (x, y) = if point.len() == 65 { (&point[1..33], &point[33..]) } else { (&[][..], &[][..]) };
        json!({"keys": [{"use": "sig", "kty": "EC", "kid": self.kid, "crv": "P-256", "alg": "ES256",
            "x": B64.encode(x), "y": B64.encode(y)}]})
    }

    /// The OIDC discovery document (`/.well-known/openid-configuration`).
    pub fn openid_configuration(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": self.jwks_uri,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }

    /// A bound token's claims.
    #[allow(clippy::too_many_arguments)]
    pub fn bound_claims(
        &self,
        namespace: &str,
        sa_name: &str,
        sa_uid: &str,
        audiences: &[String],
        expiration_seconds: i64,
        bound: Option<(&str, &str, &str)>,
    ) -> Value {
        let iat = now();
        let mut k8s = json!({"namespace": namespace, "serviceaccount": {"name": sa_name, "uid": sa_uid}});
        if let Some((kind, name, uid)) = bound {
            let key = match kind {
                "Pod" => "pod",
                "Secret" => "secret",
                _ => "node",
            };
            k8s[key] = json!({"name": name, "uid": uid});
        }
        json!({
            "aud": audiences,
            "exp": iat + expiration_seconds,
            "iat": iat,
            "iss": self.issuer,
            "jti": uuid::Uuid::new_v4().to_string(),
            "kubernetes.io": k8s,
            "nbf": iat,
            "sub": format!("system:serviceaccount:{namespace}:{sa_name}"),
        })
    }

    /// A legacy (Secret-based, non-expiring) token's claims.
    pub fn legacy_claims(&self, namespace: &str, secret: &str, sa_name: &str, sa_uid: &str) -> Value {
        json!({
            "iss": LEGACY_ISSUER,
            "kubernetes.io/serviceaccount/namespace": namespace,
            "kubernetes.io/serviceaccount/secret.name": secret,
            "kubernetes.io/serviceaccount/service-account.name": sa_name,
            "kubernetes.io/serviceaccount/service-account.uid": sa_uid,
            "sub": format!("system:serviceaccount:{namespace}:{sa_name}"),
        })
    }
}

/// Authenticates ServiceAccount tokens (bound and legacy) against the cluster's store.
pub struct ServiceAccountTokens {
    issuer: Arc<Issuer>,
    store: Arc<dyn Store>,
}

impl ServiceAccountTokens {
    /// An authenticator for `issuer`'s tokens, checking the objects they name in `store`.
    pub fn new(issuer: Arc<Issuer>, store: Arc<dyn Store>) -> ServiceAccountTokens {
        ServiceAccountTokens { issuer, store }
    }

    async fn object(&self, key: String) -> Option<Value> {
        let kv = self.store.get(key.as_bytes()).await.ok()??;
        serde_json::from_slice(&kv.value).ok()
    }

    /// The user of a valid token and the accepted audiences it carries.
    pub async fn check(&self, token: &str, audiences: &[String]) -> Option<(UserInfo, Vec<String>)> {
        let claims = self.issuer.verify(token)?;
        let s = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
        let iss = s(&claims, "/iss")?;
        let mut extra = std::collections::BTreeMap::new();
        let (ns, name, uid, accepted) = if iss == LEGACY_ISSUER {
            let ns = s(&claims, "/kubernetes.io~1serviceaccount~1namespace")?;
            let name = s(&claims, "/kubernetes.io~1serviceaccount~1service-account.name")?;
            let uid = s(&claims, "/kubernetes.io~1serviceaccount~1service-account.uid")?;
            let secret = s(&claims, "/kubernetes.io~1serviceaccount~1secret.name")?;
            // The secret must still hold this very token.
            let sec = self.object(format!("/registry/core/secrets/{ns}/{secret}")).await?;
            let stored = sec.pointer("/data/token").and_then(Value::as_str)?;
            let stored = base64::engine::general_purpose::STANDARD.decode(stored).ok()?;
            if stored != token.as_bytes() {
                return None;
            }
            extra.insert("authentication.kubernetes.io/legacy-token-name".to_string(), vec![secret]);
            (ns, name, uid, audiences.to_vec())
        } else {
            if iss != self.issuer.issuer {
                return None;
            }
            let t = now();
            let exp = claims.get("exp").and_then(Value::as_i64)?;
            let nbf = claims.get("nbf").and_then(Value::as_i64).unwrap_or(0);
            if t >= exp || t < nbf {
                return None;
            }
            let aud: Vec<String> = match claims.get("aud") {
                Some(Value::String(a)) => vec![a.clone()],
                Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_str().map(String::from)).collect(),
                _ => Vec::new(),
            };
            let wanted: &[String] = if audiences.is_empty() { &self.issuer.audiences } else { audiences };
            let accepted: Vec<String> = aud.iter().filter(|a| wanted.contains(a)).cloned().collect();
            if accepted.is_empty() {
                return None;
            }
            let ns = s(&claims, "/kubernetes.io/namespace")?;
            let name = s(&claims, "/kubernetes.io/serviceaccount/name")?;
            let uid = s(&claims, "/kubernetes.io/serviceaccount/uid")?;
            for (kind, resource) in [("pod", "pods"), ("secret", "secrets")] {
                if let Some(bound) = claims.pointer(&format!("/kubernetes.io/{kind}")) {
                    let bname = bound.get("name").and_then(Value::as_str)?;
                    let buid = bound.get("uid").and_then(Value::as_str)?;
                    let obj = self.object(format!("/registry/core/{resource}/{ns}/{bname}")).await?;
                    if obj.pointer("/metadata/uid").and_then(Value::as_str) != Some(buid)
                        || obj.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null())
                    {
                        return None;
                    }
                    extra.insert(format!("authentication.kubernetes.io/{kind}-name"), vec![bname.to_string()]);
                    extra.insert(format!("authentication.kubernetes.io/{kind}-uid"), vec![buid.to_string()]);
                }
            }
            if let Some(jti) = s(&claims, "/jti") {
                extra.insert("authentication.kubernetes.io/credential-id".to_string(), vec![format!("JTI={jti}")]);
            }
            (ns, name, uid, accepted)
        };
        // The ServiceAccount must still exist, with the same uid.
        let sa = self.object(format!("/registry/core/serviceaccounts/{ns}/{name}")).await?;
        if sa.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid.as_str()) {
            return None;
        }
        let user = UserInfo {
            name: format!("system:serviceaccount:{ns}:{name}"),
            uid,
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                crate::auth::AUTHENTICATED.into(),
            ],
            extra,
        };
        Some((user, accepted))
    }
}

impl TokenAuthenticator for ServiceAccountTokens {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Option<UserInfo>> {
        Box::pin(async move { self.check(token, &[]).await.map(|(u, _)| u) })
    }

    fn authenticate_audiences<'a>(
        &'a self,
        token: &'a str,
        audiences: &'a [String],
    ) -> BoxFuture<'a, Option<(UserInfo, Vec<String>)>> {
        Box::pin(self.check(token, audiences))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> Issuer {
        let pem = vt_pki::generate_signing_key().unwrap();
        Issuer::new(&vt_pki::pkcs8_der(&pem).unwrap(), DEFAULT_ISSUER, "https://x/openid/v1/jwks", "").unwrap()
    }

    #[test]
    fn tokens_verify_only_with_their_key() {
        let a = issuer();
        let b = issuer();
        let claims = a.bound_claims("ns", "sa", "uid-1", &a.audiences, 3600, Some(("Pod", "p", "uid-p")));
        let token = a.sign(&claims);
        assert_eq!(a.verify(&token).unwrap()["kubernetes.io"]["pod"]["name"], "p");
        assert!(b.verify(&token).is_none(), "another cluster's key");
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = B64.encode(json!({"sub": "system:admin"}).to_string());
        parts[1] = &forged;
        assert!(a.verify(&parts.join(".")).is_none(), "tampered claims");
        assert!(a.verify("not.a.jwt").is_none() && a.verify("").is_none());
        let jwks = a.jwks();
        assert_eq!(jwks["keys"][0]["crv"], "P-256");
        assert_eq!(B64.decode(jwks["keys"][0]["x"].as_str().unwrap()).unwrap().len(), 32);
    }
}
