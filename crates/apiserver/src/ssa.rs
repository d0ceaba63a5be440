//! Server-side apply: structured-merge-diff's rules on JSON objects.
//!
//! * The applied configuration's **field set**: struct fields `f:name`, granular map keys
//!   `f:key`, items of associative lists `k:{"name":"x"}` (members themselves), set items
//!   `v:"x"`; atomic lists, maps and structs are single leaves.
//! * **Conflicts**: a field another manager owns whose value the apply would change. Without
//!   `force` the apply fails with 409 and one cause per field; with it, ownership moves.
//! * **Merge**: the configuration is merged into the live object (associative lists by key,
//!   sets by value, atomic values replaced).
//! * **Prune**: fields this manager applied before and no longer applies are removed unless
//!   another manager owns them.
//!
//! Topology comes from the generated type table (`+listType`, `+listMapKey`, `+mapType`,
//! `+structType` markers); without a schema (custom resources until their schema is used),
//! objects are granular and lists atomic, as structured-merge-diff's deduced type does.

use serde_json::{Map, Value, json};

use crate::fields::FieldSet;
use crate::protobuf::{Field, Kind, ListType, MapType, Message, Patch};

/// What a position in an object is, for apply.
#[derive(Clone, Copy)]
pub enum Node {
    /// A struct of known fields (granular unless atomic).
    Struct(&'static Message),
    /// A map with arbitrary keys.
    Map {
        /// The values' type, if they are structs.
        values: Option<&'static Message>,
        /// Whether the map is owned as a whole.
        atomic: bool,
    },
    /// An associative list.
    MapList {
        /// The key fields of the items.
        keys: &'static [&'static str],
        /// The items' type.
        items: Option<&'static Message>,
    },
    /// A set of scalars.
    Set,
    /// An atomic value: scalars, atomic lists, special types.
    Leaf,
    /// No schema: objects granular, lists atomic.
    Deduced,
}

/// Messages whose JSON form is a scalar or opaque.
fn opaque(m: &Message) -> bool {
    matches!(
        m.name.rsplit("::").next().unwrap_or(""),
        "Quantity"
            | "IntOrString"
            | "Time"
            | "MicroTime"
            | "Duration"
            | "RawExtension"
            | "FieldsV1"
            | "JSON"
            | "JsonSchemaProps"
            | "JsonSchemaPropsOrArray"
            | "JsonSchemaPropsOrBool"
            | "JsonSchemaPropsOrStringArray"
    )
}

fn node_of_message(m: &'static Message) -> Node {
    if opaque(m) || m.atomic { Node::Leaf } else { Node::Struct(m) }
}

/// The node of a field.
fn node_of_field(f: &'static Field, parent: &'static Message) -> Node {
    let nested = parent.nested(f);
    match (f.kind, f.repeated) {
        (Kind::MapStr | Kind::MapBytes, _) => Node::Map { values: None, atomic: f.map_type == MapType::Atomic },
        (Kind::MapMsg, _) => Node::Map { values: nested, atomic: f.map_type == MapType::Atomic },
        (Kind::Msg, false) => nested.map(node_of_message).unwrap_or(Node::Leaf),
        (Kind::Msg, true) => match f.list_type {
            ListType::Map => Node::MapList { keys: f.list_keys, items: nested },
            // Older types declare only a merge key; structured-merge-diff treats those as
            // associative lists too.
            ListType::Unset if f.patch == Patch::Merge && !f.merge_key.is_empty() => {
                Node::MapList { keys: merge_key(f), items: nested }
            }
            _ => Node::Leaf,
        },
        (_, true) => match f.list_type {
            ListType::Set => Node::Set,
            ListType::Unset if f.patch == Patch::Merge => Node::Set,
            _ => Node::Leaf,
        },
        _ => Node::Leaf,
    }
}

fn merge_key(f: &'static Field) -> &'static [&'static str] {
    // The merge key lives in a 'static str; a one-element slice of it needs a 'static home.
    static KEYS: std::sync::OnceLock<std::sync::Mutex<Vec<&'static [&'static str]>>> = std::sync::OnceLock::new();
    let mut cache = KEYS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(k) = cache.iter().find(|k| k.first() == Some(&f.merge_key)) {
        return k;
    }
    let leaked: &'static [&'static str] = Box::leak(vec![f.merge_key].into_boxed_slice());
    cache.push(leaked);
    leaked
}

impl Node {
    /// The node of field/key `name` inside this node.
    fn child(self, name: &str) -> Node {
        match self {
            Node::Struct(m) => match m.field(name) {
                Some(f) => node_of_field(f, m),
                None => Node::Deduced,
            },
            Node::Map { values: Some(v), .. } => node_of_message(v),
            Node::Map { values: None, .. } => Node::Leaf,
            Node::Deduced => Node::Deduced,
            _ => Node::Leaf,
        }
    }

    fn item(self) -> Node {
        match self {
            Node::MapList { items: Some(m), .. } => node_of_message(m),
            Node::MapList { items: None, .. } => Node::Deduced,
            _ => Node::Leaf,
        }
    }

    fn atomic(self) -> bool {
        matches!(self, Node::Leaf | Node::Map { atomic: true, .. })
    }
}

/// The `k:` path element of an associative list item.
fn item_key(item: &Value, keys: &[&str]) -> Option<String> {
    let mut m = Map::new();
    let mut sorted: Vec<&&str> = keys.iter().collect();
    sorted.sort();
    for k in sorted {
        let v = match item.get(*k) {
            Some(v) => v.clone(),
            // A missing key field takes its schema default, as structured-merge-diff does;
            // the only defaulted key fields of the built-in types are the ports' protocols.
            None if *k == "protocol" => json!("TCP"),
            None => return None,
        };
        m.insert((*k).to_string(), v);
    }
    Some(format!("k:{}", Value::Object(m)))
}

/// The field set of `v` at `node` (structured-merge-diff's `toFieldSet`).
pub fn field_set(v: &Value, node: Node) -> FieldSet {
    let mut set = FieldSet::default();
    match (node, v) {
        (n, _) if n.atomic() => set.member = true,
        (Node::Struct(_) | Node::Map { .. } | Node::Deduced, Value::Object(m)) => {
            for (k, cv) in m {
                let child = node.child(k);
                let mut c = field_set(cv, child);
                let declared = matches!(node, Node::Struct(msg) if msg.field(k).is_some());
                if cv.is_null()
                    || cv.as_object().is_some_and(|o| o.is_empty())
                    || !declared && !matches!(node, Node::Deduced)
                {
                    c.member = true;
                }
                if matches!(node, Node::Deduced) && !cv.is_object() {
                    c.member = true;
                }
                set.children.insert(format!("f:{k}"), c);
            }
        }
        (Node::MapList { keys, .. }, Value::Array(items)) => {
            for item in items {
                let Some(k) = item_key(item, keys) else { continue };
                let mut c = field_set(item, node.item());
                c.member = true;
                set.children.insert(k, c);
            }
        }
        (Node::Set, Value::Array(items)) => {
            for item in items {
                set.children.insert(format!("v:{item}"), FieldSet { member: true, children: Default::default() });
            }
        }
        _ => set.member = true,
    }
    set
}

/// The field set an apply owns: the object's fields except identity metadata and status.
pub fn applied_set(config: &Value, root: Node) -> FieldSet {
    let mut set = field_set(config, root);
    set.children.remove("f:apiVersion");
    set.children.remove("f:kind");
    set.children.remove("f:status");
    if let Some(meta) = set.children.get_mut("f:metadata") {
        for k in [
            "name",
            "namespace",
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "generation",
            "managedFields",
            "selfLink",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generateName",
        ] {
            meta.children.remove(&format!("f:{k}"));
        }
        meta.member = false;
        if meta.children.is_empty() {
            set.children.remove("f:metadata");
        }
    }
    set
}

/// The value at one path element below `v`.
fn step<'a>(v: &'a Value, elem: &str) -> Option<&'a Value> {
    if let Some(f) = elem.strip_prefix("f:") {
        return v.get(f);
    }
    if let Some(k) = elem.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(k).ok()?;
        return v.as_array()?.iter().find(|i| key.iter().all(|(kk, kv)| i.get(kk) == Some(kv)));
    }
    if let Some(val) = elem.strip_prefix("v:") {
        let val: Value = serde_json::from_str(val).ok()?;
        return v.as_array()?.iter().find(|i| **i == val);
    }
    None
}

/// A path in structured-merge-diff's notation (`.spec.containers[name="c"].image`).
fn render_path(path: &[String]) -> String {
    let mut out = String::new();
    for e in path {
        if let Some(f) = e.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = e.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let inner: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", inner.join(",")));
        } else if let Some(v) = e.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        }
    }
    out
}

/// One conflict: the manager, its API version and the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager.
    pub manager: String,
    /// The API version it used.
    pub api_version: String,
    /// The field, in structured-merge-diff's notation.
    pub path: String,
    /// The raw path elements.
    elems: Vec<String>,
}

/// The leaves of `set` whose value differs between `a` and `b`.
fn differing(set: &FieldSet, a: Option<&Value>, b: Option<&Value>, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    if set.children.is_empty() {
        if a != b {
            out.push(path.clone());
        }
        return;
    }
    for (elem, child) in &set.children {
        path.push(elem.clone());
        differing(child, a.and_then(|v| step(v, elem)), b.and_then(|v| step(v, elem)), path, out);
        path.pop();
    }
}

/// The managed-field entries of an object, parsed.
pub struct Entry {
    /// The raw entry (manager, operation, apiVersion, time, subresource).
    pub raw: Value,
    /// Its fields.
    pub set: FieldSet,
}

impl Entry {
    fn manager(&self) -> &str {
        self.raw.get("manager").and_then(Value::as_str).unwrap_or("")
    }
    fn operation(&self) -> &str {
        self.raw.get("operation").and_then(Value::as_str).unwrap_or("")
    }
}

/// Parses `metadata.managedFields`.
pub fn entries(obj: &Value) -> Vec<Entry> {
    obj.get("metadata")
        .and_then(|m| m.get("managedFields"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| Entry {
                    raw: e.clone(),
                    set: FieldSet::from_fields_v1(e.get("fieldsV1").unwrap_or(&Value::Null)),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The result of an apply.
pub struct Applied {
    /// The new object (before defaulting and validation), with its managed fields.
    pub object: Value,
}

/// Applies `config` for `manager` over `live` (`None` when the object does not exist).
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    root: Node,
    manager: &str,
    api_version: &str,
    force: bool,
    now: &str,
) -> Result<Applied, Vec<Conflict>> {
    let empty = json!({});
    let live_v = live.unwrap_or(&empty);
    let mut config = config.clone();
    drop_nulls(&mut config);
    let applied = applied_set(&config, root);
    let mut managers = entries(live_v);
    let mine = managers.iter().position(|e| e.manager() == manager && e.operation() == "Apply");
    let previous = mine.map(|i| managers.remove(i).set).unwrap_or_default();
    let merged = merge(live_v, &config, root);
    // Conflicts: fields others own whose value this apply changes.
    let mut conflicts = Vec::new();
    let mut changed = Vec::new();
    differing(&applied, Some(live_v), Some(&merged), &mut Vec::new(), &mut changed);
    for e in &managers {
        for path in &changed {
            if contains(&e.set, path) {
                conflicts.push(Conflict {
                    manager: e.manager().to_string(),
                    api_version: e.raw.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_string(),
                    path: render_path(path),
                    elems: path.clone(),
                });
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    for c in &conflicts {
        for e in managers.iter_mut().filter(|e| e.manager() == c.manager) {
            remove_path(&mut e.set, &c.elems);
        }
    }
    // Prune what this manager no longer applies, unless someone else owns it.
    let mut dropped = previous.clone();
    dropped.subtract(&applied);
    let mut result = merged;
    let others: Vec<&FieldSet> = managers.iter().map(|e| &e.set).collect();
    let mut gone = Vec::new();
    prunable(&dropped, &others, &mut Vec::new(), &mut gone);
    for path in gone {
        remove_at(&mut result, &path);
    }
    // Managed fields: others keep theirs (minus forced conflicts), this manager owns exactly
    // what it applied.
    let mut out: Vec<Value> = managers
        .into_iter()
        .filter(|e| !e.set.is_empty())
        .map(|mut e| {
            e.raw["fieldsV1"] = e.set.to_fields_v1();
            e.raw
        })
        .collect();
    if !applied.is_empty() {
        out.push(json!({
            "manager": manager, "operation": "Apply", "apiVersion": api_version, "time": now,
            "fieldsType": "FieldsV1", "fieldsV1": applied.to_fields_v1(),
        }));
    }
    let meta = crate::object::meta_mut(&mut result);
    if out.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(out));
    }
    Ok(Applied { object: result })
}

fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Whether `set` contains `path` (as a member or leaf, or below an owned atomic node).
fn contains(set: &FieldSet, path: &[String]) -> bool {
    let mut node = set;
    for (i, e) in path.iter().enumerate() {
        match node.children.get(e) {
            Some(c) => {
                if c.children.is_empty() && c.member && i < path.len() {
                    // An owned leaf (or atomic node) covers everything below it.
                    return true;
                }
                node = c;
            }
            None => return false,
        }
    }
    node.member
}

fn remove_path(set: &mut FieldSet, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        set.member = false;
        return;
    };
    if let Some(c) = set.children.get_mut(first) {
        if rest.is_empty() {
            set.children.remove(first);
        } else {
            remove_path(c, rest);
            if c.is_empty() {
                set.children.remove(first);
            }
        }
    }
}

/// Whether any of `sets` owns `path` or something below it.
fn owned_at_or_below(sets: &[&FieldSet], path: &[String]) -> bool {
    sets.iter().any(|s| {
        let mut node = *s;
        for e in path {
            match node.children.get(e) {
                Some(c) if c.children.is_empty() && c.member => return true,
                Some(c) => node = c,
                None => return false,
            }
        }
        true
    })
}

/// The paths of `dropped` to remove: a member node nobody else owns (at or below it) goes
/// whole; otherwise its children are considered one by one.
fn prunable(dropped: &FieldSet, others: &[&FieldSet], path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    if dropped.member && !path.is_empty() && !owned_at_or_below(others, path) {
        out.push(path.clone());
        return;
    }
    for (e, c) in &dropped.children {
        path.push(e.clone());
        prunable(c, others, path, out);
        path.pop();
    }
}

/// Removes the value at `path`; parents left empty by the removal are removed too.
fn remove_at(v: &mut Value, path: &[String]) -> bool {
    let Some((first, rest)) = path.split_first() else { return false };
    if rest.is_empty() {
        match v {
            Value::Object(m) => first.strip_prefix("f:").is_some_and(|f| m.remove(f).is_some()),
            Value::Array(a) => {
                let before = a.len();
                let target = step(&Value::Array(a.clone()), first).cloned();
                if let Some(t) = target {
                    a.retain(|x| *x != t);
                }
                a.len() != before
            }
            _ => false,
        }
    } else {
        let child = match v {
            Value::Object(m) => first.strip_prefix("f:").and_then(|f| m.get_mut(f)),
            Value::Array(a) => {
                let key = first.strip_prefix("k:").and_then(|k| serde_json::from_str::<Map<String, Value>>(k).ok());
                key.and_then(|key| a.iter_mut().find(|i| key.iter().all(|(kk, kv)| i.get(kk) == Some(kv))))
            }
            _ => None,
        };
        match child {
            Some(c) => {
                let removed = remove_at(c, rest);
                let emptied = c.as_object().is_some_and(|o| o.is_empty()) || c.as_array().is_some_and(|a| a.is_empty());
                if removed
                    && emptied
                    && let (Value::Object(m), Some(f)) = (&mut *v, first.strip_prefix("f:"))
                {
                    m.remove(f);
                }
                removed
            }
            None => false,
        }
    }
}

/// Merges `config` into `live` at `node`.
pub fn merge(live: &Value, config: &Value, node: Node) -> Value {
    if node.atomic() {
        return config.clone();
    }
    match (node, live, config) {
        (Node::Struct(_) | Node::Map { .. } | Node::Deduced, Value::Object(l), Value::Object(c)) => {
            let mut out = l.clone();
            for (k, cv) in c {
                let child = node.child(k);
                let merged = match out.get(k) {
                    Some(lv) => merge(lv, cv, child),
                    None => cv.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Node::MapList { keys, .. }, Value::Array(l), Value::Array(c)) => {
            let mut out: Vec<Value> = Vec::with_capacity(l.len() + c.len());
            for ci in c {
                let ck = item_key(ci, keys);
                let existing = l.iter().find(|li| ck.is_some() && item_key(li, keys) == ck);
                out.push(match existing {
                    Some(li) => merge(li, ci, node.item()),
                    None => ci.clone(),
                });
            }
            for li in l {
                let lk = item_key(li, keys);
                if !c.iter().any(|ci| lk.is_some() && item_key(ci, keys) == lk) {
                    out.push(li.clone());
                }
            }
            Value::Array(out)
        }
        (Node::Set, Value::Array(l), Value::Array(c)) => {
            let mut out = c.clone();
            for li in l {
                if !out.contains(li) {
                    out.push(li.clone());
                }
            }
            Value::Array(out)
        }
        _ => config.clone(),
    }
}

/// The 409 of an apply with conflicts, as kube-apiserver words it.
pub fn conflict_error(conflicts: &[Conflict]) -> crate::status::ApiError {
    let mut by_manager: Vec<(String, String, Vec<String>)> = Vec::new();
    for c in conflicts {
        match by_manager.iter_mut().find(|(m, v, _)| *m == c.manager && *v == c.api_version) {
            Some((_, _, paths)) => paths.push(c.path.clone()),
            None => by_manager.push((c.manager.clone(), c.api_version.clone(), vec![c.path.clone()])),
        }
    }
    let n = conflicts.len();
    let mut msg = format!("Apply failed with {n} conflict{}: ", if n == 1 { "" } else { "s" });
    let parts: Vec<String> = by_manager
        .iter()
        .map(|(m, v, paths)| {
            if paths.len() == 1 {
                format!("conflict with {m:?} using {v}: {}", paths[0])
            } else {
                format!("conflicts with {m:?} using {v}:\n- {}", paths.join("\n- "))
            }
        })
        .collect();
    msg.push_str(&parts.join("\n"));
    let mut e = crate::status::ApiError::new(409, "Conflict", msg);
    e.causes = conflicts
        .iter()
        .map(|c| crate::status::FieldError {
            reason: "FieldManagerConflict",
            field: c.path.clone(),
            message: format!("conflict with {:?} using {}", c.manager, c.api_version),
        })
        .collect();
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protobuf::message_for;

    fn deploy() -> Node {
        Node::Struct(message_for("apps", "v1", "Deployment").unwrap())
    }

    fn d(replicas: i64, containers: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
               "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": containers}}}})
    }

    #[test]
    fn field_sets_follow_the_topology() {
        let set = applied_set(&d(2, json!([{"name": "c", "image": "nginx"}])), deploy());
        let v1 = set.to_fields_v1();
        assert_eq!(v1["f:spec"]["f:selector"], json!({}), "LabelSelector is atomic");
        assert_eq!(
            v1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"],
            json!({".": {}, "f:image": {}, "f:name": {}})
        );
        assert_eq!(v1["f:metadata"], json!({"f:labels": {"f:app": {}}}));
        assert!(v1.get("f:apiVersion").is_none() && v1["f:metadata"].get("f:name").is_none());
    }

    #[test]
    fn apply_creates_updates_and_prunes() {
        let a = apply(
            None,
            &d(2, json!([{"name": "c", "image": "nginx"}, {"name": "s", "image": "busybox"}])),
            deploy(),
            "mgr",
            "apps/v1",
            false,
            "t",
        )
        .unwrap();
        let live = a.object;
        assert_eq!(live["metadata"]["managedFields"][0]["operation"], "Apply");
        // Re-apply without the sidecar and with a new image: the sidecar is pruned.
        let b = apply(
            Some(&live),
            &d(2, json!([{"name": "c", "image": "nginx:2"}])),
            deploy(),
            "mgr",
            "apps/v1",
            false,
            "t",
        )
        .unwrap();
        let containers = b.object["spec"]["template"]["spec"]["containers"].as_array().unwrap().clone();
        assert_eq!(containers, vec![json!({"name": "c", "image": "nginx:2"})]);
    }

    #[test]
    fn conflicts_and_force() {
        let live =
            apply(None, &d(2, json!([{"name": "c", "image": "nginx"}])), deploy(), "alice", "apps/v1", false, "t")
                .unwrap()
                .object;
        // Same values from another manager: shared ownership, no conflict.
        let shared =
            apply(Some(&live), &d(2, json!([{"name": "c", "image": "nginx"}])), deploy(), "bob", "apps/v1", false, "t")
                .unwrap()
                .object;
        assert_eq!(shared["metadata"]["managedFields"].as_array().unwrap().len(), 2);
        // A different value: one conflict per field.
        let err =
            apply(Some(&live), &d(5, json!([{"name": "c", "image": "nginx"}])), deploy(), "bob", "apps/v1", false, "t")
                .err()
                .unwrap();
        assert_eq!(
            err,
            vec![Conflict {
                manager: "alice".into(),
                api_version: "apps/v1".into(),
                path: ".spec.replicas".into(),
                elems: vec!["f:spec".into(), "f:replicas".into()]
            }]
        );
        assert_eq!(
            conflict_error(&err).message,
            "Apply failed with 1 conflict: conflict with \"alice\" using apps/v1: .spec.replicas"
        );
        // Forcing moves ownership.
        let forced =
            apply(Some(&live), &d(5, json!([{"name": "c", "image": "nginx"}])), deploy(), "bob", "apps/v1", true, "t")
                .unwrap()
                .object;
        assert_eq!(forced["spec"]["replicas"], 5);
        let alice = entries(&forced).into_iter().find(|e| e.manager() == "alice").unwrap();
        assert!(!contains(&alice.set, &["f:spec".into(), "f:replicas".into()]));
        // A field dropped by bob but still owned by alice stays.
        let dropped = apply(
            Some(&forced),
            &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}),
            deploy(),
            "bob",
            "apps/v1",
            false,
            "t",
        )
        .unwrap()
        .object;
        assert_eq!(dropped["spec"]["template"]["spec"]["containers"][0]["image"], "nginx", "still owned by alice");
        assert!(dropped["spec"].get("replicas").is_none(), "replicas only bob owned: pruned");
    }
}
