//! `/openapi/v2` in protobuf: the Swagger 2.0 document encoded as gnostic's `openapi.v2.Document`
//! (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`), which is what kubectl up to
//! 1.28 requests for `apply`'s patch metadata and its validation checks.
//!
//! The encoder walks the JSON document; field numbers follow gnostic's `OpenAPIv2.proto`.
//! Values that gnostic keeps as `Any` (vendor extensions, defaults, enums, examples) carry
//! their YAML text; JSON is valid YAML, so they are written as JSON.

use serde_json::{Map, Value};

use crate::protobuf::wire::Writer;

/// Encodes a Swagger 2.0 JSON document as `openapi.v2.Document`.
pub fn encode(doc: &Value) -> Vec<u8> {
    let mut w = Writer::new();
    w.string(1, doc["swagger"].as_str().unwrap_or("2.0"));
    if let Some(info) = doc.get("info") {
        w.message(2, |m| {
            m.string(1, str_of(info, "title"));
            m.string(2, str_of(info, "version"));
            m.string(3, str_of(info, "description"));
        });
    }
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        w.message(8, |m| {
            for (name, item) in paths {
                if name.starts_with("x-") {
                    named_any(m, 1, name, item);
                    continue;
                }
                m.message(2, |n| {
                    n.string(1, name);
                    n.message(2, |p| path_item(p, item));
                });
            }
        });
    }
    if let Some(defs) = doc.get("definitions").and_then(Value::as_object) {
        w.message(9, |m| named_schemas(m, defs));
    }
    w.into_bytes()
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn any(w: &mut Writer, field: u32, v: &Value) {
    let text = serde_json::to_string(v).unwrap_or_default();
    w.message(field, |a| a.string(2, &text));
}

fn named_any(w: &mut Writer, field: u32, name: &str, v: &Value) {
    w.message(field, |n| {
        n.string(1, name);
        any(n, 2, v);
    });
}

fn vendor_extensions(w: &mut Writer, field: u32, obj: &Map<String, Value>) {
    for (k, v) in obj.iter().filter(|(k, _)| k.starts_with("x-")) {
        named_any(w, field, k, v);
    }
}

fn strings(w: &mut Writer, field: u32, v: Option<&Value>) {
    for s in v.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        w.string_item(field, s);
    }
}

fn path_item(w: &mut Writer, item: &Value) {
    let Some(obj) = item.as_object() else { return };
    w.string(1, str_of(item, "$ref"));
    for (method, field) in
        [("get", 2), ("put", 3), ("post", 4), ("delete", 5), ("options", 6), ("head", 7), ("patch", 8)]
    {
        if let Some(op) = obj.get(method) {
            w.message(field, |o| operation(o, op));
        }
    }
    for p in obj.get("parameters").and_then(Value::as_array).into_iter().flatten() {
        w.message(9, |i| parameters_item(i, p));
    }
    vendor_extensions(w, 10, obj);
}

fn operation(w: &mut Writer, op: &Value) {
    let Some(obj) = op.as_object() else { return };
    strings(w, 1, obj.get("tags"));
    w.string(2, str_of(op, "summary"));
    w.string(3, str_of(op, "description"));
    w.string(5, str_of(op, "operationId"));
    strings(w, 6, obj.get("produces"));
    strings(w, 7, obj.get("consumes"));
    for p in obj.get("parameters").and_then(Value::as_array).into_iter().flatten() {
        w.message(8, |i| parameters_item(i, p));
    }
    if let Some(responses) = obj.get("responses").and_then(Value::as_object) {
        w.message(9, |r| {
            for (code, resp) in responses {
                if code.starts_with("x-") {
                    named_any(r, 2, code, resp);
                    continue;
                }
                r.message(1, |n| {
                    n.string(1, code);
                    n.message(2, |v| {
                        if let Some(reference) = resp.get("$ref").and_then(Value::as_str) {
                            v.message(2, |j| j.string(1, reference));
                        } else {
                            v.message(1, |x| response(x, resp));
                        }
                    });
                });
            }
        });
    }
    strings(w, 10, obj.get("schemes"));
    w.bool(11, op["deprecated"].as_bool().unwrap_or(false));
    vendor_extensions(w, 13, obj);
}

fn response(w: &mut Writer, resp: &Value) {
    w.string(1, str_of(resp, "description"));
    if let Some(s) = resp.get("schema") {
        w.message(2, |i| i.message(1, |m| schema(m, s)));
    }
    if let Some(obj) = resp.as_object() {
        vendor_extensions(w, 5, obj);
    }
}

/// `ParametersItem { oneof { Parameter parameter = 1; JsonReference json_reference = 2; } }`.
fn parameters_item(w: &mut Writer, p: &Value) {
    if let Some(reference) = p.get("$ref").and_then(Value::as_str) {
        w.message(2, |j| j.string(1, reference));
        return;
    }
    let Some(obj) = p.as_object() else { return };
    let location = str_of(p, "in");
    w.message(1, |param| {
        if location == "body" {
            param.message(1, |b| {
                b.string(1, str_of(p, "description"));
                b.string(2, str_of(p, "name"));
                b.string(3, location);
                b.bool(4, p["required"].as_bool().unwrap_or(false));
                if let Some(s) = p.get("schema") {
                    b.message(5, |m| schema(m, s));
                }
                vendor_extensions(b, 6, obj);
            });
            return;
        }
        // NonBodyParameter: header = 1, formData = 2, query = 3, path = 4. Query and formData
        // carry allowEmptyValue at 5, which shifts their later fields by one.
        let (which, shift) = match location {
            "header" => (1, 0),
            "formData" => (2, 1),
            "path" => (4, 0),
            _ => (3, 1),
        };
        param.message(2, |nb| {
            nb.message(which, |s| {
                s.bool(1, p["required"].as_bool().unwrap_or(false));
                s.string(2, location);
                s.string(3, str_of(p, "description"));
                s.string(4, str_of(p, "name"));
                if shift == 1 {
                    s.bool(5, p["allowEmptyValue"].as_bool().unwrap_or(false));
                }
                s.string(5 + shift, str_of(p, "type"));
                s.string(6 + shift, str_of(p, "format"));
                s.bool(19 + shift, p["uniqueItems"].as_bool().unwrap_or(false));
                vendor_extensions(s, 22 + shift, obj);
            });
        });
    });
}

fn named_schemas(w: &mut Writer, defs: &Map<String, Value>) {
    for (name, s) in defs {
        w.message(1, |n| {
            n.string(1, name);
            n.message(2, |m| schema(m, s));
        });
    }
}

/// `openapi.v2.Schema`.
fn schema(w: &mut Writer, s: &Value) {
    let Some(obj) = s.as_object() else { return };
    w.string(1, str_of(s, "$ref"));
    w.string(2, str_of(s, "format"));
    w.string(3, str_of(s, "title"));
    w.string(4, str_of(s, "description"));
    if let Some(d) = obj.get("default") {
        any(w, 5, d);
    }
    for (key, field) in [("multipleOf", 6), ("maximum", 7), ("minimum", 9)] {
        w.double(field, s[key].as_f64().unwrap_or(0.0));
    }
    w.bool(8, s["exclusiveMaximum"].as_bool().unwrap_or(false));
    w.bool(10, s["exclusiveMinimum"].as_bool().unwrap_or(false));
    for (key, field) in [
        ("maxLength", 11),
        ("minLength", 12),
        ("maxItems", 14),
        ("minItems", 15),
        ("maxProperties", 17),
        ("minProperties", 18),
    ] {
        w.int(field, s[key].as_i64().unwrap_or(0));
    }
    w.string(13, str_of(s, "pattern"));
    w.bool(16, s["uniqueItems"].as_bool().unwrap_or(false));
    strings(w, 19, obj.get("required"));
    for e in obj.get("enum").and_then(Value::as_array).into_iter().flatten() {
        any(w, 20, e);
    }
    match obj.get("additionalProperties") {
        // A oneof member: written even when false.
        Some(Value::Bool(b)) => w.message(21, |a| a.int_always(2, i64::from(*b))),
        Some(ap @ Value::Object(_)) => w.message(21, |a| a.message(1, |m| schema(m, ap))),
        _ => {}
    }
    match obj.get("type") {
        Some(Value::String(t)) => w.message(22, |ti| ti.string_item(1, t)),
        Some(Value::Array(ts)) => w.message(22, |ti| {
            for t in ts.iter().filter_map(Value::as_str) {
                ti.string_item(1, t);
            }
        }),
        _ => {}
    }
    match obj.get("items") {
        Some(items @ Value::Object(_)) => w.message(23, |i| i.message(1, |m| schema(m, items))),
        Some(Value::Array(items)) => w.message(23, |i| {
            for item in items {
                i.message(1, |m| schema(m, item));
            }
        }),
        _ => {}
    }
    for sub in obj.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        w.message(24, |m| schema(m, sub));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        w.message(25, |p| named_schemas(p, props));
    }
    w.string(26, str_of(s, "discriminator"));
    w.bool(27, s["readOnly"].as_bool().unwrap_or(false));
    if let Some(e) = obj.get("example") {
        any(w, 30, e);
    }
    vendor_extensions(w, 31, obj);
}
