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
//! `+structType` markers) for built-in kinds, and from the CRD's structural schema
//! (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`, `x-kubernetes-map-type`) for
//! custom resources; where neither says (no schema, preserved unknown fields), objects are
//! granular and lists atomic, as structured-merge-diff's deduced type does.

use serde_json::{Map, Value, json};

use crate::fields::FieldSet;
use crate::protobuf::{Field, Kind, ListType, MapType, Message, Patch};

/// What a position in an object is, for apply.
#[derive(Clone, Copy)]
pub enum Node<'s> {
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
    /// A position a custom resource's OpenAPI schema describes.
    Schema(&'s Value),
}

/// How a schema node merges.
enum Shape<'s> {
    /// Fields or keys, each owned apart (`properties`, granular `additionalProperties`).
    Granular,
    /// An associative list keyed by these fields.
    MapList(Vec<&'s str>),
    /// A set of scalars.
    Set,
    /// Owned as a whole.
    Atomic,
    /// Unknown fields preserved: as deduced.
    Deduced,
}

fn schema_shape(s: &Value) -> Shape<'_> {
    let ext = |k: &str| s.get(k).and_then(Value::as_str);
    if s.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
        return Shape::Atomic;
    }
    match s.get("type").and_then(Value::as_str) {
        Some("array") => match ext("x-kubernetes-list-type") {
            Some("map") => Shape::MapList(
                s.get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|ks| ks.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default(),
            ),
            Some("set") => Shape::Set,
            _ => Shape::Atomic,
        },
        Some("object") | None => {
            if ext("x-kubernetes-map-type") == Some("atomic") {
                Shape::Atomic
            } else if s.get("properties").is_some()
                || s.get("additionalProperties").is_some_and(Value::is_object)
                || s.get("x-kubernetes-embedded-resource").and_then(Value::as_bool) == Some(true)
            {
                Shape::Granular
            } else if s.get("type").is_none() && s.get("x-kubernetes-preserve-unknown-fields").is_none() {
                Shape::Atomic
            } else {
                Shape::Deduced
            }
        }
        Some(_) => Shape::Atomic,
    }
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

fn node_of_message(m: &'static Message) -> Node<'static> {
    if opaque(m) || m.atomic { Node::Leaf } else { Node::Struct(m) }
}

/// The node of a field.
fn node_of_field(f: &'static Field, parent: &'static Message) -> Node<'static> {
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

impl<'s> Node<'s> {
    /// The node of field/key `name` inside this node.
    fn child(self, name: &str) -> Node<'s> {
        match self {
            Node::Struct(m) => match m.field(name) {
                Some(f) => node_of_field(f, m),
                None => Node::Deduced,
            },
            Node::Map { values: Some(v), .. } => node_of_message(v),
            Node::Map { values: None, .. } => Node::Leaf,
            Node::Deduced => Node::Deduced,
            Node::Schema(s) => {
                match s.pointer(&format!("/properties/{}", name.replace('~', "~0").replace('/', "~1"))) {
                    Some(p) => Node::Schema(p),
                    None => match s.get("additionalProperties").filter(|a| a.is_object()) {
                        Some(a) => Node::Schema(a),
                        None => Node::Deduced,
                    },
                }
            }
            _ => Node::Leaf,
        }
    }

    fn item(self) -> Node<'s> {
        match self {
            Node::MapList { items: Some(m), .. } => node_of_message(m),
            Node::MapList { items: None, .. } => Node::Deduced,
            Node::Schema(s) => s.get("items").filter(|i| i.is_object()).map(Node::Schema).unwrap_or(Node::Deduced),
            _ => Node::Leaf,
        }
    }

    /// How this node merges.
    fn shape(self) -> Shape<'s> {
        match self {
            Node::Leaf | Node::Map { atomic: true, .. } => Shape::Atomic,
            Node::Struct(_) | Node::Map { .. } => Shape::Granular,
            Node::MapList { keys, .. } => Shape::MapList(keys.to_vec()),
            Node::Set => Shape::Set,
            Node::Deduced => Shape::Deduced,
            Node::Schema(s) => schema_shape(s),
        }
    }

    /// Whether `name` is a declared field of this struct (keys of maps are not).
    fn declares(self, name: &str) -> bool {
        match self {
            Node::Struct(m) => m.field(name).is_some(),
            Node::Schema(s) => {
                s.get("properties").and_then(Value::as_object).is_some_and(|p| p.contains_key(name))
                    || s.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true)
                        && s.get("additionalProperties").is_none()
            }
            _ => false,
        }
    }

    /// The default of key field `key` of this list's items (a schema's `default`; the only
    /// defaulted key fields of the built-in types are the ports' protocols).
    fn key_default(self, key: &str) -> Option<Value> {
        match self {
            Node::Schema(s) => s.pointer(&format!("/items/properties/{key}/default")).cloned(),
            _ => (key == "protocol").then(|| json!("TCP")),
        }
    }
}

/// The `k:` path element of an associative list item.
fn item_key(item: &Value, keys: &[&str], list: Node<'_>) -> Option<String> {
    let mut m = Map::new();
    let mut sorted: Vec<&&str> = keys.iter().collect();
    sorted.sort();
    for k in sorted {
        let v = match item.get(*k) {
            Some(v) => v.clone(),
            // A missing key field takes its schema default, as structured-merge-diff does.
            None => list.key_default(k)?,
        };
        m.insert((*k).to_string(), v);
    }
    Some(format!("k:{}", Value::Object(m)))
}

/// The field set of `v` at `node` (structured-merge-diff's `toFieldSet`).
pub fn field_set(v: &Value, node: Node<'_>) -> FieldSet {
    let mut set = FieldSet::default();
    match (node.shape(), v) {
        (Shape::Atomic, _) => set.member = true,
        (shape @ (Shape::Granular | Shape::Deduced), Value::Object(m)) => {
            let deduced = matches!(shape, Shape::Deduced);
            for (k, cv) in m {
                let child = node.child(k);
                let mut c = field_set(cv, child);
                if cv.is_null() || cv.as_object().is_some_and(|o| o.is_empty()) || !node.declares(k) && !deduced {
                    c.member = true;
                }
                if deduced && !cv.is_object() {
                    c.member = true;
                }
                set.children.insert(format!("f:{k}"), c);
            }
        }
        (Shape::MapList(keys), Value::Array(items)) => {
            for item in items {
                let Some(k) = item_key(item, &keys, node) else { continue };
                let mut c = field_set(item, node.item());
                c.member = true;
                set.children.insert(k, c);
            }
        }
        (Shape::Set, Value::Array(items)) => {
            for item in items {
                set.children.insert(format!("v:{item}"), FieldSet { member: true, children: Default::default() });
            }
        }
        _ => set.member = true,
    }
    set
}

/// The field set an apply owns: the object's fields except identity metadata and status.
pub fn applied_set(config: &Value, root: Node<'_>) -> FieldSet {
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
    root: Node<'_>,
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
pub fn merge(live: &Value, config: &Value, node: Node<'_>) -> Value {
    match (node.shape(), live, config) {
        (Shape::Atomic, _, _) => config.clone(),
        (Shape::Granular | Shape::Deduced, Value::Object(l), Value::Object(c)) => {
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
        (Shape::MapList(keys), Value::Array(l), Value::Array(c)) => {
            let key = |i: &Value| item_key(i, &keys, node);
            Value::Array(merge_items(l, c, key, |li, ci| match li {
                Some(li) => merge(li, ci, node.item()),
                None => ci.clone(),
            }))
        }
        (Shape::Set, Value::Array(l), Value::Array(c)) => {
            Value::Array(merge_items(l, c, |i| Some(i.to_string()), |_, ci| ci.clone()))
        }
        _ => config.clone(),
    }
}

/// Merges the items of an associative list or set in structured-merge-diff's order: items
/// only the live list has stay where they are, the applied items come in the applied order,
/// and items both have follow the applied order (a live item met before its turn waits).
fn merge_items(
    live: &[Value],
    applied: &[Value],
    key: impl Fn(&Value) -> Option<String>,
    merge_item: impl Fn(Option<&Value>, &Value) -> Value,
) -> Vec<Value> {
    let live_keys: Vec<Option<String>> = live.iter().map(&key).collect();
    let applied_keys: Vec<Option<String>> = applied.iter().map(&key).collect();
    // Indexes by key, so a long list merges in linear time (the first of duplicate keys).
    let mut live_index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, k) in live_keys.iter().enumerate() {
        if let Some(k) = k {
            live_index.entry(k.as_str()).or_insert(i);
        }
    }
    let applied_set: std::collections::HashSet<&str> = applied_keys.iter().flatten().map(String::as_str).collect();
    let in_applied = |k: &Option<String>| k.as_deref().is_some_and(|k| applied_set.contains(k));
    let live_at = |k: &Option<String>| k.as_deref().and_then(|k| live_index.get(k).copied());
    let mut shared: std::collections::VecDeque<&Option<String>> =
        applied_keys.iter().filter(|k| k.as_deref().is_some_and(|k| live_index.contains_key(k))).collect();
    let mut next_shared = shared.pop_front();
    let mut out = Vec::with_capacity(live.len().max(applied.len()));
    let (mut li, mut ai) = (0, 0);
    while li < live.len() || ai < applied.len() {
        if li < live.len() && ai < applied.len() {
            if live_keys[li].is_some() && live_keys[li] == applied_keys[ai] {
                out.push(merge_item(Some(&live[li]), &applied[ai]));
                li += 1;
                ai += 1;
                next_shared = shared.pop_front();
                continue;
            }
            if in_applied(&live_keys[li]) && next_shared.is_some_and(|n| *n != live_keys[li]) {
                li += 1;
                continue;
            }
        }
        if li < live.len() && !in_applied(&live_keys[li]) {
            out.push(live[li].clone());
            li += 1;
            continue;
        }
        if ai < applied.len() {
            let k = &applied_keys[ai];
            out.push(merge_item(live_at(k).map(|i| &live[i]), &applied[ai]));
            if next_shared.is_some_and(|n| n == k) {
                next_shared = shared.pop_front();
            }
            ai += 1;
        } else {
            // A shared live item already merged in the applied order.
            li += 1;
        }
    }
    out
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

    /// Pins structured-merge-diff's list order (merge.go `visitListItems`): live-only items
    /// keep their place, applied items come in the applied order.
    #[test]
    fn list_items_merge_in_structured_merge_diffs_order() {
        let order = |l: &[&str], c: &[&str]| -> Vec<String> {
            let v = |xs: &[&str]| xs.iter().map(|x| json!(x)).collect::<Vec<_>>();
            merge_items(&v(l), &v(c), |i| Some(i.to_string()), |_, ci| ci.clone())
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(order(&["http"], &["https"]), ["http", "https"]);
        assert_eq!(order(&["a", "b"], &["b", "a"]), ["b", "a"]);
        assert_eq!(order(&["x", "a"], &["a", "y"]), ["x", "a", "y"]);
        assert_eq!(order(&["b", "a"], &["b", "x", "a"]), ["b", "x", "a"]);
        assert_eq!(order(&["a", "b", "c"], &["c"]), ["a", "b", "c"]);
        assert_eq!(order(&[], &["a"]), ["a"]);
    }

    fn deploy() -> Node<'static> {
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
