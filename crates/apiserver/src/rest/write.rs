//! Create, update and patch.
//!
//! Bodies are decoded (JSON or YAML), checked against the endpoint's group/version/kind,
//! type-checked through the kind's typed form (unknown fields are refused, warned about or
//! dropped per `fieldValidation`), defaulted and validated by the kind's strategy, and written
//! through one retry loop ([`guaranteed_update`]) that honours `resourceVersion`
//! preconditions and skips no-op writes.

use bytes::Bytes;
use http::{Response, StatusCode, header};
use rand::RngExt;
use serde_json::{Value, json};
use vt_store::{Revision, StoreError};

use super::{Op, decode, dry_run, encode, invalid_options};
use crate::body::Body;
use crate::negotiate::{BodyFormat, body_format};
use crate::status::{ApiError, ApiResult, FieldError, from_store};
use crate::{fields, object, strategy};

/// Media types accepted for create and update bodies.
const BODY_TYPES: &[&str] = &["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"];

/// `fieldValidation`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

pub(crate) fn field_validation(op: &Op<'_>, options_kind: &str) -> ApiResult<FieldValidation> {
    match op.param("fieldValidation") {
        "" | "Warn" => Ok(FieldValidation::Warn),
        "Ignore" => Ok(FieldValidation::Ignore),
        "Strict" => Ok(FieldValidation::Strict),
        other => Err(invalid_options(
            options_kind,
            FieldError::not_supported(
                "fieldValidation",
                &Value::String(other.into()),
                &["", "Ignore", "Strict", "Warn"],
            ),
        )),
    }
}

/// The field manager: `?fieldManager=`, else the User-Agent up to its first `/`.
pub(crate) fn field_manager(op: &Op<'_>, options_kind: &str) -> ApiResult<String> {
    let explicit = op.param("fieldManager");
    let manager = if explicit.is_empty() {
        let ua = op.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
        ua.split('/').next().unwrap_or("").chars().take(128).collect::<String>()
    } else {
        explicit.to_string()
    };
    if manager.len() > 128 {
        return Err(invalid_options(options_kind, FieldError::too_long("fieldManager", 128)));
    }
    if manager.chars().any(|c| c.is_control()) {
        return Err(invalid_options(
            options_kind,
            FieldError::invalid(
                "fieldManager",
                &Value::String(manager.clone()),
                "must only contain printable characters",
            ),
        ));
    }
    Ok(manager)
}

/// A short summary of a body for decode errors, as apimachinery prints it.
fn body_summary(body: &[u8]) -> String {
    if body.is_empty() {
        return "<empty>".into();
    }
    let head = &body[..body.len().min(30)];
    let more = if body.len() > 30 { " ..." } else { "" };
    if body.first() == Some(&b'{') {
        format!("{}{more}", String::from_utf8_lossy(head))
    } else {
        format!("{}{more}", head.iter().map(|b| format!("{b:02x}")).collect::<String>())
    }
}

/// Decodes a create/update body into a JSON object.
pub(crate) fn decode_body(op: &Op<'_>, body: &Bytes) -> ApiResult<Value> {
    let ct = op.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let parsed: Result<Value, String> = match body_format(ct) {
        Some(BodyFormat::Json) => serde_json::from_slice(body).map_err(|e| e.to_string()),
        // Repeated keys: the last wins; `body_duplicates` reports them per fieldValidation.
        Some(BodyFormat::Yaml) => super::dups::yaml_last_wins(body).map_err(|e| e.to_string()),
        Some(BodyFormat::Protobuf) => crate::protobuf::decode(body),
        _ => return Err(ApiError::unsupported_media_type(BODY_TYPES)),
    };
    match parsed {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err(ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {}): couldn't get version/kind; json parse error: json: cannot unmarshal into Go value of type struct {{ APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \"json:\\\"kind,omitempty\\\"\" }} ({})",
            op.rt.kind,
            body_summary(body)
        ))),
        Err(e) => Err(ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {}): couldn't get version/kind; json parse error: {e} ({})",
            op.rt.kind,
            body_summary(body)
        ))),
    }
}

/// Checks the body's `apiVersion`/`kind` against the endpoint and fills them in.
pub(crate) fn check_type(op: &Op<'_>, obj: &mut Value, expect_kind: &str, expect_api_version: &str) -> ApiResult<()> {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
    let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_string();
    if !av.is_empty() && av != expect_api_version {
        let (g, _) = expect_api_version.split_once('/').unwrap_or(("", expect_api_version));
        let (dg, _) = av.split_once('/').unwrap_or(("", &av));
        if dg != g || kind.is_empty() || kind == expect_kind {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({expect_api_version})"
            )));
        }
    }
    if !kind.is_empty() && kind != expect_kind {
        let version = if av.is_empty() { expect_api_version.to_string() } else { av.clone() };
        return Err(ApiError::bad_request(format!(
            "{kind} in version {:?} cannot be handled as a {expect_kind}: no kind {kind:?} is registered for version {version:?}",
            version.rsplit('/').next().unwrap_or(&version)
        )));
    }
    let _ = op;
    obj["apiVersion"] = json!(expect_api_version);
    obj["kind"] = json!(expect_kind);
    Ok(())
}

/// Lists the paths present in `input` but missing from `typed` (the typed form drops unknown
/// fields), in kube-apiserver's notation (`spec.foo`, `spec.containers[0].bar`).
fn unknown_fields(input: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match b.get(k) {
                    Some(tv) => unknown_fields(v, tv, &p, out),
                    None if v.is_null() => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, tv)) in a.iter().zip(b).enumerate() {
                unknown_fields(v, tv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The duplicate fields of a JSON request body, when `fieldValidation` wants them reported
/// (YAML's decoder refuses duplicate keys itself; protobuf cannot repeat a field by name).
pub(crate) fn body_duplicates(op: &Op<'_>, body: &[u8], validation: FieldValidation) -> Vec<Duplicate> {
    if validation == FieldValidation::Ignore {
        return Vec::new();
    }
    let ct = op.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    match body_format(ct) {
        Some(BodyFormat::Json | BodyFormat::MergePatch | BodyFormat::StrategicMergePatch) => {
            super::dups::duplicate_fields(body)
                .into_iter()
                .map(|path| {
                    let text = format!("duplicate field {path:?}");
                    Duplicate { error: text.clone(), warning: text }
                })
                .collect()
        }
        Some(BodyFormat::Yaml) => match serde_saphyr::from_slice::<Value>(body) {
            Err(e) => super::dups::yaml_duplicate(&e)
                .map(|d| Duplicate { error: format!("yaml: unmarshal errors:\n  {d}"), warning: d })
                .into_iter()
                .collect(),
            Ok(_) => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// A duplicate field in a request body: its strict-error and warning wordings.
pub(crate) struct Duplicate {
    error: String,
    warning: String,
}

/// Type-checks `obj` through the kind's typed form; returns the pruned object. Duplicate
/// fields (`dups`, found in the body) and unknown fields are errors under `Strict`, warnings
/// under `Warn`, and silently dropped under `Ignore`. For a patch (`patch` is its body) a
/// strict error is kube-apiserver's 422 on the field `patch`; for a body, a 400.
pub(crate) fn typed_check(
    op: &Op<'_>,
    obj: Value,
    validation: FieldValidation,
    dups: &[Duplicate],
    patch: Option<&[u8]>,
) -> ApiResult<Value> {
    let kind = &op.rt.kind;
    let version = &op.rt.version;
    let (typed, unknown) = match op.rt.roundtrip {
        Some(roundtrip) => {
            let typed = roundtrip(&obj).map_err(|e| {
                ApiError::bad_request(format!("{kind} in version {version:?} cannot be handled as a {kind}: {e}"))
            })?;
            let mut unknown = Vec::new();
            unknown_fields(&obj, &typed, "", &mut unknown);
            (typed, unknown)
        }
        None => match op.rt.custom.as_ref().and_then(|c| c.schema.as_ref()) {
            // Custom resources: pruning by the structural schema is the type check.
            Some(schema) => {
                let mut obj = obj;
                let pruned = crate::crd::schema::prune(&mut obj, schema);
                (obj, pruned)
            }
            None => (obj, Vec::new()),
        },
    };
    if dups.is_empty() && unknown.is_empty() {
        return Ok(typed);
    }
    let unknown = unknown.iter().map(|u| format!("unknown field {u:?}"));
    match validation {
        FieldValidation::Strict => {
            let list: Vec<String> = dups.iter().map(|d| d.error.clone()).chain(unknown).collect();
            let detail = format!("strict decoding error: {}", list.join(", "));
            return Err(match patch {
                Some(p) => ApiError::invalid(
                    "",
                    "",
                    "",
                    vec![FieldError::invalid("patch", &json!(String::from_utf8_lossy(p)), &detail)],
                ),
                None => ApiError::bad_request(format!(
                    "{kind} in version {version:?} cannot be handled as a {kind}: {detail}"
                )),
            });
        }
        FieldValidation::Warn => dups.iter().map(|d| d.warning.clone()).chain(unknown).for_each(|w| op.warn(w)),
        FieldValidation::Ignore => {}
    }
    Ok(typed)
}

/// Checks and fills `metadata.namespace` against the URL.
fn check_namespace(op: &Op<'_>, obj: &mut Value) -> ApiResult<()> {
    let meta = object::meta_mut(obj);
    if !op.rt.namespaced {
        meta.remove("namespace");
        return Ok(());
    }
    match meta.get("namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() && ns != op.ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            meta.insert("namespace".into(), json!(op.ns));
            Ok(())
        }
    }
}

/// The NamespaceLifecycle error of a create in a terminating namespace.
fn terminating_error(op: &Op<'_>, name_for_error: &str) -> ApiError {
    let mut e = ApiError::forbidden(
        &op.gr(),
        name_for_error,
        &format!("unable to create new content in namespace {} because it is being terminated", op.ns),
    );
    e.causes = vec![FieldError {
        reason: "NamespaceTerminating",
        field: "metadata.namespace".into(),
        message: format!("namespace {} is being terminated", op.ns),
    }];
    e
}

/// The NamespaceLifecycle admission check of a create: the namespace exists and is not being
/// terminated.
async fn check_namespace_lifecycle(op: &Op<'_>, name_for_error: &str) -> ApiResult<()> {
    if !op.rt.namespaced {
        return Ok(());
    }
    match op.api.namespace_terminating(&op.ns) {
        Some(false) => return Ok(()),
        Some(true) => return Err(terminating_error(op, name_for_error)),
        // Not indexed (yet): ask the store.
        None => {}
    }
    let key = format!("/registry/core/namespaces/{}", op.ns);
    let ns = op.store().get(key.as_bytes()).await.map_err(|e| from_store(e, &op.gr(), ""))?;
    let Some(kv) = ns else {
        return Err(ApiError::not_found(&crate::status::GroupResource::new("", "namespaces"), &op.ns));
    };
    let ns: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
    if object::is_deleting(&ns) || object::str_at(&ns, &["status", "phase"]) == Some("Terminating") {
        return Err(terminating_error(op, name_for_error));
    }
    Ok(())
}

/// Validates an object: generic metadata rules plus the kind's own.
pub(crate) fn validate(op: &Op<'_>, obj: &Value, old: Option<&Value>) -> ApiResult<()> {
    let mut errs = Vec::new();
    let name = object::name(obj);
    let generate = object::str_at(obj, &["metadata", "generateName"]).unwrap_or("");
    if name.is_empty() {
        errs.push(FieldError::required("metadata.name", "name or generateName is required"));
    } else if let Some(d) = op.rt.policy.name_rule.check(name) {
        errs.push(FieldError::invalid("metadata.name", &json!(name), &d));
    } else if op.rt.policy.name_rule != crate::validation::NameRule::PathSegment
        && let Some(d) = crate::validation::path_segment_name(name)
    {
        errs.push(FieldError::invalid("metadata.name", &json!(name), &d));
    }
    if !generate.is_empty() && old.is_none() && name.is_empty() {
        let masked = mask_trailing_dash(generate);
        if let Some(d) = op.rt.policy.name_rule.check(&masked) {
            errs.push(FieldError::invalid("metadata.generateName", &json!(generate), &d));
        }
    }
    if op.rt.namespaced && object::namespace(obj).is_empty() {
        errs.push(FieldError::required("metadata.namespace", ""));
    }
    if let Some(l) = object::at(obj, &["metadata", "labels"]) {
        crate::validation::labels("metadata.labels", l, &mut errs);
    }
    if let Some(a) = object::at(obj, &["metadata", "annotations"]) {
        crate::validation::annotations("metadata.annotations", a, &mut errs);
    }
    for (i, f) in object::finalizers(obj).iter().enumerate() {
        let field = format!("metadata.finalizers[{i}]");
        crate::validation::qualified_name(&field, f, &mut errs);
    }
    if let Some(old) = old
        && object::is_deleting(old)
    {
        let before = object::finalizers(old);
        let added: Vec<String> = object::finalizers(obj).into_iter().filter(|f| !before.contains(f)).collect();
        if !added.is_empty() {
            errs.push(FieldError::forbidden(
                "metadata.finalizers",
                &format!("no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}", added.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ")),
            ));
        }
    }
    strategy::validate(&op.rt, obj, old, &mut errs);
    if !errs.is_empty() {
        return Err(ApiError::invalid(&op.rt.group, &op.rt.kind, if name.is_empty() { generate } else { name }, errs));
    }
    check_escalation(op, obj)
}

/// RBAC's escalation prevention: a Role, ClusterRole or binding may only grant what its author
/// holds, unless the author may `escalate` (roles) or `bind` (the bound role).
fn check_escalation(op: &Op<'_>, obj: &Value) -> ApiResult<()> {
    if op.rt.group != "rbac.authorization.k8s.io" {
        return Ok(());
    }
    let authorizer = &op.api.config().authorizer;
    let ns = if op.rt.namespaced { op.ns.as_str() } else { "" };
    let Some(held) = authorizer.rules(op.user, ns) else {
        return Ok(());
    };
    let name = object::name(obj);
    let may = |verb: &str, resource: &str, target: &str| {
        held.iter().any(|r| r.allows_resource(verb, "rbac.authorization.k8s.io", resource, "", target))
    };
    let requested = match op.rt.kind.as_str() {
        "Role" | "ClusterRole" => {
            if may("escalate", &op.rt.plural, name) {
                return Ok(());
            }
            crate::rbac::rules_of(obj)
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let kind = object::str_at(obj, &["roleRef", "kind"]).unwrap_or("");
            let role = object::str_at(obj, &["roleRef", "name"]).unwrap_or("");
            let plural = if kind == "Role" { "roles" } else { "clusterroles" };
            if may("bind", plural, role) {
                return Ok(());
            }
            let role_ns = if kind == "Role" { ns } else { "" };
            match authorizer.role_rules(kind, role_ns, role) {
                Some(rules) => rules,
                None => return Ok(()),
            }
        }
        _ => return Ok(()),
    };
    let missing = crate::rbac::uncovered(&held, &requested);
    if missing.is_empty() {
        return Ok(());
    }
    let groups = op.user.groups.iter().map(|g| format!("{g:?}")).collect::<Vec<_>>().join(" ");
    let list = missing.iter().map(crate::rbac::describe).collect::<Vec<_>>().join("\n");
    Err(ApiError::forbidden(
        &op.gr(),
        name,
        &format!(
            "user {:?} (groups=[{groups}]) is attempting to grant RBAC permissions not currently held:\n{list}",
            op.user.name
        ),
    ))
}

/// apimachinery's `maskTrailingDash`: a generateName may end in `-`.
fn mask_trailing_dash(s: &str) -> String {
    if s.len() > 1 && s.ends_with('-') {
        let mut m: String = s[..s.len() - 2].to_string();
        m.push_str("aa");
        m
    } else {
        s.to_string()
    }
}

/// Five random characters from kube's name-generation alphabet.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// `POST` on a collection.
pub(crate) async fn create(op: &Op<'_>, body: &Bytes) -> ApiResult<Response<Body>> {
    let dry = dry_run(op, "CreateOptions")?;
    let validation = field_validation(op, "CreateOptions")?;
    let manager = field_manager(op, "CreateOptions")?;
    let mut obj = decode_body(op, body)?;
    check_type(op, &mut obj, &op.rt.kind, &op.rt.api_version())?;
    object::drop_null_metadata(&mut obj);
    check_namespace(op, &mut obj)?;
    let obj = typed_check(op, obj, validation, &body_duplicates(op, body, validation), None)?;
    create_object(op, obj, dry, Some(&manager)).await
}

/// Creates a decoded, type-checked object. With `manager`, the create is an Update by it in
/// the managed fields; without, `obj` carries its managed fields already (server-side apply).
pub(crate) async fn create_object(
    op: &Op<'_>,
    mut obj: Value,
    dry: bool,
    manager: Option<&str>,
) -> ApiResult<Response<Body>> {
    let generate = object::name(&obj).is_empty()
        && object::str_at(&obj, &["metadata", "generateName"]).is_some_and(|g| !g.is_empty());
    let err_name = if generate {
        object::str_at(&obj, &["metadata", "generateName"]).unwrap_or("").to_string()
    } else {
        object::name(&obj).to_string()
    };
    check_namespace_lifecycle(op, if err_name.is_empty() { "Unknown" } else { &err_name }).await?;
    let rv_set = object::resource_version(&obj).parse::<i64>().is_ok_and(|r| r != 0);
    let now = object::now_rfc3339();
    {
        let meta = object::meta_mut(&mut obj);
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now));
        for k in ["deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
            meta.remove(k);
        }
        if manager.is_some() {
            meta.remove("managedFields");
        }
        if op.rt.policy.sets_generation {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
    }
    if op.rt.policy.reset_status_on_create
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    strategy::prepare_for_create(&op.rt, &mut obj, op.user);
    // Mutating admission (webhooks, then LimitRanger) sees the object before its name is
    // generated, as in kube-apiserver.
    crate::admission::webhooks(op, "CREATE", Some(&mut obj), None, true, dry).await?;
    crate::admission::quota::limit_ranges(op, &mut obj).await?;
    crate::admission::serviceaccount::admit(op, &mut obj, &random_suffix()).await?;
    let prefix = object::str_at(&obj, &["metadata", "generateName"]).unwrap_or("").to_string();
    for _attempt in 0..8 {
        if generate {
            let base: String = prefix.chars().take(58).collect();
            object::meta_mut(&mut obj).insert("name".into(), json!(format!("{base}{}", random_suffix())));
        }
        strategy::prepare_named(&op.rt, &mut obj);
        if let Some(manager) = manager {
            fields::record_update(&mut obj, None, manager, &op.rt.api_version(), "", &now);
        }
        validate(op, &obj, None)?;
        crate::admission::webhooks(op, "CREATE", Some(&mut obj.clone()), None, false, dry).await?;
        crate::admission::podsecurity::admit(op, &obj).await?;
        let quotas = crate::admission::quota::check_quota(op, &obj).await?;
        if rv_set && !dry {
            return Err(ApiError::new(500, "", "resourceVersion should not be set on objects to be created"));
        }
        let name = object::name(&obj).to_string();
        let key = op.key(&name);
        if dry {
            if op.store().get(key.as_bytes()).await.map_err(|e| from_store(e, &op.gr(), &name))?.is_some() {
                if generate {
                    continue;
                }
                return Err(ApiError::already_exists(&op.gr(), &name));
            }
            object::meta_mut(&mut obj).remove("resourceVersion");
            return Ok(op.respond(StatusCode::CREATED, &obj));
        }
        object::meta_mut(&mut obj).remove("resourceVersion");
        let allocated = strategy::allocate(op, &mut obj).await?;
        let converted = crate::crd::conversion::storable(op.api, &op.rt, &obj).await?;
        match op
            .store()
            .create(key.as_bytes(), encode(&op.rt, converted.as_ref().unwrap_or(&obj)), op.rt.policy.ttl)
            .await
        {
            Ok(rev) => {
                object::set_resource_version(&mut obj, rev);
                if quotas {
                    crate::admission::quota::refresh_later(op);
                }
                strategy::after_create(op, &obj).await;
                return Ok(op.respond(StatusCode::CREATED, &obj));
            }
            Err(StoreError::AlreadyExists { .. }) => {
                strategy::release(op, &allocated).await;
                if generate {
                    continue;
                }
                let mut e = ApiError::already_exists(&op.gr(), &name);
                if let Ok((existing, _)) = op.read(&name).await
                    && object::is_deleting(&existing)
                {
                    e.message = format!("object is being deleted: {}", e.message);
                }
                return Err(e);
            }
            Err(e) => {
                strategy::release(op, &allocated).await;
                return Err(from_store(e, &op.gr(), &name));
            }
        }
    }
    let name = object::name(&obj).to_string();
    let mut e = ApiError::already_exists(&op.gr(), &name);
    e.message.push_str(", the server was not able to generate a unique name for the object");
    e.retry_after = Some(1);
    Err(e)
}

/// What a guaranteed update did.
pub(crate) enum Written {
    /// The object was updated (or unchanged).
    Updated(Value),
    /// The update removed the last finalizer of an object being deleted, which deleted it.
    Deleted(Value),
}

/// Reads, transforms and writes one object, retrying on conflicts unless the caller pinned a
/// resourceVersion. `f` gets the current object and returns the desired one; the common
/// metadata rules (immutable fields, generation, managed fields) are applied after it.
pub(crate) async fn guaranteed_update<F>(op: &Op<'_>, name: &str, manager: Option<&str>, mut f: F) -> ApiResult<Written>
where
    F: FnMut(&Value) -> ApiResult<Value>,
{
    let dry = dry_run(op, "UpdateOptions")?;
    let key = op.key(name);
    for _ in 0..64 {
        let kv = op.store().get(key.as_bytes()).await.map_err(|e| from_store(e, &op.gr(), name))?;
        let Some(kv) = kv else {
            return Err(ApiError::not_found(&op.gr(), name));
        };
        let current = crate::crd::conversion::served(op.api, &op.rt, decode(&op.rt, &kv)?).await?;
        let mut new = f(&current)?;
        let pinned = object::resource_version(&new).to_string();
        let pinned = if pinned.is_empty() { None } else { Some(pinned) };
        if let Some(rv) = &pinned
            && rv.parse::<Revision>().ok() != Some(kv.mod_revision)
        {
            return Err(ApiError::stale(&op.gr(), name));
        }
        crate::admission::webhooks(op, "UPDATE", Some(&mut new), Some(&current), true, dry).await?;
        finish_update(op, &mut new, &current, manager)?;
        validate(op, &new, Some(&current))?;
        strategy::validate_update(&op.rt, &new, &current, &op.sub)
            .map_err(|errs| ApiError::invalid(&op.rt.group, &op.rt.kind, name, errs))?;
        if op.sub == "ephemeralcontainers" {
            // Debug containers meet the namespace's Pod Security level, as kube's plugin checks.
            crate::admission::podsecurity::admit(op, &new).await?;
        }
        crate::admission::webhooks(op, "UPDATE", Some(&mut new.clone()), Some(&current), false, dry).await?;
        if !object::is_deleting(&new) && crate::admission::quota::check_quota_update(op, &new, &current).await? {
            crate::admission::quota::refresh_later(op);
        }
        let deleting = object::is_deleting(&new);
        let no_finalizers = object::finalizers(&new).is_empty()
            && (op.rt.kind != "Namespace"
                || object::at(&new, &["spec", "finalizers"]).and_then(Value::as_array).is_none_or(|a| a.is_empty()));
        let grace_over =
            object::at(&new, &["metadata", "deletionGracePeriodSeconds"]).and_then(Value::as_i64).unwrap_or(0) == 0;
        if deleting && no_finalizers && grace_over {
            if dry {
                return Ok(Written::Deleted(new));
            }
            match op.store().delete(key.as_bytes(), Some(kv.mod_revision)).await {
                Ok(_) => {
                    strategy::after_delete(op, &current).await;
                    return Ok(Written::Deleted(new));
                }
                Err(StoreError::Conflict { .. }) if pinned.is_none() => continue,
                Err(StoreError::Conflict { .. }) => return Err(ApiError::stale(&op.gr(), name)),
                Err(e) => return Err(from_store(e, &op.gr(), name)),
            }
        }
        if same_object(&new, &current) || dry {
            object::set_resource_version(&mut new, kv.mod_revision);
            return Ok(Written::Updated(if dry { new } else { current }));
        }
        let converted = crate::crd::conversion::storable(op.api, &op.rt, &new).await?;
        let bytes = encode(&op.rt, converted.as_ref().unwrap_or(&new));
        match op.store().update(key.as_bytes(), bytes, kv.mod_revision, op.rt.policy.ttl).await {
            Ok(rev) => {
                object::set_resource_version(&mut new, rev);
                strategy::after_update(op);
                return Ok(Written::Updated(new));
            }
            Err(StoreError::Conflict { .. }) if pinned.is_none() => continue,
            Err(StoreError::Conflict { .. }) => return Err(ApiError::stale(&op.gr(), name)),
            Err(StoreError::NotFound) => return Err(ApiError::not_found(&op.gr(), name)),
            Err(e) => return Err(from_store(e, &op.gr(), name)),
        }
    }
    Err(ApiError::conflict(&op.gr(), name, "too many concurrent updates, please try again"))
}

impl FieldError {
    /// Renders the value unquoted (Go's `%v` of a uint64, e.g. `0x0`).
    pub(crate) fn raw_invalid(mut self, raw: &str) -> Self {
        self.message = self.message.replacen(&format!("{raw:?}"), raw, 1);
        self
    }
}

/// Whether two versions of an object are equal apart from their resourceVersion and the
/// timestamps of managed-field entries.
fn same_object(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            if let Some(Value::Array(mf)) = m.get_mut("managedFields") {
                for e in mf {
                    if let Some(o) = e.as_object_mut() {
                        o.remove("time");
                    }
                }
            }
        }
        v
    };
    strip(a) == strip(b)
}

/// The metadata rules of every update: identity and creation fields come from the stored
/// object, deletion fields cannot be changed, generation moves with the spec, and the manager
/// is recorded.
/// With `manager`, the write is an Update by it and managed fields follow what changed;
/// without, `new` carries its managed fields already (server-side apply).
fn finish_update(op: &Op<'_>, new: &mut Value, current: &Value, manager: Option<&str>) -> ApiResult<()> {
    let name = object::name(current).to_string();
    let body_uid = object::uid(new).to_string();
    if !body_uid.is_empty() && body_uid != object::uid(current) {
        return Err(ApiError::conflict(
            &op.gr(),
            &name,
            &format!(
                "Precondition failed: UID in precondition: {body_uid}, UID in object meta: {}",
                object::uid(current)
            ),
        ));
    }
    let cur_meta = current.get("metadata").cloned().unwrap_or(json!({}));
    {
        let meta = object::meta_mut(new);
        for k in ["uid", "creationTimestamp", "deletionTimestamp"] {
            match cur_meta.get(k) {
                Some(v) => meta.insert(k.into(), v.clone()),
                None => meta.remove(k),
            };
        }
        if !meta.contains_key("deletionGracePeriodSeconds")
            && let Some(v) = cur_meta.get("deletionGracePeriodSeconds")
        {
            meta.insert("deletionGracePeriodSeconds".into(), v.clone());
        }
        meta.remove("selfLink");
        meta.remove("resourceVersion");
        match cur_meta.get("generation") {
            Some(g) => meta.insert("generation".into(), g.clone()),
            None => meta.remove("generation"),
        };
        meta.insert("name".into(), json!(name));
        if op.rt.namespaced {
            meta.insert("namespace".into(), json!(object::namespace(current)));
        }
    }
    // Binding assigns a node without the update strategy, so it does not move generation.
    if op.rt.policy.sets_generation && op.sub != "binding" && strategy::generation_changed(&op.rt, new, current) {
        let g = object::at(current, &["metadata", "generation"]).and_then(Value::as_i64).unwrap_or(0);
        object::meta_mut(new).insert("generation".into(), json!(g + 1));
    }
    let Some(manager) = manager else { return Ok(()) };
    // The body's managedFields are ignored; ownership follows what changed.
    if let Some(mf) = cur_meta.get("managedFields") {
        object::meta_mut(new).insert("managedFields".into(), mf.clone());
    } else {
        object::meta_mut(new).remove("managedFields");
    }
    fields::record_update(new, Some(current), manager, &op.rt.api_version(), &op.sub, &object::now_rfc3339());
    Ok(())
}

/// Builds the desired object of a write to the main resource or a subresource from `body`:
/// the main resource keeps the stored status, `status` keeps everything but status, and
/// `finalize` only moves `spec.finalizers`.
pub(crate) fn split_subresource(op: &Op<'_>, body: &Value, current: &Value) -> Value {
    match op.sub.as_str() {
        "status" => {
            let mut new = current.clone();
            match body.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            if let Some(rv) = body.get("metadata").and_then(|m| m.get("resourceVersion")) {
                object::meta_mut(&mut new).insert("resourceVersion".into(), rv.clone());
            } else {
                object::meta_mut(&mut new).remove("resourceVersion");
            }
            new
        }
        "approval" => crate::strategy::csr::split_approval(body, current),
        "ephemeralcontainers" => crate::strategy::ephemeral::split(body, current),
        "finalize" => {
            let mut new = current.clone();
            new["spec"]["finalizers"] =
                body.get("spec").and_then(|s| s.get("finalizers")).cloned().unwrap_or(json!([]));
            if let Some(rv) = body.get("metadata").and_then(|m| m.get("resourceVersion")) {
                object::meta_mut(&mut new).insert("resourceVersion".into(), rv.clone());
            } else {
                object::meta_mut(&mut new).remove("resourceVersion");
            }
            new
        }
        _ => {
            let mut new = body.clone();
            if op.rt.policy.has_status {
                match current.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            new
        }
    }
}

/// `PUT` on an object or its status/finalize subresource.
pub(crate) async fn update(op: &Op<'_>, body: &Bytes) -> ApiResult<Response<Body>> {
    let validation = field_validation(op, "UpdateOptions")?;
    let manager = field_manager(op, "UpdateOptions")?;
    let mut obj = decode_body(op, body)?;
    check_type(op, &mut obj, &op.rt.kind, &op.rt.api_version())?;
    object::drop_null_metadata(&mut obj);
    match object::name(&obj) {
        "" => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({} based on URL) was undeterminable: name must be provided",
                op.name
            )));
        }
        n if n != op.name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({})",
                op.name
            )));
        }
        _ => {}
    }
    check_namespace(op, &mut obj)?;
    // Kinds that forbid unconditional updates want the body's resourceVersion (patches apply to
    // the current object and so always carry one).
    if object::resource_version(&obj).is_empty() && !op.rt.policy.unconditional_update {
        return Err(ApiError::invalid(
            &op.rt.group,
            &op.rt.plural,
            &op.name,
            vec![
                FieldError::invalid("metadata.resourceVersion", &json!("0x0"), "must be specified for an update")
                    .raw_invalid("0x0"),
            ],
        ));
    }
    let obj = typed_check(op, obj, validation, &body_duplicates(op, body, validation), None)?;
    let result = guaranteed_update(op, &op.name, Some(&manager), |current| {
        let mut new = split_subresource(op, &obj, current);
        strategy::prepare_for_update(&op.rt, &mut new, current, &op.sub);
        Ok(new)
    })
    .await;
    match result {
        Ok(Written::Updated(v)) | Ok(Written::Deleted(v)) => Ok(op.respond(StatusCode::OK, &v)),
        Err(e) if e.code == 404 && op.rt.policy.create_on_update && op.sub.is_empty() => {
            let bytes = Bytes::from(serde_json::to_vec(&obj).unwrap_or_default());
            create(op, &bytes).await
        }
        Err(e) => Err(e),
    }
}

/// Applies a JSON patch or a merge patch to `current`.
/// Applies a JSON patch, a merge patch or a strategic merge patch to `current`, an object of
/// the type `schema` names (strategic merge needs it; `None` for custom resources).
pub(crate) fn apply_patch(
    format: BodyFormat,
    current: &Value,
    patch: &Bytes,
    schema: Option<&'static crate::protobuf::Message>,
) -> ApiResult<Value> {
    match format {
        BodyFormat::JsonPatch => {
            let ops: json_patch::Patch =
                serde_json::from_slice(patch).map_err(|e| ApiError::bad_request(e.to_string()))?;
            let mut doc = current.clone();
            let invalid = |e: json_patch::PatchError| {
                // evanphx/json-patch's words, as kube-apiserver passes them on.
                let what = match e.kind {
                    json_patch::PatchErrorKind::TestFailed => format!("testing value {} failed: test failed", e.path),
                    _ => e.to_string(),
                };
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {what}"),
                )
            };
            // One operation at a time: a `test` of `null` at a missing path passes, as in
            // kube-apiserver's JSON patch library (kube-rs's finalizer helper relies on it).
            let mut pending: Vec<json_patch::PatchOperation> = Vec::new();
            for op in ops.0 {
                if let json_patch::PatchOperation::Test(t) = &op
                    && t.value.is_null()
                    && doc.pointer(t.path.as_str()).is_none()
                {
                    json_patch::patch(&mut doc, &pending).map_err(invalid)?;
                    pending.clear();
                    continue;
                }
                pending.push(op);
            }
            json_patch::patch(&mut doc, &pending).map_err(invalid)?;
            Ok(doc)
        }
        BodyFormat::MergePatch | BodyFormat::StrategicMergePatch => {
            let p: Value = serde_json::from_slice(patch).map_err(|e| ApiError::bad_request(e.to_string()))?;
            if !p.is_object() {
                return Err(ApiError::bad_request(
                    "json: cannot unmarshal into Go value of type map[string]interface {}",
                ));
            }
            match (format, schema) {
                (BodyFormat::StrategicMergePatch, Some(schema)) => {
                    crate::smp::apply(current, &p, schema).map_err(ApiError::bad_request)
                }
                _ => {
                    let mut doc = current.clone();
                    json_patch::merge(&mut doc, &p);
                    Ok(doc)
                }
            }
        }
        _ => Err(ApiError::unsupported_media_type(&[
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
            "application/apply-patch+yaml",
        ])),
    }
}

/// `PATCH` on an object or its status.
pub(crate) async fn patch(op: &Op<'_>, body: &Bytes) -> ApiResult<Response<Body>> {
    let validation = field_validation(op, "PatchOptions")?;
    let manager = field_manager(op, "PatchOptions")?;
    let ct = op.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let format = match body_format(ct) {
        Some(BodyFormat::ApplyPatch) => return apply(op, body, validation).await,
        Some(f @ (BodyFormat::JsonPatch | BodyFormat::MergePatch | BodyFormat::StrategicMergePatch)) => f,
        _ => {
            return Err(ApiError::new(415, "UnsupportedMediaType", "415: Unsupported Media Type").with_empty_details());
        }
    };
    if format == BodyFormat::StrategicMergePatch && op.rt.roundtrip.is_none() {
        return Err(ApiError::unsupported_media_type(&[
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/apply-patch+yaml",
        ]));
    }
    let dups = body_duplicates(op, body, validation);
    let result = guaranteed_update(op, &op.name, Some(&manager), |current| {
        // The patch applies to the object as clients read it, resourceVersion included (a
        // JSON patch may `test` or `replace` it, as client-go's field-manager upgrade does).
        let mut patched = apply_patch(format, current, body, op.rt.schema())?;
        if !patched.is_object() {
            return Err(ApiError::bad_request("the patch did not produce an object"));
        }
        // A resourceVersion the patch left alone is no precondition (the update retries on
        // conflicts); one it set is, as in kube-apiserver.
        if object::resource_version(&patched) == object::resource_version(current) {
            object::meta_mut(&mut patched).remove("resourceVersion");
        }
        check_type(op, &mut patched, &op.rt.kind, &op.rt.api_version())?;
        object::drop_null_metadata(&mut patched);
        if object::name(&patched) != op.name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({})",
                object::name(&patched),
                op.name
            )));
        }
        let patched = typed_check(op, patched, validation, &dups, Some(body))?;
        let mut new = split_subresource(op, &patched, current);
        strategy::prepare_for_update(&op.rt, &mut new, current, &op.sub);
        Ok(new)
    })
    .await?;
    match result {
        Written::Updated(v) | Written::Deleted(v) => Ok(op.respond(StatusCode::OK, &v)),
    }
}

/// Server-side apply (`application/apply-patch+yaml`): creates the object or merges the
/// applied configuration into it, tracking ownership per field manager (see `ssa.rs`).
async fn apply(op: &Op<'_>, body: &Bytes, validation: FieldValidation) -> ApiResult<Response<Body>> {
    if op.param("fieldManager").is_empty() {
        return Err(invalid_options(
            "PatchOptions",
            FieldError::required("fieldManager", "is required for apply patch"),
        ));
    }
    let manager = field_manager(op, "PatchOptions")?;
    let force = op.flag("force");
    let dry = dry_run(op, "PatchOptions")?;
    let bad = |e: serde_saphyr::Error| ApiError::bad_request(format!("error decoding YAML: {e}"));
    let mut config: Value = match serde_saphyr::from_slice(body) {
        Ok(v) => v,
        // Repeated keys, as kube's apply handler treats them per fieldValidation.
        Err(e) => match super::dups::yaml_duplicate(&e) {
            Some(dup) if validation == FieldValidation::Strict => {
                return Err(ApiError::bad_request(format!(
                    "error strict decoding YAML: error converting YAML to JSON: yaml: unmarshal errors:\n  {dup}"
                )));
            }
            Some(dup) => {
                if validation == FieldValidation::Warn {
                    op.warn(dup);
                }
                super::dups::yaml_last_wins(body).map_err(bad)?
            }
            None => return Err(bad(e)),
        },
    };
    if !config.is_object() {
        return Err(ApiError::bad_request("the applied configuration must be an object"));
    }
    let has = |k: &str| config.get(k).and_then(Value::as_str).is_some_and(|v| !v.is_empty());
    if !has("apiVersion") || !has("kind") {
        return Err(ApiError::bad_request("apiVersion and kind must be set in an applied configuration"));
    }
    check_type(op, &mut config, &op.rt.kind, &op.rt.api_version())?;
    object::drop_null_metadata(&mut config);
    match object::name(&config) {
        "" => _ = object::meta_mut(&mut config).insert("name".into(), json!(op.name)),
        n if n != op.name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({})",
                op.name
            )));
        }
        _ => {}
    }
    check_namespace(op, &mut config)?;
    let config = typed_check(op, config, validation, &[], None)?;
    let custom_schema = op.rt.custom.as_ref().and_then(|c| c.schema.as_ref());
    let root = match (op.rt.schema(), custom_schema) {
        (Some(m), _) => crate::ssa::Node::Struct(m),
        (None, Some(s)) => crate::ssa::Node::Schema(s),
        (None, None) => crate::ssa::Node::Deduced,
    };
    let api_version = op.rt.api_version();
    let now = object::now_rfc3339();
    let exists =
        op.store().get(op.key(&op.name).as_bytes()).await.map_err(|e| from_store(e, &op.gr(), &op.name))?.is_some();
    if !exists {
        let applied = crate::ssa::apply(None, &config, root, &manager, &api_version, force, &now)
            .map_err(|c| crate::ssa::conflict_error(&c))?;
        return match create_object(op, applied.object, dry, None).await {
            // Created meanwhile by someone else: apply over it.
            Err(e) if e.code == 409 && e.reason == "AlreadyExists" => Box::pin(apply(op, body, validation)).await,
            other => other,
        };
    }
    let result = guaranteed_update(op, &op.name, None, |current| {
        let mut base = current.clone();
        object::meta_mut(&mut base).remove("resourceVersion");
        let applied = crate::ssa::apply(Some(&base), &config, root, &manager, &api_version, force, &now)
            .map_err(|c| crate::ssa::conflict_error(&c))?;
        let mut new = split_subresource(op, &applied.object, current);
        // Keep the computed ownership (split_subresource takes the stored metadata for
        // subresources).
        if let Some(mf) = applied.object.get("metadata").and_then(|m| m.get("managedFields")) {
            object::meta_mut(&mut new).insert("managedFields".into(), mf.clone());
        }
        // An applied configuration pins the resourceVersion only if it names one.
        match config.get("metadata").and_then(|m| m.get("resourceVersion")) {
            Some(rv) => _ = object::meta_mut(&mut new).insert("resourceVersion".into(), rv.clone()),
            None => _ = object::meta_mut(&mut new).remove("resourceVersion"),
        }
        strategy::prepare_for_update(&op.rt, &mut new, current, &op.sub);
        Ok(new)
    })
    .await?;
    match result {
        Written::Updated(v) | Written::Deleted(v) => Ok(op.respond(StatusCode::OK, &v)),
    }
}
