//! Strategic merge patch (`application/strategic-merge-patch+json`) for built-in types, with
//! apimachinery's semantics:
//!
//! * objects merge key by key; `null` deletes a key;
//! * lists follow the field's patch strategy: `merge` lists of objects merge by the merge key
//!   (`$patch: delete` in an element removes it, `$patch: replace` replaces the list), `merge`
//!   lists of primitives take the union; other lists are replaced whole;
//! * `$patch: replace|delete|merge` on an object, `$retainKeys`,
//!   `$deleteFromPrimitiveList/<field>` and `$setElementOrder/<field>` directives.
//!
//! The patch strategies and merge keys come from the generated type table (`protobuf.rs`),
//! which carries the `+patchStrategy`/`+patchMergeKey` markers of the Kubernetes types.

use serde_json::{Map, Value};

use crate::protobuf::{Field, Kind, Message, Patch};

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM: &str = "$deleteFromPrimitiveList/";
const SET_ORDER: &str = "$setElementOrder/";

/// Applies `patch` to `original` (both JSON objects) for the type `schema`.
pub fn apply(original: &Value, patch: &Value, schema: &'static Message) -> Result<Value, String> {
    let (Some(o), Some(p)) = (original.as_object(), patch.as_object()) else {
        return Err("a strategic merge patch must be a JSON object".into());
    };
    Ok(match merge_map(o.clone(), p, Some(schema))? {
        Some(m) => Value::Object(m),
        None => Value::Object(Map::new()),
    })
}

/// What a field holds, for the next level down.
fn sub(schema: Option<&'static Message>, key: &str) -> (Option<&'static Field>, Option<&'static Message>) {
    let Some(m) = schema else { return (None, None) };
    match m.field(key) {
        Some(f) => (Some(f), m.nested(f)),
        None => (None, None),
    }
}

/// Merges `patch` into `original`; `None` means the map was deleted (`$patch: delete`).
fn merge_map(
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
    schema: Option<&'static Message>,
) -> Result<Option<Map<String, Value>>, String> {
    if let Some(d) = patch.get(PATCH) {
        return match d.as_str() {
            Some("replace") => Ok(Some(without_directives(patch))),
            Some("delete") => Ok(None),
            Some("merge") => {
                let mut p = patch.clone();
                p.remove(PATCH);
                merge_map(original, &p, schema)
            }
            _ => Err(format!("unknown patch type: {d} in map")),
        };
    }
    // $retainKeys: keys of the original not listed are dropped.
    if let Some(keep) = patch.get(RETAIN_KEYS) {
        let keep: Vec<&str> =
            keep.as_array().ok_or("$retainKeys must be a list")?.iter().filter_map(Value::as_str).collect();
        original.retain(|k, _| keep.contains(&k.as_str()));
    }
    // $deleteFromPrimitiveList/<field>.
    for (k, v) in patch {
        if let Some(field) = k.strip_prefix(DELETE_FROM) {
            let remove = v.as_array().ok_or("$deleteFromPrimitiveList must be a list")?;
            if let Some(Value::Array(list)) = original.get_mut(field) {
                list.retain(|x| !remove.contains(x));
            }
        }
    }
    // $setElementOrder/<field> for lists the patch does not otherwise touch.
    for (k, order) in patch {
        if let Some(field) = k.strip_prefix(SET_ORDER)
            && !patch.contains_key(field)
            && let (Some(Value::Array(list)), Some(order)) = (original.remove(field), order.as_array())
        {
            let merge_key = sub(schema, field).0.map(|f| f.merge_key).unwrap_or("");
            original.insert(field.to_string(), Value::Array(reorder(list, order, merge_key)));
        }
    }
    for (k, pv) in patch {
        if k.starts_with('$') {
            continue;
        }
        if pv.is_null() {
            original.remove(k);
            continue;
        }
        let (field, nested) = sub(schema, k);
        let merged = match (original.remove(k), pv) {
            (Some(Value::Object(o)), Value::Object(p)) => {
                let replace = field.is_some_and(|f| f.patch == Patch::Replace);
                if replace {
                    Some(Value::Object(without_directives(p)))
                } else {
                    // Maps of objects (e.g. resource lists are scalars; this is for maps whose
                    // values are structs) keep the value type as the schema.
                    let value_schema = match field.map(|f| f.kind) {
                        Some(Kind::MapMsg) => None,
                        _ => nested,
                    };
                    if field.is_some_and(|f| f.kind == Kind::MapMsg) {
                        Some(Value::Object(merge_map_values(o, p, nested)?))
                    } else {
                        merge_map(o, p, value_schema)?.map(Value::Object)
                    }
                }
            }
            (Some(Value::Array(o)), Value::Array(p)) => {
                Some(Value::Array(merge_list(o, p, field, nested, patch.get(&format!("{SET_ORDER}{k}")))?))
            }
            (None, Value::Object(p)) => merge_map(Map::new(), p, nested)?.map(Value::Object),
            (None, Value::Array(p)) => Some(Value::Array(strip_list_directives(p))),
            (_, v) => Some(strip(v)),
        };
        if let Some(v) = merged {
            original.insert(k.clone(), v);
        }
    }
    Ok(Some(original))
}

/// Merges a map whose values are objects of `value_schema` (e.g. `map[string]Struct`).
fn merge_map_values(
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
    value_schema: Option<&'static Message>,
) -> Result<Map<String, Value>, String> {
    for (k, pv) in patch {
        if pv.is_null() {
            original.remove(k);
            continue;
        }
        let v = match (original.remove(k), pv) {
            (Some(Value::Object(o)), Value::Object(p)) => merge_map(o, p, value_schema)?.map(Value::Object),
            (_, v) => Some(strip(v)),
        };
        if let Some(v) = v {
            original.insert(k.clone(), v);
        }
    }
    Ok(original)
}

fn key_of<'a>(item: &'a Value, merge_key: &str) -> Option<&'a Value> {
    item.as_object()?.get(merge_key)
}

/// Merges a list according to the field's strategy.
fn merge_list(
    original: Vec<Value>,
    patch: &[Value],
    field: Option<&'static Field>,
    item_schema: Option<&'static Message>,
    order: Option<&Value>,
) -> Result<Vec<Value>, String> {
    let strategy = field.map(|f| f.patch).unwrap_or(Patch::None);
    if !matches!(strategy, Patch::Merge | Patch::MergeRetainKeys) {
        return Ok(strip_list_directives(patch));
    }
    let merge_key = field.map(|f| f.merge_key).unwrap_or("");
    let objects = patch.iter().chain(original.iter()).any(Value::is_object);
    let mut merged: Vec<Value>;
    if !objects {
        // A set of primitives: the union, original first.
        merged = original;
        for v in patch {
            if !merged.contains(v) {
                merged.push(v.clone());
            }
        }
    } else {
        if merge_key.is_empty() {
            return Err(format!("cannot merge lists without merge key for {}", field.map(|f| f.json).unwrap_or("")));
        }
        merged = original;
        let mut appended = Vec::new();
        for p in patch {
            let Some(pm) = p.as_object() else {
                return Err("list items must be objects".into());
            };
            match pm.get(PATCH).and_then(Value::as_str) {
                Some("replace") => {
                    return Ok(strip_list_directives(
                        &patch.iter().filter(|x| x.get(PATCH).is_none()).cloned().collect::<Vec<_>>(),
                    ));
                }
                Some("delete") => {
                    let key = key_of(p, merge_key);
                    merged.retain(|o| key_of(o, merge_key) != key);
                    continue;
                }
                Some("merge") | None => {}
                Some(other) => return Err(format!("unknown patch type: {other} in list")),
            }
            let key = key_of(p, merge_key)
                .ok_or_else(|| format!("map: {p} does not contain declared merge key: {merge_key}"))?;
            match merged.iter_mut().find(|o| key_of(o, merge_key) == Some(key)) {
                Some(existing) => {
                    let o = existing.as_object().cloned().unwrap_or_default();
                    if let Some(m) = merge_map(o, pm, item_schema)? {
                        *existing = Value::Object(m);
                    }
                }
                None => appended.push(match merge_map(Map::new(), pm, item_schema)? {
                    Some(m) => Value::Object(m),
                    None => continue,
                }),
            }
        }
        merged.extend(appended);
    }
    if let Some(order) = order.and_then(Value::as_array) {
        merged = reorder(merged, order, merge_key);
    }
    Ok(merged)
}

/// Applies `$setElementOrder`: the listed items take the listed order, in the slots listed
/// items occupy; items not listed keep their positions.
fn reorder(items: Vec<Value>, order: &[Value], merge_key: &str) -> Vec<Value> {
    let id = |v: &Value| -> Option<Value> {
        if merge_key.is_empty() { Some(v.clone()) } else { key_of(v, merge_key).cloned() }
    };
    let wanted: Vec<Value> = order
        .iter()
        .filter_map(|o| if merge_key.is_empty() { Some(o.clone()) } else { key_of(o, merge_key).cloned() })
        .collect();
    let mut listed: Vec<(usize, Value)> = items
        .iter()
        .filter_map(|v| {
            let i = id(v)?;
            wanted.iter().position(|w| *w == i).map(|pos| (pos, v.clone()))
        })
        .collect();
    listed.sort_by_key(|(pos, _)| *pos);
    let mut listed = listed.into_iter().map(|(_, v)| v);
    items
        .into_iter()
        .map(|v| match id(&v) {
            Some(i) if wanted.contains(&i) => listed.next().unwrap_or(v),
            _ => v,
        })
        .collect()
}

fn without_directives(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter().filter(|(k, _)| !k.starts_with('$')).map(|(k, v)| (k.clone(), strip(v))).collect()
}

fn strip_list_directives(l: &[Value]) -> Vec<Value> {
    l.iter().filter(|v| v.get(PATCH).and_then(Value::as_str) != Some("delete")).map(strip).collect()
}

/// Removes directives and null values from a value taken over from the patch.
fn strip(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter().filter(|(k, v)| !k.starts_with('$') && !v.is_null()).map(|(k, v)| (k.clone(), strip(v))).collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::protobuf::message_for;

    fn pod(original: Value, patch: Value) -> Value {
        apply(&original, &patch, message_for("", "v1", "Pod").unwrap()).unwrap()
    }

    fn deploy(original: Value, patch: Value) -> Value {
        apply(&original, &patch, message_for("apps", "v1", "Deployment").unwrap()).unwrap()
    }

    /// Table-driven cases from the documented semantics (Kubernetes' "strategic merge patch"
    /// document and the strategicpatch package's test fixtures' rules).
    #[test]
    fn containers_merge_by_name() {
        let o = json!({"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}});
        assert_eq!(
            pod(o.clone(), json!({"spec": {"containers": [{"name": "b", "image": "b:2"}]}})),
            json!({"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}]}})
        );
        assert_eq!(
            pod(o.clone(), json!({"spec": {"containers": [{"name": "c", "image": "c:1"}]}})),
            json!({"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}, {"name": "c", "image": "c:1"}]}})
        );
        assert_eq!(
            pod(o.clone(), json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}})),
            json!({"spec": {"containers": [{"name": "b", "image": "b:1"}]}})
        );
        assert_eq!(
            pod(o, json!({"spec": {"containers": [{"name": "z", "image": "z:1"}, {"$patch": "replace"}]}})),
            json!({"spec": {"containers": [{"name": "z", "image": "z:1"}]}})
        );
    }

    #[test]
    fn nested_lists_merge_by_their_own_keys() {
        let o = json!({"spec": {"containers": [{"name": "a", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
                                                "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}});
        let p = json!({"spec": {"containers": [{"name": "a", "env": [{"name": "Y", "value": "3"}, {"name": "Z", "value": "4"}],
                                                "ports": [{"containerPort": 443}]}]}});
        let r = pod(o, p);
        assert_eq!(
            r["spec"]["containers"][0]["env"],
            json!([{"name": "X", "value": "1"}, {"name": "Y", "value": "3"}, {"name": "Z", "value": "4"}])
        );
        assert_eq!(
            r["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443}])
        );
    }

    #[test]
    fn lists_without_a_merge_strategy_are_replaced() {
        // container args: no patch strategy → replace.
        let o = json!({"spec": {"containers": [{"name": "a", "args": ["1", "2"]}]}});
        let r = pod(o, json!({"spec": {"containers": [{"name": "a", "args": ["3"]}]}}));
        assert_eq!(r["spec"]["containers"][0]["args"], json!(["3"]));
    }

    #[test]
    fn null_deletes_and_maps_merge() {
        let o = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"nodeSelector": {"x": "y"}}});
        let r = pod(o, json!({"metadata": {"labels": {"a": null, "c": "3"}}, "spec": {"nodeSelector": null}}));
        assert_eq!(r, json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "spec": {}}));
    }

    #[test]
    fn primitive_merge_lists_union_and_delete() {
        // metadata.finalizers: patchStrategy=merge of primitives.
        let o = json!({"metadata": {"finalizers": ["a", "b"]}});
        assert_eq!(
            pod(o.clone(), json!({"metadata": {"finalizers": ["c", "a"]}}))["metadata"]["finalizers"],
            json!(["a", "b", "c"])
        );
        assert_eq!(
            pod(o, json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}))["metadata"]["finalizers"],
            json!(["b"])
        );
    }

    #[test]
    fn set_element_order_reorders() {
        let o = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}});
        let r = pod(o, json!({"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}]}}));
        assert_eq!(r["spec"]["containers"], json!([{"name": "c"}, {"name": "a"}, {"name": "b"}]));
    }

    #[test]
    fn patch_directives_on_maps() {
        let o = json!({"spec": {"selector": {"matchLabels": {"a": "1"}}, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let r = deploy(o.clone(), json!({"spec": {"strategy": {"$patch": "replace", "type": "Recreate"}}}));
        assert_eq!(r["spec"]["strategy"], json!({"type": "Recreate"}));
        let r = deploy(o.clone(), json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}));
        assert_eq!(r["spec"]["strategy"], json!({"type": "Recreate"}));
        let r = deploy(o, json!({"spec": {"strategy": {"$patch": "delete"}}}));
        assert!(r["spec"].get("strategy").is_none());
    }

    #[test]
    fn tolerations_and_volumes() {
        // volumes merge by name (retainKeys); tolerations have no strategy → replace.
        let o = json!({"spec": {"volumes": [{"name": "v1", "emptyDir": {}}], "tolerations": [{"key": "a"}]}});
        let r = pod(
            o,
            json!({"spec": {"volumes": [{"name": "v2", "configMap": {"name": "c"}}], "tolerations": [{"key": "b"}]}}),
        );
        assert_eq!(r["spec"]["volumes"].as_array().unwrap().len(), 2);
        assert_eq!(r["spec"]["tolerations"], json!([{"key": "b"}]));
    }
}
