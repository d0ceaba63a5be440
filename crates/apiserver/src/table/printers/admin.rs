//! Printers of the administrative kinds: CertificateSigningRequest, ComponentStatus and
//! APIService, with kube-apiserver's columns and cell rules.

use serde_json::{Value, json};

use super::{AGE, NAME, age, arr, col, first_condition, name, s};
use crate::table::Printer;

/// `extractCSRStatus`: Denied over Approved over Pending, then `,Failed` and `,Issued`.
fn csr_condition(o: &Value) -> String {
    let has = |t: &str| first_condition(arr(o, "/status/conditions"), t).is_some();
    let mut out = if has("Denied") {
        "Denied".to_string()
    } else if has("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if has("Failed") {
        out.push_str(",Failed");
    }
    if !s(o, "/status/certificate").is_empty() {
        out.push_str(",Issued");
    }
    out
}

pub(super) static CSR: Printer = Printer {
    columns: &[
        NAME,
        AGE,
        col("SignerName", "string", 0, "The requested signer."),
        col("Requestor", "string", 0, "The user who created the request."),
        col("RequestedDuration", "string", 0, "The requested duration of validity of the certificate."),
        col("Condition", "string", 0, "The request's state: Approved or Denied, Failed, Issued."),
    ],
    cells: |o, now| {
        let duration = match o.pointer("/spec/expirationSeconds").and_then(Value::as_i64) {
            Some(secs) => crate::table::human_duration(jiff::SignedDuration::from_secs(secs)),
            None => "<none>".into(),
        };
        vec![
            name(o),
            age(o, now),
            json!(s(o, "/spec/signerName")),
            json!(s(o, "/spec/username")),
            json!(duration),
            json!(csr_condition(o)),
        ]
        .into()
    },
};

pub(super) static COMPONENT_STATUS: Printer = Printer {
    columns: &[
        NAME,
        col("Status", "string", 0, "Status of the component conditions"),
        col("Message", "string", 0, "Message of the component conditions"),
        col("Error", "string", 0, "Error of the component conditions"),
    ],
    cells: |o, _| {
        let healthy = first_condition(arr(o, "/conditions"), "Healthy");
        let (status, message, error) = match healthy {
            Some(c) => (
                if c.get("status").and_then(Value::as_str) == Some("True") { "Healthy" } else { "Unhealthy" },
                c.get("message").and_then(Value::as_str).unwrap_or(""),
                c.get("error").and_then(Value::as_str).unwrap_or(""),
            ),
            None => ("Unknown", "", ""),
        };
        vec![name(o), json!(status), json!(message), json!(error)].into()
    },
};

/// `getConditionStatus` of an APIService: `True`, `<status> (<reason>)`, or `Unknown`.
fn apiservice_available(o: &Value) -> String {
    match first_condition(arr(o, "/status/conditions"), "Available") {
        Some(c) if c.get("status").and_then(Value::as_str) == Some("True") => "True".into(),
        Some(c) => format!("{} ({})", s(c, "/status"), s(c, "/reason")),
        None => "Unknown".into(),
    }
}

pub(super) static API_SERVICE: Printer = Printer {
    columns: &[
        NAME,
        col("Service", "string", 0, "The Service that hosts this API: namespace/name, or Local."),
        col("Available", "string", 0, "Whether this API is available."),
        AGE,
    ],
    cells: |o, now| {
        let service = match o.pointer("/spec/service").filter(|v| v.is_object()) {
            Some(svc) => format!("{}/{}", s(svc, "/namespace"), s(svc, "/name")),
            None => "Local".into(),
        };
        vec![name(o), json!(service), json!(apiservice_available(o)), age(o, now)].into()
    },
};
