//! Subresources and virtual resources: `scale`, `pods/binding`, and the review APIs
//! (SelfSubjectReview, SelfSubjectAccessReview, SubjectAccessReview, LocalSubjectAccessReview,
//! SelfSubjectRulesReview, TokenReview), which are answered, never stored.

use bytes::Bytes;
use http::{Response, StatusCode, header};
use serde_json::{Value, json};

use super::Op;
use super::write::{Written, apply_patch, decode_body, field_manager, guaranteed_update};
use crate::auth::{Attributes, Decision, UserInfo};
use crate::body::Body;
use crate::negotiate::{BodyFormat, body_format};
use crate::object;
use crate::selector::LabelSelector;
use crate::status::{ApiError, ApiResult, FieldError};

/// The label selector of a workload as a string (`app=web,tier in (a,b)`).
fn selector_string(obj: &Value) -> String {
    let Some(sel) = object::at(obj, &["spec", "selector"]) else {
        return String::new();
    };
    // ReplicationControllers have a plain map selector.
    if sel.get("matchLabels").is_none()
        && sel.get("matchExpressions").is_none()
        && let Some(m) = sel.as_object()
    {
        return m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(",");
    }
    let Some(parsed) = LabelSelector::from_api(sel) else {
        return String::new();
    };
    parsed
        .requirements
        .iter()
        .map(|r| {
            use crate::selector::Requirement as R;
            match r {
                R::In(k, v) if v.len() == 1 => format!("{k}={}", v[0]),
                R::In(k, v) => format!("{k} in ({})", v.join(",")),
                R::NotIn(k, v) => format!("{k} notin ({})", v.join(",")),
                R::Exists(k) => k.clone(),
                R::DoesNotExist(k) => format!("!{k}"),
                R::Gt(k, n) => format!("{k}>{n}"),
                R::Lt(k, n) => format!("{k}<{n}"),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Where a resource keeps its replicas: the workloads' fixed fields, or a custom resource's
/// `scale` subresource paths.
struct ScaleFields {
    spec: Vec<String>,
    status: Vec<String>,
    selector: Option<Vec<String>>,
}

fn scale_fields(op: &Op<'_>) -> ScaleFields {
    match op.rt.custom.as_ref().and_then(|c| c.scale.as_ref()) {
        Some(p) => ScaleFields {
            spec: p.spec_replicas.clone(),
            status: p.status_replicas.clone(),
            selector: p.label_selector.clone(),
        },
        None => ScaleFields {
            spec: vec!["spec".into(), "replicas".into()],
            status: vec!["status".into(), "replicas".into()],
            selector: None,
        },
    }
}

fn at_path<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |v, k| v.get(k.as_str()))
}

/// The `autoscaling/v1` Scale of a workload or custom resource.
fn scale_of(op: &Op<'_>, obj: &Value) -> Value {
    let f = scale_fields(op);
    let m = obj.get("metadata").cloned().unwrap_or(json!({}));
    let mut meta = json!({});
    for k in ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"] {
        if let Some(v) = m.get(k) {
            meta[k] = v.clone();
        }
    }
    let custom = op.rt.custom.is_some();
    let selector = match &f.selector {
        Some(p) => at_path(obj, p).and_then(Value::as_str).unwrap_or("").to_string(),
        None if custom => String::new(),
        None => selector_string(obj),
    };
    let default_spec = if custom { 0 } else { 1 };
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": meta,
        "spec": {"replicas": at_path(obj, &f.spec).and_then(Value::as_i64).unwrap_or(default_spec)},
        "status": {
            "replicas": at_path(obj, &f.status).and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    })
}

/// Sets the replicas a Scale asks for on the object.
fn set_replicas(op: &Op<'_>, obj: &mut Value, replicas: i64) {
    let f = scale_fields(op);
    let Some((last, parents)) = f.spec.split_last() else { return };
    let mut v = obj;
    for k in parents {
        if !v.get(k.as_str()).is_some_and(Value::is_object) {
            v[k.as_str()] = json!({});
        }
        v = &mut v[k.as_str()];
    }
    v[last.as_str()] = json!(replicas);
}

/// The replicas of a Scale, validated.
fn scale_replicas(op: &Op<'_>, scale: &Value) -> ApiResult<(i64, Option<String>)> {
    let replicas = object::at(scale, &["spec", "replicas"]).and_then(Value::as_i64).unwrap_or(0);
    if replicas < 0 {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            &op.name,
            vec![FieldError::invalid("spec.replicas", &json!(replicas), "must be greater than or equal to 0")],
        ));
    }
    let rv = object::str_at(scale, &["metadata", "resourceVersion"]).filter(|s| !s.is_empty()).map(String::from);
    Ok((replicas, rv))
}

/// `get`, `update` and `patch` on `<workload>/scale`.
pub(crate) async fn scale(op: &Op<'_>, verb: &str, body: &Bytes) -> ApiResult<Response<Body>> {
    if verb == "get" {
        let (obj, _) = op.read(&op.name).await?;
        return Ok(op.respond(StatusCode::OK, &scale_of(op, &obj)));
    }
    let manager = field_manager(op, "UpdateOptions")?;
    let ct = op.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let desired = if verb == "update" {
        let s = decode_body(op, body)?;
        Some(scale_replicas(op, &s)?)
    } else {
        None
    };
    let written = guaranteed_update(op, &op.name, Some(&manager), |current| {
        let (replicas, rv) = match &desired {
            Some(d) => d.clone(),
            None => {
                let format = match body_format(ct.as_deref()) {
                    Some(f @ (BodyFormat::JsonPatch | BodyFormat::MergePatch | BodyFormat::StrategicMergePatch)) => f,
                    _ => {
                        return Err(ApiError::new(415, "UnsupportedMediaType", "415: Unsupported Media Type")
                            .with_empty_details());
                    }
                };
                let mut s = scale_of(op, current);
                object::meta_mut(&mut s).remove("resourceVersion");
                let patched =
                    apply_patch(format, &s, body, crate::protobuf::message_for("autoscaling", "v1", "Scale"))?;
                scale_replicas(op, &patched)?
            }
        };
        let mut new = current.clone();
        set_replicas(op, &mut new, replicas);
        match rv {
            Some(rv) => object::meta_mut(&mut new).insert("resourceVersion".into(), json!(rv)),
            None => object::meta_mut(&mut new).remove("resourceVersion"),
        };
        Ok(new)
    })
    .await?;
    match written {
        Written::Updated(obj) | Written::Deleted(obj) => Ok(op.respond(StatusCode::OK, &scale_of(op, &obj))),
    }
}

/// `create` on `pods/<name>/binding` (or the `bindings` collection): assigns the pod to a node,
/// once.
pub(crate) async fn binding(op: &Op<'_>, body: &Bytes) -> ApiResult<Response<Body>> {
    let b = decode_body(op, body)?;
    if op.rt.kind == "Binding" {
        // The legacy `bindings` collection names the pod in the body.
        let pods = op.api.registry().get("", "v1", "pods").ok_or_else(ApiError::not_found_path)?;
        let pod_op = Op {
            api: op.api,
            rt: pods,
            ns: op.ns.clone(),
            name: object::name(&b).to_string(),
            sub: "binding".into(),
            query: op.query,
            user: op.user,
            headers: op.headers,
            output: op.output.clone(),
            warnings: std::sync::Mutex::new(Vec::new()),
        };
        return Box::pin(binding(&pod_op, body)).await;
    }
    let node = object::str_at(&b, &["target", "name"]).unwrap_or("").to_string();
    if node.is_empty() {
        return Err(ApiError::invalid("", "Binding", &op.name, vec![FieldError::required("target.name", "")]));
    }
    let manager = field_manager(op, "CreateOptions")?;
    let gr = crate::status::GroupResource::new("", "pods/binding");
    guaranteed_update(op, &op.name, Some(&manager), |current| {
        if object::is_deleting(current) {
            return Err(ApiError::conflict(
                &gr,
                &op.name,
                &format!("pod {} is being deleted, cannot be assigned to a host", op.name),
            ));
        }
        if let Some(existing) = object::str_at(current, &["spec", "nodeName"]).filter(|n| !n.is_empty()) {
            return Err(ApiError::conflict(
                &gr,
                &op.name,
                &format!("pod {} is already assigned to node {existing:?}", op.name),
            ));
        }
        let mut new = current.clone();
        new["spec"]["nodeName"] = json!(node);
        object::meta_mut(&mut new).remove("resourceVersion");
        Ok(new)
    })
    .await?;
    Ok(op.respond(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

fn user_json(u: &UserInfo) -> Value {
    let mut v = json!({"username": u.name, "groups": u.groups});
    if !u.uid.is_empty() {
        v["uid"] = json!(u.uid);
    }
    if !u.extra.is_empty() {
        v["extra"] = json!(u.extra);
    }
    v
}

/// Builds authorization attributes from a SubjectAccessReview spec.
fn attributes(user: UserInfo, spec: &Value) -> Attributes {
    if let Some(r) = spec.get("resourceAttributes") {
        let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        Attributes {
            user,
            verb: s("verb"),
            is_resource: true,
            namespace: s("namespace"),
            api_group: s("group"),
            resource: s("resource"),
            subresource: s("subresource"),
            name: s("name"),
            path: String::new(),
        }
    } else {
        let n = spec.get("nonResourceAttributes").cloned().unwrap_or(json!({}));
        Attributes {
            user,
            verb: n.get("verb").and_then(Value::as_str).unwrap_or("").to_string(),
            path: n.get("path").and_then(Value::as_str).unwrap_or("").to_string(),
            ..Default::default()
        }
    }
}

async fn access_status(op: &Op<'_>, attrs: &Attributes) -> Value {
    match op.api.config().authorizer.authorize(attrs).await {
        Decision::Allow => json!({"allowed": true}),
        Decision::Deny(reason) if reason.is_empty() => json!({"allowed": false}),
        Decision::Deny(reason) => json!({"allowed": false, "reason": reason}),
    }
}

/// `create` on a review resource.
pub(crate) async fn review(op: &Op<'_>, body: &Bytes) -> ApiResult<Response<Body>> {
    let mut obj = decode_body(op, body)?;
    super::write::check_type(op, &mut obj, &op.rt.kind, &op.rt.api_version())?;
    let spec = obj.get("spec").cloned().unwrap_or(json!({}));
    let status = match op.rt.kind.as_str() {
        "SelfSubjectReview" => json!({"userInfo": user_json(op.user)}),
        "SelfSubjectAccessReview" => access_status(op, &attributes(op.user.clone(), &spec)).await,
        "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let user = UserInfo {
                name: spec.get("user").and_then(Value::as_str).unwrap_or("").to_string(),
                uid: spec.get("uid").and_then(Value::as_str).unwrap_or("").to_string(),
                groups: spec
                    .get("groups")
                    .and_then(Value::as_array)
                    .map(|g| g.iter().filter_map(|x| x.as_str().map(String::from)).collect())
                    .unwrap_or_default(),
                extra: Default::default(),
            };
            let attrs = attributes(user, &spec);
            if op.rt.kind == "LocalSubjectAccessReview" && attrs.namespace != op.ns {
                return Err(ApiError::invalid(
                    "authorization.k8s.io",
                    "LocalSubjectAccessReview",
                    "",
                    vec![FieldError::invalid(
                        "spec.resourceAttributes.namespace",
                        &json!(attrs.namespace),
                        "must match metadata.namespace",
                    )],
                ));
            }
            access_status(op, &attrs).await
        }
        "SelfSubjectRulesReview" => {
            let ns = spec.get("namespace").and_then(Value::as_str).unwrap_or("");
            let masters = op.user.in_group(crate::auth::MASTERS);
            if let Some(rules) = op.api.config().authorizer.rules(op.user, ns) {
                let (resource, non_resource): (Vec<_>, Vec<_>) =
                    rules.into_iter().partition(|r| r.non_resource_urls.is_empty());
                let resource: Vec<Value> = resource
                    .into_iter()
                    .map(|r| {
                        json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources, "resourceNames": r.resource_names})
                    })
                    .collect();
                let non_resource: Vec<Value> = non_resource
                    .into_iter()
                    .map(|r| json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}))
                    .collect();
                json!({"resourceRules": resource, "nonResourceRules": non_resource, "incomplete": false})
            } else if masters {
                json!({"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                       "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}], "incomplete": false})
            } else {
                json!({"resourceRules": [], "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/readyz", "/version", "/version/"]}], "incomplete": false})
            }
        }
        "TokenReview" => {
            let token = spec.get("token").and_then(Value::as_str).unwrap_or("");
            let audiences: Vec<String> = spec
                .get("audiences")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
                .unwrap_or_default();
            let mut found = None;
            for authn in &op.api.config().tokens {
                if let Some(u) = authn.authenticate_audiences(token, &audiences).await {
                    found = Some(u);
                    break;
                }
            }
            match found {
                Some((u, aud)) => json!({"authenticated": true, "user": user_json(&u), "audiences": aud}),
                None => json!({"authenticated": false, "user": {}, "error": "invalid bearer token"}),
            }
        }
        other => {
            return Err(ApiError::new(405, "MethodNotAllowed", format!("create of {other} is not supported")));
        }
    };
    obj["status"] = status;
    let meta = object::meta_mut(&mut obj);
    meta.insert("creationTimestamp".into(), Value::Null);
    Ok(op.respond(StatusCode::CREATED, &obj))
}

/// `create` on `serviceaccounts/<name>/token` (TokenRequest): a token for the ServiceAccount,
/// optionally bound to a Pod or Secret (which must exist with the given uid), for the asked
/// audiences and lifetime (at least 10 minutes; one hour by default).
pub(crate) async fn token_request(op: &Op<'_>, body: &Bytes) -> ApiResult<Response<Body>> {
    let Some(issuer) = op.api.config().service_accounts.clone() else {
        return Err(ApiError::new(404, "NotFound", "the server is not issuing service account tokens"));
    };
    let mut req = decode_body(op, body)?;
    let (sa, _) = op.read(&op.name).await?;
    let spec = req.get("spec").cloned().unwrap_or(json!({}));
    let expiration = spec.get("expirationSeconds").and_then(Value::as_i64).unwrap_or(3600);
    let invalid = |field: &str, value: Value, why: &str| {
        ApiError::invalid("authentication.k8s.io", "TokenRequest", "", vec![FieldError::invalid(field, &value, why)])
    };
    if expiration < 600 {
        return Err(invalid(
            "spec.expirationSeconds",
            json!(expiration),
            "may not specify a duration less than 10 minutes",
        ));
    }
    if expiration > 1 << 32 {
        return Err(invalid(
            "spec.expirationSeconds",
            json!(expiration),
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    let audiences: Vec<String> = match spec.get("audiences").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => a.iter().filter_map(|x| x.as_str().map(String::from)).collect(),
        _ => issuer.audiences.clone(),
    };
    let mut bound = None;
    if let Some(r) = spec.get("boundObjectRef").filter(|r| r.is_object()) {
        let kind = r.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = r.get("name").and_then(Value::as_str).unwrap_or("");
        let resource = match kind {
            "Pod" => "pods",
            "Secret" => "secrets",
            other => {
                return Err(invalid("spec.boundObjectRef.kind", json!(other), "must be one of Pod, Secret"));
            }
        };
        let key = format!("/registry/core/{resource}/{}/{name}", op.ns);
        let obj = op.store().get(key.as_bytes()).await.map_err(|e| crate::status::from_store(e, &op.gr(), name))?;
        let Some(kv) = obj else {
            return Err(ApiError::not_found(&crate::status::GroupResource::new("", resource), name));
        };
        let obj: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
        let uid = object::uid(&obj).to_string();
        if let Some(want) = r.get("uid").and_then(Value::as_str).filter(|u| !u.is_empty())
            && want != uid
        {
            return Err(ApiError::conflict(
                &crate::status::GroupResource::new("", resource),
                name,
                &format!(
                    "the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"
                ),
            ));
        }
        bound = Some((kind.to_string(), name.to_string(), uid));
    }
    let claims = issuer.bound_claims(
        &op.ns,
        &op.name,
        object::uid(&sa),
        &audiences,
        expiration,
        bound.as_ref().map(|(k, n, u)| (k.as_str(), n.as_str(), u.as_str())),
    );
    let token = issuer.sign(&claims);
    let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
    let when = jiff::Timestamp::from_second(exp).map(object::format_time).unwrap_or_default();
    req["apiVersion"] = json!("authentication.k8s.io/v1");
    req["kind"] = json!("TokenRequest");
    req["metadata"] = json!({"name": op.name, "namespace": op.ns, "creationTimestamp": null});
    req["spec"]["audiences"] = json!(audiences);
    req["spec"]["expirationSeconds"] = json!(expiration);
    req["status"] = json!({"token": token, "expirationTimestamp": when});
    Ok(op.respond(StatusCode::CREATED, &req))
}
