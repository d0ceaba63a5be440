//! API errors as `metav1.Status`, with the reasons, codes, messages and details kube-apiserver
//! gives, so clients (kubectl, client-go, kube-rs) react to them exactly as they would to
//! kube-apiserver's.

use std::fmt;

use serde_json::{Value, json};

/// A group and resource, as kube-apiserver names them in messages (`pods`,
/// `deployments.apps`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupResource {
    /// The API group (`""` for core).
    pub group: String,
    /// The resource (plural), possibly with a subresource is *not* included.
    pub resource: String,
}

impl GroupResource {
    /// A group and resource.
    pub fn new(group: impl Into<String>, resource: impl Into<String>) -> Self {
        GroupResource { group: group.into(), resource: resource.into() }
    }
}

impl fmt::Display for GroupResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() { f.write_str(&self.resource) } else { write!(f, "{}.{}", self.resource, self.group) }
    }
}

/// One field-level cause of an `Invalid` error (apimachinery's `field.Error`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The cause type, e.g. `FieldValueInvalid`.
    pub reason: &'static str,
    /// The field path, e.g. `metadata.name` or `spec.containers[0].image`.
    pub field: String,
    /// The message without the field prefix, e.g. `Required value`.
    pub message: String,
}

/// Renders a value the way apimachinery's field errors quote it.
fn quote_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".into(),
        Value::Bool(_) | Value::Number(_) => v.to_string(),
        other => other.to_string(),
    }
}

impl FieldError {
    /// `Required value[: detail]`.
    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        let message =
            if detail.is_empty() { "Required value".to_string() } else { format!("Required value: {detail}") };
        FieldError { reason: "FieldValueRequired", field: field.into(), message }
    }

    /// `Invalid value: "x": detail`.
    pub fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Self {
        let mut message = format!("Invalid value: {}", quote_value(value));
        if !detail.is_empty() {
            message.push_str(": ");
            message.push_str(detail);
        }
        FieldError { reason: "FieldValueInvalid", field: field.into(), message }
    }

    /// `Unsupported value: "x": supported values: "a", "b"`.
    pub fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> Self {
        let list = supported.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
        let mut message = format!("Unsupported value: {}", quote_value(value));
        if !supported.is_empty() {
            message.push_str(&format!(": supported values: {list}"));
        }
        FieldError { reason: "FieldValueNotSupported", field: field.into(), message }
    }

    /// `Forbidden: detail`.
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        FieldError { reason: "FieldValueForbidden", field: field.into(), message: format!("Forbidden: {detail}") }
    }

    /// `Duplicate value: x`.
    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        FieldError {
            reason: "FieldValueDuplicate",
            field: field.into(),
            message: format!("Duplicate value: {}", quote_value(value)),
        }
    }

    /// `Too long: may not be more than N bytes` style errors.
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        FieldError {
            reason: "FieldValueTooLong",
            field: field.into(),
            message: format!("Too long: may not be more than {max} bytes"),
        }
    }

    /// `Invalid value: "x": detail` with reason `FieldValueTypeInvalid`.
    pub fn type_invalid(field: impl Into<String>, value: &Value, detail: &str) -> Self {
        FieldError { reason: "FieldValueTypeInvalid", ..Self::invalid(field, value, detail) }
    }

    /// `Too many: N: must have at most M items`.
    pub fn too_many(field: impl Into<String>, actual: usize, max: i64) -> Self {
        FieldError {
            reason: "FieldValueTooMany",
            field: field.into(),
            message: format!("Too many: {actual}: must have at most {max} items"),
        }
    }

    /// `Not found: "x"`.
    pub fn not_found(field: impl Into<String>, value: &Value) -> Self {
        FieldError {
            reason: "FieldValueNotFound",
            field: field.into(),
            message: format!("Not found: {}", quote_value(value)),
        }
    }

    /// `Invalid value: "x": field is immutable`.
    pub fn immutable(field: impl Into<String>, value: &Value) -> Self {
        Self::invalid(field, value, "field is immutable")
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// An API error, rendered as a `metav1.Status` with status `Failure`.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    /// The HTTP status code.
    pub code: u16,
    /// The machine-readable reason (`NotFound`, `Conflict`, ...); empty for none.
    pub reason: &'static str,
    /// The human-readable message.
    pub message: String,
    /// `details.name`.
    pub name: Option<String>,
    /// `details.group`.
    pub group: Option<String>,
    /// `details.kind`.
    pub kind: Option<String>,
    /// `details.uid`.
    pub uid: Option<String>,
    /// `details.causes`.
    pub causes: Vec<FieldError>,
    /// `details.retryAfterSeconds`, also sent as `Retry-After`.
    pub retry_after: Option<u32>,
    /// Render `"details":{}` even when no detail is set (go-restful's errors do).
    pub empty_details: bool,
    /// `metadata.continue` of the Status (an expired continue token's replacement).
    pub list_continue: Option<String>,
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with only a code, reason and message.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            name: None,
            group: None,
            kind: None,
            uid: None,
            causes: Vec::new(),
            retry_after: None,
            empty_details: false,
            list_continue: None,
        }
    }

    fn with_resource(mut self, gr: &GroupResource, name: &str) -> Self {
        if !name.is_empty() {
            self.name = Some(name.to_string());
        }
        if !gr.group.is_empty() {
            self.group = Some(gr.group.clone());
        }
        self.kind = Some(gr.resource.clone());
        self
    }

    /// 404: `pods "x" not found`.
    pub fn not_found(gr: &GroupResource, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{gr} {name:?} not found")).with_resource(gr, name)
    }

    /// 409: `pods "x" already exists`.
    pub fn already_exists(gr: &GroupResource, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{gr} {name:?} already exists")).with_resource(gr, name)
    }

    /// 409: `Operation cannot be fulfilled on pods "x": <why>`.
    pub fn conflict(gr: &GroupResource, name: &str, why: &str) -> Self {
        Self::new(409, "Conflict", format!("Operation cannot be fulfilled on {gr} {name:?}: {why}"))
            .with_resource(gr, name)
    }

    /// The conflict of a stale resourceVersion.
    pub fn stale(gr: &GroupResource, name: &str) -> Self {
        Self::conflict(
            gr,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422: `Pod "x" is invalid: <causes>`, with one cause per field error.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<FieldError>) -> Self {
        let list = match causes.as_slice() {
            [one] => one.to_string(),
            many => format!("[{}]", many.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")),
        };
        let qualified = if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") };
        let mut e = Self::new(422, "Invalid", format!("{qualified} {name:?} is invalid: {list}"));
        e.name = (!name.is_empty()).then(|| name.to_string());
        e.group = (!group.is_empty()).then(|| group.to_string());
        e.kind = (!kind.is_empty()).then(|| kind.to_string());
        e.causes = causes;
        e
    }

    /// 400 with reason `BadRequest`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 403: `pods "x" is forbidden: <why>`.
    pub fn forbidden(gr: &GroupResource, name: &str, why: &str) -> Self {
        let subject = if name.is_empty() { gr.to_string() } else { format!("{gr} {name:?}") };
        Self::new(403, "Forbidden", format!("{subject} is forbidden: {why}")).with_resource(gr, name)
    }

    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 405.
    pub fn method_not_allowed(gr: &GroupResource, verb: &str) -> Self {
        let what = if gr.resource.is_empty() { "the requested resource".to_string() } else { format!("{gr}") };
        Self::new(405, "MethodNotAllowed", format!("{verb} is not supported on {what}")).with_resource(gr, "")
    }

    /// 410 `Expired`: a resource version or continue token older than retained history.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 410 `Gone`.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Gone", message)
    }

    /// 413: `Request entity too large: limit is 3145728`.
    pub fn too_large(limit: usize) -> Self {
        Self::new(413, "RequestEntityTooLarge", format!("Request entity too large: limit is {limit}"))
    }

    /// 415.
    pub fn unsupported_media_type(supported: &[&str]) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                supported.join(", ")
            ),
        )
    }

    /// 406.
    pub fn not_acceptable(supported: &[&str]) -> Self {
        Self::new(
            406,
            "NotAcceptable",
            format!("only the following media types are accepted: {}", supported.join(", ")),
        )
    }

    /// 429 with `Retry-After`.
    pub fn too_many_requests(retry_after: u32) -> Self {
        let mut e = Self::new(429, "TooManyRequests", "Too many requests, please try again later.");
        e.retry_after = Some(retry_after);
        e
    }

    /// 500: `Internal error occurred: <err>`, with the error as the one cause.
    pub fn internal(message: impl fmt::Display) -> Self {
        let mut e = Self::new(500, "InternalError", format!("Internal error occurred: {message}"));
        e.causes = vec![FieldError { reason: "", field: String::new(), message: message.to_string() }];
        e
    }

    /// 503.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// 504: `Timeout: <message>`.
    pub fn timeout(message: impl Into<String>) -> Self {
        let mut e = Self::new(504, "Timeout", format!("Timeout: {}", message.into()));
        e.empty_details = true;
        e
    }

    /// 504 for a resource version the store has not reached within the wait.
    pub fn too_large_rv(requested: i64, current: i64) -> Self {
        let mut e = Self::timeout(format!("Too large resource version: {requested}, current: {current}"));
        e.causes = vec![FieldError {
            reason: "ResourceVersionTooLarge",
            field: String::new(),
            message: "Too large resource version".into(),
        }];
        e.retry_after = Some(1);
        e
    }

    /// The `metav1.Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        if !self.reason.is_empty() {
            status["reason"] = json!(self.reason);
        }
        if let Some(c) = &self.list_continue {
            status["metadata"] = json!({"continue": c});
        }
        let mut details = serde_json::Map::new();
        if let Some(n) = &self.name {
            details.insert("name".into(), json!(n));
        }
        if let Some(g) = &self.group {
            details.insert("group".into(), json!(g));
        }
        if let Some(k) = &self.kind {
            details.insert("kind".into(), json!(k));
        }
        if let Some(u) = &self.uid {
            details.insert("uid".into(), json!(u));
        }
        if !self.causes.is_empty() {
            let causes: Vec<Value> = self
                .causes
                .iter()
                .map(|c| {
                    let mut m = serde_json::Map::new();
                    if !c.reason.is_empty() {
                        m.insert("reason".into(), json!(c.reason));
                    }
                    if !c.message.is_empty() {
                        m.insert("message".into(), json!(c.message));
                    }
                    if !c.field.is_empty() {
                        m.insert("field".into(), json!(c.field));
                    }
                    Value::Object(m)
                })
                .collect();
            details.insert("causes".into(), Value::Array(causes));
        }
        if let Some(r) = self.retry_after {
            details.insert("retryAfterSeconds".into(), json!(r));
        }
        if !details.is_empty() || self.empty_details {
            status["details"] = Value::Object(details);
        }
        status
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ApiError {}

/// Maps a store error to the API error kube-apiserver gives for the equivalent etcd error.
pub fn from_store(err: vt_store::StoreError, gr: &GroupResource, name: &str) -> ApiError {
    use vt_store::StoreError as S;
    match err {
        S::AlreadyExists { .. } => ApiError::already_exists(gr, name),
        S::NotFound => ApiError::not_found(gr, name),
        S::Conflict { .. } => ApiError::stale(gr, name),
        S::Compacted { .. } => ApiError::expired("The resourceVersion for the provided list is too old."),
        S::FutureRevision { requested, current } => ApiError::too_large_rv(requested, current),
        S::InvalidArgument(m) => ApiError::bad_request(m),
        S::Full(m) => ApiError::new(507, "InsufficientStorage", format!("the tenant's store is full: {m}")),
        S::Unavailable(m) | S::Locked(m) => ApiError::unavailable(format!("storage unavailable: {m}")),
        other => ApiError::internal(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_matches_kube_apiserver() {
        let e = ApiError::not_found(&GroupResource::new("apps", "deployments"), "web");
        assert_eq!(
            e.to_status(),
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "deployments.apps \"web\" not found", "reason": "NotFound",
                   "details": {"name": "web", "group": "apps", "kind": "deployments"}, "code": 404})
        );
    }

    #[test]
    fn invalid_lists_causes() {
        let e = ApiError::invalid(
            "",
            "ConfigMap",
            "Bad",
            vec![
                FieldError::invalid("metadata.name", &json!("Bad"), "must be lowercase"),
                FieldError::required("data", ""),
            ],
        );
        assert_eq!(
            e.message,
            "ConfigMap \"Bad\" is invalid: [metadata.name: Invalid value: \"Bad\": must be lowercase, data: Required value]"
        );
        assert_eq!(
            e.to_status()["details"]["causes"][1],
            json!({"reason": "FieldValueRequired", "message": "Required value", "field": "data"})
        );
    }
}
