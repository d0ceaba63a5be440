//! The REST handlers of resources: get, list, create, update, patch, delete, deletecollection
//! and the status, scale, finalize and binding subresources, with kube-apiserver's semantics
//! (see the module docs of each part). Watch is in `watch.rs`.

mod components;
mod delete;
mod dups;
mod eviction;
pub(crate) mod list;
mod stream;
mod sub;
mod write;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use serde_json::Value;
use vt_store::{KeyValue, Revision};

use crate::auth::UserInfo;
use crate::body::{self, Body};
use crate::negotiate::{self, Output};
use crate::registry::ResourceType;
use crate::request::RequestInfo;
use crate::status::{ApiError, ApiResult, FieldError, GroupResource, from_store};
use crate::{ApiServer, object, strategy};

/// Everything a handler needs about one request.
pub(crate) struct Op<'a> {
    pub api: &'a ApiServer,
    pub rt: Arc<ResourceType>,
    pub ns: String,
    pub name: String,
    pub sub: String,
    pub query: &'a HashMap<String, String>,
    pub user: &'a UserInfo,
    pub headers: &'a http::HeaderMap,
    pub output: Output,
    pub warnings: std::sync::Mutex<Vec<String>>,
}

impl Op<'_> {
    pub fn gr(&self) -> GroupResource {
        self.rt.group_resource()
    }

    pub fn key(&self, name: &str) -> String {
        self.rt.key(&self.ns, name)
    }

    pub fn warn(&self, w: impl Into<String>) {
        let w = w.into();
        let mut ws = self.warnings.lock().unwrap_or_else(|p| p.into_inner());
        if !ws.contains(&w) {
            ws.push(w);
        }
    }

    pub fn param(&self, k: &str) -> &str {
        self.query.get(k).map(String::as_str).unwrap_or("")
    }

    /// A boolean query parameter, converted as kube converts them ([`crate::request::query_bool`]).
    pub fn flag(&self, k: &str) -> bool {
        crate::request::query_bool(self.query, k)
    }

    pub fn store(&self) -> &Arc<dyn vt_store::Store> {
        self.api.store()
    }

    /// Decodes a stored object for this request's version.
    pub fn decode(&self, kv: &KeyValue) -> ApiResult<Value> {
        decode(&self.rt, kv)
    }

    /// Reads one object: (object, revision).
    pub async fn read(&self, name: &str) -> ApiResult<(Value, Revision)> {
        match self.store().get(self.key(name).as_bytes()).await {
            Ok(Some(kv)) => {
                let obj = crate::crd::conversion::served(self.api, &self.rt, self.decode(&kv)?).await?;
                Ok((obj, kv.mod_revision))
            }
            Ok(None) => Err(ApiError::not_found(&self.gr(), name)),
            Err(e) => Err(from_store(e, &self.gr(), name)),
        }
    }

    /// Renders an object (or list, or Status) in the negotiated format.
    pub fn respond(&self, code: StatusCode, v: &Value) -> Response<Body> {
        let mut resp = match &self.output {
            Output::Table(version) if v.get("kind").and_then(Value::as_str) != Some("Status") => {
                crate::json_response(code, &self.table_converter(version).convert(v, true))
            }
            output => render(output, code, v),
        };
        let ws = self.warnings.lock().unwrap_or_else(|p| p.into_inner());
        for w in ws.iter() {
            let text = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
            if let Ok(v) = HeaderValue::from_str(&text) {
                resp.headers_mut().append(header::WARNING, v);
            }
        }
        resp
    }
}

impl Op<'_> {
    /// The Table converter for this request (`includeObject` was validated up front).
    pub fn table_converter(&self, version: &str) -> crate::table::Converter {
        let include = crate::table::parse_include(self.query.get("includeObject").map(String::as_str))
            .unwrap_or(crate::table::Include::Metadata);
        crate::table::Converter::new(&self.rt, &self.sub, version, include)
    }
}

/// Renders a value as JSON, YAML or PartialObjectMetadata.
pub(crate) fn render(output: &Output, code: StatusCode, v: &Value) -> Response<Body> {
    match output {
        Output::Yaml => {
            let text = serde_saphyr::to_string(v).unwrap_or_default();
            Response::builder()
                .status(code)
                .header(header::CONTENT_TYPE, "application/yaml")
                .body(body::full(text))
                .expect("valid response")
        }
        Output::PartialMetadata(version) if v.get("kind").and_then(Value::as_str) != Some("Status") => {
            crate::json_response(code, &partial_metadata(v, version))
        }
        Output::Protobuf => match crate::protobuf::encode::encode(v) {
            Some(bytes) => Response::builder()
                .status(code)
                .header(header::CONTENT_TYPE, "application/vnd.kubernetes.protobuf")
                .body(body::full(bytes))
                .expect("valid response"),
            None => crate::json_response(code, v),
        },
        _ => crate::json_response(code, v),
    }
}

/// Reduces an object or list to `PartialObjectMetadata[List]`.
pub(crate) fn partial_metadata(v: &Value, version: &str) -> Value {
    // Maps are built by hand: `json!` would copy each interpolated value through serde.
    let api_version = Value::String(format!("meta.k8s.io/{version}"));
    let typed = |kind: &str, metadata: Option<&Value>| {
        let mut m = serde_json::Map::new();
        m.insert("kind".into(), Value::String(kind.into()));
        m.insert("apiVersion".into(), api_version.clone());
        m.insert("metadata".into(), metadata.cloned().unwrap_or_else(|| Value::Object(Default::default())));
        m
    };
    if let Some(items) = v.get("items").and_then(Value::as_array) {
        let items: Vec<Value> =
            items.iter().map(|i| Value::Object(typed("PartialObjectMetadata", i.get("metadata")))).collect();
        let mut list = typed("PartialObjectMetadataList", v.get("metadata"));
        list.insert("items".into(), Value::Array(items));
        Value::Object(list)
    } else {
        Value::Object(typed("PartialObjectMetadata", v.get("metadata")))
    }
}

/// Decodes a stored object for `rt`'s version: JSON, with `metadata.resourceVersion` set to the
/// revision of its last write, converted from the storage version if they differ.
pub(crate) fn decode(rt: &ResourceType, kv: &KeyValue) -> ApiResult<Value> {
    let mut v: Value = serde_json::from_slice(&kv.value).map_err(|e| {
        ApiError::internal(format!("stored object {} is not valid JSON: {e}", String::from_utf8_lossy(&kv.key)))
    })?;
    object::set_resource_version(&mut v, kv.mod_revision);
    strategy::from_storage(rt, &mut v);
    Ok(v)
}

/// Encodes an object for the store: in the storage version, without `resourceVersion`.
pub(crate) fn encode(rt: &ResourceType, obj: &Value) -> Bytes {
    let mut v = obj.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("selfLink");
    }
    strategy::to_storage(rt, &mut v);
    Bytes::from(object::encode_stored(&v))
}

/// Serves a resource request.
pub(crate) async fn handle(
    api: &ApiServer,
    req: Request<Bytes>,
    info: &RequestInfo,
    query: &HashMap<String, String>,
    user: &UserInfo,
) -> ApiResult<Response<Body>> {
    let Some(rt) = api.registry().get(&info.group, &info.version, &info.resource) else {
        return Err(ApiError::not_found_path().with_empty_details());
    };
    if !rt.namespaced && !info.namespace.is_empty() {
        return Err(ApiError::not_found_path().with_empty_details());
    }
    if !info.subresource.is_empty() && rt.subresource(&info.subresource).is_none() {
        return Err(ApiError::not_found_path().with_empty_details());
    }
    let writes = matches!(info.verb.as_str(), "create" | "update" | "patch" | "delete" | "deletecollection");
    // A deposed manager replica writes nothing (the replica that owns the cluster now does).
    if writes && api.config().fenced.as_ref().is_some_and(|f| f()) {
        return Err(ApiError::new(
            503,
            "ServiceUnavailable",
            "this manager replica no longer serves the cluster; reconnect to reach the one that does",
        ));
    }
    // Kinds a virtual cluster's host provides (its classes) are read-only to its users.
    if writes
        && api.config().host_provided.iter().any(|(g, r)| *g == rt.group && *r == rt.plural)
        && user.name != crate::HOST_SYNC_USER
        && user.name != "system:apiserver"
    {
        let kind = if rt.group.is_empty() { rt.plural.clone() } else { format!("{}.{}", rt.plural, rt.group) };
        return Err(ApiError::forbidden(
            &rt.group_resource(),
            &info.name,
            &format!("{kind} are the host cluster's, read-only in this virtual cluster"),
        ));
    }
    // Collections take no name; named verbs need one.
    if info.name.is_empty() && matches!(info.verb.as_str(), "update" | "patch") {
        return Err(ApiError::method_not_allowed_generic());
    }
    if !info.name.is_empty() && info.verb == "create" && info.subresource.is_empty() && rt.kind != "Namespace" {
        return Err(ApiError::method_not_allowed_generic());
    }
    let verbs: &[String] = match rt.subresource(&info.subresource) {
        Some(s) => &s.verbs,
        None => &rt.verbs,
    };
    let verb_ok = verbs.iter().any(|v| v == &info.verb) || (info.verb == "list" && rt.supports("list"));
    if !verb_ok {
        let what =
            if info.subresource.is_empty() { rt.plural.clone() } else { format!("{}/{}", rt.plural, info.subresource) };
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{} is not supported on resources of kind {what:?}", info.verb),
        )
        .with_kind(&rt.group, &rt.plural));
    }
    if rt.group.is_empty() && rt.kind == "Pod" && stream::is_streaming(&info.subresource) {
        return stream::serve(api, req, info, query, user).await;
    }
    let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok());
    // Every built-in resource prints as a Table (the default convertor at least), except that
    // a watch-list request (sendInitialEvents with bookmarks) cannot: negotiation moves on.
    let flag = |k: &str| crate::request::query_bool(query, k);
    let watch_list = info.verb == "watch" && flag("sendInitialEvents") && flag("allowWatchBookmarks");
    let scale = info.subresource == "scale";
    let protobuf = if scale { true } else { crate::protobuf::encode::supported(&rt.group, &rt.version, &rt.kind) };
    let output = match negotiate::choose(accept, !watch_list, protobuf) {
        Some(o) => o,
        None => {
            return Err(ApiError::new(
                406,
                "NotAcceptable",
                "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf",
            ));
        }
    };
    if info.verb == "watch" && output == Output::Yaml {
        // YAML has no stream form (kube-apiserver: no stream serializer, 406).
        return Err(ApiError::new(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/vnd.kubernetes.protobuf, application/json;stream=watch, application/vnd.kubernetes.protobuf;stream=watch",
        ));
    }
    if matches!(output, Output::Table(_)) {
        crate::table::parse_include(query.get("includeObject").map(String::as_str))?;
    }
    let (parts, body) = req.into_parts();
    let op = Op {
        api,
        rt: rt.clone(),
        ns: info.namespace.clone(),
        name: info.name.clone(),
        sub: info.subresource.clone(),
        query,
        user,
        headers: &parts.headers,
        output,
        warnings: std::sync::Mutex::new(Vec::new()),
    };
    if info.verb == "create" && rt.custom.as_ref().is_some_and(|c| c.terminating) {
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "create not allowed while custom resource definition is terminating",
        ));
    }
    if rt.namespaced && op.ns.is_empty() && !matches!(info.verb.as_str(), "list" | "watch") {
        return Err(ApiError::bad_request("Namespace parameter required."));
    }
    let csr = rt.kind == "CertificateSigningRequest";
    let pod = rt.kind == "Pod" && rt.group.is_empty();
    match (info.verb.as_str(), info.subresource.as_str()) {
        ("get" | "list", "") if rt.kind == "ComponentStatus" && rt.group.is_empty() => {
            components::serve(&op, info.verb == "list").await
        }
        ("get", "" | "status") => get(&op).await,
        ("get", "approval") if csr => get(&op).await,
        ("update", "approval") if csr => write::update(&op, &body).await,
        ("patch", "approval") if csr => write::patch(&op, &body).await,
        ("get", "ephemeralcontainers") if pod => get(&op).await,
        ("update", "ephemeralcontainers") if pod => write::update(&op, &body).await,
        ("patch", "ephemeralcontainers") if pod => write::patch(&op, &body).await,
        ("list", "") => list::list(&op).await,
        ("watch", "") => crate::watch::watch(&op).await,
        ("create", "") if rt.kind.ends_with("Review") => sub::review(&op, &body).await,
        ("create", "") if rt.kind == "Binding" => sub::binding(&op, &body).await,
        ("create", "") => write::create(&op, &body).await,
        ("update", "" | "status" | "finalize") => write::update(&op, &body).await,
        ("patch", "" | "status") => write::patch(&op, &body).await,
        ("delete", "") => delete::delete(&op, &body).await,
        ("deletecollection", "") => delete::delete_collection(&op, &body).await,
        (_, "scale") => sub::scale(&op, info.verb.as_str(), &body).await,
        ("create", "binding") => sub::binding(&op, &body).await,
        ("create", "eviction") if rt.kind == "Pod" => eviction::evict(&op, &body).await,
        ("create", "token") if rt.kind == "ServiceAccount" => sub::token_request(&op, &body).await,
        (verb, sub) => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{verb} of {}/{sub} is not served by this server yet", rt.plural),
        )),
    }
}

/// `GET` on an object. JSON answers copy the stored bytes with the resourceVersion spliced
/// in; other outputs and converted versions decode.
async fn get(op: &Op<'_>) -> ApiResult<Response<Body>> {
    if op.output == Output::Json && !strategy::converts(&op.rt) {
        match op.store().get(op.key(&op.name).as_bytes()).await {
            Ok(Some(kv)) => {
                if let Some(bytes) = object::render_stored(&kv.value, kv.mod_revision, false) {
                    return Ok(crate::json_bytes_response(StatusCode::OK, bytes));
                }
            }
            Ok(None) => return Err(ApiError::not_found(&op.gr(), &op.name)),
            Err(e) => return Err(from_store(e, &op.gr(), &op.name)),
        }
    }
    let (obj, _) = op.read(&op.name).await?;
    Ok(op.respond(StatusCode::OK, &obj))
}

impl ApiError {
    /// `"details":{}` as go-restful's errors render it.
    pub(crate) fn with_empty_details(mut self) -> Self {
        self.kind = None;
        self.empty_details = true;
        self
    }

    /// The 405 of a method a path does not accept.
    pub(crate) fn method_not_allowed_generic() -> Self {
        ApiError::new(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
            .with_empty_details()
    }

    fn with_kind(mut self, group: &str, plural: &str) -> Self {
        if !group.is_empty() {
            self.group = Some(group.to_string());
        }
        self.kind = Some(plural.to_string());
        self
    }
}

/// The `Invalid` error of request options (`CreateOptions`, `ListOptions`, ...).
pub(crate) fn invalid_options(kind: &str, cause: FieldError) -> ApiError {
    ApiError::invalid("meta.k8s.io", kind, "", vec![cause])
}

/// Parses `dryRun`: only `All` is allowed.
pub(crate) fn dry_run(op: &Op<'_>, options_kind: &str) -> ApiResult<bool> {
    match op.query.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(invalid_options(
            options_kind,
            FieldError {
                reason: "FieldValueNotSupported",
                field: "dryRun".into(),
                message: format!("Unsupported value: []string{{{other:?}}}: supported values: \"All\""),
            },
        )),
    }
}
