//! Per-kind behaviour (kube-apiserver's REST strategies): defaulting, create/update
//! preparation, validation, generation rules, version conversion, and the allocations a write
//! needs (Service cluster IPs and node ports).

pub(crate) mod admission;
mod alloc;
mod convert;
pub(crate) mod csr;
mod defaults;
pub(crate) mod ephemeral;
mod validate;

use serde_json::{Value, json};

use crate::object;
use crate::registry::ResourceType;
use crate::rest::Op;
use crate::status::FieldError;

pub(crate) use alloc::{allocate, release};
pub(crate) use convert::{converts, from_storage, to_storage};

/// The (group, kind) of a type, for matching.
fn gk(rt: &ResourceType) -> (&str, &str) {
    (rt.group.as_str(), rt.kind.as_str())
}

/// Defaults and create-time mutations that do not depend on the final name; `user` sent it.
pub(crate) fn prepare_for_create(rt: &ResourceType, obj: &mut Value, user: &crate::auth::UserInfo) {
    custom_defaults(rt, obj);
    defaults::apply(rt, obj);
    if rt.group == "admissionregistration.k8s.io" {
        admission::defaults(&rt.kind, obj);
    }
    match gk(rt) {
        ("certificates.k8s.io", "CertificateSigningRequest") => csr::prepare_create(obj, user),
        ("", "Pod") => {
            let qos = defaults::qos_class(obj);
            obj["status"] = json!({"phase": "Pending", "qosClass": qos});
            defaults::pod_admission(obj);
        }
        ("", "Namespace") => {
            obj["status"] = json!({"phase": "Active"});
            let fins = obj["spec"]["finalizers"].as_array().cloned().unwrap_or_default();
            if !fins.iter().any(|f| f == "kubernetes") {
                let mut fins = fins;
                fins.push(json!("kubernetes"));
                obj["spec"]["finalizers"] = Value::Array(fins);
            }
        }
        ("", "Service") => {
            obj["status"] = json!({"loadBalancer": {}});
        }
        ("", "PersistentVolumeClaim") => {
            obj["status"] = json!({"phase": "Pending"});
        }
        ("", "PersistentVolume") => {
            obj["status"] = json!({"phase": "Pending"});
        }
        ("", "ServiceAccount") => {
            if let Some(secrets) = obj.get_mut("secrets").and_then(Value::as_array_mut) {
                for s in secrets.iter_mut() {
                    let name = s.get("name").cloned().unwrap_or(json!(""));
                    *s = json!({"name": name});
                }
            }
        }
        ("apps", "DaemonSet") => {
            object::meta_mut(obj)
                .entry("annotations")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .map(|a| a.insert("deprecated.daemonset.template.generation".into(), json!("1")));
        }
        _ => {}
    }
}

/// A custom resource's schema defaults.
fn custom_defaults(rt: &ResourceType, obj: &mut Value) {
    if let Some(schema) = rt.custom.as_ref().and_then(|c| c.schema.as_ref()) {
        crate::crd::schema::apply_defaults(obj, schema);
    }
}

/// Create-time mutations that need the final name and uid (set after name generation).
pub(crate) fn prepare_named(rt: &ResourceType, obj: &mut Value) {
    match gk(rt) {
        ("", "Namespace") => {
            let name = object::name(obj).to_string();
            let meta = object::meta_mut(obj);
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
        }
        ("batch", "Job") => {
            let manual = object::at(obj, &["spec", "manualSelector"]).and_then(Value::as_bool).unwrap_or(false);
            if !manual {
                let name = object::name(obj).to_string();
                let uid = object::uid(obj).to_string();
                let labels = &mut obj["spec"]["template"]["metadata"]["labels"];
                if !labels.is_object() {
                    *labels = json!({});
                }
                for (k, v) in [
                    ("batch.kubernetes.io/controller-uid", &uid),
                    ("batch.kubernetes.io/job-name", &name),
                    ("controller-uid", &uid),
                    ("job-name", &name),
                ] {
                    labels.as_object_mut().map(|l| l.entry(k).or_insert_with(|| json!(v)));
                }
                obj["spec"]["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
                let job_labels = object::at(obj, &["metadata", "labels"])
                    .is_some_and(|l| l.as_object().is_some_and(|m| !m.is_empty()));
                if !job_labels && let Some(tl) = object::at(obj, &["spec", "template", "metadata", "labels"]).cloned() {
                    object::meta_mut(obj).insert("labels".into(), tl);
                }
            }
        }
        _ => {}
    }
}

/// Update-time preparation: defaults, and what each kind keeps from the stored object.
pub(crate) fn prepare_for_update(rt: &ResourceType, new: &mut Value, old: &Value, sub: &str) {
    custom_defaults(rt, new);
    defaults::apply(rt, new);
    if rt.group == "admissionregistration.k8s.io" {
        admission::defaults(&rt.kind, new);
    }
    if gk(rt) == ("certificates.k8s.io", "CertificateSigningRequest") {
        csr::prepare_update(new, old, sub);
    }
    if (gk(rt) == ("", "Pod")) && sub == "status" {
        // A status write keeps the spec and backfills the QoS class.
        if object::str_at(new, &["status", "qosClass"]).unwrap_or("").is_empty()
            && let Some(q) = object::at(old, &["status", "qosClass"])
        {
            new["status"]["qosClass"] = q.clone();
        }
    }
    if gk(rt) == ("", "Pod") && sub.is_empty() {
        // Ephemeral containers change only through `pods/ephemeralcontainers` (kube's pod
        // strategy keeps the old ones on any other update).
        match old.pointer("/spec/ephemeralContainers") {
            Some(e) => new["spec"]["ephemeralContainers"] = e.clone(),
            None => _ = new.get_mut("spec").and_then(Value::as_object_mut).map(|s| s.remove("ephemeralContainers")),
        }
    }
    if gk(rt) == ("", "Namespace") && sub.is_empty() {
        // spec.finalizers only change through /finalize.
        if let Some(f) = object::at(old, &["spec", "finalizers"]) {
            new["spec"]["finalizers"] = f.clone();
        }
    }
    if gk(rt) == ("", "Service") {
        // Allocated values are kept unless the client names them.
        for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "healthCheckNodePort"] {
            let absent = new.get("spec").and_then(|s| s.get(field)).is_none_or(|v| v.is_null() || v == "");
            if absent && let Some(v) = old.get("spec").and_then(|s| s.get(field)) {
                new["spec"][field] = v.clone();
            }
        }
        if let (Some(new_ports), Some(old_ports)) = (
            new.get_mut("spec").and_then(|s| s.get_mut("ports")).and_then(Value::as_array_mut),
            old.get("spec").and_then(|s| s.get("ports")).and_then(Value::as_array),
        ) {
            for p in new_ports.iter_mut() {
                if p.get("nodePort").is_none()
                    && let Some(op) = old_ports
                        .iter()
                        .find(|o| o.get("port") == p.get("port") && o.get("protocol") == p.get("protocol"))
                    && let Some(np) = op.get("nodePort")
                {
                    p["nodePort"] = np.clone();
                }
            }
        }
    }
}

/// Whether an update changes what `metadata.generation` tracks.
pub(crate) fn generation_changed(rt: &ResourceType, new: &Value, old: &Value) -> bool {
    let spec_changed = object::spec_part(new) != object::spec_part(old);
    match gk(rt) {
        ("apps", "Deployment") => {
            spec_changed
                || object::at(new, &["metadata", "annotations"]) != object::at(old, &["metadata", "annotations"])
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            spec_changed || object::at(new, &["metadata", "labels"]) != object::at(old, &["metadata", "labels"])
        }
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration") => {
            new.get("webhooks") != old.get("webhooks")
        }
        ("", "PodTemplate") => new.get("template") != old.get("template"),
        _ => {
            // Status has its own subresource: compare everything but metadata and status.
            spec_changed
        }
    }
}

/// Kind-specific validation of a whole object.
pub(crate) fn validate(rt: &ResourceType, obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    if let Some(c) = &rt.custom {
        crate::crd::validate_object(c, obj, old, errs);
        return;
    }
    if gk(rt) == ("apiextensions.k8s.io", "CustomResourceDefinition") {
        crate::crd::validate_definition(obj, old, errs);
    }
    if gk(rt) == ("certificates.k8s.io", "CertificateSigningRequest") {
        csr::validate(obj, old, errs);
    }
    if rt.group == "admissionregistration.k8s.io" {
        admission::validate(&rt.kind, obj, errs);
    }
    if gk(rt) == ("apiregistration.k8s.io", "APIService") {
        // kube-aggregator's rule: the name is `<version>.<group>` (`v1.` for the core group).
        let spec = |f: &str| obj.pointer(&format!("/spec/{f}")).and_then(Value::as_str).unwrap_or("");
        let required = format!("{}.{}", spec("version"), spec("group"));
        let name = crate::object::name(obj);
        if !name.is_empty() && name != required {
            let detail = format!("must be `spec.version+\".\"+spec.group`: {required:?}");
            errs.push(FieldError::invalid("metadata.name", &Value::String(name.to_string()), &detail));
        }
    }
    validate::object(rt, obj, old, errs);
}

/// Kind-specific rules about what an update (through subresource `sub`, or none) may change.
pub(crate) fn validate_update(rt: &ResourceType, new: &Value, old: &Value, sub: &str) -> Result<(), Vec<FieldError>> {
    let mut errs = Vec::new();
    if gk(rt) == ("certificates.k8s.io", "CertificateSigningRequest") {
        csr::validate_update(new, old, sub, &mut errs);
    }
    if gk(rt) == ("", "Pod") && sub == "ephemeralcontainers" {
        ephemeral::validate_update(new, old, &mut errs);
    }
    validate::update(rt, new, old, &mut errs);
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

/// Work after an object was created.
pub(crate) async fn after_create(op: &Op<'_>, _obj: &Value) {
    noted(op);
}

/// Work after an object was updated.
pub(crate) fn after_update(op: &Op<'_>) {
    noted(op);
}

/// Writes others keep a view of: APIServices (the aggregator's list of service-backed ones).
fn noted(op: &Op<'_>) {
    if gk(&op.rt) == ("apiregistration.k8s.io", "APIService") {
        op.api.aggregator().changed();
    }
}

/// Work after an object was deleted: releasing what it held.
pub(crate) async fn after_delete(op: &Op<'_>, obj: &Value) {
    noted(op);
    if gk(&op.rt) == ("", "Service") {
        alloc::release_service(op, obj).await;
    }
}
