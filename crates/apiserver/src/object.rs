//! Helpers over objects held as JSON values.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// The current time as kube-apiserver writes `metav1.Time` (RFC 3339, whole seconds, UTC).
pub fn now_rfc3339() -> String {
    format_time(jiff::Timestamp::now())
}

/// Formats a timestamp as `metav1.Time`.
pub fn format_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Parses a `metav1.Time`.
pub fn parse_time(s: &str) -> Option<jiff::Timestamp> {
    s.parse().ok()
}

/// Reads a string at a path of object keys.
pub fn str_at<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(obj, |v, k| v.get(*k))?.as_str()
}

/// Reads any value at a path of object keys.
pub fn at<'a>(obj: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |v, k| v.get(*k))
}

/// The object's `metadata`, created if missing or not an object.
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let root = obj.as_object_mut().expect("object");
    let m = root.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    m.as_object_mut().expect("metadata object")
}

/// `metadata.name`.
pub fn name(obj: &Value) -> &str {
    str_at(obj, &["metadata", "name"]).unwrap_or("")
}

/// `metadata.namespace`.
pub fn namespace(obj: &Value) -> &str {
    str_at(obj, &["metadata", "namespace"]).unwrap_or("")
}

/// `metadata.uid`.
pub fn uid(obj: &Value) -> &str {
    str_at(obj, &["metadata", "uid"]).unwrap_or("")
}

/// `metadata.resourceVersion`.
pub fn resource_version(obj: &Value) -> &str {
    str_at(obj, &["metadata", "resourceVersion"]).unwrap_or("")
}

/// `metadata.labels` as a map (non-string values are ignored).
pub fn labels(obj: &Value) -> BTreeMap<String, String> {
    at(obj, &["metadata", "labels"])
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

/// `metadata.finalizers`.
pub fn finalizers(obj: &Value) -> Vec<String> {
    at(obj, &["metadata", "finalizers"])
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// Whether `metadata.deletionTimestamp` is set.
pub fn is_deleting(obj: &Value) -> bool {
    at(obj, &["metadata", "deletionTimestamp"]).is_some_and(|v| !v.is_null())
}

/// Sets `metadata.resourceVersion`.
pub fn set_resource_version(obj: &mut Value, rv: i64) {
    meta_mut(obj).insert("resourceVersion".into(), Value::String(rv.to_string()));
}

/// Removes null-valued keys from `metadata` (clients send `"creationTimestamp": null`).
pub fn drop_null_metadata(obj: &mut Value) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.retain(|_, v| !v.is_null());
    }
}

/// Everything except `metadata` and `status`: what a spec change is measured on.
pub fn spec_part(obj: &Value) -> Value {
    match obj.as_object() {
        Some(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        None => Value::Null,
    }
}

/// The value a field selector compares for `field` of an object of `kind`, as kube's field
/// label conversion functions compute it: booleans and integers are Go's `FormatBool`/`Itoa`
/// of the typed field, so an unset one is `false`/`0` (`spec.unschedulable=false` selects
/// nodes that never set it), and an Event's `source` is its source component.
pub fn selectable_field(kind: &str, obj: &Value, field: &str) -> String {
    match (kind, field) {
        ("Event", "source") => field_string(obj, "source.component"),
        ("Node", "spec.unschedulable") | ("Pod", "spec.hostNetwork") => {
            let v = field_string(obj, field);
            if v.is_empty() { "false".into() } else { v }
        }
        ("ReplicaSet" | "ReplicationController", "status.replicas") | ("Job", "status.successful") => {
            let v = field_string(obj, field);
            if v.is_empty() { "0".into() } else { v }
        }
        _ => field_string(obj, field),
    }
}

/// Reads the value of a field path (`metadata.name`, `spec.nodeName`, ...) as a string
/// (absent is the empty string).
pub fn field_string(obj: &Value, field: &str) -> String {
    let path: Vec<&str> = field.split('.').collect();
    match at(obj, &path) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// The byte spans of the top-level members of a JSON object: (key, start, end), where
/// `start..end` covers `"key":value`. `None` if `json` is not a well-formed object.
fn top_level_members(json: &[u8]) -> Option<Vec<(&[u8], usize, usize)>> {
    let mut i = json.iter().position(|b| !b.is_ascii_whitespace())?;
    if json[i] != b'{' {
        return None;
    }
    i += 1;
    let mut out = Vec::new();
    loop {
        while i < json.len() && (json[i].is_ascii_whitespace() || json[i] == b',') {
            i += 1;
        }
        if i >= json.len() {
            return None;
        }
        if json[i] == b'}' {
            return Some(out);
        }
        if json[i] != b'"' {
            return None;
        }
        let start = i;
        let key_end = skip_string(json, i)?;
        let key = &json[i + 1..key_end - 1];
        i = key_end;
        while i < json.len() && json[i].is_ascii_whitespace() {
            i += 1;
        }
        if json.get(i) != Some(&b':') {
            return None;
        }
        i = skip_value(json, i + 1)?;
        out.push((key, start, i));
    }
}

/// The index after the string starting at `i` (which is a `"`).
fn skip_string(json: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    while i < json.len() {
        match json[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The index after the value starting at or after `i`.
fn skip_value(json: &[u8], mut i: usize) -> Option<usize> {
    while i < json.len() && json[i].is_ascii_whitespace() {
        i += 1;
    }
    match *json.get(i)? {
        b'"' => skip_string(json, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            while i < json.len() {
                match json[i] {
                    b'"' => {
                        i = skip_string(json, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            while i < json.len() && !matches!(json[i], b',' | b'}' | b']') && !json[i].is_ascii_whitespace() {
                i += 1;
            }
            Some(i)
        }
    }
}

/// The prefix of every object vt stores: `metadata` comes first...
const STORED_PREFIX: &[u8] = b"{\"metadata\":{";
/// ...and the type last, so responses can be rendered without parsing.
const STORED_TYPE_MARK: &[u8] = b",\"apiVersion\":";

/// Encodes an object for the store in vt's layout: `metadata` first, then the other fields in
/// key order, then `apiVersion` and `kind` last. The layout lets [`render_stored`] splice in
/// the resourceVersion at a fixed offset and cut the type off list items without parsing.
pub fn encode_stored(obj: &Value) -> Vec<u8> {
    let Some(m) = obj.as_object() else {
        return serde_json::to_vec(obj).unwrap_or_default();
    };
    let Some(meta) = m.get("metadata").filter(|v| v.is_object()) else {
        return serde_json::to_vec(obj).unwrap_or_default();
    };
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"{\"metadata\":");
    let _ = serde_json::to_writer(&mut out, meta);
    for (k, v) in m {
        if matches!(k.as_str(), "metadata" | "apiVersion" | "kind") {
            continue;
        }
        out.push(b',');
        let _ = serde_json::to_writer(&mut out, k);
        out.push(b':');
        let _ = serde_json::to_writer(&mut out, v);
    }
    for k in ["apiVersion", "kind"] {
        if let Some(v) = m.get(k) {
            out.push(b',');
            let _ = serde_json::to_writer(&mut out, k);
            out.push(b':');
            let _ = serde_json::to_writer(&mut out, v);
        }
    }
    out.push(b'}');
    out
}

/// The rendering of an object in vt's stored layout, or `None` for other layouts.
fn render_fast(json: &[u8], rv: i64, strip_type: bool) -> Option<Vec<u8>> {
    let rest = json.strip_prefix(STORED_PREFIX)?;
    let mut body = rest;
    if strip_type {
        // `,"apiVersion":"<v>","kind":"<k>"}` ends the object.
        let at = rest.windows(STORED_TYPE_MARK.len()).rposition(|w| w == STORED_TYPE_MARK)?;
        let tail = &rest[at + STORED_TYPE_MARK.len()..];
        let plain =
            tail.iter().filter(|b| **b == b'"').count() == 6 && !tail.contains(&b'\\') && tail.ends_with(b"\"}");
        if !plain {
            return None;
        }
        body = &rest[..at];
    }
    let mut out = Vec::with_capacity(json.len() + 32);
    out.extend_from_slice(STORED_PREFIX);
    out.extend_from_slice(b"\"resourceVersion\":\"");
    out.extend_from_slice(rv.to_string().as_bytes());
    out.push(b'"');
    if body.first() != Some(&b'}') {
        out.push(b',');
    }
    out.extend_from_slice(body);
    if strip_type {
        out.push(b'}');
    }
    Some(out)
}

/// Renders a stored object (JSON without `resourceVersion`) for a response without decoding
/// it: `metadata.resourceVersion` is spliced in, and with `strip_type` the top-level `kind`
/// and `apiVersion` are left out (list items). `None` if the bytes are not the expected shape.
pub fn render_stored(json: &[u8], rv: i64, strip_type: bool) -> Option<Vec<u8>> {
    if let Some(out) = render_fast(json, rv, strip_type) {
        return Some(out);
    }
    let members = top_level_members(json)?;
    let mut out = Vec::with_capacity(json.len() + 32);
    out.push(b'{');
    let mut first = true;
    let mut saw_metadata = false;
    for (key, start, end) in members {
        if strip_type && (key == b"kind" || key == b"apiVersion") {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        if key == b"metadata" {
            saw_metadata = true;
            // `"metadata":{` ... splice after the brace.
            let member = &json[start..end];
            let brace = member.iter().position(|b| *b == b'{')?;
            out.extend_from_slice(&member[..=brace]);
            out.extend_from_slice(format!("\"resourceVersion\":\"{rv}\"").as_bytes());
            let rest = &member[brace + 1..];
            let non_ws = rest.iter().position(|b| !b.is_ascii_whitespace())?;
            if rest[non_ws] != b'}' {
                out.push(b',');
            }
            out.extend_from_slice(rest);
        } else {
            out.extend_from_slice(&json[start..end]);
        }
    }
    if !saw_metadata {
        return None;
    }
    out.push(b'}');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_stored_splices_the_resource_version() {
        let stored = br#"{"apiVersion":"v1","data":{"k":"a \"metadata\":{ x"},"kind":"ConfigMap","metadata":{"name":"c","labels":{"a":"b"}}}"#;
        let out = render_stored(stored, 42, false).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "42");
        assert_eq!(v["metadata"]["name"], "c");
        assert_eq!(v["data"]["k"], "a \"metadata\":{ x");
        let item = render_stored(stored, 7, true).unwrap();
        let v: Value = serde_json::from_slice(&item).unwrap();
        assert!(v.get("kind").is_none() && v.get("apiVersion").is_none());
        let empty_meta = render_stored(br#"{"metadata":{}}"#, 1, false).unwrap();
        assert_eq!(empty_meta, br#"{"metadata":{"resourceVersion":"1"}}"#);
        assert!(render_stored(b"[1,2]", 1, false).is_none());
        assert!(render_stored(br#"{"metadata":"#, 1, false).is_none());
        assert!(render_stored(br#"{"spec":{}}"#, 1, false).is_none());
    }

    #[test]
    fn stored_layout_renders_like_the_general_path() {
        let obj = serde_json::json!({"kind": "ConfigMap", "apiVersion": "v1", "data": {"k": "v,\"apiVersion\":\"x"}, "metadata": {"name": "c"}});
        let stored = encode_stored(&obj);
        assert!(stored.starts_with(STORED_PREFIX));
        for strip in [false, true] {
            let fast: Value = serde_json::from_slice(&render_fast(&stored, 9, strip).unwrap()).unwrap();
            let mut want = obj.clone();
            want["metadata"]["resourceVersion"] = serde_json::json!("9");
            if strip {
                want.as_object_mut().unwrap().remove("kind");
                want.as_object_mut().unwrap().remove("apiVersion");
            }
            assert_eq!(fast, want, "strip={strip}");
        }
        let empty = encode_stored(&serde_json::json!({"metadata": {}}));
        assert_eq!(render_stored(&empty, 1, false).unwrap(), br#"{"metadata":{"resourceVersion":"1"}}"#);
    }
}
