//! Structural schemas of custom resources (the OpenAPI v3 subset CRDs use): pruning of
//! unknown fields, defaulting, and validation with kube-apiserver's messages.
//!
//! * Pruning keeps what the schema names, what `additionalProperties` admits and what
//!   `x-kubernetes-preserve-unknown-fields` keeps; at the root and in
//!   `x-kubernetes-embedded-resource` objects, `apiVersion`, `kind` and `metadata` always stay.
//! * Defaulting fills absent fields (and `null` ones unless nullable) from `default`.
//! * Validation: types (with `nullable` and `x-kubernetes-int-or-string`), `required`, `enum`,
//!   `format`, numeric bounds and `multipleOf`, string lengths and `pattern`, item and property
//!   counts, `x-kubernetes-list-type` set/map uniqueness, `allOf`/`anyOf`/`oneOf`/`not`.

use std::collections::HashSet;

use serde_json::{Map, Value, json};

use crate::status::FieldError;

/// The fields of ObjectMeta (what survives pruning of `metadata`).
const OBJECT_META: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

fn flag(s: &Value, key: &str) -> bool {
    s.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

// ---- structural checks of a CRD's schema -----------------------------------------------------

/// The structural-schema rules kube enforces on a CRD (the ones that matter to serving it).
pub(crate) fn check_structural(s: &Value, path: &str, root: bool, errs: &mut Vec<FieldError>) {
    let ty = s.get("type").and_then(Value::as_str).unwrap_or("");
    let open = flag(s, "x-kubernetes-preserve-unknown-fields") || flag(s, "x-kubernetes-int-or-string");
    if root {
        match ty {
            "object" => {}
            "" => errs.push(FieldError::required(format!("{path}.type"), "must not be empty at the root")),
            other => {
                errs.push(FieldError::invalid(format!("{path}.type"), &json!(other), "must be object at the root"))
            }
        }
    } else if ty.is_empty() && !open {
        errs.push(FieldError::required(format!("{path}.type"), "must not be empty for specified object fields"));
    }
    if !ty.is_empty() && !matches!(ty, "object" | "array" | "string" | "integer" | "number" | "boolean") {
        errs.push(FieldError::not_supported(
            format!("{path}.type"),
            &json!(ty),
            &["array", "boolean", "integer", "number", "object", "string"],
        ));
    }
    if let Some(pattern) = s.get("pattern").and_then(Value::as_str)
        && regex::Regex::new(pattern).is_err()
    {
        errs.push(FieldError::invalid(
            format!("{path}.pattern"),
            &json!(pattern),
            "must be a valid regular expression",
        ));
    }
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        if s.get("additionalProperties").is_some_and(|a| a.is_object() || a == &json!(true)) {
            errs.push(FieldError::forbidden(
                format!("{path}.additionalProperties"),
                "additionalProperties and properties are mutual exclusive",
            ));
        }
        for (k, v) in props {
            check_structural(v, &format!("{path}.properties[{k}]"), false, errs);
        }
    }
    if let Some(items) = s.get("items").filter(|i| i.is_object()) {
        check_structural(items, &format!("{path}.items"), false, errs);
    } else if ty == "array" {
        errs.push(FieldError::required(format!("{path}.items"), "must be specified"));
    }
    if let Some(ap) = s.get("additionalProperties").filter(|a| a.is_object()) {
        check_structural(ap, &format!("{path}.additionalProperties"), false, errs);
    }
}

// ---- pruning ---------------------------------------------------------------------------------

/// Removes the fields the schema does not know; returns their paths (`spec.foo`).
pub(crate) fn prune(obj: &mut Value, schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    prune_at(obj, schema, "", true, &mut out);
    out
}

fn prune_at(v: &mut Value, s: &Value, path: &str, resource: bool, out: &mut Vec<String>) {
    let preserve = flag(s, "x-kubernetes-preserve-unknown-fields");
    let embedded = resource || flag(s, "x-kubernetes-embedded-resource");
    match v {
        Value::Object(m) => {
            let props = s.get("properties").and_then(Value::as_object);
            let additional = s.get("additionalProperties");
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let p = join(path, &k);
                if embedded && (k == "apiVersion" || k == "kind") {
                    continue;
                }
                if embedded && k == "metadata" {
                    if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
                        let unknown: Vec<String> =
                            meta.keys().filter(|f| !OBJECT_META.contains(&f.as_str())).cloned().collect();
                        for f in unknown {
                            meta.remove(&f);
                            out.push(join(&p, &f));
                        }
                    }
                    continue;
                }
                if let Some(ps) = props.and_then(|p| p.get(&k)) {
                    if let Some(child) = m.get_mut(&k) {
                        prune_at(child, ps, &p, false, out);
                    }
                } else if let Some(ap) = additional.filter(|a| a.is_object()) {
                    if let Some(child) = m.get_mut(&k) {
                        prune_at(child, ap, &p, false, out);
                    }
                } else if preserve || additional == Some(&Value::Bool(true)) {
                    // Kept as is.
                } else {
                    m.remove(&k);
                    out.push(p);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items").filter(|i| i.is_object()) {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_at(item, is, &format!("{path}[{i}]"), false, out);
                }
            }
        }
        _ => {}
    }
}

// ---- defaulting ------------------------------------------------------------------------------

/// Whether a schema gives any field a default.
pub(crate) fn has_defaults(s: &Value) -> bool {
    s.get("default").is_some()
        || s.get("properties").and_then(Value::as_object).is_some_and(|p| p.values().any(has_defaults))
        || s.get("additionalProperties").filter(|a| a.is_object()).is_some_and(has_defaults)
        || s.get("items").filter(|i| i.is_object()).is_some_and(has_defaults)
}

/// Applies the schema's defaults to absent fields (and to nulls of non-nullable fields).
pub(crate) fn apply_defaults(v: &mut Value, s: &Value) {
    match v {
        Value::Object(m) => {
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                for (k, ps) in props {
                    let missing = match m.get(k) {
                        None => true,
                        Some(Value::Null) => !flag(ps, "nullable"),
                        Some(_) => false,
                    };
                    if missing && let Some(d) = ps.get("default") {
                        m.insert(k.clone(), d.clone());
                    }
                    if let Some(child) = m.get_mut(k) {
                        apply_defaults(child, ps);
                    }
                }
            }
            if let Some(ap) = s.get("additionalProperties").filter(|a| a.is_object()) {
                for child in m.values_mut() {
                    apply_defaults(child, ap);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items").filter(|i| i.is_object()) {
                for item in items {
                    apply_defaults(item, is);
                }
            }
        }
        _ => {}
    }
}

// ---- validation ------------------------------------------------------------------------------

/// Validates an object against its schema; `metadata` is left to the generic rules.
pub(crate) fn validate(obj: &Value, schema: &Value, errs: &mut Vec<FieldError>) {
    let Some(m) = obj.as_object() else {
        errs.push(FieldError::type_invalid("", obj, "must be of type object"));
        return;
    };
    let mut body = m.clone();
    body.remove("metadata");
    body.remove("apiVersion");
    body.remove("kind");
    let mut root = schema.clone();
    if let Some(props) = root.get_mut("properties").and_then(Value::as_object_mut) {
        props.remove("metadata");
        props.remove("apiVersion");
        props.remove("kind");
    }
    if let Some(req) = root.get_mut("required").and_then(Value::as_array_mut) {
        req.retain(|r| !matches!(r.as_str(), Some("metadata" | "apiVersion" | "kind")));
    }
    validate_at(&Value::Object(body), &root, "", errs);
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(ty: &str, v: &Value) -> bool {
    match (ty, v) {
        ("object", Value::Object(_))
        | ("array", Value::Array(_))
        | ("string", Value::String(_))
        | ("boolean", Value::Bool(_))
        | ("number", Value::Number(_)) => true,
        ("integer", Value::Number(n)) => n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => false,
    }
}

/// The `in body` name kube-openapi's messages use for a path (`spec.replicas`, `body` at root).
fn body_name(path: &str) -> &str {
    if path.is_empty() { "body" } else { path }
}

fn format_ok(format: &str, s: &str) -> bool {
    match format {
        "date-time" => s.parse::<jiff::Timestamp>().is_ok(),
        "date" => s.parse::<jiff::civil::Date>().is_ok() && s.len() == 10,
        "byte" => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(s).is_ok()
        }
        "uuid" => uuid::Uuid::parse_str(s).is_ok() && s.len() == 36,
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => s.split_once('/').is_some_and(|(ip, bits)| {
            ip.parse::<std::net::IpAddr>().is_ok() && bits.parse::<u8>().is_ok_and(|b| b <= 128)
        }),
        "hostname" => {
            !s.is_empty()
                && s.len() <= 253
                && s.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                })
        }
        "email" => s.split_once('@').is_some_and(|(a, b)| !a.is_empty() && b.contains('.')),
        "duration" => go_duration_ok(s),
        _ => true,
    }
}

fn go_duration_ok(s: &str) -> bool {
    let s = s.trim_start_matches(['-', '+']);
    if s == "0" {
        return true;
    }
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if n == 0 {
            return false;
        }
        rest = &rest[n..];
        let u = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        if !matches!(&rest[..u], "ns" | "us" | "µs" | "ms" | "s" | "m" | "h") {
            return false;
        }
        rest = &rest[u..];
    }
    true
}

fn validate_at(v: &Value, s: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if v.is_null() {
        if flag(s, "nullable") || s.get("type").is_none() {
            return;
        }
        let ty = s.get("type").and_then(Value::as_str).unwrap_or("");
        errs.push(FieldError::type_invalid(
            path,
            &json!("null"),
            &format!("{} in body must be of type {ty}: \"null\"", body_name(path)),
        ));
        return;
    }
    let int_or_string = flag(s, "x-kubernetes-int-or-string");
    if int_or_string {
        if !matches!(v, Value::String(_)) && !type_matches("integer", v) {
            errs.push(FieldError::type_invalid(
                path,
                v,
                &format!("{} in body must be of type integer,string: {:?}", body_name(path), type_name(v)),
            ));
            return;
        }
    } else if let Some(ty) = s.get("type").and_then(Value::as_str)
        && !type_matches(ty, v)
    {
        errs.push(FieldError::type_invalid(
            path,
            v,
            &format!("{} in body must be of type {ty}: {:?}", body_name(path), type_name(v)),
        ));
        return;
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let names: Vec<String> =
            allowed.iter().map(|a| a.as_str().map(String::from).unwrap_or_else(|| a.to_string())).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        errs.push(FieldError::not_supported(path, v, &refs));
    }
    match v {
        Value::Number(n) => number_rules(n.as_f64().unwrap_or(0.0), v, s, path, errs),
        Value::String(text) => string_rules(text, v, s, path, errs),
        Value::Array(items) => array_rules(items, s, path, errs),
        Value::Object(m) => object_rules(m, s, path, errs),
        _ => {}
    }
    for sub in s.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        validate_at(v, sub, path, errs);
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array)
        && !any.is_empty()
        && !any.iter().any(|sub| passes(v, sub, path))
    {
        errs.push(FieldError::invalid(
            path,
            v,
            &format!("{} in body must validate at least one schema (anyOf)", body_name(path)),
        ));
    }
    if let Some(one) = s.get("oneOf").and_then(Value::as_array)
        && !one.is_empty()
        && one.iter().filter(|sub| passes(v, sub, path)).count() != 1
    {
        errs.push(FieldError::invalid(
            path,
            v,
            &format!("{} in body must validate one and only one schema (oneOf)", body_name(path)),
        ));
    }
    if let Some(not) = s.get("not")
        && not.is_object()
        && passes(v, not, path)
    {
        errs.push(FieldError::invalid(
            path,
            v,
            &format!("{} in body should not validate the schema (not)", body_name(path)),
        ));
    }
}

fn passes(v: &Value, s: &Value, path: &str) -> bool {
    let mut e = Vec::new();
    validate_at(v, s, path, &mut e);
    e.is_empty()
}

fn number_rules(x: f64, v: &Value, s: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let name = body_name(path);
    if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
        let excl = flag(s, "exclusiveMaximum");
        if (excl && x >= max) || (!excl && x > max) {
            let rel = if excl { "less than" } else { "less than or equal to" };
            errs.push(FieldError::invalid(path, v, &format!("{name} in body should be {rel} {}", number_text(max))));
        }
    }
    if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
        let excl = flag(s, "exclusiveMinimum");
        if (excl && x <= min) || (!excl && x < min) {
            let rel = if excl { "greater than" } else { "greater than or equal to" };
            errs.push(FieldError::invalid(path, v, &format!("{name} in body should be {rel} {}", number_text(min))));
        }
    }
    if let Some(m) = s.get("multipleOf").and_then(Value::as_f64).filter(|m| *m > 0.0)
        && ((x / m) - (x / m).round()).abs() > 1e-9
    {
        errs.push(FieldError::invalid(path, v, &format!("{name} in body should be a multiple of {}", number_text(m))));
    }
    if let Some(format) = s.get("format").and_then(Value::as_str) {
        let bad = match format {
            "int32" => x.fract() != 0.0 || x < f64::from(i32::MIN) || x > f64::from(i32::MAX),
            "int64" => x.fract() != 0.0,
            _ => false,
        };
        if bad {
            errs.push(FieldError::invalid(path, v, &format!("{name} in body must be of type {format}: {v}")));
        }
    }
}

fn number_text(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 { format!("{}", x as i64) } else { x.to_string() }
}

fn string_rules(text: &str, v: &Value, s: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let name = body_name(path);
    let chars = text.chars().count() as i64;
    if let Some(max) = s.get("maxLength").and_then(Value::as_i64)
        && chars > max
    {
        errs.push(FieldError::too_long(path, max.max(0) as usize));
    }
    if let Some(min) = s.get("minLength").and_then(Value::as_i64)
        && chars < min
    {
        errs.push(FieldError::invalid(path, v, &format!("{name} in body should be at least {min} chars long")));
    }
    if let Some(pattern) = s.get("pattern").and_then(Value::as_str)
        && let Ok(re) = regex::Regex::new(pattern)
        && !re.is_match(text)
    {
        errs.push(FieldError::invalid(path, v, &format!("{name} in body should match '{pattern}'")));
    }
    if let Some(format) = s.get("format").and_then(Value::as_str)
        && !format_ok(format, text)
    {
        errs.push(FieldError::invalid(path, v, &format!("{name} in body must be of type {format}: {text:?}")));
    }
}

fn array_rules(items: &[Value], s: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let name = body_name(path);
    if let Some(max) = s.get("maxItems").and_then(Value::as_i64)
        && items.len() as i64 > max
    {
        errs.push(FieldError::too_many(path, items.len(), max));
    }
    if let Some(min) = s.get("minItems").and_then(Value::as_i64)
        && (items.len() as i64) < min
    {
        errs.push(FieldError::invalid(
            path,
            &json!(items),
            &format!("{name} in body should have at least {min} items"),
        ));
    }
    if let Some(is) = s.get("items").filter(|i| i.is_object()) {
        for (i, item) in items.iter().enumerate() {
            validate_at(item, is, &format!("{path}[{i}]"), errs);
        }
    }
    match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => {
            let mut seen: Vec<&Value> = Vec::new();
            for (i, item) in items.iter().enumerate() {
                if seen.contains(&item) {
                    errs.push(FieldError::duplicate(format!("{path}[{i}]"), item));
                } else {
                    seen.push(item);
                }
            }
        }
        Some("map") => {
            let keys: Vec<&str> = s
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let mut seen = HashSet::new();
            for (i, item) in items.iter().enumerate() {
                let key: Vec<Value> = keys.iter().map(|k| item.get(*k).cloned().unwrap_or(Value::Null)).collect();
                if !seen.insert(serde_json::to_string(&key).unwrap_or_default()) {
                    let shown: Map<String, Value> = keys.iter().zip(key).map(|(k, v)| (k.to_string(), v)).collect();
                    errs.push(FieldError::duplicate(format!("{path}[{i}]"), &Value::Object(shown)));
                }
            }
        }
        _ => {}
    }
}

fn object_rules(m: &Map<String, Value>, s: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let name = body_name(path);
    for r in s.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        if !m.contains_key(r) {
            errs.push(FieldError::required(join(path, r), ""));
        }
    }
    if let Some(max) = s.get("maxProperties").and_then(Value::as_i64)
        && m.len() as i64 > max
    {
        errs.push(FieldError::too_many(path, m.len(), max));
    }
    if let Some(min) = s.get("minProperties").and_then(Value::as_i64)
        && (m.len() as i64) < min
    {
        errs.push(FieldError::invalid(
            path,
            &Value::Object(m.clone()),
            &format!("{name} in body should have at least {min} properties"),
        ));
    }
    let props = s.get("properties").and_then(Value::as_object);
    let additional = s.get("additionalProperties").filter(|a| a.is_object());
    for (k, child) in m {
        let p = join(path, k);
        if flag(s, "x-kubernetes-embedded-resource") && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(ps) = props.and_then(|p| p.get(k)) {
            validate_at(child, ps, &p, errs);
        } else if let Some(ap) = additional {
            validate_at(child, ap, &p, errs);
        }
    }
}

/// The schema type at a field path (`spec.items[0].name`), for CEL error values.
pub(crate) fn type_at(schema: &Value, path: &str) -> String {
    let mut s = schema;
    for seg in path.trim_start_matches('.').split('.').filter(|x| !x.is_empty()) {
        let (name, indexed) = match seg.find('[') {
            Some(i) => (&seg[..i], true),
            None => (seg, false),
        };
        if !name.is_empty() {
            s = match s.pointer(&format!("/properties/{}", name.replace('~', "~0").replace('/', "~1"))) {
                Some(x) => x,
                None => match s.get("additionalProperties").filter(|a| a.is_object()) {
                    Some(a) => a,
                    None => return "object".into(),
                },
            };
        }
        if indexed {
            s = match s.get("items") {
                Some(i) => i,
                None => return "object".into(),
            };
        }
    }
    s.get("type").and_then(Value::as_str).unwrap_or("object").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["size"],
                    "properties": {
                        "size": {"type": "integer", "minimum": 1, "maximum": 10},
                        "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                        "name": {"type": "string", "maxLength": 5, "pattern": "^[a-z]+$"},
                        "port": {"x-kubernetes-int-or-string": true},
                        "when": {"type": "string", "format": "date-time"},
                        "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set", "maxItems": 3},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "note": {"type": "string", "nullable": true},
                        "nested": {"type": "object", "properties": {"on": {"type": "boolean", "default": true}}, "default": {}},
                    }
                },
                "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}
            }
        })
    }

    #[test]
    fn prunes_unknown_fields_and_keeps_what_the_schema_admits() {
        let mut obj = json!({
            "apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w", "bogus": 1},
            "spec": {"size": 1, "extra": true, "free": {"anything": [1]}, "labels": {"a": "b"}},
            "status": {"ready": true, "junk": 1},
            "top": 1
        });
        let pruned = prune(&mut obj, &schema());
        assert_eq!(pruned, ["metadata.bogus", "spec.extra", "status.junk", "top"]);
        assert_eq!(obj["spec"]["free"]["anything"], json!([1]));
        assert_eq!(obj["spec"]["labels"]["a"], "b");
        assert_eq!(obj["metadata"]["name"], "w");
    }

    #[test]
    fn applies_defaults() {
        let mut obj = json!({"spec": {"size": 2, "note": null}});
        apply_defaults(&mut obj, &schema());
        assert_eq!(obj["spec"]["color"], "red");
        assert_eq!(obj["spec"]["nested"], json!({"on": true}), "an object default is defaulted inside");
        assert!(obj["spec"]["note"].is_null(), "nullable keeps null");
    }

    #[test]
    fn validates_with_kube_messages() {
        let obj = json!({
            "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
            "spec": {"size": 20, "color": "green", "name": "TooLongName", "port": true, "when": "yesterday",
                     "tags": ["a", "a", "b", "c"], "labels": {"x": 1}, "note": null}
        });
        let mut errs = Vec::new();
        validate(&obj, &schema(), &mut errs);
        let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        for want in [
            "spec.size: Invalid value: 20: spec.size in body should be less than or equal to 10",
            r#"spec.color: Unsupported value: "green": supported values: "red", "blue""#,
            "spec.name: Too long: may not be more than 5 bytes",
            r#"spec.name: Invalid value: "TooLongName": spec.name in body should match '^[a-z]+$'"#,
            r#"spec.port: Invalid value: true: spec.port in body must be of type integer,string: "boolean""#,
            r#"spec.when: Invalid value: "yesterday": spec.when in body must be of type date-time: "yesterday""#,
            "spec.tags: Too many: 4: must have at most 3 items",
            r#"spec.tags[1]: Duplicate value: "a""#,
            r#"spec.labels.x: Invalid value: 1: spec.labels.x in body must be of type string: "integer""#,
        ] {
            assert!(shown.iter().any(|s| s == want), "missing {want:?} in {shown:#?}");
        }
        let mut errs = Vec::new();
        validate(&json!({"metadata": {"name": "w"}, "spec": {}}), &schema(), &mut errs);
        assert_eq!(errs.iter().map(|e| e.to_string()).collect::<Vec<_>>(), ["spec.size: Required value"]);
    }

    #[test]
    fn structural_rules() {
        let mut errs = Vec::new();
        check_structural(
            &json!({"type": "object", "properties": {"a": {}, "b": {"type": "array"}}}),
            "s",
            true,
            &mut errs,
        );
        let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            shown,
            [
                "s.properties[a].type: Required value: must not be empty for specified object fields",
                "s.properties[b].items: Required value: must be specified"
            ]
        );
        let mut errs = Vec::new();
        check_structural(&json!({"type": "string"}), "s", true, &mut errs);
        assert_eq!(errs[0].to_string(), r#"s.type: Invalid value: "string": must be object at the root"#);
    }

    #[test]
    fn types_at_paths() {
        let s = schema();
        assert_eq!(type_at(&s, "spec.size"), "integer");
        assert_eq!(type_at(&s, ".spec.tags[0]"), "string");
        assert_eq!(type_at(&s, "spec"), "object");
        assert_eq!(type_at(&s, ""), "object");
    }
}
