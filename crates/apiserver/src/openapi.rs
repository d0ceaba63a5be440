//! OpenAPI documents: `/openapi/v3` (an index plus one document per group version) and
//! `/openapi/v2`. Operations carry `x-kubernetes-group-version-kind`, `x-kubernetes-action`
//! and the `fieldValidation` parameter, which is how kubectl decides to validate on the server.

use http::{Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::body::Body;
use crate::registry::ResourceType;
use crate::status::ApiError;
use crate::{ApiServer, json_response};

fn gvk(t: &ResourceType) -> Value {
    json!({"group": t.group, "version": t.version, "kind": t.kind})
}

fn param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn operation(t: &ResourceType, action: &str, id: &str, write: bool) -> Value {
    let mut op = json!({
        "operationId": id,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(t),
        "responses": {"200": {"description": "OK"}, "401": {"description": "Unauthorized"}},
    });
    if write {
        op["parameters"] = json!([
            param(
                "dryRun",
                "When present, indicates that modifications should not be persisted."
            ),
            param(
                "fieldManager",
                "fieldManager is a name associated with the actor or entity that is making these changes."
            ),
            param(
                "fieldValidation",
                "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: Ignore, Warn (default), Strict."
            ),
        ]);
    }
    op
}

/// The paths of one group version.
fn paths(types: &[std::sync::Arc<ResourceType>]) -> Map<String, Value> {
    let mut paths = Map::new();
    for t in types {
        let base = if t.group.is_empty() {
            "/api/v1".to_string()
        } else {
            format!("/apis/{}/{}", t.group, t.version)
        };
        let scope = if t.namespaced {
            "/namespaces/{namespace}"
        } else {
            ""
        };
        let id = format!("{}{}", t.kind, t.version);
        let collection = format!("{base}{scope}/{}", t.plural);
        let mut c = Map::new();
        if t.supports("list") {
            c.insert(
                "get".into(),
                operation(t, "list", &format!("list{id}"), false),
            );
        }
        if t.supports("create") {
            c.insert(
                "post".into(),
                operation(t, "post", &format!("create{id}"), true),
            );
        }
        if t.supports("deletecollection") {
            c.insert(
                "delete".into(),
                operation(
                    t,
                    "deletecollection",
                    &format!("deletecollection{id}"),
                    false,
                ),
            );
        }
        if !c.is_empty() {
            paths.insert(collection.clone(), Value::Object(c));
        }
        let mut item = Map::new();
        if t.supports("get") {
            item.insert(
                "get".into(),
                operation(t, "get", &format!("read{id}"), false),
            );
        }
        if t.supports("update") {
            item.insert(
                "put".into(),
                operation(t, "put", &format!("replace{id}"), true),
            );
        }
        if t.supports("patch") {
            item.insert(
                "patch".into(),
                operation(t, "patch", &format!("patch{id}"), true),
            );
        }
        if t.supports("delete") {
            item.insert(
                "delete".into(),
                operation(t, "delete", &format!("delete{id}"), false),
            );
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
                    let mut op =
                        operation(t, action, &format!("{method}{id}{}", s.name), verb != "get");
                    op["x-kubernetes-group-version-kind"] = sgvk.clone();
                    sub.insert(method.into(), op);
                }
            }
            if !sub.is_empty() {
                paths.insert(
                    format!("{collection}/{{name}}/{}", s.name),
                    Value::Object(sub),
                );
            }
        }
    }
    paths
}

/// Serves `/openapi/...`.
pub fn handle(
    api: &ApiServer,
    path: &str,
    _accept: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let rest = path.trim_start_matches("/openapi/").trim_end_matches('/');
    let version = format!("v1.{}.0", crate::KUBERNETES_MINOR);
    if rest == "v3" {
        let mut index = Map::new();
        index.insert(
            "api/v1".into(),
            json!({"serverRelativeURL": "/openapi/v3/api/v1"}),
        );
        for g in api.registry().groups() {
            for v in &g.versions {
                let key = format!("apis/{}/{v}", g.name);
                index.insert(
                    key.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{key}")}),
                );
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
        let doc = json!({
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": version},
            "paths": paths(&types),
            "components": {"schemas": {}},
        });
        return Ok(json_response(StatusCode::OK, &doc));
    }
    if rest == "v2" {
        let doc = json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": version}, "paths": paths(&api.registry().all()), "definitions": {}});
        return Ok(json_response(StatusCode::OK, &doc));
    }
    Err(ApiError::not_found_path())
}
