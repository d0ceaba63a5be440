//! Field sets and `managedFields`: which manager set which fields, in the `FieldsV1` form.
//!
//! A field set is a tree of path elements: `f:<field>` for object fields, `k:{"name":"x"}` for
//! elements of lists keyed by a merge key, `v:<value>` for set elements and `i:<n>` for other
//! list elements. `.` marks that a node with children is itself owned (map and list entries).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// Fields whose value is a map of arbitrary keys (as opposed to a struct of known fields).
const MAP_FIELDS: &[&str] = &[
    "labels",
    "annotations",
    "data",
    "stringData",
    "binaryData",
    "nodeSelector",
    "matchLabels",
    "limits",
    "requests",
    "capacity",
    "allocatable",
    "hard",
    "used",
    "parameters",
    "selector",
];

/// Merge keys of well-known lists of objects.
fn merge_key(list_field: &str) -> &'static [&'static str] {
    match list_field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "volumeMounts"
        | "imagePullSecrets"
        | "resourceClaims"
        | "ports" => {
            if list_field == "ports" {
                &["containerPort", "protocol"]
            } else if list_field == "volumeMounts" {
                &["mountPath"]
            } else {
                &["name"]
            }
        }
        "conditions" => &["type"],
        "ownerReferences" => &["uid"],
        "tolerations" | "finalizers" => &[],
        _ => &[],
    }
}

/// A set of field paths as a tree; an empty child map is a leaf.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet {
    /// Whether this node itself is a member (`.`).
    pub member: bool,
    /// Children by path element (`f:x`, `k:{...}`, ...).
    pub children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    /// The field set of an object: every leaf it sets. `metadata` contributes only labels,
    /// annotations, finalizers and ownerReferences, as in kube-apiserver.
    pub fn of_object(obj: &Value) -> FieldSet {
        let mut root = FieldSet::default();
        if let Some(m) = obj.as_object() {
            for (k, v) in m {
                match k.as_str() {
                    "apiVersion" | "kind" => {}
                    "metadata" => {
                        let mut meta = FieldSet::default();
                        if let Some(mm) = v.as_object() {
                            for key in ["labels", "annotations", "finalizers", "ownerReferences"] {
                                if let Some(x) = mm.get(key) {
                                    meta.children.insert(format!("f:{key}"), Self::of_value(key, x));
                                }
                            }
                        }
                        if !meta.children.is_empty() {
                            root.children.insert("f:metadata".into(), meta);
                        }
                    }
                    _ => {
                        root.children.insert(format!("f:{k}"), Self::of_value(k, v));
                    }
                }
            }
        }
        root
    }

    fn of_value(field: &str, v: &Value) -> FieldSet {
        let member = !matches!(v, Value::Object(m) if !m.is_empty())
            && !matches!(v, Value::Array(a) if !a.is_empty() && !merge_key(field).is_empty());
        let mut node = FieldSet { member, ..Default::default() };
        match v {
            Value::Object(m) if !m.is_empty() => {
                node.member = MAP_FIELDS.contains(&field);
                for (k, child) in m {
                    node.children.insert(format!("f:{k}"), Self::of_value(k, child));
                }
            }
            Value::Array(items) if !items.is_empty() => {
                let keys = merge_key(field);
                let all_scalars = items.iter().all(|i| !i.is_object() && !i.is_array());
                if field == "finalizers" && all_scalars {
                    for i in items {
                        node.children.insert(format!("v:{i}"), FieldSet { member: true, children: BTreeMap::new() });
                    }
                } else if !keys.is_empty() && items.iter().all(|i| keys.iter().any(|k| i.get(k).is_some())) {
                    for item in items {
                        let mut key = Map::new();
                        for k in keys {
                            if let Some(x) = item.get(*k) {
                                key.insert((*k).to_string(), x.clone());
                            }
                        }
                        let mut child = Self::of_value("", item);
                        child.member = true;
                        node.children.insert(format!("k:{}", Value::Object(key)), child);
                    }
                }
                // Other lists are atomic: owned as a whole (a leaf).
            }
            _ => {}
        }
        node
    }

    /// Whether the set has no members at all.
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    /// The `FieldsV1` JSON.
    pub fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), json!({}));
        }
        for (k, c) in &self.children {
            m.insert(k.clone(), c.to_fields_v1());
        }
        Value::Object(m)
    }

    /// Parses `FieldsV1` JSON.
    pub fn from_fields_v1(v: &Value) -> FieldSet {
        let mut node = FieldSet::default();
        if let Some(m) = v.as_object() {
            // `{}` is an owned leaf.
            node.member = m.is_empty();
            for (k, c) in m {
                if k == "." {
                    node.member = true;
                } else {
                    node.children.insert(k.clone(), Self::from_fields_v1(c));
                }
            }
        }
        node
    }

    /// The leaves and members in `self` whose value differs between `old` and `new`, or that
    /// `new` adds: what an update by one manager changed.
    pub fn changed(new: &Value, old: &Value) -> FieldSet {
        let n = Self::of_object(new);
        let o = Self::of_object(old);
        n.diff_values(&o, new, old)
    }

    fn diff_values(&self, old_set: &FieldSet, new: &Value, old: &Value) -> FieldSet {
        let mut out = FieldSet::default();
        for (k, child) in &self.children {
            let nv = step(new, k);
            let ov = step(old, k);
            let old_child = old_set.children.get(k);
            if child.children.is_empty() || old_child.is_none() {
                if old_child.is_none() || nv != ov {
                    out.children.insert(k.clone(), child.clone());
                }
                continue;
            }
            let sub =
                child.diff_values(old_child.expect("checked"), nv.unwrap_or(&Value::Null), ov.unwrap_or(&Value::Null));
            if !sub.is_empty() {
                out.children.insert(k.clone(), sub);
            }
        }
        out
    }

    /// Removes every path of `other` from `self`.
    pub fn subtract(&mut self, other: &FieldSet) {
        for (k, oc) in &other.children {
            if let Some(c) = self.children.get_mut(k) {
                if oc.children.is_empty() || (oc.member && c.children.is_empty()) {
                    self.children.remove(k);
                } else {
                    c.subtract(oc);
                    if oc.member {
                        c.member = false;
                    }
                    if c.is_empty() {
                        self.children.remove(k);
                    }
                }
            }
        }
    }

    /// Adds every path of `other`.
    pub fn union(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (k, oc) in &other.children {
            self.children.entry(k.clone()).or_default().union(oc);
        }
    }

    /// Keeps only paths that still exist in `present`.
    pub fn intersect(&mut self, present: &FieldSet) {
        self.children.retain(|k, c| match present.children.get(k) {
            Some(p) => {
                c.intersect(p);
                !(c.is_empty() && !p.children.is_empty() && !p.member)
            }
            None => false,
        });
    }
}

/// Follows one path element into a value.
fn step<'a>(v: &'a Value, elem: &str) -> Option<&'a Value> {
    if let Some(f) = elem.strip_prefix("f:") {
        return v.get(f);
    }
    if let Some(k) = elem.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(k).ok()?;
        return v.as_array()?.iter().find(|item| key.iter().all(|(kk, kv)| item.get(kk) == Some(kv)));
    }
    None
}

/// Records an `Update` by `manager` going from `old` to `new` in `new`'s `managedFields`.
pub fn record_update(
    new: &mut Value,
    old: Option<&Value>,
    manager: &str,
    api_version: &str,
    subresource: &str,
    now: &str,
) {
    let mut entries: Vec<Value> =
        old.and_then(|o| o.get("metadata")?.get("managedFields")?.as_array().cloned()).unwrap_or_default();
    let changed = match old {
        Some(o) => FieldSet::changed(new, o),
        None => FieldSet::of_object(new),
    };
    let present = FieldSet::of_object(new);
    let mut mine = FieldSet::default();
    let mut kept = Vec::new();
    for mut e in entries.drain(..) {
        let same = e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some("Update")
            && e.get("subresource").and_then(Value::as_str).unwrap_or("") == subresource;
        let mut set = FieldSet::from_fields_v1(e.get("fieldsV1").unwrap_or(&Value::Null));
        if same {
            mine = set;
            continue;
        }
        set.subtract(&changed);
        set.intersect(&present);
        if !set.is_empty() {
            e["fieldsV1"] = set.to_fields_v1();
            kept.push(e);
        }
    }
    mine.union(&changed);
    mine.intersect(&present);
    if !mine.is_empty() {
        let mut entry = json!({
            "manager": manager,
            "operation": "Update",
            "apiVersion": api_version,
            "time": now,
            "fieldsType": "FieldsV1",
            "fieldsV1": mine.to_fields_v1(),
        });
        if !subresource.is_empty() {
            entry["subresource"] = json!(subresource);
        }
        kept.push(entry);
    }
    let meta = crate::object::meta_mut(new);
    if kept.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(kept));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_field_set_uses_merge_keys_and_map_members() {
        let obj = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        assert_eq!(
            FieldSet::of_object(&obj).to_fields_v1(),
            json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                   "f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {}}}}})
        );
    }

    #[test]
    fn updates_move_ownership_to_the_last_writer() {
        let mut v1 = json!({"metadata": {"labels": {"a": "1"}}, "data": {"x": "1", "y": "1"}});
        record_update(&mut v1, None, "alice", "v1", "", "t");
        let mut v2 = json!({"metadata": {"labels": {"a": "1"}, "managedFields": v1["metadata"]["managedFields"].clone()}, "data": {"x": "2", "y": "1"}});
        let old = v1.clone();
        record_update(&mut v2, Some(&old), "bob", "v1", "", "t");
        let mf = v2["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(mf.len(), 2);
        assert_eq!(mf[0]["manager"], "alice");
        assert_eq!(
            mf[0]["fieldsV1"],
            json!({"f:data": {".": {}, "f:y": {}}, "f:metadata": {"f:labels": {".": {}, "f:a": {}}}})
        );
        assert_eq!(mf[1]["manager"], "bob");
        assert_eq!(mf[1]["fieldsV1"], json!({"f:data": {"f:x": {}}}));
    }
}
