//! CustomResourceDefinitions (`apiextensions.k8s.io/v1`): tenants install their own APIs.
//!
//! A CRD whose names are accepted is served at once: every served version becomes a registry
//! row (discovery, OpenAPI, REST, watch and Tables follow from the registry), stored under
//! `/registry/<group>/<plural>/` in the storage version. What kube-apiserver's apiextensions
//! controllers do runs here in process, driven by the CRD watch:
//!
//! * naming: `NamesAccepted` (or a `...Conflict` reason when another CRD of the group holds a
//!   name), `Established`, `acceptedNames`, `storedVersions`;
//! * finalization: deleting a CRD marks it `Terminating` with the
//!   `customresourcecleanup.apiextensions.k8s.io` finalizer; its objects are deleted (their own
//!   finalizers honoured), then the finalizer is removed and the CRD goes.
//!
//! Objects are pruned, defaulted and validated against their version's structural schema
//! (`crd/schema.rs`) and its `x-kubernetes-validations` CEL rules (kube-core's `cel`).
//! Conversion between versions is `None` (only `apiVersion` changes) or `Webhook`
//! (`crd/conversion.rs`).

pub(crate) mod conversion;
mod cost;
pub(crate) mod jsonpath;
pub(crate) mod schema;

use std::sync::{Arc, Weak};
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::registry::{GcPolicy, Policy, ResourceType, Subresource};
use crate::status::FieldError;
use crate::validation::NameRule;
use crate::{ApiServer, Inner, cel, object};

/// The finalizer a deleted CRD carries until its objects are gone.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";

/// One additional printer column of a version.
#[derive(Clone, Debug)]
pub struct PrinterColumn {
    /// Column name.
    pub name: String,
    /// `integer`, `number`, `string`, `boolean` or `date`.
    pub ty: String,
    /// OpenAPI format.
    pub format: String,
    /// Description.
    pub description: String,
    /// 0 shown by default, more with `-o wide`.
    pub priority: i64,
    /// The JSONPath (kubectl's dialect) of the value.
    pub json_path: String,
}

/// Where the `scale` subresource reads and writes.
#[derive(Clone, Debug)]
pub struct ScalePaths {
    /// `specReplicasPath`, as path segments.
    pub spec_replicas: Vec<String>,
    /// `statusReplicasPath`.
    pub status_replicas: Vec<String>,
    /// `labelSelectorPath`, if any.
    pub label_selector: Option<Vec<String>>,
}

/// What a CRD says about one served version of its resource.
pub struct CustomResource {
    /// The CRD's name (`<plural>.<group>`).
    pub crd: String,
    /// The version objects are stored in.
    pub storage_version: String,
    /// How many versions the CRD defines (more than one means `apiVersion` is rewritten).
    pub versions: usize,
    /// The version's `openAPIV3Schema`.
    pub schema: Option<Value>,
    /// The schema has `default`s: reads apply them too (to objects stored before a default
    /// was added), as kube's storage codec does for custom resources.
    pub has_defaults: bool,
    /// Its compiled `x-kubernetes-validations` rules, if it has any.
    pub cel: Option<kube_core::cel::CompiledSchema>,
    /// `additionalPrinterColumns`.
    pub columns: Vec<PrinterColumn>,
    /// The `scale` subresource's paths.
    pub scale: Option<ScalePaths>,
    /// The CRD is being deleted: no new objects.
    pub terminating: bool,
    /// The conversion webhook (`strategy: Webhook`); `None`: only `apiVersion` changes.
    pub conversion: Option<Arc<conversion::Webhook>>,
}

impl std::fmt::Debug for CustomResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomResource")
            .field("crd", &self.crd)
            .field("storage_version", &self.storage_version)
            .field("versions", &self.versions)
            .field("cel", &self.cel.is_some())
            .field("terminating", &self.terminating)
            .finish()
    }
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(String::from).collect()
}

/// A `.spec.replicas`-style path as segments.
fn path_segments(p: &str) -> Vec<String> {
    p.trim_start_matches('.').split('.').filter(|x| !x.is_empty()).map(String::from).collect()
}

/// Kubernetes' version priority: GA (`v2` > `v1`), then beta, then alpha (higher numbers
/// first), then anything else alphabetically. Smaller sorts first.
pub fn version_order(v: &str) -> (u8, i64, i64, String) {
    let parse = |rest: &str| -> Option<(u8, i64, i64)> {
        let digits_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let major: i64 = rest[..digits_end].parse().ok()?;
        match &rest[digits_end..] {
            "" => Some((0, -major, 0)),
            t => {
                let (tier, n) = if let Some(n) = t.strip_prefix("beta") {
                    (1, n)
                } else if let Some(n) = t.strip_prefix("alpha") {
                    (2, n)
                } else {
                    return None;
                };
                Some((tier, -major, -n.parse::<i64>().ok()?))
            }
        }
    };
    match v.strip_prefix('v').and_then(parse) {
        Some((tier, a, b)) => (tier, a, b, String::new()),
        None => (3, 0, 0, v.to_string()),
    }
}

/// The accepted names of a CRD with kube's defaults (singular: lower-cased kind; list kind:
/// kind + `List`).
pub fn names_of(crd: &Value) -> Value {
    let names = &crd["spec"]["names"];
    let kind = s(names, "kind");
    let mut out = names.clone();
    if s(names, "singular").is_empty() {
        out["singular"] = json!(kind.to_lowercase());
    }
    if s(names, "listKind").is_empty() {
        out["listKind"] = json!(format!("{kind}List"));
    }
    out
}

/// The registry rows of a CRD: one per served version.
pub fn types_of(crd: &Value, terminating: bool) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let group = s(spec, "group").to_string();
    let names = names_of(crd);
    let versions: Vec<&Value> = spec.get("versions").and_then(Value::as_array).into_iter().flatten().collect();
    let storage = versions.iter().find(|v| v["storage"] == true).map(|v| s(v, "name")).unwrap_or("").to_string();
    let mut served: Vec<&Value> = versions.iter().copied().filter(|v| v["served"] == true).collect();
    served.sort_by_key(|v| version_order(s(v, "name")));
    let preferred = served.first().map(|v| s(v, "name").to_string());
    served
        .into_iter()
        .map(|v| {
            let version = s(v, "name").to_string();
            let status = v.pointer("/subresources/status").is_some_and(Value::is_object);
            let scale = v.pointer("/subresources/scale").filter(|x| x.is_object()).map(|sc| ScalePaths {
                spec_replicas: path_segments(s(sc, "specReplicasPath")),
                status_replicas: path_segments(s(sc, "statusReplicasPath")),
                label_selector: sc.get("labelSelectorPath").and_then(Value::as_str).map(path_segments),
            });
            let mut subresources = Vec::new();
            if status {
                subresources.push(Subresource {
                    name: "status".into(),
                    group: group.clone(),
                    version: version.clone(),
                    kind: s(&names, "kind").into(),
                    verbs: ["get", "patch", "update"].map(String::from).to_vec(),
                });
            }
            if scale.is_some() {
                subresources.push(Subresource {
                    name: "scale".into(),
                    group: "autoscaling".into(),
                    version: "v1".into(),
                    kind: "Scale".into(),
                    verbs: ["get", "patch", "update"].map(String::from).to_vec(),
                });
            }
            let schema = v.pointer("/schema/openAPIV3Schema").filter(|x| x.is_object()).cloned();
            // Compiled on a deep-stack thread (the parser recurses per level of nesting).
            let cel = schema
                .as_ref()
                .filter(|sc| has_cel_rules(sc))
                .and_then(|sc| cel::deep(|| kube_core::cel::compile_schema(sc)));
            let columns = v
                .get("additionalPrinterColumns")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|c| PrinterColumn {
                    name: s(c, "name").into(),
                    ty: s(c, "type").into(),
                    format: s(c, "format").into(),
                    description: s(c, "description").into(),
                    priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                    json_path: s(c, "jsonPath").into(),
                })
                .collect();
            let field_selectors = v
                .get("selectableFields")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|f| s(f, "jsonPath").trim_start_matches('.').to_string())
                .collect();
            ResourceType {
                group: group.clone(),
                version: version.clone(),
                kind: s(&names, "kind").into(),
                list_kind: s(&names, "listKind").into(),
                plural: s(&names, "plural").into(),
                singular: s(&names, "singular").into(),
                namespaced: s(spec, "scope") == "Namespaced",
                verbs: ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
                    .map(String::from)
                    .to_vec(),
                short_names: strings(names.get("shortNames")),
                categories: strings(names.get("categories")),
                subresources,
                preferred: preferred.as_deref() == Some(version.as_str()),
                policy: Policy {
                    name_rule: NameRule::Subdomain,
                    sets_generation: true,
                    has_status: status,
                    reset_status_on_create: status,
                    unconditional_update: false,
                    create_on_update: false,
                    default_gc: GcPolicy::Background,
                    field_selectors,
                    ttl: None,
                },
                roundtrip: None,
                openapi: None,
                custom: Some(Arc::new(CustomResource {
                    crd: object::name(crd).to_string(),
                    storage_version: storage.clone(),
                    versions: versions.len(),
                    has_defaults: schema.as_ref().is_some_and(schema::has_defaults),
                    schema,
                    cel,
                    columns,
                    scale,
                    terminating,
                    conversion: conversion::of(crd),
                })),
            }
        })
        .collect()
}

fn has_cel_rules(schema: &Value) -> bool {
    match schema {
        Value::Object(m) => m.contains_key("x-kubernetes-validations") || m.values().any(has_cel_rules),
        Value::Array(a) => a.iter().any(has_cel_rules),
        _ => false,
    }
}

// ---- validation of CRDs themselves -----------------------------------------------------------

fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Validates a CustomResourceDefinition as kube-apiserver does (the rules clients hit).
pub(crate) fn validate_definition(crd: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let spec = &crd["spec"];
    let group = s(spec, "group");
    let names = &spec["names"];
    let plural = s(names, "plural");
    let kind = s(names, "kind");
    let name = object::name(crd);
    if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
        errs.push(FieldError::invalid("metadata.name", &json!(name), "must be spec.names.plural+\".\"+spec.group"));
    }
    conversion::validate(spec, errs);
    if group.is_empty() {
        errs.push(FieldError::required("spec.group", ""));
    } else if !group.contains('.') {
        errs.push(FieldError::invalid("spec.group", &json!(group), "should be a domain with at least one dot"));
    }
    if plural.is_empty() {
        errs.push(FieldError::required("spec.names.plural", ""));
    } else if !dns_label(plural) {
        errs.push(FieldError::invalid(
            "spec.names.plural",
            &json!(plural),
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        ));
    }
    let singular = s(names, "singular");
    if !singular.is_empty() && !dns_label(singular) {
        errs.push(FieldError::invalid("spec.names.singular", &json!(singular), "a lowercase RFC 1123 label"));
    }
    if kind.is_empty() {
        errs.push(FieldError::required("spec.names.kind", ""));
    }
    for (i, sn) in strings(names.get("shortNames")).iter().enumerate() {
        if !dns_label(sn) {
            errs.push(FieldError::invalid(
                format!("spec.names.shortNames[{i}]"),
                &json!(sn),
                "a lowercase RFC 1123 label",
            ));
        }
    }
    match s(spec, "scope") {
        "Namespaced" | "Cluster" => {}
        "" => errs.push(FieldError::required("spec.scope", "")),
        other => errs.push(FieldError::not_supported("spec.scope", &json!(other), &["Cluster", "Namespaced"])),
    }
    let versions: Vec<&Value> = spec.get("versions").and_then(Value::as_array).into_iter().flatten().collect();
    if versions.is_empty() {
        errs.push(FieldError::invalid(
            "spec.versions",
            &json!([]),
            "must have exactly one version marked as storage version",
        ));
    } else {
        let storage = versions.iter().filter(|v| v["storage"] == true).count();
        if storage != 1 {
            errs.push(FieldError::invalid(
                "spec.versions",
                &spec["versions"],
                "must have exactly one version marked as storage version",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, v) in versions.iter().enumerate() {
            let vn = s(v, "name");
            if vn.is_empty() {
                errs.push(FieldError::required(format!("spec.versions[{i}].name"), ""));
            } else if !dns_label(vn) {
                errs.push(FieldError::invalid(format!("spec.versions[{i}].name"), &json!(vn), "a DNS-1035 label"));
            } else if !seen.insert(vn) {
                errs.push(FieldError::duplicate(format!("spec.versions[{i}].name"), &json!(vn)));
            }
            let schema_path = format!("spec.versions[{i}].schema.openAPIV3Schema");
            match v.pointer("/schema/openAPIV3Schema") {
                Some(sc) if sc.is_object() => {
                    schema::check_structural(sc, &schema_path, true, errs);
                    check_rules(sc, &schema_path, errs);
                }
                _ => errs.push(FieldError::required(schema_path, "schemas are required")),
            }
            if let Some(sc) = v.pointer("/subresources/scale").filter(|x| x.is_object()) {
                for key in ["specReplicasPath", "statusReplicasPath"] {
                    let p = s(sc, key);
                    let field = format!("spec.versions[{i}].subresources.scale.{key}");
                    if p.is_empty() {
                        errs.push(FieldError::required(field, ""));
                    } else if !p.starts_with('.') {
                        errs.push(FieldError::invalid(field, &json!(p), "should be a valid JSON path starting with ."));
                    }
                }
            }
        }
        if !versions.iter().any(|v| v["served"] == true) {
            errs.push(FieldError::invalid(
                "spec.versions",
                &spec["versions"],
                "must have at least one version marked as served",
            ));
        }
    }
    if let Some(old) = old {
        if s(&old["spec"], "scope") != s(spec, "scope") && !s(&old["spec"], "scope").is_empty() {
            errs.push(FieldError::invalid("spec.scope", &spec["scope"], "field is immutable"));
        }
        if s(&old["spec"], "group") != group {
            errs.push(FieldError::invalid("spec.group", &json!(group), "field is immutable"));
        }
        let names_now: Vec<&str> = versions.iter().map(|v| s(v, "name")).collect();
        for (i, stored) in strings(old.pointer("/status/storedVersions")).iter().enumerate() {
            if !names_now.contains(&stored.as_str()) {
                errs.push(FieldError::invalid(
                    format!("status.storedVersions[{i}]"),
                    &json!(stored),
                    "must appear in spec.versions",
                ));
            }
        }
    }
}

// ---- validation of custom resources --------------------------------------------------------

/// The shared CEL evaluator (its function library is built once).
fn validator() -> &'static kube_core::cel::Validator {
    static V: std::sync::OnceLock<kube_core::cel::Validator> = std::sync::OnceLock::new();
    V.get_or_init(kube_core::cel::Validator::new)
}

/// Validates a custom resource against its version's schema and CEL rules (`old` is the
/// stored object on updates, for transition rules).
pub(crate) fn validate_object(c: &CustomResource, obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let Some(sc) = &c.schema else { return };
    let before = errs.len();
    schema::validate(obj, sc, errs);
    // Rules run on values of the right shape only, as in kube-apiserver.
    if errs.len() > before {
        return;
    }
    let Some(compiled) = &c.cel else { return };
    // On a deep-stack thread: evaluation recurses per level of a rule's nesting.
    let Some(outcome) = cel::deep(|| validator().validate_compiled(compiled, obj, old)) else {
        errs.push(FieldError::invalid("", &Value::Null, "internal error evaluating the validation rules"));
        return;
    };
    if let Err(list) = outcome {
        for e in list.into_vec() {
            let field = e.field_path.trim_start_matches('.').to_string();
            let ty = schema::type_at(sc, &field);
            let reason: &'static str = match e.reason.as_deref() {
                Some("FieldValueRequired") => "FieldValueRequired",
                Some("FieldValueForbidden") => "FieldValueForbidden",
                Some("FieldValueDuplicate") => "FieldValueDuplicate",
                _ => "FieldValueInvalid",
            };
            let message = match reason {
                "FieldValueRequired" => format!("Required value: {}", e.message),
                "FieldValueForbidden" => format!("Forbidden: {}", e.message),
                "FieldValueDuplicate" => format!("Duplicate value: {}", e.message),
                _ => format!("Invalid value: {ty:?}: {}", e.message),
            };
            errs.push(FieldError { reason, field, message });
        }
    }
}

/// CEL rules that do not compile — or could not be evaluated safely: deeper or longer than
/// cel-go allows, constructing messages, or costlier than kube's static limits
/// (`crd/cost.rs`) — make the CRD invalid. Parsing runs on a [`cel::deep`] thread.
fn check_rules(schema_value: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if !has_cel_rules(schema_value) {
        return;
    }
    let found = cel::deep(|| {
        let mut found = Vec::new();
        let mut total = 0u64;
        rule_sites(schema_value, path.to_string(), 1, &mut |node, at, cardinality| {
            let rules = node.get("x-kubernetes-validations").and_then(Value::as_array).into_iter().flatten();
            for (i, r) in rules.enumerate() {
                // The rule, and its messageExpression: each must parse and fit kube's limits.
                for field in ["rule", "messageExpression"] {
                    let Some(src) = r.get(field).and_then(Value::as_str) else { continue };
                    let at = format!("{at}.x-kubernetes-validations[{i}].{field}");
                    match cel::parse(src) {
                        Err(why) => found.push(FieldError::invalid(at, &json!(src), &why)),
                        Ok(program) => {
                            let c = cost::rule_cost(program.expression(), node);
                            if c > cost::RULE_LIMIT {
                                let why = over_budget(&format!("estimated {field} cost"), field, c, cost::RULE_LIMIT);
                                found.push(FieldError::forbidden(at, &why));
                            }
                            total = total.saturating_add(c.saturating_mul(cardinality));
                        }
                    }
                }
            }
        });
        if total > cost::CRD_LIMIT {
            let estimate = "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema";
            let why = over_budget(estimate, "rule", total, cost::CRD_LIMIT);
            found.push(FieldError::forbidden(path.to_string(), &why));
        }
        if found.is_empty() {
            let compiled = kube_core::cel::compile_schema(schema_value);
            for e in compiled.compilation_errors() {
                found.push(FieldError::invalid(
                    format!("{path}.x-kubernetes-validations"),
                    &json!(e.to_string()),
                    "compilation failed",
                ));
            }
        }
        found
    });
    errs.extend(
        found.unwrap_or_else(|| {
            vec![FieldError::invalid(path.to_string(), &Value::Null, "the rules cannot be compiled")]
        }),
    );
}

/// kube's words for an `estimate` over its static cost limit (`what`: the rule or the
/// messageExpression to simplify).
fn over_budget(estimate: &str, what: &str, cost: u64, limit: u64) -> String {
    format!(
        "{estimate} exceeds budget by factor of {:.1}x (try simplifying the {what}, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)",
        cost as f64 / limit as f64
    )
}

/// Calls `f` on every schema node with its field path and cardinality (how many values of
/// it one object can hold: the bounds of the lists and maps above it multiplied).
fn rule_sites(node: &Value, at: String, cardinality: u64, f: &mut impl FnMut(&Value, &str, u64)) {
    if !node.is_object() {
        return;
    }
    f(node, &at, cardinality);
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            rule_sites(child, format!("{at}.properties[{name}]"), cardinality, f);
        }
    }
    let many = cardinality.saturating_mul(cost::bound(Some(node)));
    if let Some(items) = node.get("items") {
        rule_sites(items, format!("{at}.items"), many, f);
    }
    if let Some(extra) = node.get("additionalProperties").filter(|a| a.is_object()) {
        rule_sites(extra, format!("{at}.additionalProperties"), many, f);
    }
    for k in ["allOf", "anyOf", "oneOf"] {
        for (i, child) in node.get(k).and_then(Value::as_array).into_iter().flatten().enumerate() {
            rule_sites(child, format!("{at}.{k}[{i}]"), cardinality, f);
        }
    }
}

// ---- the in-process controllers ---------------------------------------------------------------

/// Serves every CRD already stored (at startup, before the server answers).
pub(crate) async fn load(api: &ApiServer) {
    let (status, list) = api.internal(Method::GET, CRDS, None).await;
    if status != StatusCode::OK {
        return;
    }
    let mut crds: Vec<Value> = list.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
    // Older CRDs win name conflicts, as with the naming controller.
    crds.sort_by(|a, b| {
        object::str_at(a, &["metadata", "creationTimestamp"])
            .cmp(&object::str_at(b, &["metadata", "creationTimestamp"]))
    });
    for crd in crds {
        serve(api, &crd);
    }
}

/// Follows CRDs until the server is dropped: serves, renames, finalizes.
pub(crate) async fn run(inner: Weak<Inner>) {
    loop {
        let Some(mut live) = subscribe(&inner).await else {
            return;
        };
        // Catch up on what changed before the subscription and on unfinished deletions.
        if let Some(api) = inner.upgrade().map(|inner| ApiServer { inner }) {
            let (_, list) = api.internal(Method::GET, CRDS, None).await;
            for crd in list.get("items").and_then(Value::as_array).cloned().unwrap_or_default() {
                reconcile(&api, &inner, &crd).await;
            }
        }
        loop {
            let change = match live.recv().await {
                Ok(c) => c,
                // Fell behind: subscribe again and catch up from a fresh list.
                Err(crate::watchcache::Ended::Lagged) => break,
                Err(crate::watchcache::Ended::Closed) => return,
            };
            let Some(api) = inner.upgrade().map(|inner| ApiServer { inner }) else {
                return;
            };
            if change.deleted {
                unserve(&api, &change.object);
            } else {
                reconcile(&api, &inner, &change.object).await;
            }
        }
    }
}

async fn subscribe(inner: &Weak<Inner>) -> Option<crate::watchcache::Subscription> {
    let api = ApiServer { inner: inner.upgrade()? };
    let rt = api.registry().get("apiextensions.k8s.io", "v1", "customresourcedefinitions")?;
    let cache = api.cache(&rt.key_prefix()).await.ok()?;
    cache.subscribe(cache.head())
}

/// The other CRD of the same group already serving one of `crd`'s names: (reason, message).
fn name_conflict(api: &ApiServer, crd: &Value) -> Option<(&'static str, String)> {
    let group = s(&crd["spec"], "group");
    let names = names_of(crd);
    let me = object::name(crd);
    let others: Vec<Arc<ResourceType>> = api
        .registry()
        .all()
        .into_iter()
        .filter(|t| t.group == group && t.custom.as_ref().is_some_and(|c| c.crd != me))
        .collect();
    let plural = s(&names, "plural");
    if others.iter().any(|t| t.plural == plural || t.singular == plural || t.short_names.iter().any(|x| x == plural)) {
        return Some(("PluralConflict", format!("{plural:?} is already in use")));
    }
    let singular = s(&names, "singular");
    if others
        .iter()
        .any(|t| t.singular == singular || t.plural == singular || t.short_names.iter().any(|x| x == singular))
    {
        return Some(("SingularConflict", format!("{singular:?} is already in use")));
    }
    for short in strings(names.get("shortNames")) {
        if others.iter().any(|t| t.short_names.contains(&short) || t.plural == short || t.singular == short) {
            return Some(("ShortNamesConflict", format!("{short:?} is already in use")));
        }
    }
    let kind = s(&names, "kind");
    if others.iter().any(|t| t.kind == kind || t.list_kind == kind) {
        return Some(("KindConflict", format!("{kind:?} is already in use")));
    }
    let list_kind = s(&names, "listKind");
    if others.iter().any(|t| t.list_kind == list_kind || t.kind == list_kind) {
        return Some(("ListKindConflict", format!("{list_kind:?} is already in use")));
    }
    None
}

/// Registers a CRD's types if its names are free; returns whether it is served.
fn serve(api: &ApiServer, crd: &Value) -> bool {
    if name_conflict(api, crd).is_some() {
        return false;
    }
    let group = s(&crd["spec"], "group");
    let plural = s(&crd["spec"]["names"], "plural");
    if group.is_empty() || plural.is_empty() {
        return false;
    }
    api.registry().replace(group, plural, types_of(crd, object::is_deleting(crd)));
    true
}

/// Stops serving a CRD's types (if they are this CRD's).
fn unserve(api: &ApiServer, crd: &Value) {
    let group = s(&crd["spec"], "group");
    let plural = s(&crd["spec"]["names"], "plural");
    let ours = api.registry().all().iter().any(|t| {
        t.group == group && t.plural == plural && t.custom.as_ref().is_some_and(|c| c.crd == object::name(crd))
    });
    if ours {
        api.registry().replace(group, plural, Vec::new());
    }
}

/// Serves a changed CRD, keeps its status true, and finalizes it when deleted.
async fn reconcile(api: &ApiServer, inner: &Weak<Inner>, crd: &Value) {
    let conflict = name_conflict(api, crd);
    if conflict.is_none() {
        serve(api, crd);
    }
    if object::is_deleting(crd) {
        spawn_cleanup(inner.clone(), object::name(crd).to_string());
        return;
    }
    let desired = desired_status(crd, conflict);
    if status_differs(&crd["status"], &desired) {
        let mut next = crd.clone();
        next["status"] = desired;
        let path = format!("{CRDS}/{}/status", object::name(crd));
        api.internal(Method::PUT, &path, Some(&next)).await;
    }
}

fn condition(ty: &str, status: bool, reason: &str, message: &str, now: &str) -> Value {
    json!({"type": ty, "status": if status { "True" } else { "False" }, "lastTransitionTime": now, "reason": reason, "message": message})
}

/// The status the naming controller would write.
fn desired_status(crd: &Value, conflict: Option<(&'static str, String)>) -> Value {
    let now = object::now_rfc3339();
    let mut status = crd.get("status").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
    let old_conditions: Vec<Value> = status.get("conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let keep_time = |c: Value| -> Value {
        match old_conditions.iter().find(|o| o["type"] == c["type"] && o["status"] == c["status"]) {
            Some(o) => {
                let mut c = c;
                c["lastTransitionTime"] = o["lastTransitionTime"].clone();
                c
            }
            None => c,
        }
    };
    let conditions = match &conflict {
        None => vec![
            keep_time(condition("NamesAccepted", true, "NoConflicts", "no conflicts found", &now)),
            keep_time(condition(
                "Established",
                true,
                "InitialNamesAccepted",
                "the initial names have been accepted",
                &now,
            )),
        ],
        Some((reason, message)) => vec![
            keep_time(condition("NamesAccepted", false, reason, message, &now)),
            keep_time(condition("Established", false, "NotAccepted", "not all names are accepted", &now)),
        ],
    };
    status["conditions"] = json!(conditions);
    if conflict.is_none() {
        status["acceptedNames"] = names_of(crd);
    } else if status.get("acceptedNames").is_none() {
        status["acceptedNames"] = json!({"plural": "", "kind": ""});
    }
    let mut stored = strings(status.get("storedVersions"));
    if let Some(storage) = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .and_then(|vs| vs.iter().find(|v| v["storage"] == true).and_then(|v| v.get("name")).and_then(Value::as_str))
        && !stored.iter().any(|v| v == storage)
    {
        stored.push(storage.to_string());
    }
    status["storedVersions"] = json!(stored);
    status
}

/// Whether two statuses differ other than in condition timestamps.
fn status_differs(current: &Value, desired: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(cs) = v.get_mut("conditions").and_then(Value::as_array_mut) {
            for c in cs {
                if let Some(m) = c.as_object_mut() {
                    m.remove("lastTransitionTime");
                }
            }
        }
        v
    };
    strip(current) != strip(desired)
}

/// Deletes a terminating CRD's objects, then releases it; retries while objects with
/// finalizers linger.
fn spawn_cleanup(weak: Weak<Inner>, name: String) {
    tokio::spawn(async move {
        for attempt in 0..900u32 {
            let Some(api) = weak.upgrade().map(|inner| ApiServer { inner }) else {
                return;
            };
            if cleanup(&api, &name).await {
                return;
            }
            drop(api);
            tokio::time::sleep(Duration::from_millis(if attempt < 10 { 100 } else { 1000 })).await;
        }
    });
}

/// One pass of CRD finalization; true once the CRD is gone or no longer ours to finish.
async fn cleanup(api: &ApiServer, name: &str) -> bool {
    let path = format!("{CRDS}/{name}");
    let (status, crd) = api.internal(Method::GET, &path, None).await;
    if status == StatusCode::NOT_FOUND {
        return true;
    }
    if !object::is_deleting(&crd) || !object::finalizers(&crd).iter().any(|f| f == CLEANUP_FINALIZER) {
        return true;
    }
    let group = s(&crd["spec"], "group");
    let plural = s(&crd["spec"]["names"], "plural");
    let served = api
        .registry()
        .all()
        .into_iter()
        .find(|t| t.group == group && t.plural == plural && t.custom.as_ref().is_some_and(|c| c.crd == name));
    if let Some(rt) = served {
        let base = format!("/apis/{group}/{}", rt.version);
        let (status, list) = api.internal(Method::GET, &format!("{base}/{plural}"), None).await;
        if status != StatusCode::OK {
            return false;
        }
        let items = list.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
        for item in &items {
            if object::is_deleting(item) {
                continue;
            }
            let item_path = if rt.namespaced {
                format!("{base}/namespaces/{}/{plural}/{}", object::namespace(item), object::name(item))
            } else {
                format!("{base}/{plural}/{}", object::name(item))
            };
            api.internal(Method::DELETE, &item_path, None).await;
        }
        if !items.is_empty() {
            return false;
        }
        api.registry().replace(group, plural, Vec::new());
    }
    let mut next = crd.clone();
    let kept: Vec<String> = object::finalizers(&crd).into_iter().filter(|f| f != CLEANUP_FINALIZER).collect();
    object::meta_mut(&mut next).insert("finalizers".into(), json!(kept));
    let (status, _) = api.internal(Method::PUT, &path, Some(&next)).await;
    status.is_success() || status == StatusCode::NOT_FOUND
}

/// The Terminating condition a CRD gets when its deletion starts.
pub(crate) fn mark_terminating(crd: &mut Value) {
    let now = object::now_rfc3339();
    let cond = condition(
        "Terminating",
        true,
        "InstanceDeletionPending",
        "CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon",
        &now,
    );
    let status = &mut crd["status"];
    if !status.is_object() {
        *status = json!({});
    }
    let mut conditions: Vec<Value> = status.get("conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    conditions.retain(|c| c["type"] != "Terminating");
    conditions.push(cond);
    status["conditions"] = json!(conditions);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins apiextensions' two static limits: each rule on its own (10⁷), and all rules
    /// together, each times how many values it runs on (10⁸) — a cheap rule on the items of
    /// an unbounded list runs on ~1.5M of them.
    #[test]
    fn rule_costs_are_limited_alone_and_together() {
        let on_items = |max: &str| {
            json!({"type": "object", "properties": {"items": {"type": "array", max: 1000,
                "items": {"type": "string", "maxLength": 1000, "x-kubernetes-validations": [
                    {"rule": "self.startsWith('a') && self.endsWith('z') && self.size() < 100 && self.size() > 2"}]}}}})
        };
        let mut errs = Vec::new();
        check_rules(&on_items("maxItems"), "spec.validation.openAPIV3Schema", &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        check_rules(&on_items("minItems"), "spec.validation.openAPIV3Schema", &mut errs);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "spec.validation.openAPIV3Schema");
        assert!(
            errs[0].message.contains("x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema exceeds budget by factor of"),
            "{errs:?}"
        );
    }

    #[test]
    fn version_priority_follows_kubernetes() {
        let mut vs = vec![
            "v1alpha1",
            "v11alpha2",
            "foo1",
            "v10beta3",
            "v1",
            "v2",
            "v10",
            "v12alpha1",
            "v3beta1",
            "foo10",
            "v1beta1",
        ];
        vs.sort_by_key(|v| version_order(v));
        assert_eq!(
            vs,
            [
                "v10",
                "v2",
                "v1",
                "v10beta3",
                "v3beta1",
                "v1beta1",
                "v12alpha1",
                "v11alpha2",
                "v1alpha1",
                "foo1",
                "foo10"
            ]
        );
    }

    #[test]
    fn types_from_a_definition() {
        let crd = json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [
                    {"name": "v1beta1", "served": true, "storage": false, "schema": {"openAPIV3Schema": {"type": "object"}}},
                    {"name": "v1", "served": true, "storage": true,
                     "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-validations": [{"rule": "true"}]}},
                     "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
                     "selectableFields": [{"jsonPath": ".spec.color"}]},
                    {"name": "v0", "served": false, "storage": false, "schema": {"openAPIV3Schema": {"type": "object"}}}
                ]}
        });
        let types = types_of(&crd, false);
        assert_eq!(types.len(), 2);
        let v1 = types.iter().find(|t| t.version == "v1").unwrap();
        assert!(v1.preferred && v1.namespaced && v1.policy.has_status);
        assert_eq!((v1.singular.as_str(), v1.list_kind.as_str()), ("widget", "WidgetList"));
        assert_eq!(v1.subresources.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["status", "scale"]);
        assert_eq!(v1.policy.field_selectors, ["spec.color"]);
        let custom = v1.custom.as_ref().unwrap();
        assert_eq!(custom.storage_version, "v1");
        assert!(custom.cel.is_some());
        assert!(!types.iter().find(|t| t.version == "v1beta1").unwrap().preferred);
        let mut errs = Vec::new();
        validate_definition(&crd, None, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn definitions_are_validated() {
        let crd = json!({
            "metadata": {"name": "wrong"},
            "spec": {"group": "nodot", "scope": "Everywhere", "names": {"plural": "Widgets", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": false}]}
        });
        let mut errs = Vec::new();
        validate_definition(&crd, None, &mut errs);
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "metadata.name",
            "spec.group",
            "spec.names.plural",
            "spec.scope",
            "spec.versions",
            "spec.versions[0].schema.openAPIV3Schema",
        ] {
            assert!(fields.contains(&f), "{f} in {fields:?}");
        }
    }
}
