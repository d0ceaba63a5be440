//! Discovery: `/version`, `/api`, `/apis`, `/api/v1`, `/apis/<group>[/<version>]`, in the legacy
//! forms and as aggregated discovery (`apidiscovery.k8s.io/v2`), chosen by the `Accept` header.

use http::{Response, StatusCode, header};
use serde_json::{Value, json};

use crate::aggregator::ClaimedVersion;
use crate::body::Body;
use crate::negotiate::accept_list;
use crate::registry::ResourceType;
use crate::status::ApiError;
use crate::{ApiServer, KUBERNETES_MINOR, json_response};

/// `/version`. kubectl's version dispatcher picks its binary by `minor`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": KUBERNETES_MINOR,
        "emulationMajor": "1",
        "emulationMinor": KUBERNETES_MINOR,
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": format!("v1.{KUBERNETES_MINOR}.0+vt.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH }),
    })
}

/// Which aggregated discovery version the client asked for, if any.
fn aggregated(accept: Option<&str>) -> Option<&'static str> {
    for m in accept_list(accept) {
        if m.group == "apidiscovery.k8s.io" && m.as_kind == "APIGroupDiscoveryList" {
            match m.version.as_str() {
                "v2" => return Some("v2"),
                "v2beta1" => return Some("v2beta1"),
                _ => {}
            }
        }
        if m.as_kind.is_empty() && m.is_json_like() {
            return None;
        }
    }
    None
}

fn aggregated_response(version: &str, items: Vec<Value>) -> Response<Body> {
    let doc = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    });
    let mut resp = json_response(StatusCode::OK, &doc);
    let ct = format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList");
    if let Ok(v) = http::HeaderValue::from_str(&ct) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// One resource in aggregated discovery.
fn aggregated_resource(t: &ResourceType) -> Value {
    let mut r = json!({
        "resource": t.plural,
        "responseKind": {"group": "", "version": "", "kind": t.kind},
        "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": t.singular,
        "verbs": t.verbs,
    });
    if !t.short_names.is_empty() {
        r["shortNames"] = json!(t.short_names);
    }
    if !t.categories.is_empty() {
        r["categories"] = json!(t.categories);
    }
    if !t.subresources.is_empty() {
        let subs: Vec<Value> = t
            .subresources
            .iter()
            .map(|s| {
                let (g, v) = if s.group == t.group && s.version == t.version { ("", "") } else { (s.group.as_str(), s.version.as_str()) };
                json!({"subresource": s.name, "responseKind": {"group": g, "version": v, "kind": s.kind}, "verbs": s.verbs})
            })
            .collect();
        r["subresources"] = Value::Array(subs);
    }
    r
}

fn aggregated_group(api: &ApiServer, group: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| {
            let resources: Vec<Value> =
                api.registry().in_group_version(group, v).iter().map(|t| aggregated_resource(t)).collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    let mut metadata = json!({"creationTimestamp": null});
    if !group.is_empty() {
        metadata["name"] = json!(group);
    }
    json!({"metadata": metadata, "versions": versions})
}

/// `/api`.
pub fn api(api: &ApiServer, accept: Option<&str>) -> Response<Body> {
    if let Some(v) = aggregated(accept) {
        return aggregated_response(v, vec![aggregated_group(api, "", &["v1".to_string()])]);
    }
    let addr = api.config().advertise.to_string();
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr}]}),
    )
}

fn group_doc(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> =
        versions.iter().map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v})).collect();
    json!({"name": name, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)})
}

/// `/apis`.
/// `claimed` are the groups of service-backed APIServices (`aggregator::claimed_groups`),
/// listed after the served ones as kube-aggregator lists them; in aggregated discovery their
/// versions carry the resources their servers' discovery listed, and are `Stale` while
/// unavailable.
pub fn apis(api: &ApiServer, accept: Option<&str>, claimed: &[(String, Vec<ClaimedVersion>)]) -> Response<Body> {
    let groups = api.registry().groups();
    if let Some(v) = aggregated(accept) {
        let mut items: Vec<Value> = groups.iter().map(|g| aggregated_group(api, &g.name, &g.versions)).collect();
        for (group, versions) in claimed {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let resources = v.resources.as_ref().map(remote_resources).unwrap_or_default();
                    json!({"version": v.version, "resources": resources,
                           "freshness": if v.available { "Current" } else { "Stale" }})
                })
                .collect();
            items.push(json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions}));
        }
        return aggregated_response(v, items);
    }
    let mut docs: Vec<Value> = groups.iter().map(|g| group_doc(&g.name, &g.versions)).collect();
    for (group, versions) in claimed {
        let names: Vec<String> = versions.iter().map(|v| v.version.clone()).collect();
        docs.push(group_doc(group, &names));
    }
    json_response(StatusCode::OK, &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": docs}))
}

/// An aggregated server's legacy `APIResourceList` as aggregated discovery resources (what
/// kube-aggregator's discovery manager converts it to): subresources (`pods/log`) under their
/// resource — under a placeholder when the server lists no such resource, as kube's
/// conversion makes one — the rest copied; fields of the wrong type are dropped, so one
/// server's odd answer cannot break the cluster's discovery.
fn remote_resources(list: &Value) -> Vec<Value> {
    let all: Vec<&Value> =
        list.get("resources").and_then(Value::as_array).into_iter().flatten().filter(|r| r.is_object()).collect();
    let str_of = |r: &Value, k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let strings = |r: &Value, k: &str| -> Option<Value> {
        let a = r.get(k)?.as_array()?;
        a.iter().all(Value::is_string).then(|| Value::Array(a.clone()))
    };
    let kind =
        |r: &Value| json!({"group": str_of(r, "group"), "version": str_of(r, "version"), "kind": str_of(r, "kind")});
    let scope = |r: &Value| {
        if r.get("namespaced").and_then(Value::as_bool).unwrap_or(false) { "Namespaced" } else { "Cluster" }
    };
    let mut out: Vec<Value> = Vec::new();
    for r in all.iter().filter(|r| !str_of(r, "name").contains('/')) {
        let mut d = json!({
            "resource": str_of(r, "name"),
            "responseKind": kind(r),
            "scope": scope(r),
            "singularResource": str_of(r, "singularName"),
            "verbs": strings(r, "verbs").unwrap_or_else(|| json!([])),
        });
        for k in ["shortNames", "categories"] {
            if let Some(v) = strings(r, k).filter(|v| v.as_array().is_some_and(|a| !a.is_empty())) {
                d[k] = v;
            }
        }
        out.push(d);
    }
    for s in all.iter().filter(|r| str_of(r, "name").contains('/')) {
        let full = str_of(s, "name");
        let Some((parent, sub)) = full.split_once('/') else { continue };
        let entry = json!({"subresource": sub, "responseKind": kind(s), "verbs": strings(s, "verbs").unwrap_or_else(|| json!([]))});
        let at = match out.iter().position(|d| d["resource"] == parent) {
            Some(i) => i,
            None => {
                out.push(json!({"resource": parent, "responseKind": {"group": "", "version": "", "kind": ""},
                    "scope": scope(s), "singularResource": "", "verbs": null}));
                out.len() - 1
            }
        };
        match out[at].get_mut("subresources").and_then(Value::as_array_mut) {
            Some(subs) => subs.push(entry),
            None => out[at]["subresources"] = json!([entry]),
        }
    }
    out
}

/// The legacy `APIResourceList` of one group version.
fn resource_list(api: &ApiServer, group: &str, version: &str) -> Option<Value> {
    let types = api.registry().in_group_version(group, version);
    if types.is_empty() && !(group.is_empty() && version == "v1") {
        return None;
    }
    let mut resources = Vec::new();
    for t in &types {
        let mut r = json!({
            "name": t.plural, "singularName": t.singular, "namespaced": t.namespaced, "kind": t.kind, "verbs": t.verbs,
        });
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            r["categories"] = json!(t.categories);
        }
        resources.push(r);
        for s in &t.subresources {
            let mut r = json!({"name": format!("{}/{}", t.plural, s.name), "singularName": "", "namespaced": t.namespaced, "kind": s.kind, "verbs": s.verbs});
            if s.group != t.group || s.version != t.version {
                r["group"] = json!(s.group);
                r["version"] = json!(s.version);
            }
            resources.push(r);
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
}

/// `/api/v1`, `/apis/<group>` and `/apis/<group>/<version>`.
pub fn group_or_version(api: &ApiServer, parts: &[String]) -> Result<Response<Body>, ApiError> {
    let doc = match parts {
        [p, v] if p == "api" => resource_list(api, "", v),
        [p, g] if p == "apis" => api.registry().groups().into_iter().find(|x| &x.name == g).map(|x| {
            let mut d = group_doc(&x.name, &x.versions);
            d["kind"] = json!("APIGroup");
            d["apiVersion"] = json!("v1");
            d
        }),
        [p, g, v] if p == "apis" => resource_list(api, g, v),
        _ => None,
    };
    doc.map(|d| json_response(StatusCode::OK, &d)).ok_or_else(ApiError::not_found_path)
}
