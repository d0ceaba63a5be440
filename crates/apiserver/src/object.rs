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

/// `serde_json::from_value`, through JSON text: the deserializer kube-rs's clients use
/// (`from_str`), so each Kubernetes type's serde code is compiled once for both — the typed
/// (de)serializers of `Value` would be a second copy of every type's code in the binary.
pub fn from_value<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, serde_json::Error> {
    serde_json::from_str(&serde_json::to_string(&value)?)
}

/// `serde_json::to_value`, through JSON text (the serializer kube-rs uses; see [`from_value`]).
pub fn to_value<T: serde::Serialize>(value: T) -> Result<Value, serde_json::Error> {
    serde_json::from_slice(&serde_json::to_vec(&value)?)
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

/// The index after the string starting at `i` (which is a `"`).
fn skip_string(json: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    while i < json.len() {
        // The next quote or escape, found a word at a time.
        i += memchr::memchr2(b'"', b'\\', &json[i..])?;
        match json[i] {
            b'\\' => i += 2,
            _ => return Some(i + 1),
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

/// Encodes an object for the store as kube-apiserver would answer it (`gojson`: Go's field
/// order), without `metadata.resourceVersion`, which [`render_stored`] splices in at its place
/// when the object is read — responses copy stored bytes instead of decoding and encoding them.
pub fn encode_stored(obj: &Value) -> Vec<u8> {
    crate::gojson::to_vec(obj)
}

/// The `ObjectMeta` fields Go writes before `resourceVersion` (struct order): in a built-in
/// object's metadata, `resourceVersion` goes before the first member not among them.
const BEFORE_RESOURCE_VERSION: [&[u8]; 5] = [b"name", b"generateName", b"namespace", b"selfLink", b"uid"];

/// The index after the whitespace at `i`.
fn skip_ws(json: &[u8], mut i: usize) -> usize {
    while i < json.len() && json[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Reads the key of the member starting at `i` (at its key's quote): the key (raw bytes
/// between the quotes) and the index of its value. The value is not read.
fn key_at(json: &[u8], i: usize) -> Option<(&[u8], usize)> {
    if json.get(i) != Some(&b'"') {
        return None;
    }
    let key_end = skip_string(json, i)?;
    let colon = skip_ws(json, key_end);
    if json.get(colon) != Some(&b':') {
        return None;
    }
    Some((&json[i + 1..key_end - 1], skip_ws(json, colon + 1)))
}

/// Renders an object stored by [`encode_stored`] without decoding it: the members before
/// `metadata` (`kind`, `apiVersion`; left out with `strip_type`, as typed list items have
/// none) are copied, `"resourceVersion":"<rv>"` is spliced into `metadata` where Go puts it
/// (built-in kinds, which start with `kind`: after `uid`; custom resources, Go maps that start
/// with `apiVersion`: in key order), and the rest is copied unread. `None` for other layouts.
fn render_fast(json: &[u8], rv: i64, strip_type: bool) -> Option<Vec<u8>> {
    if json.first() != Some(&b'{') {
        return None;
    }
    let mut out = Vec::with_capacity(json.len() + 32);
    out.push(b'{');
    let mut i = 1;
    let mut struct_order = None;
    // The members before `metadata`.
    let meta_value = loop {
        i = skip_ws(json, i);
        let (key, value) = key_at(json, i)?;
        if struct_order.is_none() {
            struct_order = Some(match key {
                b"kind" => true,
                b"apiVersion" => false,
                _ => return None,
            });
        }
        if key == b"metadata" {
            break value;
        }
        let end = skip_value(json, value)?;
        if !(strip_type && matches!(key, b"kind" | b"apiVersion")) {
            out.extend_from_slice(&json[i..end]);
            out.push(b',');
        }
        i = skip_ws(json, end);
        if json.get(i) != Some(&b',') {
            return None;
        }
        i += 1;
    };
    let struct_order = struct_order?;
    if json.get(meta_value) != Some(&b'{') {
        return None;
    }
    out.extend_from_slice(b"\"metadata\":{");
    // Members of `metadata` before the splice point.
    let mut j = skip_ws(json, meta_value + 1);
    let mut any_before = false;
    loop {
        if json.get(j) == Some(&b'}') {
            break;
        }
        let (key, value) = key_at(json, j)?;
        let after =
            if struct_order { !BEFORE_RESOURCE_VERSION.contains(&key) } else { key > b"resourceVersion".as_slice() };
        if after {
            break;
        }
        any_before = true;
        j = skip_ws(json, skip_value(json, value)?);
        match json.get(j) {
            Some(b',') => j = skip_ws(json, j + 1),
            Some(b'}') => break,
            _ => return None,
        }
    }
    let splice = |out: &mut Vec<u8>| {
        use std::io::Write;
        let _ = write!(out, "\"resourceVersion\":\"{rv}\"");
    };
    out.extend_from_slice(&json[meta_value + 1..j]);
    if json[j] == b'}' {
        // Nothing after: the splice ends metadata.
        if any_before {
            out.push(b',');
        }
        splice(&mut out);
    } else {
        splice(&mut out);
        out.push(b',');
    }
    out.extend_from_slice(&json[j..]);
    Some(out)
}

/// Renders a stored object (JSON without `resourceVersion`) for a response: with
/// `metadata.resourceVersion` set and, with `strip_type`, without the top-level `kind` and
/// `apiVersion` (typed list items). Objects in vt's layout are copied (see [`render_fast`]);
/// others (written by earlier versions of vt) are decoded and encoded. `None` if the bytes
/// are not a JSON object.
pub fn render_stored(json: &[u8], rv: i64, strip_type: bool) -> Option<Vec<u8>> {
    if let Some(out) = render_fast(json, rv, strip_type) {
        return Some(out);
    }
    let mut v: Value = serde_json::from_slice(json).ok()?;
    if !v.is_object() || !v.get("metadata").is_some_and(Value::is_object) {
        return None;
    }
    set_resource_version(&mut v, rv);
    let msg = crate::gojson::top_message(&v);
    if strip_type && let Some(m) = v.as_object_mut() {
        m.remove("kind");
        m.remove("apiVersion");
    }
    Some(crate::gojson::to_vec_as(&v, msg))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rendered(stored: &[u8], rv: i64, strip: bool) -> String {
        String::from_utf8(render_stored(stored, rv, strip).unwrap()).unwrap()
    }

    #[test]
    fn resource_version_goes_where_go_writes_it() {
        let cm = json!({"kind": "ConfigMap", "apiVersion": "v1", "data": {"k": "a \"metadata\":{ x"},
            "metadata": {"name": "c", "namespace": "d", "uid": "u", "labels": {"a": "b"}}});
        let stored = encode_stored(&cm);
        assert!(render_fast(&stored, 42, false).is_some(), "vt's own layout renders without decoding");
        assert_eq!(
            rendered(&stored, 42, false),
            r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"c","namespace":"d","uid":"u","resourceVersion":"42","labels":{"a":"b"}},"data":{"k":"a \"metadata\":{ x"}}"#
        );
        assert_eq!(
            rendered(&stored, 7, true),
            r#"{"metadata":{"name":"c","namespace":"d","uid":"u","resourceVersion":"7","labels":{"a":"b"}},"data":{"k":"a \"metadata\":{ x"}}"#
        );
        // Nothing after resourceVersion, or nothing at all.
        let only_name = encode_stored(&json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "n"}}));
        assert_eq!(
            rendered(&only_name, 3, false),
            r#"{"kind":"Namespace","apiVersion":"v1","metadata":{"name":"n","resourceVersion":"3"}}"#
        );
        let empty = encode_stored(&json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {}}));
        assert_eq!(
            rendered(&empty, 1, false),
            r#"{"kind":"Namespace","apiVersion":"v1","metadata":{"resourceVersion":"1"}}"#
        );
        let first =
            encode_stored(&json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"labels": {"a": "b"}}}));
        assert_eq!(
            rendered(&first, 1, false),
            r#"{"kind":"Namespace","apiVersion":"v1","metadata":{"resourceVersion":"1","labels":{"a":"b"}}}"#
        );
    }

    #[test]
    fn custom_resources_keep_key_order_and_their_type() {
        let cr = json!({"apiVersion": "example.com/v1", "kind": "Widget", "spec": {"z": 1, "a": 2},
            "metadata": {"name": "w", "uid": "u", "annotations": {"x": "<y>"}, "generation": 1}});
        let stored = encode_stored(&cr);
        assert!(render_fast(&stored, 9, false).is_some());
        assert_eq!(
            rendered(&stored, 9, false),
            r#"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"annotations":{"x":"\u003cy\u003e"},"generation":1,"name":"w","resourceVersion":"9","uid":"u"},"spec":{"a":2,"z":1}}"#
        );
    }

    #[test]
    fn earlier_layouts_are_decoded_and_rendered_the_same() {
        // vt before Go ordering stored `metadata` first and the type last.
        let old = br#"{"metadata":{"name":"c","uid":"u"},"data":{"k":"v"},"apiVersion":"v1","kind":"ConfigMap"}"#;
        assert!(render_fast(old, 5, false).is_none());
        assert_eq!(
            rendered(old, 5, false),
            r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"c","uid":"u","resourceVersion":"5"},"data":{"k":"v"}}"#
        );
        assert_eq!(
            rendered(old, 5, true),
            r#"{"metadata":{"name":"c","uid":"u","resourceVersion":"5"},"data":{"k":"v"}}"#
        );
        assert!(render_stored(b"[1,2]", 1, false).is_none());
        assert!(render_stored(br#"{"metadata":"#, 1, false).is_none());
        assert!(render_stored(br#"{"spec":{}}"#, 1, false).is_none());
        assert!(render_stored(br#"{"kind":"X","metadata":{"name":"#, 1, false).is_none());
    }
}
