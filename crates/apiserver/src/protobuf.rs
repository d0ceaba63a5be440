//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), decoded into
//! the same JSON objects JSON bodies produce.
//!
//! A body is the magic `k8s\0` followed by a `runtime.Unknown` message whose `typeMeta` names
//! the kind and whose `raw` bytes are the object's message. Decoding is table-driven: for every
//! message, `protobuf/table.rs` (generated) lists each field's tag, JSON name and wire kind, so
//! one small wire-format reader serves every built-in type. Kubernetes' special messages
//! (Quantity, IntOrString, Time, MicroTime, Duration, RawExtension, FieldsV1, JSON) decode to
//! their JSON forms.

pub mod encode;
mod table;
pub(crate) mod wire;

use base64::Engine;
use serde_json::{Map, Value, json};

/// The wire kind of a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Kind {
    Str,
    Int,
    Bool,
    Double,
    Bytes,
    Msg,
    MapStr,
    MapMsg,
    MapBytes,
}

/// A field's strategic-merge-patch strategy (`+patchStrategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Patch {
    /// None declared: lists are replaced whole, maps and structs merged.
    None,
    /// Lists merge by their merge key (or as sets of primitives).
    Merge,
    /// Replace.
    Replace,
    /// `$retainKeys` applies.
    RetainKeys,
    /// Both.
    MergeRetainKeys,
}

/// A list's server-side-apply topology (`+listType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListType {
    /// Not declared (atomic).
    Unset,
    /// Owned and replaced as a whole.
    Atomic,
    /// A set of primitives.
    Set,
    /// A map keyed by `list_keys`.
    Map,
}

/// A map's server-side-apply topology (`+mapType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapType {
    /// Not declared (granular).
    Unset,
    /// Owned and replaced as a whole.
    Atomic,
    /// Each key owned separately.
    Granular,
}

/// One field of a message.
#[derive(Debug)]
pub struct Field {
    /// The protobuf tag.
    pub tag: u32,
    /// The JSON name; empty for an embedded struct whose fields are inlined into the parent.
    pub json: &'static str,
    /// The wire kind.
    pub kind: Kind,
    /// For `Msg` and `MapMsg`: the index of the nested message in `MESSAGES`.
    pub message: u16,
    /// Whether the field is a list.
    pub repeated: bool,
    /// Strategic merge strategy.
    pub patch: Patch,
    /// Strategic merge key of a list of objects.
    pub merge_key: &'static str,
    /// Server-side apply list type.
    pub list_type: ListType,
    /// Keys of a `map` list.
    pub list_keys: &'static [&'static str],
    /// Server-side apply map type.
    pub map_type: MapType,
}

/// A message: its full k8s-pb path and its fields.
#[derive(Debug)]
pub struct Message {
    /// The full k8s-pb path.
    pub name: &'static str,
    /// Whether the struct is atomic (`+structType=atomic`).
    pub atomic: bool,
    /// The fields.
    pub fields: &'static [Field],
}

impl Message {
    /// The field with JSON name `name` (fields of inlined structs included).
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        for f in self.fields {
            if f.json == name {
                return Some(f);
            }
            if f.json.is_empty()
                && f.kind == Kind::Msg
                && let Some(inner) = MESSAGES[f.message as usize].field(name)
            {
                return Some(inner);
            }
        }
        None
    }

    /// The nested message of a message-typed field.
    pub fn nested(&self, f: &Field) -> Option<&'static Message> {
        matches!(f.kind, Kind::Msg | Kind::MapMsg).then(|| &MESSAGES[f.message as usize])
    }
}

pub use table::MESSAGES;

/// The message of a built-in kind, e.g. `("apps", "v1", "Deployment")`.
pub fn message_for(group: &str, version: &str, kind: &str) -> Option<&'static Message> {
    static BY_NAME: std::sync::OnceLock<std::collections::HashMap<&'static str, &'static Message>> =
        std::sync::OnceLock::new();
    let name = format!("{}::{version}::{kind}", module_of(group)?);
    BY_NAME.get_or_init(|| MESSAGES.iter().map(|m| (m.name, m)).collect()).get(name.as_str()).copied()
}

/// The magic prefix of Kubernetes protobuf bodies.
pub const MAGIC: &[u8] = b"k8s\0";

/// Nesting deeper than this is refused (hostile inputs).
const MAX_DEPTH: usize = 100;

fn message_index(name: &str) -> Option<usize> {
    table::MESSAGES.iter().position(|m| m.name == name)
}

/// The k8s-pb module of an API group.
fn module_of(group: &str) -> Option<&'static str> {
    Some(match group {
        "" => "api::core",
        "apps" => "api::apps",
        "batch" => "api::batch",
        "autoscaling" => "api::autoscaling",
        "policy" => "api::policy",
        "networking.k8s.io" => "api::networking",
        "rbac.authorization.k8s.io" => "api::rbac",
        "storage.k8s.io" => "api::storage",
        "admissionregistration.k8s.io" => "api::admissionregistration",
        "authentication.k8s.io" => "api::authentication",
        "authorization.k8s.io" => "api::authorization",
        "certificates.k8s.io" => "api::certificates",
        "coordination.k8s.io" => "api::coordination",
        "discovery.k8s.io" => "api::discovery",
        "events.k8s.io" => "api::events",
        "flowcontrol.apiserver.k8s.io" => "api::flowcontrol",
        "node.k8s.io" => "api::node",
        "scheduling.k8s.io" => "api::scheduling",
        "apiextensions.k8s.io" => "apiextensions_apiserver::pkg::apis::apiextensions",
        "apiregistration.k8s.io" => "kube_aggregator::pkg::apis::apiregistration",
        "meta.k8s.io" => "apimachinery::pkg::apis::meta",
        _ => return None,
    })
}

/// A reader of the protobuf wire format.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or("truncated varint")?;
            self.buf = rest;
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = usize::try_from(self.varint()?).map_err(|_| "length overflows")?;
        if n > self.buf.len() {
            return Err("length exceeds the message".into());
        }
        let (b, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(b)
    }

    fn fixed(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.buf.len() {
            return Err("truncated fixed-width field".into());
        }
        let (b, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(b)
    }

    /// Skips a field of `wire` type.
    fn skip(&mut self, wire: u64) -> Result<(), String> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.fixed(8).map(|_| ()),
            2 => self.bytes().map(|_| ()),
            5 => self.fixed(4).map(|_| ()),
            w => Err(format!("unsupported wire type {w}")),
        }
    }
}

fn utf8(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "string field is not UTF-8".to_string())
}

fn b64(b: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(b))
}

/// The JSON value carried by raw JSON bytes (RawExtension, FieldsV1, JSON).
fn raw_json(b: &[u8]) -> Result<Value, String> {
    if b.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(b).map_err(|e| format!("embedded JSON: {e}"))
}

/// Decodes message `idx` from `buf` into JSON.
fn decode_message(buf: &[u8], idx: usize, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err("message nesting too deep".into());
    }
    let msg = &table::MESSAGES[idx];
    match msg.name {
        "apimachinery::pkg::api::resource::Quantity" => {
            let m = decode_message_fields(buf, msg, depth)?;
            return Ok(m.get("string").cloned().unwrap_or(json!("0")));
        }
        "apimachinery::pkg::util::intstr::IntOrString" => {
            let m = decode_message_fields(buf, msg, depth)?;
            let ty = m.get("type").and_then(Value::as_i64).unwrap_or(0);
            return Ok(if ty == 1 {
                m.get("strVal").cloned().unwrap_or(json!(""))
            } else {
                m.get("intVal").cloned().unwrap_or(json!(0))
            });
        }
        "apimachinery::pkg::apis::meta::v1::Time" | "apimachinery::pkg::apis::meta::v1::MicroTime" => {
            let m = decode_message_fields(buf, msg, depth)?;
            let secs = m.get("seconds").and_then(Value::as_i64).unwrap_or(0);
            let nanos = m.get("nanos").and_then(Value::as_i64).unwrap_or(0);
            let t = jiff::Timestamp::new(secs, nanos as i32).map_err(|e| format!("time out of range: {e}"))?;
            let fmt = if msg.name.ends_with("MicroTime") { "%Y-%m-%dT%H:%M:%S%.6fZ" } else { "%Y-%m-%dT%H:%M:%SZ" };
            return Ok(json!(t.strftime(fmt).to_string()));
        }
        "apimachinery::pkg::apis::meta::v1::Duration" => {
            let m = decode_message_fields(buf, msg, depth)?;
            let ns = m.get("duration").and_then(Value::as_i64).unwrap_or(0);
            return Ok(json!(go_duration(ns)));
        }
        "apimachinery::pkg::runtime::RawExtension" | "apimachinery::pkg::apis::meta::v1::FieldsV1" => {
            let m = decode_raw_bytes(buf)?;
            return raw_json(&m);
        }
        n if n.ends_with("::JSON") || n.ends_with("::v1::Json") => {
            let m = decode_raw_bytes(buf)?;
            return raw_json(&m);
        }
        n if n.ends_with("::ExtraValue") => {
            let m = decode_message_fields(buf, msg, depth)?;
            return Ok(m.get("items").cloned().unwrap_or(json!([])));
        }
        _ => {}
    }
    Ok(Value::Object(decode_message_fields(buf, msg, depth)?))
}

/// The bytes of field 1 (the `raw` of RawExtension-like messages).
fn decode_raw_bytes(buf: &[u8]) -> Result<Vec<u8>, String> {
    let mut r = Reader { buf };
    let mut out = Vec::new();
    while !r.buf.is_empty() {
        let key = r.varint()?;
        let (tag, wire) = (key >> 3, key & 7);
        if tag == 1 && wire == 2 {
            out = r.bytes()?.to_vec();
        } else {
            r.skip(wire)?;
        }
    }
    Ok(out)
}

fn decode_message_fields(buf: &[u8], msg: &Message, depth: usize) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    let mut r = Reader { buf };
    while !r.buf.is_empty() {
        let key = r.varint()?;
        let (tag, wire) = ((key >> 3) as u32, key & 7);
        let Some(f) = msg.fields.iter().find(|f| f.tag == tag) else {
            r.skip(wire)?;
            continue;
        };
        let mut values: Vec<Value> = Vec::new();
        match (f.kind, wire) {
            (Kind::Str, 2) => values.push(Value::String(utf8(r.bytes()?)?)),
            (Kind::Bytes, 2) => values.push(b64(r.bytes()?)),
            (Kind::Int, 0) => values.push(json!(r.varint()? as i64)),
            (Kind::Bool, 0) => values.push(json!(r.varint()? != 0)),
            (Kind::Double, 1) => {
                values.push(json!(f64::from_le_bytes(r.fixed(8)?.try_into().map_err(|_| "bad double")?)))
            }
            // Packed repeated scalars.
            (Kind::Int | Kind::Bool, 2) if f.repeated => {
                let mut p = Reader { buf: r.bytes()? };
                while !p.buf.is_empty() {
                    let v = p.varint()?;
                    values.push(if f.kind == Kind::Bool { json!(v != 0) } else { json!(v as i64) });
                }
            }
            (Kind::Msg, 2) => values.push(decode_message(r.bytes()?, f.message as usize, depth + 1)?),
            (Kind::MapStr | Kind::MapMsg | Kind::MapBytes, 2) => {
                let mut e = Reader { buf: r.bytes()? };
                let (mut k, mut v) = (String::new(), Value::Null);
                while !e.buf.is_empty() {
                    let key = e.varint()?;
                    match (key >> 3, key & 7) {
                        (1, 2) => k = utf8(e.bytes()?)?,
                        (2, 2) => {
                            let b = e.bytes()?;
                            v = match f.kind {
                                Kind::MapStr => Value::String(utf8(b)?),
                                Kind::MapBytes => b64(b),
                                _ => decode_message(b, f.message as usize, depth + 1)?,
                            };
                        }
                        (_, w) => e.skip(w)?,
                    }
                }
                if v.is_null() {
                    v = match f.kind {
                        Kind::MapStr | Kind::MapBytes => json!(""),
                        _ => decode_message(&[], f.message as usize, depth + 1)?,
                    };
                }
                let entry = out.entry(f.json).or_insert_with(|| json!({}));
                if let Some(m) = entry.as_object_mut() {
                    m.insert(k, v);
                }
                continue;
            }
            (_, w) => {
                return Err(format!(
                    "field {} of {} has wire type {w}, which does not match its kind",
                    f.json, msg.name
                ));
            }
        }
        for v in values {
            if f.json.is_empty() {
                // An embedded struct Go inlines into its parent's JSON.
                if let Value::Object(m) = v {
                    out.extend(m);
                }
                continue;
            }
            if f.repeated {
                let entry = out.entry(f.json).or_insert_with(|| json!([]));
                if let Some(a) = entry.as_array_mut() {
                    a.push(v);
                }
            } else {
                out.insert(f.json.to_string(), v);
            }
        }
    }
    Ok(out)
}

/// Formats nanoseconds like Go's `time.Duration.String()` (`1h2m3s`, `1.5s`, `0s`).
fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let neg = ns < 0;
    let mut u = ns.unsigned_abs();
    let mut out = String::new();
    if u < 1_000_000_000 {
        let (unit, div) = if u < 1_000 {
            ("ns", 1)
        } else if u < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        let whole = u / div;
        let frac = u % div;
        out.push_str(&whole.to_string());
        if frac > 0 {
            let digits = format!("{frac:0width$}", width = (div as f64).log10() as usize);
            out.push('.');
            out.push_str(digits.trim_end_matches('0'));
        }
        out.push_str(unit);
    } else {
        let h = u / 3_600_000_000_000;
        u %= 3_600_000_000_000;
        let m = u / 60_000_000_000;
        u %= 60_000_000_000;
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if h > 0 || m > 0 {
            out.push_str(&format!("{m}m"));
        }
        let s = u / 1_000_000_000;
        let frac = u % 1_000_000_000;
        out.push_str(&s.to_string());
        if frac > 0 {
            out.push('.');
            out.push_str(format!("{frac:09}").trim_end_matches('0'));
        }
        out.push('s');
    }
    if neg { format!("-{out}") } else { out }
}

/// Decodes a Kubernetes protobuf body into a JSON object with `apiVersion` and `kind` set.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let payload = body.strip_prefix(MAGIC).ok_or("the body does not start with the Kubernetes protobuf magic")?;
    let unknown = message_index("apimachinery::pkg::runtime::Unknown").ok_or("no runtime.Unknown message")?;
    let envelope = decode_message_fields(payload, &table::MESSAGES[unknown], 0)?;
    let type_meta = envelope.get("typeMeta").cloned().unwrap_or(json!({}));
    let api_version = type_meta.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_string();
    let kind = type_meta.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
    if let Some(enc) = envelope.get("contentEncoding").and_then(Value::as_str).filter(|e| !e.is_empty()) {
        return Err(format!("unsupported content encoding {enc:?}"));
    }
    let raw = match envelope.get("raw").and_then(Value::as_str) {
        Some(b) => base64::engine::general_purpose::STANDARD.decode(b).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", &api_version));
    let module = module_of(group).ok_or_else(|| format!("no protobuf messages for group {group:?}"))?;
    let name = format!("{module}::{version}::{kind}");
    // Options kinds (DeleteOptions, ...) travel as core v1 but live in meta.k8s.io.
    let idx = message_index(&name)
        .or_else(|| message_index(&format!("apimachinery::pkg::apis::meta::{version}::{kind}")))
        .ok_or_else(|| format!("no protobuf message for {api_version}, Kind={kind}"))?;
    let mut obj = decode_message(&raw, idx, 0)?;
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(api_version));
        m.insert("kind".into(), json!(kind));
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes a varint-keyed length-delimited field (test helper).
    fn ld(tag: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((tag << 3) | 2) as u8];
        let mut n = payload.len();
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn decodes_a_configmap_envelope() {
        // ConfigMap{metadata{name:"cm", namespace:"ns"}, data{"a":"b"}}
        let meta = [ld(1, b"cm"), ld(3, b"ns")].concat();
        let entry = [ld(1, b"a"), ld(2, b"b")].concat();
        let cm = [ld(1, &meta), ld(2, &entry)].concat();
        let type_meta = [ld(1, b"v1"), ld(2, b"ConfigMap")].concat();
        let body = [MAGIC.to_vec(), ld(1, &type_meta), ld(2, &cm)].concat();
        let v = decode(&body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "ns"}, "data": {"a": "b"}})
        );
    }

    #[test]
    fn hostile_bodies_are_errors() {
        for body in [&b"k8s"[..], b"k8s\0\x0a\xff\xff\xff\xff\x0f", b"k8s\0\x12\x05ab", b"nope", b"k8s\0\x0b"] {
            assert!(decode(body).is_err(), "{body:?}");
        }
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(3_723_000_000_000), "1h2m3s");
        assert_eq!(go_duration(300_000_000_000), "5m0s");
        assert_eq!(go_duration(1_000_000), "1ms");
    }
}
