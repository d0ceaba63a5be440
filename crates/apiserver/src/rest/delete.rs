//! Delete and deletecollection: preconditions, graceful deletion (pods), finalizers and the
//! garbage-collection propagation policy, recorded as the `orphan`/`foregroundDeletion`
//! finalizers for the garbage collector.

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{Value, json};
use vt_store::StoreError;

use super::list::{Filter, list_object, list_objects};
use super::{Op, decode, dry_run, encode, invalid_options};
use crate::body::Body;
use crate::registry::GcPolicy;
use crate::status::{ApiError, ApiResult, FieldError, GroupResource, from_store};
use crate::{object, strategy};

/// Kinds whose immediate delete answers with the deleted object rather than a Status.
const RETURN_DELETED: &[&str] = &["Pod", "Service", "ServiceAccount", "StorageClass", "Namespace", "PersistentVolume"];

/// Namespaces kube-apiserver refuses to delete.
const IMMORTAL: &[&str] = &["default", "kube-system", "kube-public"];

/// `DeleteOptions` from the body and the query.
#[derive(Default)]
pub(crate) struct DeleteOptions {
    grace: Option<i64>,
    uid: Option<String>,
    resource_version: Option<String>,
    propagation: Option<String>,
    orphan_dependents: Option<bool>,
    /// `dryRun: ["All"]` in the body (the query parameter is read separately).
    dry_run: bool,
}

fn parse_options(op: &Op<'_>, body: &Bytes) -> ApiResult<DeleteOptions> {
    let mut o = DeleteOptions::default();
    if !body.is_empty() {
        let ct = op.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let v: Value = match crate::negotiate::body_format(ct) {
            Some(crate::negotiate::BodyFormat::Protobuf) => crate::protobuf::decode(body),
            Some(crate::negotiate::BodyFormat::Yaml) => serde_saphyr::from_slice(body).map_err(|e| e.to_string()),
            _ => serde_json::from_slice(body).map_err(|e| e.to_string()),
        }
        .map_err(|e| ApiError::bad_request(format!("unable to decode DeleteOptions: {e}")))?;
        o.grace = v.get("gracePeriodSeconds").and_then(Value::as_i64);
        if let Some(d) = v.get("dryRun").and_then(Value::as_array) {
            for x in d {
                match x.as_str() {
                    Some("All") => o.dry_run = true,
                    other => {
                        return Err(invalid_options(
                            "DeleteOptions",
                            FieldError::not_supported("dryRun", &json!(other), &["All"]),
                        ));
                    }
                }
            }
        }
        o.uid = v.get("preconditions").and_then(|p| p.get("uid")).and_then(Value::as_str).map(String::from);
        o.resource_version =
            v.get("preconditions").and_then(|p| p.get("resourceVersion")).and_then(Value::as_str).map(String::from);
        o.propagation = v.get("propagationPolicy").and_then(Value::as_str).map(String::from);
        o.orphan_dependents = v.get("orphanDependents").and_then(Value::as_bool);
    }
    if let Some(g) = op.query.get("gracePeriodSeconds") {
        o.grace = Some(g.parse().map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}")))?);
    }
    if let Some(p) = op.query.get("propagationPolicy") {
        o.propagation = Some(p.clone());
    }
    if let Some(d) = op.query.get("orphanDependents") {
        o.orphan_dependents = Some(crate::request::parse_bool(d));
    }
    if let Some(p) = &o.propagation {
        if !matches!(p.as_str(), "Foreground" | "Background" | "Orphan") {
            return Err(invalid_options(
                "DeleteOptions",
                FieldError::not_supported(
                    "propagationPolicy",
                    &json!(p),
                    &["Foreground", "Background", "Orphan", "nil"],
                ),
            ));
        }
        if o.orphan_dependents.is_some() {
            return Err(invalid_options(
                "DeleteOptions",
                FieldError::invalid(
                    "propagationPolicy",
                    &json!(p),
                    "orphanDependents and deletionPropagation cannot be both set",
                ),
            ));
        }
    }
    Ok(o)
}

/// The finalizers an object gets for the requested propagation policy.
fn gc_finalizers(op: &Op<'_>, current: &Value, opts: &DeleteOptions) -> Vec<String> {
    let mut fins = object::finalizers(current);
    if op.rt.kind == "Event" {
        return fins;
    }
    let had_orphan = fins.iter().any(|f| f == "orphan");
    let had_foreground = fins.iter().any(|f| f == "foregroundDeletion");
    let wanted = match (&opts.propagation, opts.orphan_dependents) {
        (Some(p), _) => Some(p.as_str()),
        (None, Some(true)) => Some("Orphan"),
        (None, Some(false)) => Some("Background"),
        (None, None) if had_orphan || had_foreground => None,
        (None, None) => Some(if op.rt.policy.default_gc == GcPolicy::Orphan { "Orphan" } else { "Background" }),
    };
    if object::is_deleting(current) {
        // Once deletion started, the finalizers are final.
        return fins;
    }
    // A CRD stays until its objects are deleted (apiextensions' cleanup finalizer).
    if op.rt.group == "apiextensions.k8s.io"
        && op.rt.kind == "CustomResourceDefinition"
        && !fins.iter().any(|f| f == crate::crd::CLEANUP_FINALIZER)
    {
        fins.push(crate::crd::CLEANUP_FINALIZER.into());
    }
    if let Some(w) = wanted {
        fins.retain(|f| f != "orphan" && f != "foregroundDeletion");
        match w {
            "Orphan" => fins.push("orphan".into()),
            "Foreground" => fins.push("foregroundDeletion".into()),
            _ => {}
        }
    }
    fins
}

/// The grace period of a pod delete (kube's `CheckGracefulDelete`), or `None` for kinds
/// deleted at once.
fn grace_period(op: &Op<'_>, current: &Value, opts: &DeleteOptions) -> Option<i64> {
    if op.rt.kind != "Pod" || !op.rt.group.is_empty() {
        return None;
    }
    let mut period = opts
        .grace
        .or_else(|| object::at(current, &["spec", "terminationGracePeriodSeconds"]).and_then(Value::as_i64))
        .unwrap_or(0);
    if object::str_at(current, &["spec", "nodeName"]).unwrap_or("").is_empty() {
        period = 0;
    }
    if matches!(object::str_at(current, &["status", "phase"]), Some("Failed" | "Succeeded")) {
        period = 0;
    }
    if period < 0 {
        period = 1;
    }
    Some(period)
}

/// The Status of a completed delete.
fn success_status(op: &Op<'_>, obj: &Value) -> Value {
    let mut details = json!({"name": object::name(obj), "kind": op.rt.plural, "uid": object::uid(obj)});
    if !op.rt.group.is_empty() {
        details["group"] = json!(op.rt.group);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

/// What a delete did.
pub(crate) enum Deleted {
    /// The object is gone.
    Gone(Value),
    /// The object remains, marked for deletion (finalizers or grace period).
    Pending(Value),
}

/// Deletes one object.
pub(crate) async fn delete_object(op: &Op<'_>, name: &str, opts: &DeleteOptions, dry: bool) -> ApiResult<Deleted> {
    let key = op.key(name);
    for _ in 0..64 {
        let kv = op.store().get(key.as_bytes()).await.map_err(|e| from_store(e, &op.gr(), name))?;
        let Some(kv) = kv else {
            return Err(ApiError::not_found(&op.gr(), name));
        };
        let current = crate::crd::conversion::served(op.api, &op.rt, decode(&op.rt, &kv)?).await?;
        let kind_gr = GroupResource::new(op.rt.group.clone(), op.rt.kind.clone());
        if let Some(uid) = &opts.uid
            && uid != object::uid(&current)
        {
            return Err(ApiError::conflict(
                &kind_gr,
                name,
                &format!(
                    "the UID in the precondition ({uid}) does not match the UID in record ({}). The object might have been deleted and then recreated",
                    object::uid(&current)
                ),
            ));
        }
        if let Some(rv) = &opts.resource_version
            && rv != object::resource_version(&current)
        {
            return Err(ApiError::conflict(
                &kind_gr,
                name,
                &format!(
                    "the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record ({}). The object might have been modified",
                    object::resource_version(&current)
                ),
            ));
        }
        if op.rt.kind == "Namespace" && op.rt.group.is_empty() && IMMORTAL.contains(&name) {
            return Err(ApiError::forbidden(&op.gr(), name, "this namespace may not be deleted"));
        }
        crate::admission::webhooks(op, "DELETE", None, Some(&current), false, dry).await?;
        let finalizers = gc_finalizers(op, &current, opts);
        let grace = grace_period(op, &current, opts);
        let spec_finalizers = op.rt.kind == "Namespace"
            && object::at(&current, &["spec", "finalizers"]).and_then(Value::as_array).is_some_and(|a| !a.is_empty());
        let pending = !finalizers.is_empty() || spec_finalizers || grace.is_some_and(|g| g > 0);
        if pending {
            let mut new = current.clone();
            let now = jiff::Timestamp::now();
            let already = object::is_deleting(&current);
            let current_grace =
                object::at(&current, &["metadata", "deletionGracePeriodSeconds"]).and_then(Value::as_i64);
            {
                let meta = object::meta_mut(&mut new);
                if finalizers.is_empty() {
                    meta.remove("finalizers");
                } else {
                    meta.insert("finalizers".into(), json!(finalizers));
                }
                let g = grace.unwrap_or(0);
                // A later delete may only shorten a grace period.
                let shorten = already && grace.is_some() && current_grace.is_some_and(|c| g < c);
                if !already || shorten {
                    let at = now + jiff::SignedDuration::from_secs(g);
                    meta.insert("deletionTimestamp".into(), json!(object::format_time(at)));
                    meta.insert("deletionGracePeriodSeconds".into(), json!(g));
                }
                if !already && let Some(generation) = meta.get("generation").and_then(Value::as_i64).filter(|g| *g > 0)
                {
                    meta.insert("generation".into(), json!(generation + 1));
                }
            }
            if op.rt.kind == "Namespace" {
                new["status"]["phase"] = json!("Terminating");
            }
            if op.rt.kind == "CustomResourceDefinition" && !already {
                crate::crd::mark_terminating(&mut new);
            }
            // A pod whose grace period is shortened to zero is deleted right away.
            let grace_now_zero = grace == Some(0) && already && finalizers.is_empty() && !spec_finalizers;
            if !grace_now_zero {
                if new == current || dry {
                    return Ok(Deleted::Pending(new));
                }
                let converted = crate::crd::conversion::storable(op.api, &op.rt, &new).await?;
                let bytes = encode(&op.rt, converted.as_ref().unwrap_or(&new));
                match op.store().update(key.as_bytes(), bytes, kv.mod_revision, op.rt.policy.ttl).await {
                    Ok(rev) => {
                        object::set_resource_version(&mut new, rev);
                        strategy::after_update(op);
                        return Ok(Deleted::Pending(new));
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(StoreError::NotFound) => return Err(ApiError::not_found(&op.gr(), name)),
                    Err(e) => return Err(from_store(e, &op.gr(), name)),
                }
            }
        }
        if dry {
            return Ok(Deleted::Gone(current));
        }
        match op.store().delete(key.as_bytes(), Some(kv.mod_revision)).await {
            Ok(_) => {
                strategy::after_delete(op, &current).await;
                crate::admission::quota::refresh_later(op);
                return Ok(Deleted::Gone(current));
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound) => return Err(ApiError::not_found(&op.gr(), name)),
            Err(e) => return Err(from_store(e, &op.gr(), name)),
        }
    }
    Err(ApiError::conflict(&op.gr(), name, "too many concurrent updates, please try again"))
}

/// `DELETE` on an object.
pub(crate) async fn delete(op: &Op<'_>, body: &Bytes) -> ApiResult<Response<Body>> {
    let opts = parse_options(op, body)?;
    let dry = dry_run(op, "DeleteOptions")? || opts.dry_run;
    match delete_object(op, &op.name, &opts, dry).await? {
        Deleted::Pending(obj) => {
            let code = if opts.orphan_dependents == Some(false) { StatusCode::ACCEPTED } else { StatusCode::OK };
            Ok(op.respond(code, &obj))
        }
        Deleted::Gone(obj)
            if RETURN_DELETED.contains(&op.rt.kind.as_str()) && op.rt.group.is_empty()
                || op.rt.kind == "StorageClass" =>
        {
            Ok(op.respond(StatusCode::OK, &obj))
        }
        Deleted::Gone(obj) => Ok(op.respond(StatusCode::OK, &success_status(op, &obj))),
    }
}

/// `DELETE` on a collection: deletes every listed object and answers with the list as it was.
pub(crate) async fn delete_collection(op: &Op<'_>, body: &Bytes) -> ApiResult<Response<Body>> {
    let opts = parse_options(op, body)?;
    let dry = dry_run(op, "DeleteOptions")? || opts.dry_run;
    let filter = Filter::parse(op)?;
    let listed = list_objects(op, &filter).await?;
    for obj in &listed.items {
        let ns_op = Op {
            api: op.api,
            rt: op.rt.clone(),
            ns: object::namespace(obj).to_string(),
            name: object::name(obj).to_string(),
            sub: String::new(),
            query: op.query,
            user: op.user,
            headers: op.headers,
            output: op.output.clone(),
            warnings: std::sync::Mutex::new(Vec::new()),
        };
        match delete_object(&ns_op, &ns_op.name, &opts, dry).await {
            Ok(_) => {}
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let keep_type = op.rt.roundtrip.is_none();
    Ok(op.respond(StatusCode::OK, &list_object(op, listed, keep_type)))
}
