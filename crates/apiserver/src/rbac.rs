//! Role-based access control, as kube-apiserver's RBAC authorizer: Roles, ClusterRoles (with
//! `aggregationRule`), RoleBindings and ClusterRoleBindings, kept in memory from the store
//! (one list, then one watch of `/registry/rbac.authorization.k8s.io/`), so a decision never
//! touches the store. `system:masters` is always allowed, as kube's privileged-group
//! authorizer does ahead of RBAC.
//!
//! Also here: the rule algebra the escalation check needs ([`uncovered`]: the requested rules
//! the user's own rules do not cover) and the rule listing behind SelfSubjectRulesReview.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use vt_store::Store;

use crate::auth::{Attributes, Authorizer, Decision, MASTERS, PUBLIC_PATHS, UserInfo};
use crate::selector::LabelSelector;

const PREFIX: &str = "/registry/rbac.authorization.k8s.io/";

/// One RBAC rule (`rbac.authorization.k8s.io/v1` PolicyRule).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    /// Verbs (`*` for all).
    #[serde(default)]
    pub verbs: Vec<String>,
    /// API groups (`""` core, `*` all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    /// Resources (`pods`, `pods/log`, `*/scale`, `*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Object names the rule is limited to (empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    /// Non-resource URLs (`/healthz`, `/api/*`).
    #[serde(default, rename = "nonResourceURLs", skip_serializing_if = "Vec::is_empty")]
    pub non_resource_urls: Vec<String>,
}

fn has(list: &[String], v: &str) -> bool {
    list.iter().any(|x| x == v || x == "*")
}

impl PolicyRule {
    /// The rule of everything (what `system:masters` holds).
    pub fn everything() -> Vec<PolicyRule> {
        vec![
            PolicyRule {
                verbs: vec!["*".into()],
                api_groups: vec!["*".into()],
                resources: vec!["*".into()],
                ..Default::default()
            },
            PolicyRule { verbs: vec!["*".into()], non_resource_urls: vec!["*".into()], ..Default::default() },
        ]
    }

    /// Whether the rule allows `verb` on `group`/`resource`[/`sub`] named `name`.
    pub fn allows_resource(&self, verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> bool {
        if !has(&self.verbs, verb) || !has(&self.api_groups, group) {
            return false;
        }
        let combined = if sub.is_empty() { resource.to_string() } else { format!("{resource}/{sub}") };
        let resource_ok = self
            .resources
            .iter()
            .any(|r| r == "*" || *r == combined || (!sub.is_empty() && r.strip_prefix("*/") == Some(sub)));
        resource_ok && (self.resource_names.is_empty() || self.resource_names.iter().any(|n| n == name))
    }

    /// Whether the rule allows `verb` on the non-resource `path`.
    pub fn allows_path(&self, verb: &str, path: &str) -> bool {
        has(&self.verbs, verb)
            && self
                .non_resource_urls
                .iter()
                .any(|u| u == "*" || u == path || u.strip_suffix('*').is_some_and(|prefix| path.starts_with(prefix)))
    }
}

/// The requested rules' atoms that `owner` does not hold, grouped back into rules: what
/// creating a role with `requested` (or binding it) would escalate to. Wildcards in requested
/// rules are only covered by the same wildcards.
pub fn uncovered(owner: &[PolicyRule], requested: &[PolicyRule]) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    for r in requested {
        let names: Vec<&str> =
            if r.resource_names.is_empty() { vec![""] } else { r.resource_names.iter().map(String::as_str).collect() };
        for verb in &r.verbs {
            for group in &r.api_groups {
                for resource in &r.resources {
                    for name in &names {
                        let held = owner.iter().any(|o| {
                            has(&o.verbs, verb)
                                && has(&o.api_groups, group)
                                && (o.resources.iter().any(|x| x == "*" || x == resource)
                                    || resource.split_once('/').is_some_and(|(_, sub)| {
                                        o.resources.iter().any(|x| x.strip_prefix("*/") == Some(sub))
                                    }))
                                && (o.resource_names.is_empty() || o.resource_names.iter().any(|n| n == name))
                        });
                        if !held {
                            out.push(PolicyRule {
                                verbs: vec![verb.clone()],
                                api_groups: vec![group.clone()],
                                resources: vec![resource.clone()],
                                resource_names: if name.is_empty() { vec![] } else { vec![name.to_string()] },
                                ..Default::default()
                            });
                        }
                    }
                }
            }
            for url in &r.non_resource_urls {
                if !owner.iter().any(|o| o.allows_path(verb, url)) {
                    out.push(PolicyRule {
                        verbs: vec![verb.clone()],
                        non_resource_urls: vec![url.clone()],
                        ..Default::default()
                    });
                }
            }
        }
    }
    out
}

/// Go's `%+v` of a PolicyRule, as kube's escalation message prints the missing ones.
pub fn describe(r: &PolicyRule) -> String {
    let list = |xs: &[String]| xs.iter().map(|x| format!("{x:?}")).collect::<Vec<_>>().join(" ");
    let mut parts = Vec::new();
    if !r.api_groups.is_empty() {
        parts.push(format!("APIGroups:[{}]", list(&r.api_groups)));
    }
    if !r.resources.is_empty() {
        parts.push(format!("Resources:[{}]", list(&r.resources)));
    }
    if !r.resource_names.is_empty() {
        parts.push(format!("ResourceNames:[{}]", list(&r.resource_names)));
    }
    if !r.non_resource_urls.is_empty() {
        parts.push(format!("NonResourceURLs:[{}]", list(&r.non_resource_urls)));
    }
    parts.push(format!("Verbs:[{}]", list(&r.verbs)));
    format!("{{{}}}", parts.join(", "))
}

/// Parses the `rules` of a Role or ClusterRole.
pub fn rules_of(obj: &Value) -> Vec<PolicyRule> {
    obj.get("rules").and_then(|r| crate::object::from_value(r.clone()).ok()).unwrap_or_default()
}

#[derive(Clone, Debug)]
struct Subject {
    kind: String,
    name: String,
    namespace: String,
}

#[derive(Clone, Debug)]
struct Binding {
    role_kind: String,
    role_name: String,
    subjects: Vec<Subject>,
}

impl Binding {
    fn parse(obj: &Value, namespace: &str) -> Binding {
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let subjects = obj
            .get("subjects")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|x| Subject {
                kind: s(x, "kind"),
                name: s(x, "name"),
                namespace: {
                    let ns = s(x, "namespace");
                    if ns.is_empty() { namespace.to_string() } else { ns }
                },
            })
            .collect();
        let role = obj.get("roleRef").cloned().unwrap_or(Value::Null);
        Binding { role_kind: s(&role, "kind"), role_name: s(&role, "name"), subjects }
    }

    fn applies_to(&self, user: &UserInfo) -> bool {
        self.subjects.iter().any(|s| match s.kind.as_str() {
            "User" => s.name == user.name,
            "Group" => user.in_group(&s.name),
            "ServiceAccount" => user.name == format!("system:serviceaccount:{}:{}", s.namespace, s.name),
            _ => false,
        })
    }
}

#[derive(Clone, Debug)]
struct ClusterRole {
    rules: Vec<PolicyRule>,
    labels: BTreeMap<String, String>,
    aggregation: Vec<LabelSelector>,
}

/// The RBAC objects, by key.
#[derive(Default)]
struct State {
    cluster_roles: HashMap<String, ClusterRole>,
    /// (namespace, name) → rules.
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    cluster_role_bindings: HashMap<String, Binding>,
    /// namespace → name → binding.
    role_bindings: HashMap<String, HashMap<String, Binding>>,
}

impl State {
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) {
        let key = String::from_utf8_lossy(key);
        let Some(rest) = key.strip_prefix(PREFIX) else { return };
        let parts: Vec<&str> = rest.split('/').collect();
        let obj: Option<Value> = value.and_then(|v| serde_json::from_slice(v).ok());
        match parts.as_slice() {
            ["clusterroles", name] => match obj {
                Some(o) => {
                    let labels = o
                        .pointer("/metadata/labels")
                        .and_then(Value::as_object)
                        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
                        .unwrap_or_default();
                    let aggregation = o
                        .pointer("/aggregationRule/clusterRoleSelectors")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(LabelSelector::from_api)
                        .collect();
                    self.cluster_roles
                        .insert(name.to_string(), ClusterRole { rules: rules_of(&o), labels, aggregation });
                }
                None => _ = self.cluster_roles.remove(*name),
            },
            ["roles", ns, name] => match obj {
                Some(o) => _ = self.roles.insert((ns.to_string(), name.to_string()), rules_of(&o)),
                None => _ = self.roles.remove(&(ns.to_string(), name.to_string())),
            },
            ["clusterrolebindings", name] => match obj {
                Some(o) => _ = self.cluster_role_bindings.insert(name.to_string(), Binding::parse(&o, "")),
                None => _ = self.cluster_role_bindings.remove(*name),
            },
            ["rolebindings", ns, name] => match obj {
                Some(o) => {
                    self.role_bindings
                        .entry(ns.to_string())
                        .or_default()
                        .insert(name.to_string(), Binding::parse(&o, ns));
                }
                None => {
                    if let Some(m) = self.role_bindings.get_mut(*ns) {
                        m.remove(*name);
                    }
                }
            },
            _ => {}
        }
    }

    /// A ClusterRole's rules, with those of the roles its aggregation rule selects.
    fn cluster_role_rules(&self, name: &str) -> Vec<PolicyRule> {
        let Some(role) = self.cluster_roles.get(name) else { return Vec::new() };
        let mut rules = role.rules.clone();
        if !role.aggregation.is_empty() {
            for (other, r) in &self.cluster_roles {
                if other != name && role.aggregation.iter().any(|sel| sel.matches(&r.labels)) {
                    for rule in &r.rules {
                        if !rules.contains(rule) {
                            rules.push(rule.clone());
                        }
                    }
                }
            }
        }
        rules
    }

    fn binding_rules(&self, b: &Binding, namespace: &str) -> Vec<PolicyRule> {
        match b.role_kind.as_str() {
            "ClusterRole" => self.cluster_role_rules(&b.role_name),
            "Role" => self.roles.get(&(namespace.to_string(), b.role_name.clone())).cloned().unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Every rule that applies to `user` in `namespace` (cluster-wide ones included).
    fn rules(&self, user: &UserInfo, namespace: &str) -> Vec<PolicyRule> {
        let mut out = Vec::new();
        for b in self.cluster_role_bindings.values().filter(|b| b.applies_to(user)) {
            out.extend(self.binding_rules(b, ""));
        }
        if !namespace.is_empty()
            && let Some(bs) = self.role_bindings.get(namespace)
        {
            for b in bs.values().filter(|b| b.applies_to(user)) {
                out.extend(self.binding_rules(b, namespace));
            }
        }
        out
    }

    fn allows(&self, a: &Attributes) -> bool {
        let check = |rules: &[PolicyRule]| {
            rules.iter().any(|r| {
                if a.is_resource {
                    r.allows_resource(&a.verb, &a.api_group, &a.resource, &a.subresource, &a.name)
                } else {
                    r.allows_path(&a.verb, &a.path)
                }
            })
        };
        for b in self.cluster_role_bindings.values().filter(|b| b.applies_to(&a.user)) {
            if check(&self.binding_rules(b, "")) {
                return true;
            }
        }
        if a.is_resource
            && !a.namespace.is_empty()
            && let Some(bs) = self.role_bindings.get(&a.namespace)
        {
            for b in bs.values().filter(|b| b.applies_to(&a.user)) {
                if check(&self.binding_rules(b, &a.namespace)) {
                    return true;
                }
            }
        }
        false
    }
}

/// The RBAC authorizer of one cluster.
pub struct Rbac {
    state: RwLock<State>,
    /// The mirror task, stopped with the authorizer.
    task: std::sync::Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Rbac {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
    }
}

impl Rbac {
    /// Loads the RBAC objects of `store` and follows their changes until the returned value
    /// is dropped.
    pub async fn start(store: Arc<dyn Store>) -> Result<Arc<Rbac>, vt_store::StoreError> {
        let rbac = Arc::new(Rbac { state: RwLock::new(State::default()), task: Default::default() });
        let task = crate::mirror::follow(store, PREFIX, &rbac, |r, change| {
            let mut st = r.state.write().unwrap_or_else(|p| p.into_inner());
            match change {
                crate::mirror::Change::Reset(items) => {
                    *st = State::default();
                    for (k, v) in items {
                        st.apply(&k, Some(&v));
                    }
                }
                crate::mirror::Change::Put(k, v) => st.apply(k, Some(v)),
                crate::mirror::Change::Delete(k) => st.apply(k, None),
            }
        })
        .await?;
        *rbac.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        Ok(rbac)
    }
}

/// What every authenticated user may do whatever the bindings say, so a broken RBAC setup
/// cannot lock clients out of health and version checks (kube's public-info-viewer).
fn public(a: &Attributes) -> bool {
    !a.is_resource && a.verb == "get" && PUBLIC_PATHS.contains(&a.path.as_str())
}

impl Authorizer for Rbac {
    fn authorize<'a>(&'a self, attrs: &'a Attributes) -> BoxFuture<'a, Decision> {
        Box::pin(async move {
            if attrs.user.in_group(MASTERS) || public(attrs) {
                return Decision::Allow;
            }
            if self.state.read().unwrap_or_else(|p| p.into_inner()).allows(attrs) {
                Decision::Allow
            } else {
                Decision::Deny(String::new())
            }
        })
    }

    fn rules(&self, user: &UserInfo, namespace: &str) -> Option<Vec<PolicyRule>> {
        if user.in_group(MASTERS) {
            return Some(PolicyRule::everything());
        }
        Some(self.state.read().unwrap_or_else(|p| p.into_inner()).rules(user, namespace))
    }

    fn role_rules(&self, kind: &str, namespace: &str, name: &str) -> Option<Vec<PolicyRule>> {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        match kind {
            "ClusterRole" => st.cluster_roles.contains_key(name).then(|| st.cluster_role_rules(name)),
            "Role" => st.roles.get(&(namespace.to_string(), name.to_string())).cloned(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(v: Value) -> PolicyRule {
        crate::object::from_value(v).unwrap()
    }

    #[test]
    fn rules_match_like_kube() {
        let r =
            rule(json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "pods/log", "*/scale"]}));
        assert!(r.allows_resource("get", "", "pods", "", "x"));
        assert!(r.allows_resource("get", "", "pods", "log", "x"));
        assert!(!r.allows_resource("get", "", "pods", "exec", "x"));
        assert!(r.allows_resource("list", "", "deployments", "scale", ""));
        assert!(!r.allows_resource("create", "", "pods", "", ""));
        assert!(!r.allows_resource("get", "apps", "pods", "", ""));
        let named =
            rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"]}));
        assert!(named.allows_resource("get", "", "secrets", "", "a"));
        assert!(!named.allows_resource("get", "", "secrets", "", "b"));
        assert!(!named.allows_resource("get", "", "secrets", "", ""), "a list names no object");
        let urls = rule(json!({"verbs": ["get"], "nonResourceURLs": ["/healthz", "/api/*"]}));
        assert!(urls.allows_path("get", "/healthz") && urls.allows_path("get", "/api/v1"));
        assert!(!urls.allows_path("get", "/apis") && !urls.allows_path("post", "/healthz"));
    }

    #[test]
    fn escalation_is_what_the_owner_does_not_hold() {
        let owner =
            vec![rule(json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "configmaps"]}))];
        let asked = vec![rule(json!({"verbs": ["get", "create"], "apiGroups": [""], "resources": ["pods"]}))];
        let missing = uncovered(&owner, &asked);
        assert_eq!(missing.len(), 1);
        assert_eq!(describe(&missing[0]), r#"{APIGroups:[""], Resources:["pods"], Verbs:["create"]}"#);
        assert!(uncovered(&PolicyRule::everything(), &asked).is_empty());
        let wildcard = vec![rule(json!({"verbs": ["*"], "apiGroups": [""], "resources": ["pods"]}))];
        assert_eq!(uncovered(&owner, &wildcard).len(), 1, "a wildcard is only covered by a wildcard");
    }

    #[test]
    fn bindings_and_aggregation() {
        let mut st = State::default();
        let put = |st: &mut State, key: &str, v: Value| st.apply(key.as_bytes(), Some(v.to_string().as_bytes()));
        put(
            &mut st,
            "/registry/rbac.authorization.k8s.io/clusterroles/agg",
            json!({"aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"agg": "true"}}]}}),
        );
        put(
            &mut st,
            "/registry/rbac.authorization.k8s.io/clusterroles/piece",
            json!({"metadata": {"labels": {"agg": "true"}}, "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]}),
        );
        put(
            &mut st,
            "/registry/rbac.authorization.k8s.io/rolebindings/ns1/b",
            json!({"roleRef": {"kind": "ClusterRole", "name": "agg"}, "subjects": [{"kind": "User", "name": "bob"}, {"kind": "ServiceAccount", "name": "robot"}]}),
        );
        let bob = UserInfo::new("bob", Vec::<String>::new());
        let robot = UserInfo::new("system:serviceaccount:ns1:robot", Vec::<String>::new());
        let attrs = |u: &UserInfo, ns: &str| Attributes {
            user: u.clone(),
            verb: "get".into(),
            is_resource: true,
            namespace: ns.into(),
            resource: "pods".into(),
            ..Default::default()
        };
        assert!(st.allows(&attrs(&bob, "ns1")));
        assert!(st.allows(&attrs(&robot, "ns1")), "service account subject defaults to the binding's namespace");
        assert!(!st.allows(&attrs(&bob, "ns2")));
        st.apply(b"/registry/rbac.authorization.k8s.io/rolebindings/ns1/b", None);
        assert!(!st.allows(&attrs(&bob, "ns1")));
    }
}
