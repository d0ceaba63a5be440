//! CertificateSigningRequests (`certificates.k8s.io/v1`), as kube-apiserver's strategy and
//! validation treat them: the requester's identity is recorded at create (a client cannot
//! claim another's), `spec.request` must be a PKCS#10 request whose signature verifies,
//! Approved/Denied conditions change only through `/approval`, the issued certificate is set
//! only through `/status` and only once, and Approved, Denied and Failed are never removed.

use base64::Engine;
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::auth::UserInfo;
use crate::status::FieldError;

const APPROVAL: [&str; 2] = ["Approved", "Denied"];
const FINAL: [&str; 3] = ["Approved", "Denied", "Failed"];

/// Key usages kube knows.
const USAGES: [&str; 23] = [
    "any",
    "cert sign",
    "client auth",
    "code signing",
    "content commitment",
    "crl sign",
    "data encipherment",
    "decipher only",
    "digital signature",
    "email protection",
    "encipher only",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "key agreement",
    "key encipherment",
    "microsoft sgc",
    "netscape sgc",
    "ocsp signing",
    "s/mime",
    "server auth",
    "signing",
    "timestamping",
];

/// Create: the request's user, uid, groups and extra are who sent it.
pub(crate) fn prepare_create(obj: &mut Value, user: &UserInfo) {
    let spec = &mut obj["spec"];
    if !spec.is_object() {
        *spec = json!({});
    }
    for k in ["username", "uid", "groups", "extra"] {
        spec.as_object_mut().map(|m| m.remove(k));
    }
    spec["username"] = json!(user.name);
    if !user.uid.is_empty() {
        spec["uid"] = json!(user.uid);
    }
    if !user.groups.is_empty() {
        spec["groups"] = json!(user.groups);
    }
    if !user.extra.is_empty() {
        spec["extra"] = json!(user.extra);
    }
}

/// `/approval`: the stored object with the body's conditions.
pub(crate) fn split_approval(body: &Value, current: &Value) -> Value {
    let mut new = current.clone();
    let conditions = body.pointer("/status/conditions").cloned().unwrap_or(Value::Null);
    if !new["status"].is_object() {
        new["status"] = json!({});
    }
    new["status"]["conditions"] = conditions;
    // As through `/status`: the body's resourceVersion (a precondition), nothing else of it.
    match body.pointer("/metadata/resourceVersion") {
        Some(rv) => _ = crate::object::meta_mut(&mut new).insert("resourceVersion".into(), rv.clone()),
        None => _ = crate::object::meta_mut(&mut new).remove("resourceVersion"),
    }
    new
}

/// Update preparation: spec never changes; through the main resource, neither does status;
/// conditions get their defaults and timestamps.
pub(crate) fn prepare_update(new: &mut Value, old: &Value, sub: &str) {
    new["spec"] = old.get("spec").cloned().unwrap_or(json!({}));
    if sub.is_empty() {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => _ = new.as_object_mut().map(|m| m.remove("status")),
        }
        return;
    }
    let now = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let old_conditions = conditions(old);
    if let Some(list) = new.pointer_mut("/status/conditions").and_then(Value::as_array_mut) {
        for c in list.iter_mut().filter(|c| c.is_object()) {
            if c.get("status").and_then(Value::as_str).is_none_or(str::is_empty) {
                c["status"] = json!("True");
            }
            if c.get("lastUpdateTime").is_none_or(Value::is_null) {
                c["lastUpdateTime"] = json!(now);
            }
            let before = old_conditions.iter().find(|o| o.get("type") == c.get("type"));
            let transitioned = before.is_none_or(|o| o.get("status") != c.get("status"));
            if c.get("lastTransitionTime").is_none_or(Value::is_null) {
                let at = match before.and_then(|o| o.get("lastTransitionTime")) {
                    Some(t) if !transitioned => t.clone(),
                    _ => json!(now),
                };
                c["lastTransitionTime"] = at;
            }
        }
    }
}

fn conditions(o: &Value) -> Vec<Value> {
    o.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default()
}

fn of_type<'a>(list: &'a [Value], t: &str) -> Vec<&'a Value> {
    list.iter().filter(|c| c.get("type").and_then(Value::as_str) == Some(t)).collect()
}

/// The whole object (create and update).
pub(crate) fn validate(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let request = obj.pointer("/spec/request").and_then(Value::as_str).unwrap_or("");
    // Only checked when it is new: the stored request was checked when it was stored.
    if old.is_none() {
        let checked = base64::engine::general_purpose::STANDARD
            .decode(request)
            .map_err(|e| format!("illegal base64 data: {e}"))
            .and_then(|pem| vt_pki::Csr::from_pem(&pem));
        if let Err(why) = checked {
            errs.push(FieldError::invalid("spec.request", &json!(request), &why));
        }
    }
    let usages = obj.pointer("/spec/usages").and_then(Value::as_array).cloned().unwrap_or_default();
    if usages.is_empty() {
        errs.push(FieldError::required("spec.usages", ""));
    }
    let mut seen = Vec::new();
    for (i, u) in usages.iter().enumerate() {
        let s = u.as_str().unwrap_or("");
        if !USAGES.contains(&s) {
            errs.push(FieldError::not_supported(format!("spec.usages[{i}]"), u, &USAGES));
        }
        if seen.contains(&s) {
            errs.push(FieldError::duplicate(format!("spec.usages[{i}]"), u));
        }
        seen.push(s);
    }
    let signer = obj.pointer("/spec/signerName").and_then(Value::as_str).unwrap_or("");
    if signer.is_empty() {
        errs.push(FieldError::required("spec.signerName", ""));
    } else if signer == "kubernetes.io/legacy-unknown" && old.is_none() {
        errs.push(FieldError::invalid(
            "spec.signerName",
            &json!(signer),
            "the legacy signerName is not allowed via this API version",
        ));
    } else if signer.split('/').count() != 2 || signer.split('/').any(str::is_empty) {
        errs.push(FieldError::invalid(
            "spec.signerName",
            &json!(signer),
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        ));
    }
    if let Some(secs) = obj.pointer("/spec/expirationSeconds").and_then(Value::as_i64)
        && secs < 600
    {
        errs.push(FieldError::invalid(
            "spec.expirationSeconds",
            &json!(secs),
            "may not specify a duration less than 600 seconds (10 minutes)",
        ));
    }
    let list = conditions(obj);
    let (mut approved, mut denied, mut types) = (false, false, Vec::new());
    for (i, c) in list.iter().enumerate() {
        let t = c.get("type").and_then(Value::as_str).unwrap_or("");
        let status = c.get("status").and_then(Value::as_str).unwrap_or("");
        let field = format!("status.conditions[{i}]");
        if t.is_empty() {
            errs.push(FieldError::required(format!("{field}.type"), ""));
        }
        let allowed: &[&str] = if FINAL.contains(&t) { &["True"] } else { &["False", "True", "Unknown"] };
        if status.is_empty() {
            errs.push(FieldError::required(format!("{field}.status"), ""));
        } else if !allowed.contains(&status) {
            errs.push(FieldError::not_supported(format!("{field}.status"), &json!(status), allowed));
        }
        if (t == "Approved" && denied) || (t == "Denied" && approved) {
            errs.push(FieldError::invalid(
                format!("{field}.type"),
                &json!(t),
                "Approved and Denied conditions are mutually exclusive",
            ));
        }
        approved |= t == "Approved";
        denied |= t == "Denied";
        if types.contains(&t) {
            errs.push(FieldError::duplicate(format!("{field}.type"), &json!(t)));
        }
        types.push(t);
    }
    let cert = obj.pointer("/status/certificate").and_then(Value::as_str).unwrap_or("");
    let unchanged = old.is_some_and(|o| o.pointer("/status/certificate").and_then(Value::as_str).unwrap_or("") == cert);
    if !cert.is_empty()
        && !unchanged
        && let Err(why) = check_certificate(cert)
    {
        errs.push(FieldError::invalid("status.certificate", &json!("<certificate data>"), &why));
    }
}

/// `status.certificate`: base64 of PEM CERTIFICATE blocks, at least one, each parsable.
fn check_certificate(b64: &str) -> Result<(), String> {
    let pem = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| format!("illegal base64 data: {e}"))?;
    let cert = vt_pki::CertKey { cert_pem: String::from_utf8_lossy(&pem).into_owned(), key_pem: String::new() };
    let ders = cert.cert_der().map_err(|e| e.to_string())?;
    if ders.is_empty() {
        return Err("must contain at least one CERTIFICATE PEM block".into());
    }
    for d in &ders {
        vt_pki::subject_of(d)?;
    }
    Ok(())
}

/// What an update through `sub` (`""`, `approval` or `status`) may change.
pub(crate) fn validate_update(new: &Value, old: &Value, sub: &str, errs: &mut Vec<FieldError>) {
    let (new_c, old_c) = (conditions(new), conditions(old));
    for t in FINAL {
        if of_type(&new_c, t).len() < of_type(&old_c, t).len() {
            errs.push(FieldError::forbidden(
                "status.conditions",
                &format!("updates may not remove a condition of type {t:?}"),
            ));
        }
    }
    if sub != "approval" {
        for t in APPROVAL {
            let (n, o) = (of_type(&new_c, t), of_type(&old_c, t));
            if n.len() > o.len() {
                errs.push(FieldError::forbidden(
                    "status.conditions",
                    &format!("updates may not add a condition of type {t:?}"),
                ));
            } else if n.len() == o.len() && n != o {
                errs.push(FieldError::forbidden(
                    "status.conditions",
                    &format!("updates may not modify a condition of type {t:?}"),
                ));
            }
        }
    }
    let cert = |o: &Value| o.pointer("/status/certificate").and_then(Value::as_str).unwrap_or("").to_string();
    if cert(new) != cert(old) {
        if sub != "status" {
            errs.push(FieldError::forbidden("status.certificate", "updates may not set certificate content"));
        } else if !cert(old).is_empty() {
            errs.push(FieldError::forbidden(
                "status.certificate",
                "updates may not modify existing certificate content",
            ));
        }
    }
}
