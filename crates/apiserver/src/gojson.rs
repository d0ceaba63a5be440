//! JSON as kube-apiserver writes it: Go's `encoding/json` over Kubernetes' structs.
//!
//! Clients that compare bodies byte for byte see what a kube-apiserver would send:
//! - built-in objects' fields in Go struct order (`kind`, `apiVersion` — the inlined TypeMeta —
//!   then `metadata`, `spec`, `status`, and so on down every nested struct). The generated
//!   protobuf table lists each message's fields in struct order (go-to-protobuf writes them so,
//!   whatever their tags), so it doubles as the order table;
//! - maps, custom resources and anything without a message (unstructured objects are Go maps)
//!   with their keys sorted, as Go sorts map keys;
//! - strings escaped as Go's encoder does by default: `<`, `>`, `&`, U+2028 and U+2029 as
//!   `\u003c`-style escapes, `\b`, `\f`, `\n`, `\r`, `\t` short, other controls as `\u00XX`;
//! - `ObjectMeta`/`ListMeta` fields Go would omit (`omitempty`: empty strings, lists and maps)
//!   left out, so `"generateName":""` never appears.
//!
//! Response bodies add the newline Go's `json.Encoder` ends each value with (`crate::json_response`).

use serde_json::{Map, Value};

use crate::protobuf::{Kind, MESSAGES, Message};

/// Encodes a top-level value (an object, list, Status, discovery document...), its message
/// found from its `apiVersion` and `kind`.
pub fn to_vec(v: &Value) -> Vec<u8> {
    to_vec_as(v, top_message(v))
}

/// Encodes a top-level value as the message `msg`, or as an unstructured object when `None`
/// (a custom resource: a Go map whose `metadata` went through `ObjectMeta`, as the
/// apiextensions-apiserver coerces it).
pub fn to_vec_as(v: &Value, msg: Option<&'static Message>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    match (v, msg) {
        (Value::Object(m), None) => {
            out.push(b'{');
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(&mut out, k);
                out.push(b':');
                match v {
                    Value::Object(meta) if k == "metadata" => {
                        out.push(b'{');
                        let mut first = true;
                        for (k, v) in meta.iter().filter(|(k, v)| !meta_omitted(k, v)) {
                            member(&mut out, &mut first, k, v, None);
                        }
                        out.push(b'}');
                    }
                    _ => write_value(&mut out, v, None),
                }
            }
            out.push(b'}');
        }
        _ => write_value(&mut out, v, msg),
    }
    out
}

/// The message of a top-level object: its kind in its group version, or a meta.k8s.io kind
/// that core `v1` serves (Status, discovery documents, List).
pub fn top_message(v: &Value) -> Option<&'static Message> {
    let kind = v.get("kind")?.as_str()?;
    let api_version = v.get("apiVersion")?.as_str()?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    crate::protobuf::message_for(group, version, kind).or_else(|| {
        (group.is_empty() && version == "v1").then(|| crate::protobuf::message_for("meta.k8s.io", "v1", kind)).flatten()
    })
}

/// Writes a JSON string as Go's encoder does (HTML-safe escaping).
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0x08 => Some(b"\\b"),
            0x0c => Some(b"\\f"),
            0x00..=0x1f | b'<' | b'>' | b'&' => Some(b""),
            // U+2028 and U+2029 (E2 80 A8 / E2 80 A9): escaped for JavaScript, as Go does.
            0xe2 if bytes.get(i + 1) == Some(&0x80) && matches!(bytes.get(i + 2), Some(0xa8 | 0xa9)) => Some(b""),
            _ => None,
        };
        let Some(escape) = escape else {
            i += 1;
            continue;
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            if b == 0xe2 {
                out.extend_from_slice(if bytes[i + 2] == 0xa8 { b"\\u2028" } else { b"\\u2029" });
                i += 3;
                start = i;
                continue;
            }
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 0xf) as usize]]);
        } else {
            out.extend_from_slice(escape);
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Writes `v`; objects are the struct `msg` when given, else Go maps (sorted keys).
pub fn write_value(out: &mut Vec<u8>, v: &Value, msg: Option<&'static Message>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item, msg);
            }
            out.push(b']');
        }
        Value::Object(m) => match msg {
            Some(msg) => write_struct(out, m, msg),
            None => write_map(out, m, None),
        },
    }
}

/// A Go map: keys sorted (a `Map` iterates sorted), values of message `values`.
fn write_map(out: &mut Vec<u8>, m: &Map<String, Value>, values: Option<&'static Message>) {
    out.push(b'{');
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(out, k);
        out.push(b':');
        write_value(out, v, values);
    }
    out.push(b'}');
}

/// Whether Go leaves empty fields of `msg` out: `ObjectMeta` and `ListMeta` fields are all
/// `omitempty`.
fn omits_empty(msg: &Message) -> bool {
    matches!(msg.name, "apimachinery::pkg::apis::meta::v1::ObjectMeta" | "apimachinery::pkg::apis::meta::v1::ListMeta")
}

/// Whether an `ObjectMeta`/`ListMeta` member is one Go omits: an empty string, list or map;
/// `null` from a nil pointer, except `creationTimestamp`, a struct Go writes as `null` when
/// unset.
fn meta_omitted(key: &str, v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Null => key != "creationTimestamp",
        _ => false,
    }
}

/// A struct: TypeMeta's `kind` and `apiVersion` first (inlined first in every Kubernetes
/// object), then the message's fields in struct order, then keys the message does not know
/// (sorted; the API server prunes them from built-in kinds, so only odd inputs have them).
fn write_struct(out: &mut Vec<u8>, m: &Map<String, Value>, msg: &'static Message) {
    out.push(b'{');
    let mut first = true;
    let mut seen = 0;
    for k in ["kind", "apiVersion"] {
        if let Some(v) = m.get(k)
            && msg.field(k).is_none()
        {
            member(out, &mut first, k, v, None);
            seen += 1;
        }
    }
    seen += write_fields(out, m, msg, &mut first);
    if seen < m.len() {
        for (k, v) in m {
            if !matches!(k.as_str(), "kind" | "apiVersion") && msg.field(k).is_none() {
                member(out, &mut first, k, v, None);
            }
        }
    }
    out.push(b'}');
}

/// Writes the members of `m` that are fields of `msg` (inlined structs' too), in order;
/// returns how many keys of `m` they account for (written or omitted).
fn write_fields(out: &mut Vec<u8>, m: &Map<String, Value>, msg: &'static Message, first: &mut bool) -> usize {
    let mut seen = 0;
    // Decided once per struct, not per field (this runs for every object encoded).
    let omits_empty = omits_empty(msg);
    for f in msg.fields {
        if f.json.is_empty() {
            if let Some(inner) = msg.nested(f) {
                seen += write_fields(out, m, inner, first);
            }
            continue;
        }
        let Some(v) = m.get(f.json) else {
            continue;
        };
        seen += 1;
        if omits_empty && meta_omitted(f.json, v) {
            continue;
        }
        if f.kind == Kind::MapMsg
            && let Some(map) = v.as_object()
        {
            if !*first {
                out.push(b',');
            }
            *first = false;
            write_string(out, f.json);
            out.push(b':');
            write_map(out, map, msg.nested(f));
            continue;
        }
        let nested = if f.kind == Kind::Msg { Some(&MESSAGES[f.message as usize]) } else { None };
        member(out, first, f.json, v, nested);
    }
    seen
}

fn member(out: &mut Vec<u8>, first: &mut bool, key: &str, v: &Value, msg: Option<&'static Message>) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    write_string(out, key);
    out.push(b':');
    write_value(out, v, msg);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn text(v: &Value) -> String {
        String::from_utf8(to_vec(v)).unwrap()
    }

    #[test]
    fn strings_are_escaped_as_go_escapes_them() {
        // Go's encodeState.string with escapeHTML (json.Encoder's default).
        let mut out = Vec::new();
        write_string(&mut out, "a<b>&\"\\\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f}é\u{2028}\u{2029}💡");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#""a\u003cb\u003e\u0026\"\\\n\r\t\b\f\u0001\u001f"#.to_string() + "\u{7f}é" + r#"\u2028\u2029"# + "💡\""
        );
    }

    #[test]
    fn built_in_objects_follow_go_struct_order() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"uid": "u", "name": "p", "namespace": "d", "labels": {"b": "2", "a": "1"}, "generateName": "", "finalizers": []},
            "status": {"phase": "Running"},
            "spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "i"}], "volumes": [{"name": "v", "emptyDir": {}}]}
        });
        assert_eq!(
            text(&pod),
            r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","namespace":"d","uid":"u","labels":{"a":"1","b":"2"}},"spec":{"volumes":[{"name":"v","emptyDir":{}}],"containers":[{"name":"c","image":"i"}],"restartPolicy":"Always"},"status":{"phase":"Running"}}"#
        );
    }

    #[test]
    fn status_and_lists_follow_go_struct_order() {
        // metav1.Status: TypeMeta, ListMeta, Status, Message, Reason, Details, Code.
        let status = json!({"code": 404, "details": {"kind": "pods", "name": "x"}, "message": "pods \"x\" not found",
            "reason": "NotFound", "status": "Failure", "metadata": {}, "apiVersion": "v1", "kind": "Status"});
        assert_eq!(
            text(&status),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"x\" not found","reason":"NotFound","details":{"name":"x","kind":"pods"},"code":404}"#
        );
        let list = json!({"apiVersion": "v1", "kind": "ConfigMapList", "items": [{"data": {"k": "v"}, "metadata": {"name": "c"}}],
            "metadata": {"resourceVersion": "5", "continue": "t"}});
        assert_eq!(
            text(&list),
            r#"{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"5","continue":"t"},"items":[{"metadata":{"name":"c"},"data":{"k":"v"}}]}"#
        );
    }

    #[test]
    fn custom_resources_are_go_maps() {
        let cr = json!({"kind": "Widget", "apiVersion": "example.com/v1", "spec": {"b": 1, "a": [true, null, 1.5]},
            "metadata": {"name": "w", "generateName": ""}});
        assert_eq!(
            text(&cr),
            r#"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w"},"spec":{"a":[true,null,1.5],"b":1}}"#
        );
    }
}
