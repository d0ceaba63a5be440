//! The registry of resource types a server serves: every built-in type of Kubernetes 1.33
//! from one table (`registry/builtin.rs`), plus custom resources added at runtime.

mod builtin;
#[cfg(test)]
pub(crate) use builtin::openapi_schemas;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use serde_json::Value;

use crate::status::GroupResource;
use crate::validation::NameRule;

/// A subresource of a resource type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subresource {
    /// The subresource name (`status`, `scale`, `log`, ...).
    pub name: String,
    /// The group of the subresource's kind (may differ, e.g. `autoscaling` for `Scale`).
    pub group: String,
    /// The version of the subresource's kind.
    pub version: String,
    /// The kind exchanged on the subresource.
    pub kind: String,
    /// The verbs it supports.
    pub verbs: Vec<String>,
}

/// What the garbage collector does with dependents by default when an owner is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GcPolicy {
    /// Delete dependents in the background.
    Background,
    /// Orphan dependents.
    Orphan,
}

/// How the generic REST logic treats a resource type (kube-apiserver's strategy flags).
#[derive(Clone, Debug)]
pub struct Policy {
    /// The rule for `metadata.name`.
    pub name_rule: NameRule,
    /// Whether `metadata.generation` is set on create and bumped on spec changes.
    pub sets_generation: bool,
    /// Whether `.status` is only written through the `status` subresource.
    pub has_status: bool,
    /// Whether create drops the client's `.status`.
    pub reset_status_on_create: bool,
    /// Whether an update without `metadata.resourceVersion` is allowed.
    pub unconditional_update: bool,
    /// Whether an update of a missing object creates it.
    pub create_on_update: bool,
    /// Default propagation for deletes.
    pub default_gc: GcPolicy,
    /// Field selectors beyond `metadata.name` and `metadata.namespace`.
    pub field_selectors: Vec<String>,
    /// Objects expire after this long (Events).
    pub ttl: Option<Duration>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            name_rule: NameRule::Subdomain,
            sets_generation: false,
            has_status: false,
            reset_status_on_create: false,
            unconditional_update: true,
            create_on_update: false,
            default_gc: GcPolicy::Background,
            field_selectors: Vec::new(),
            ttl: None,
        }
    }
}

/// Decodes an object into its typed form and encodes it back, which checks its field types and
/// drops unknown fields, or explains what does not decode.
pub type Roundtrip = fn(&Value) -> Result<Value, String>;

/// One served resource type at one version.
#[derive(Clone, Debug)]
pub struct ResourceType {
    /// API group (`""` for core).
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Kind of its lists.
    pub list_kind: String,
    /// Plural resource name.
    pub plural: String,
    /// Singular resource name.
    pub singular: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// The verbs of the resource itself.
    pub verbs: Vec<String>,
    /// Short names (`po`, `deploy`, ...).
    pub short_names: Vec<String>,
    /// Categories (`all`, ...).
    pub categories: Vec<String>,
    /// Subresources.
    pub subresources: Vec<Subresource>,
    /// Whether this is the preferred version of its group.
    pub preferred: bool,
    /// REST behaviour.
    pub policy: Policy,
    /// Typed round trip for built-in kinds.
    pub roundtrip: Option<Roundtrip>,
    /// The kind's OpenAPI definition name (built-in kinds; its schema is in the pre-rendered
    /// `openapi/definitions.json`).
    pub openapi: Option<&'static str>,
    /// What a CustomResourceDefinition says of this version (custom resources).
    pub custom: Option<Arc<crate::crd::CustomResource>>,
}

impl ResourceType {
    /// `group/version`, or `version` for core.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// The group and resource, for messages.
    pub fn group_resource(&self) -> GroupResource {
        GroupResource::new(self.group.clone(), self.plural.clone())
    }

    /// The store key prefix of all objects of this type (version-independent).
    pub fn key_prefix(&self) -> String {
        // events.k8s.io Events share the core Events' storage.
        let group = match (self.group.as_str(), self.kind.as_str()) {
            ("", _) | ("events.k8s.io", "Event") => "core",
            (g, _) => g,
        };
        format!("/registry/{group}/{}/", self.plural)
    }

    /// The store key prefix of the objects in namespace `ns` (all namespaces if empty).
    pub fn list_prefix(&self, ns: &str) -> String {
        if self.namespaced && !ns.is_empty() { format!("{}{ns}/", self.key_prefix()) } else { self.key_prefix() }
    }

    /// The store key of one object.
    pub fn key(&self, ns: &str, name: &str) -> String {
        if self.namespaced {
            format!("{}{ns}/{name}", self.key_prefix())
        } else {
            format!("{}{name}", self.key_prefix())
        }
    }

    /// The type's schema in the generated type table (built-in kinds only).
    pub fn schema(&self) -> Option<&'static crate::protobuf::Message> {
        self.roundtrip?;
        crate::protobuf::message_for(&self.group, &self.version, &self.kind)
    }

    /// The subresource named `name`, if any.
    pub fn subresource(&self, name: &str) -> Option<&Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }

    /// Whether the resource supports `verb`.
    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    /// The field selectors the resource accepts.
    pub fn field_selectors(&self) -> Vec<&str> {
        let mut f = vec!["metadata.name"];
        if self.namespaced {
            f.push("metadata.namespace");
        }
        f.extend(self.policy.field_selectors.iter().map(String::as_str));
        f
    }
}

/// A group with its served versions, preferred first.
#[derive(Clone, Debug)]
pub struct GroupInfo {
    /// The group name.
    pub name: String,
    /// Versions, preferred first.
    pub versions: Vec<String>,
}

/// The resource types one server serves.
pub struct Registry {
    types: RwLock<Vec<Arc<ResourceType>>>,
    index: RwLock<HashMap<(String, String, String), Arc<ResourceType>>>,
    /// Bumped on every change (documents derived from the registry are cached by it).
    generation: std::sync::atomic::AtomicU64,
    /// Signalled on every change (one waiter: the APIService keeper).
    changes: Arc<tokio::sync::Notify>,
}

/// The built-in types, built once per process and shared by every server.
fn builtin_types() -> &'static [Arc<ResourceType>] {
    static BUILTIN: OnceLock<Vec<Arc<ResourceType>>> = OnceLock::new();
    BUILTIN.get_or_init(|| builtin::table().into_iter().map(Arc::new).collect())
}

impl Registry {
    /// A registry with the built-in types of Kubernetes 1.33.
    pub fn builtin() -> Registry {
        let types: Vec<Arc<ResourceType>> = builtin_types().to_vec();
        let index = types.iter().map(|t| ((t.group.clone(), t.version.clone(), t.plural.clone()), t.clone())).collect();
        Registry {
            types: RwLock::new(types),
            index: RwLock::new(index),
            generation: Default::default(),
            changes: Default::default(),
        }
    }

    /// The type served at `group/version/plural`.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    /// The preferred version's type for `group` and `kind`.
    pub fn by_kind(&self, group: &str, kind: &str) -> Option<Arc<ResourceType>> {
        let types = self.types.read().unwrap_or_else(|p| p.into_inner());
        types.iter().filter(|t| t.group == group && t.kind == kind).max_by_key(|t| t.preferred).cloned()
    }

    /// Every served type.
    pub fn all(&self) -> Vec<Arc<ResourceType>> {
        self.types.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The types served in one group version.
    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<Arc<ResourceType>> {
        self.all().into_iter().filter(|t| t.group == group && t.version == version).collect()
    }

    /// The served groups (except core), with versions, preferred first, in serving order.
    pub fn groups(&self) -> Vec<GroupInfo> {
        let mut groups: Vec<GroupInfo> = Vec::new();
        for t in self.all() {
            if t.group.is_empty() {
                continue;
            }
            let g = match groups.iter_mut().find(|g| g.name == t.group) {
                Some(g) => g,
                None => {
                    groups.push(GroupInfo { name: t.group.clone(), versions: Vec::new() });
                    groups.last_mut().expect("just pushed")
                }
            };
            if !g.versions.contains(&t.version) {
                if t.preferred { g.versions.insert(0, t.version.clone()) } else { g.versions.push(t.version.clone()) }
            }
        }
        groups
    }

    /// The registry's generation: it changes whenever the served types do.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Signalled after each change (a change with nobody waiting leaves one wake-up).
    pub(crate) fn changes(&self) -> Arc<tokio::sync::Notify> {
        self.changes.clone()
    }

    /// Serves exactly `new` for `group`'s `plural` (every version), replacing what was served
    /// for it; an empty `new` stops serving it. Built-in types cannot be replaced.
    pub fn replace(&self, group: &str, plural: &str, new: Vec<ResourceType>) {
        let mut types = self.types.write().unwrap_or_else(|p| p.into_inner());
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        let custom = |t: &ResourceType| t.group == group && t.plural == plural && t.custom.is_some();
        types.retain(|t| !custom(t));
        index.retain(|_, t| !custom(t));
        for t in new {
            if index.contains_key(&(t.group.clone(), t.version.clone(), t.plural.clone())) {
                continue;
            }
            let t = Arc::new(t);
            index.insert((t.group.clone(), t.version.clone(), t.plural.clone()), t.clone());
            types.push(t);
        }
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.changes.notify_one();
    }
}
