//! Kubernetes protobuf responses: JSON objects encoded with the same generated table the
//! decoder reads, wrapped in the `k8s\0` + `runtime.Unknown` envelope; watch events as
//! length-prefixed `WatchEvent` envelopes.
//!
//! Like Go's generated marshallers, fields are written in tag order and map entries sorted by
//! key. JSON fields that are absent or null are not written, which decodes to the same Go value
//! (zero for plain fields, nil for pointers).

use base64::Engine;
use serde_json::Value;

use super::wire::Writer;
use super::{Field, Kind, MAGIC, Message, table};

/// Encodes an object (or list) whose `apiVersion`/`kind` name a built-in message into a
/// Kubernetes protobuf body; `None` if there is no such message.
pub fn encode(obj: &Value) -> Option<Vec<u8>> {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let msg = message_of(api_version, kind)?;
    let raw = encode_message(obj, msg, 0);
    Some(envelope(api_version, kind, &raw))
}

/// Whether objects of this kind (and its list) can be answered in protobuf.
pub fn supported(group: &str, version: &str, kind: &str) -> bool {
    // CRDs' schema types (JSONSchemaPropsOrBool and friends, x-kubernetes-* names) are not
    // mapped faithfully by the generated table yet: they are answered in JSON.
    group != "apiextensions.k8s.io"
        && super::message_for(group, version, kind).is_some()
        && super::message_for(group, version, &format!("{kind}List")).is_some()
}

/// One watch event in protobuf framing, as kube-apiserver's raw stream serializer writes it: a
/// 4-byte big-endian length, then a bare `WatchEvent` message whose `object.raw` carries the
/// object's own `k8s\0` envelope.
pub fn watch_frame(event_type: &str, object: &Value) -> Option<Vec<u8>> {
    let inner = encode(object)?;
    let mut ev = Writer::new();
    ev.string(1, event_type);
    ev.message(2, |raw| raw.bytes_always(1, &inner));
    let body = ev.into_bytes();
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Some(out)
}

fn message_of(api_version: &str, kind: &str) -> Option<&'static Message> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    if kind == "Status" || kind.starts_with("PartialObjectMetadata") || kind == "Table" {
        let name = format!("apimachinery::pkg::apis::meta::v1::{kind}");
        return table::MESSAGES.iter().find(|m| m.name == name);
    }
    super::message_for(group, version, kind)
}

/// `k8s\0` + `runtime.Unknown{typeMeta, raw, contentEncoding, contentType}`.
fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.message(1, |tm| {
        tm.string(1, api_version);
        tm.string(2, kind);
    });
    w.bytes_always(2, raw);
    w.bytes_always(3, b"");
    w.bytes_always(4, b"");
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&w.into_bytes());
    out
}

fn encode_message(v: &Value, msg: &Message, depth: usize) -> Vec<u8> {
    let mut w = Writer::new();
    if depth > super::MAX_DEPTH {
        return w.into_bytes();
    }
    match msg.name {
        "apimachinery::pkg::api::resource::Quantity" => {
            w.string_item(1, &value_text(v));
            return w.into_bytes();
        }
        "apimachinery::pkg::util::intstr::IntOrString" => {
            match v {
                Value::String(s) => {
                    w.int_always(1, 1);
                    w.int_always(2, 0);
                    w.string_item(3, s);
                }
                other => {
                    w.int_always(1, 0);
                    w.int_always(2, other.as_i64().unwrap_or(0));
                    w.string_item(3, "");
                }
            }
            return w.into_bytes();
        }
        "apimachinery::pkg::apis::meta::v1::Time" | "apimachinery::pkg::apis::meta::v1::MicroTime" => {
            if let Some(t) = v.as_str().and_then(|s| s.parse::<jiff::Timestamp>().ok()) {
                w.int_always(1, t.as_second());
                w.int_always(2, i64::from(t.subsec_nanosecond()));
            }
            return w.into_bytes();
        }
        "apimachinery::pkg::apis::meta::v1::Duration" => {
            w.int_always(1, v.as_str().and_then(parse_go_duration).unwrap_or(0));
            return w.into_bytes();
        }
        "apimachinery::pkg::runtime::RawExtension" | "apimachinery::pkg::apis::meta::v1::FieldsV1" => {
            w.bytes_always(1, &serde_json::to_vec(v).unwrap_or_default());
            return w.into_bytes();
        }
        n if n.ends_with("::JSON") || n.ends_with("::v1::Json") => {
            w.bytes_always(1, &serde_json::to_vec(v).unwrap_or_default());
            return w.into_bytes();
        }
        n if n.ends_with("::ExtraValue") => {
            for s in v.as_array().into_iter().flatten() {
                w.string_item(1, s.as_str().unwrap_or(""));
            }
            return w.into_bytes();
        }
        _ => {}
    }
    let mut fields: Vec<&Field> = msg.fields.iter().collect();
    fields.sort_by_key(|f| f.tag);
    for f in fields {
        if f.json.is_empty() {
            // An embedded struct inlined into this object's JSON.
            let nested = &table::MESSAGES[f.message as usize];
            w.bytes_always(f.tag, &encode_message(v, nested, depth + 1));
            continue;
        }
        let Some(value) = v.get(f.json).filter(|x| !x.is_null()) else { continue };
        if f.repeated && !matches!(f.kind, Kind::MapStr | Kind::MapMsg | Kind::MapBytes) {
            for item in value.as_array().into_iter().flatten() {
                write_one(&mut w, f, item, depth);
            }
        } else {
            write_one(&mut w, f, value, depth);
        }
    }
    w.into_bytes()
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn b64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or("")).unwrap_or_default()
}

fn write_one(w: &mut Writer, f: &Field, v: &Value, depth: usize) {
    match f.kind {
        Kind::Str => w.string_item(f.tag, &value_text(v)),
        Kind::Bytes => w.bytes_always(f.tag, &b64(v)),
        Kind::Int => w.int_always(f.tag, v.as_i64().or_else(|| v.as_f64().map(|x| x as i64)).unwrap_or(0)),
        Kind::Bool => w.int_always(f.tag, i64::from(v.as_bool().unwrap_or(false))),
        Kind::Double => w.double_always(f.tag, v.as_f64().unwrap_or(0.0)),
        Kind::Msg => {
            let nested = &table::MESSAGES[f.message as usize];
            w.bytes_always(f.tag, &encode_message(v, nested, depth + 1));
        }
        Kind::MapStr | Kind::MapMsg | Kind::MapBytes => {
            let Some(map) = v.as_object() else { return };
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for k in keys {
                let item = &map[k.as_str()];
                w.message(f.tag, |e| {
                    e.string_item(1, k);
                    match f.kind {
                        Kind::MapStr => e.string_item(2, &value_text(item)),
                        Kind::MapBytes => e.bytes_always(2, &b64(item)),
                        _ => {
                            let nested = &table::MESSAGES[f.message as usize];
                            e.bytes_always(2, &encode_message(item, nested, depth + 1));
                        }
                    }
                });
            }
        }
    }
}

/// Parses a Go duration (`1h2m3.5s`, `300ms`, `-1µs`) into nanoseconds.
fn parse_go_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * unit;
        rest = &rest[unit_end..];
    }
    let ns = total.round() as i64;
    Some(if neg { -ns } else { ns })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    /// Every shape the decoder reads comes back unchanged through encode → decode.
    #[test]
    fn objects_round_trip_through_protobuf() {
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "labels": {"b": "2", "a": "1"},
                "creationTimestamp": "2026-01-01T00:00:00Z", "resourceVersion": "42",
                "managedFields": [{"manager": "kubectl", "operation": "Apply", "apiVersion": "v1",
                    "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}},
                "livenessProbe": {"httpGet": {"port": "http", "path": "/"}, "periodSeconds": 10}}],
                "terminationGracePeriodSeconds": 30, "hostNetwork": false},
            "status": {"phase": "Running", "startTime": "2026-01-01T00:00:01Z"}
        });
        let bytes = super::encode(&pod).unwrap();
        assert!(bytes.starts_with(b"k8s\0"));
        assert_eq!(crate::protobuf::decode(&bytes).unwrap(), pod);

        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "data": {"k": "aGVsbG8="}, "type": "Opaque"});
        assert_eq!(crate::protobuf::decode(&super::encode(&secret).unwrap()).unwrap(), secret);

        let list = json!({"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {"resourceVersion": "7"},
            "items": [{"metadata": {"name": "d"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "x"}},
                "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
                "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}, "type": "RollingUpdate"},
                "progressDeadlineSeconds": 600}}]});
        let back = crate::protobuf::decode(&super::encode(&list).unwrap()).unwrap();
        assert_eq!(back, list);
        assert!(super::encode(&json!({"apiVersion": "example.com/v1", "kind": "Widget"})).is_none());
    }

    #[test]
    fn go_durations() {
        assert_eq!(super::parse_go_duration("1h2m3.5s"), Some(3_723_500_000_000));
        assert_eq!(super::parse_go_duration("300ms"), Some(300_000_000));
        assert_eq!(super::parse_go_duration("-1µs"), Some(-1000));
        assert_eq!(super::parse_go_duration("0"), Some(0));
        assert_eq!(super::parse_go_duration("5 parsecs"), None);
    }
}
