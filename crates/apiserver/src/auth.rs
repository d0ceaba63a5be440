//! Authentication and authorization.
//!
//! Authentication: a client certificate verified against the server's client CA (the subject's
//! common name is the user, its organizations the groups), or a bearer token checked by a
//! pluggable [`TokenAuthenticator`]. A request with neither is anonymous and gets 401 for
//! everything but the health and version endpoints. Authorization is pluggable
//! ([`Authorizer`]); [`MastersOnly`] lets `system:masters` do everything.

use std::collections::BTreeMap;

use futures::future::BoxFuture;

/// Who is making a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// The user name.
    pub name: String,
    /// A unique identifier, if the authenticator has one.
    pub uid: String,
    /// The groups, including `system:authenticated` for authenticated users.
    pub groups: Vec<String>,
    /// Extra attributes (e.g. the bound pod of a ServiceAccount token).
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The group of every authenticated user.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The group that may do everything.
pub const MASTERS: &str = "system:masters";

impl UserInfo {
    /// An authenticated user with the given groups (`system:authenticated` is added).
    pub fn new(name: impl Into<String>, groups: impl IntoIterator<Item = impl Into<String>>) -> UserInfo {
        let mut groups: Vec<String> = groups.into_iter().map(Into::into).collect();
        if !groups.iter().any(|g| g == AUTHENTICATED) {
            groups.push(AUTHENTICATED.to_string());
        }
        UserInfo { name: name.into(), groups, ..Default::default() }
    }

    /// The anonymous user.
    pub fn anonymous() -> UserInfo {
        UserInfo {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            ..Default::default()
        }
    }

    /// Whether this is the anonymous user.
    pub fn is_anonymous(&self) -> bool {
        self.name == "system:anonymous"
    }

    /// Whether the user is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// Checks bearer tokens.
pub trait TokenAuthenticator: Send + Sync {
    /// The user the token belongs to, or `None` if it is not valid.
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Option<UserInfo>>;

    /// Like `authenticate`, for a token meant for one of `audiences` (empty: the API server's
    /// own); also returns the audiences it was accepted for (TokenReview reports them).
    fn authenticate_audiences<'a>(
        &'a self,
        token: &'a str,
        audiences: &'a [String],
    ) -> BoxFuture<'a, Option<(UserInfo, Vec<String>)>> {
        Box::pin(async move { self.authenticate(token).await.map(|u| (u, audiences.to_vec())) })
    }
}

/// What a request wants to do, for authorization.
#[derive(Clone, Debug, Default)]
pub struct Attributes {
    /// The requesting user.
    pub user: UserInfo,
    /// The verb (get, list, create, ... or the HTTP method for non-resource paths).
    pub verb: String,
    /// Whether the request is for a resource.
    pub is_resource: bool,
    /// The namespace.
    pub namespace: String,
    /// The API group.
    pub api_group: String,
    /// The resource.
    pub resource: String,
    /// The subresource.
    pub subresource: String,
    /// The object name.
    pub name: String,
    /// The request path (non-resource requests).
    pub path: String,
}

/// An authorization decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Denied, with an optional reason appended to the message.
    Deny(String),
}

/// Decides whether a request may proceed.
pub trait Authorizer: Send + Sync {
    /// The decision for `attrs`.
    fn authorize<'a>(&'a self, attrs: &'a Attributes) -> BoxFuture<'a, Decision>;

    /// Every rule `user` holds in `namespace` (cluster-wide ones included), for rule reviews
    /// and the RBAC escalation check; `None` when the authorizer is not rule-based.
    fn rules(&self, _user: &UserInfo, _namespace: &str) -> Option<Vec<crate::rbac::PolicyRule>> {
        None
    }

    /// The rules of a Role (in `namespace`) or ClusterRole, if it exists.
    fn role_rules(&self, _kind: &str, _namespace: &str, _name: &str) -> Option<Vec<crate::rbac::PolicyRule>> {
        None
    }
}

/// Paths every user, even anonymous, may read (kube-apiserver's `system:public-info-viewer`).
pub const PUBLIC_PATHS: &[&str] = &["/healthz", "/livez", "/readyz", "/version", "/version/"];

/// Lets `system:masters` do everything and authenticated users read discovery and review
/// their own access (the default `system:discovery` and `system:basic-user` bindings); denies
/// the rest.
pub struct MastersOnly;

impl Authorizer for MastersOnly {
    fn authorize<'a>(&'a self, attrs: &'a Attributes) -> BoxFuture<'a, Decision> {
        Box::pin(async move {
            if attrs.user.in_group(MASTERS) {
                return Decision::Allow;
            }
            // system:basic-user: every authenticated user may ask who they are and what they
            // may do.
            let self_review = attrs.is_resource
                && attrs.verb == "create"
                && matches!(
                    (attrs.api_group.as_str(), attrs.resource.as_str()),
                    ("authorization.k8s.io", "selfsubjectaccessreviews" | "selfsubjectrulesreviews")
                        | ("authentication.k8s.io", "selfsubjectreviews")
                );
            if self_review && attrs.user.in_group(AUTHENTICATED) {
                return Decision::Allow;
            }
            if !attrs.is_resource && attrs.verb == "get" {
                let p = attrs.path.as_str();
                let public = PUBLIC_PATHS.contains(&p)
                    || p.starts_with("/healthz/")
                    || p.starts_with("/livez/")
                    || p.starts_with("/readyz/");
                let discovery = p == "/api"
                    || p == "/apis"
                    || p.starts_with("/api/")
                    || p.starts_with("/apis/")
                    || p.starts_with("/openapi/");
                if public || (discovery && attrs.user.in_group(AUTHENTICATED)) {
                    return Decision::Allow;
                }
            }
            Decision::Deny(String::new())
        })
    }
}

/// The message kube-apiserver gives when RBAC denies a request.
pub fn forbidden_message(attrs: &Attributes) -> String {
    let user = &attrs.user.name;
    if !attrs.is_resource {
        return format!("User {user:?} cannot {} path {:?}", attrs.verb, attrs.path);
    }
    let resource = if attrs.subresource.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}/{}", attrs.resource, attrs.subresource)
    };
    let scope = if attrs.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace {:?}", attrs.namespace)
    };
    format!("User {user:?} cannot {} resource {resource:?} in API group {:?} {scope}", attrs.verb, attrs.api_group)
}

/// Static bearer tokens, as kube-apiserver's `--token-auth-file`: a CSV of
/// `token,user,uid[,"group1,group2"]` lines (`#` starts a comment).
pub struct StaticTokens {
    tokens: BTreeMap<String, UserInfo>,
}

impl StaticTokens {
    /// Parses the CSV text of a token file.
    pub fn parse(text: &str) -> Result<StaticTokens, String> {
        let mut tokens = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = split_csv(line);
            if fields.len() < 3 || fields[0].is_empty() || fields[1].is_empty() {
                return Err(format!("line {}: expected token,user,uid[,groups]", n + 1));
            }
            let groups: Vec<String> = fields
                .get(3)
                .map(|g| g.split(',').map(str::trim).filter(|g| !g.is_empty()).map(String::from).collect())
                .unwrap_or_default();
            let mut user = UserInfo::new(fields[1].clone(), groups);
            user.uid = fields[2].clone();
            if tokens.insert(fields[0].clone(), user).is_some() {
                return Err(format!("line {}: duplicate token", n + 1));
            }
        }
        Ok(StaticTokens { tokens })
    }
}

/// Splits one CSV line, honouring double quotes.
fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for ch in line.chars() {
        match ch {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur).trim().to_string()),
            c => cur.push(c),
        }
    }
    out.push(cur.trim().to_string());
    out
}

impl TokenAuthenticator for StaticTokens {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Option<UserInfo>> {
        Box::pin(async move { self.tokens.get(token).cloned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_lines() {
        let t = StaticTokens::parse("# comment\nsecret1,alice,u1,\"devs,ops\"\nsecret2,bob,u2\n").unwrap();
        let alice = t.tokens.get("secret1").unwrap();
        assert_eq!((alice.name.as_str(), alice.uid.as_str()), ("alice", "u1"));
        assert_eq!(alice.groups, vec!["devs", "ops", "system:authenticated"]);
        assert_eq!(t.tokens.get("secret2").unwrap().groups, vec!["system:authenticated"]);
        assert!(StaticTokens::parse("only,two").is_err());
        assert!(StaticTokens::parse("a,b,c\na,d,e").is_err());
    }
}
