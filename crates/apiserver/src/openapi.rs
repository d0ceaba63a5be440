//! OpenAPI documents: `/openapi/v3` (an index plus one document per group version) and
//! `/openapi/v2`. Operations carry `x-kubernetes-group-version-kind`, `x-kubernetes-action`
//! and the `fieldValidation` parameter, which is how kubectl decides to validate on the server.

use http::{Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::body::Body;
use crate::registry::ResourceType;
use crate::status::ApiError;
use crate::{ApiServer, json_response};

#[cfg(test)]
mod generate;
mod v2pb;

/// The media type of the protobuf OpenAPI v2 document, and its older spelling.
const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
const V2_PROTOBUF_OLD: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

fn gvk(t: &ResourceType) -> Value {
    json!({"group": t.group, "version": t.version, "kind": t.kind})
}

/// A query parameter, in OpenAPI v3 form (`schema`) or Swagger 2.0 form (`type` inline).
fn param(name: &str, description: &str, v2: bool) -> Value {
    if v2 {
        json!({"name": name, "in": "query", "description": description, "type": "string", "uniqueItems": true})
    } else {
        json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
    }
}

fn operation(t: &ResourceType, action: &str, id: &str, write: bool, v2: bool) -> Value {
    let mut op = json!({
        "operationId": id,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(t),
        "responses": {"200": {"description": "OK"}, "401": {"description": "Unauthorized"}},
    });
    if write {
        op["parameters"] = json!([
            param("dryRun", "When present, indicates that modifications should not be persisted.", v2),
            param(
                "fieldManager",
                "fieldManager is a name associated with the actor or entity that is making these changes.",
                v2
            ),
            param(
                "fieldValidation",
                "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: Ignore, Warn (default), Strict.",
                v2
            ),
        ]);
    }
    op
}

/// The paths of one group version.
fn paths(types: &[std::sync::Arc<ResourceType>], v2: bool) -> Map<String, Value> {
    let mut paths = Map::new();
    for t in types {
        let base = if t.group.is_empty() { "/api/v1".to_string() } else { format!("/apis/{}/{}", t.group, t.version) };
        let scope = if t.namespaced { "/namespaces/{namespace}" } else { "" };
        let id = format!("{}{}", t.kind, t.version);
        let collection = format!("{base}{scope}/{}", t.plural);
        let mut c = Map::new();
        if t.supports("list") {
            c.insert("get".into(), operation(t, "list", &format!("list{id}"), false, v2));
        }
        if t.supports("create") {
            c.insert("post".into(), operation(t, "post", &format!("create{id}"), true, v2));
        }
        if t.supports("deletecollection") {
            c.insert("delete".into(), operation(t, "deletecollection", &format!("deletecollection{id}"), false, v2));
        }
        if !c.is_empty() {
            paths.insert(collection.clone(), Value::Object(c));
        }
        let mut item = Map::new();
        if t.supports("get") {
            item.insert("get".into(), operation(t, "get", &format!("read{id}"), false, v2));
        }
        if t.supports("update") {
            item.insert("put".into(), operation(t, "put", &format!("replace{id}"), true, v2));
        }
        if t.supports("patch") {
            item.insert("patch".into(), operation(t, "patch", &format!("patch{id}"), true, v2));
        }
        if t.supports("delete") {
            item.insert("delete".into(), operation(t, "delete", &format!("delete{id}"), false, v2));
        }
        if !item.is_empty() {
            paths.insert(format!("{collection}/{{name}}"), Value::Object(item));
        }
        for s in &t.subresources {
            let mut sub = Map::new();
            let sgvk = json!({"group": s.group, "version": s.version, "kind": s.kind});
            for (verb, method, action) in [
                ("get", "get", "get"),
                ("update", "put", "put"),
                ("patch", "patch", "patch"),
                ("create", "post", "post"),
            ] {
                if s.verbs.iter().any(|v| v == verb) {
                    let mut op = operation(t, action, &format!("{method}{id}{}", s.name), verb != "get", v2);
                    op["x-kubernetes-group-version-kind"] = sgvk.clone();
                    sub.insert(method.into(), op);
                }
            }
            if !sub.is_empty() {
                paths.insert(format!("{collection}/{{name}}/{}", s.name), Value::Object(sub));
            }
        }
    }
    paths
}

/// The schemas of every built-in type, with Kubernetes' extensions, built once per process.
struct Docs {
    /// Every definition, by name (`io.k8s.api.core.v1.Pod`).
    definitions: Map<String, Value>,
    /// Serialized documents, by path, built on first request.
    rendered: std::sync::Mutex<std::collections::HashMap<String, bytes::Bytes>>,
}

fn docs() -> &'static Docs {
    static DOCS: std::sync::OnceLock<Docs> = std::sync::OnceLock::new();
    DOCS.get_or_init(build_docs)
}

/// The table message of a definition name (`io.k8s.api.core.v1.PodSpec` → `api::core::v1::PodSpec`).
fn table_message(def: &str) -> Option<&'static crate::protobuf::Message> {
    let path = def.strip_prefix("io.k8s.")?.replace('-', "_").replace('.', "::");
    crate::protobuf::MESSAGES.iter().find(|m| m.name == path)
}

/// The built-in kinds' schemas as k8s-openapi renders them, pre-rendered (`hack/gen-openapi`)
/// and deflated at build time: rendering them at run time took schemars impls for every
/// Kubernetes type, megabytes of the binary.
const DEFINITIONS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/definitions.json.deflate"));

/// The pre-rendered definitions, inflated.
fn builtin_definitions() -> Map<String, Value> {
    let json = miniz_oxide::inflate::decompress_to_vec(DEFINITIONS).expect("the build deflated definitions.json");
    serde_json::from_slice(&json).expect("definitions.json is a JSON object (checked by its generator's test)")
}

fn build_docs() -> Docs {
    use crate::protobuf::{ListType, MapType, Patch};
    let kinds: Vec<(String, Value)> = crate::registry::Registry::builtin()
        .all()
        .into_iter()
        .filter_map(|t| t.openapi.map(|name| (name.to_string(), gvk(&t))))
        .collect();
    let mut definitions = builtin_definitions();
    for def in definitions.values_mut() {
        // k8s-openapi's types hold `metadata` by value, so its schemas call it required; in
        // Kubernetes' own schemas it never is (kubectl's client-side validation enforces this).
        if let Some(req) = def.get_mut("required").and_then(Value::as_array_mut) {
            req.retain(|r| r != "metadata");
        }
    }
    for (name, def) in definitions.iter_mut() {
        let Some(msg) = table_message(name) else {
            continue;
        };
        if msg.atomic {
            def["x-kubernetes-map-type"] = json!("atomic");
        }
        let Some(props) = def.get_mut("properties").and_then(Value::as_object_mut) else {
            continue;
        };
        for (field_name, prop) in props.iter_mut() {
            let Some(f) = msg.field(field_name) else {
                continue;
            };
            let Some(p) = prop.as_object_mut() else {
                continue;
            };
            let strategy = match f.patch {
                Patch::None => None,
                Patch::Merge => Some("merge"),
                Patch::Replace => Some("replace"),
                Patch::RetainKeys => Some("retainKeys"),
                Patch::MergeRetainKeys => Some("merge,retainKeys"),
            };
            if let Some(s) = strategy {
                p.insert("x-kubernetes-patch-strategy".into(), json!(s));
            }
            if !f.merge_key.is_empty() {
                p.insert("x-kubernetes-patch-merge-key".into(), json!(f.merge_key));
            }
            match f.list_type {
                ListType::Unset => {}
                ListType::Atomic => _ = p.insert("x-kubernetes-list-type".into(), json!("atomic")),
                ListType::Set => _ = p.insert("x-kubernetes-list-type".into(), json!("set")),
                ListType::Map => {
                    p.insert("x-kubernetes-list-type".into(), json!("map"));
                    p.insert("x-kubernetes-list-map-keys".into(), json!(f.list_keys));
                }
            }
            match f.map_type {
                MapType::Unset => {}
                MapType::Atomic => _ = p.insert("x-kubernetes-map-type".into(), json!("atomic")),
                MapType::Granular => _ = p.insert("x-kubernetes-map-type".into(), json!("granular")),
            }
        }
    }
    for (name, g) in kinds {
        if let Some(def) = definitions.get_mut(&name) {
            let list =
                def.as_object_mut().map(|d| d.entry("x-kubernetes-group-version-kind").or_insert_with(|| json!([])));
            if let Some(Value::Array(l)) = list
                && !l.contains(&g)
            {
                l.push(g);
            }
        }
    }
    Docs { definitions, rendered: std::sync::Mutex::new(std::collections::HashMap::new()) }
}

/// The definition name kube gives a custom resource kind: the group reversed, then version and
/// kind (`widgets.example.com/v1` → `com.example.v1.Widget`).
fn custom_definition_name(group: &str, version: &str, kind: &str) -> String {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", reversed.join("."))
}

/// The definitions of the custom resource types among `types` (each kind and its list), with
/// `apiVersion`, `kind` and `metadata` as kube's CRD OpenAPI builder adds them.
fn custom_definitions(types: &[std::sync::Arc<ResourceType>]) -> Map<String, Value> {
    let mut out = Map::new();
    for t in types {
        let Some(c) = &t.custom else { continue };
        let name = custom_definition_name(&t.group, &t.version, &t.kind);
        let mut def =
            c.schema.clone().unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
        if let Some(m) = def.as_object_mut() {
            let props = m.entry("properties").or_insert_with(|| json!({}));
            if let Some(p) = props.as_object_mut() {
                p.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
                p.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
                p.insert(
                    "metadata".into(),
                    json!({"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "description": "Standard object's metadata."}),
                );
            }
            m.insert("x-kubernetes-group-version-kind".into(), json!([gvk(t)]));
        }
        out.insert(
            custom_definition_name(&t.group, &t.version, &t.list_kind),
            json!({
                "type": "object",
                "required": ["items"],
                "description": format!("{} is a list of {}", t.list_kind, t.kind),
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{name}")}},
                    "metadata": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"},
                },
                "x-kubernetes-group-version-kind": [{"group": t.group, "version": t.version, "kind": t.list_kind}],
            }),
        );
        out.insert(name, def);
    }
    out
}

/// Collects the definitions reachable from `roots` (following `$ref`s), looking names up in
/// `custom` first, then in the built-in definitions.
fn reachable(custom: &Map<String, Value>, roots: impl IntoIterator<Item = String>) -> Map<String, Value> {
    let defs = &docs().definitions;
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str)
                    && let Some(name) = r.rsplit('/').next()
                {
                    out.push(name.to_string());
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut out = Map::new();
    let mut stack: Vec<String> = roots.into_iter().collect();
    while let Some(name) = stack.pop() {
        if out.contains_key(&name) {
            continue;
        }
        if let Some(d) = custom.get(&name).or_else(|| defs.get(&name)) {
            let mut found = Vec::new();
            refs(d, &mut found);
            out.insert(name, d.clone());
            stack.extend(found);
        }
    }
    out
}

/// The definition names of the kinds served in one group version (and common meta types).
fn kind_definitions(types: &[std::sync::Arc<ResourceType>]) -> Vec<String> {
    let mut names: Vec<String> = types
        .iter()
        .filter_map(|t| {
            if t.custom.is_some() {
                return Some(custom_definition_name(&t.group, &t.version, &t.kind));
            }
            let gv = json!({"group": t.group, "version": t.version, "kind": t.kind});
            docs()
                .definitions
                .iter()
                .find(|(_, d)| {
                    d.get("x-kubernetes-group-version-kind").and_then(Value::as_array).is_some_and(|l| l.contains(&gv))
                })
                .map(|(n, _)| n.clone())
        })
        .collect();
    names.push("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions".into());
    names.push("io.k8s.apimachinery.pkg.apis.meta.v1.Status".into());
    // Subresource kinds (Scale, Eviction, TokenRequest, ...).
    for t in types {
        for s in &t.subresources {
            let gv = json!({"group": s.group, "version": s.version, "kind": s.kind});
            if let Some((n, _)) = docs().definitions.iter().find(|(_, d)| {
                d.get("x-kubernetes-group-version-kind").and_then(Value::as_array).is_some_and(|l| l.contains(&gv))
            }) {
                names.push(n.clone());
            }
        }
    }
    names
}

/// Whether the client's most preferred acceptable type is the protobuf OpenAPI v2 document
/// (client-go sends it alone; other clients list JSON first or only).
fn wants_v2_protobuf(accept: Option<&str>) -> bool {
    let Some(first) = accept.and_then(|a| a.split(',').next()) else { return false };
    let media = first.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case(V2_PROTOBUF) || media.eq_ignore_ascii_case(V2_PROTOBUF_OLD)
}

fn cached_bytes(key: &str, build: impl FnOnce() -> Vec<u8>) -> bytes::Bytes {
    let d = docs();
    if let Some(b) = d.rendered.lock().unwrap_or_else(|p| p.into_inner()).get(key) {
        return b.clone();
    }
    let b = bytes::Bytes::from(build());
    d.rendered.lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_string(), b.clone());
    b
}

fn bytes_response(b: bytes::Bytes) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(crate::body::full(b))
        .expect("valid response")
}

/// Serves `/openapi/...`.
pub fn handle(api: &ApiServer, path: &str, accept: Option<&str>) -> Result<Response<Body>, ApiError> {
    let rest = path.trim_start_matches("/openapi/").trim_end_matches('/');
    let version = format!("v1.{}.0", crate::KUBERNETES_MINOR);
    if rest == "v3" {
        let mut index = Map::new();
        index.insert("api/v1".into(), json!({"serverRelativeURL": "/openapi/v3/api/v1"}));
        for g in api.registry().groups() {
            for v in &g.versions {
                let key = format!("apis/{}/{v}", g.name);
                index.insert(key.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{key}")}));
            }
        }
        return Ok(json_response(StatusCode::OK, &json!({"paths": index})));
    }
    if let Some(gv) = rest.strip_prefix("v3/") {
        let types = match gv.split('/').collect::<Vec<_>>().as_slice() {
            ["api", "v1"] => api.registry().in_group_version("", "v1"),
            ["apis", g, v] => api.registry().in_group_version(g, v),
            _ => Vec::new(),
        };
        if types.is_empty() {
            return Err(ApiError::not_found_path());
        }
        let build = || {
            let custom = custom_definitions(&types);
            let schemas = reachable(&custom, kind_definitions(&types));
            serde_json::to_vec(&json!({
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes", "version": version},
                "paths": paths(&types, false),
                "components": {"schemas": schemas},
            }))
            .unwrap_or_default()
        };
        // Documents with custom resources are this server's own; built-in ones are shared.
        let body = if types.iter().any(|t| t.custom.is_some()) {
            api.cached_document(gv, build)
        } else {
            cached_bytes(gv, build)
        };
        return Ok(bytes_response(body));
    }
    if rest == "v2" {
        let all = api.registry().all();
        let has_custom = all.iter().any(|t| t.custom.is_some());
        let doc = || {
            let custom = custom_definitions(&all);
            let mut text = serde_json::to_string(&docs().definitions).unwrap_or_default();
            if !custom.is_empty() {
                // Splice the custom definitions into the built-in object (both are objects).
                let extra = serde_json::to_string(&custom).unwrap_or_default();
                if text.len() > 2 && extra.len() > 2 {
                    text.pop();
                    text.push(',');
                    text.push_str(&extra[1..]);
                }
            }
            let text = text.replace("#/components/schemas/", "#/definitions/");
            let definitions: Value = serde_json::from_str(&text).unwrap_or(json!({}));
            json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": version}, "paths": paths(&all, true), "definitions": definitions})
        };
        if wants_v2_protobuf(accept) {
            let build = || v2pb::encode(&doc());
            let body = if has_custom { api.cached_document("v2.pb", build) } else { cached_bytes("v2.pb", build) };
            return Ok(Response::builder()
                .status(StatusCode::OK)
                // As kube-openapi: the spec's media type is not a valid MIME type ('@'), so Go
                // clients would fail to parse it as Content-Type.
                .header(http::header::CONTENT_TYPE, "application/octet-stream")
                .body(crate::body::full(body))
                .expect("valid response"));
        }
        let build = || serde_json::to_vec(&doc()).unwrap_or_default();
        let body = if has_custom { api.cached_document("v2", build) } else { cached_bytes("v2", build) };
        return Ok(bytes_response(body));
    }
    Err(ApiError::not_found_path())
}
