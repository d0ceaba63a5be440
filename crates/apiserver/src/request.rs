//! What a request is about: kube-apiserver's `RequestInfo` (verb, group, version, namespace,
//! resource, subresource, name) parsed from the method, path and query.

use std::collections::HashMap;

use http::Method;

/// A parsed request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// Whether the path addresses a resource (`/api/...` or `/apis/...` below a group version).
    pub is_resource: bool,
    /// The Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection,
    /// or for non-resource paths the lower-cased HTTP method.
    pub verb: String,
    /// `api` or `apis`.
    pub prefix: String,
    /// The API group (`""` for core).
    pub group: String,
    /// The API version.
    pub version: String,
    /// The namespace, if the path has one.
    pub namespace: String,
    /// The resource (plural).
    pub resource: String,
    /// The subresource, e.g. `status`.
    pub subresource: String,
    /// The object name.
    pub name: String,
    /// The path's segments.
    pub parts: Vec<String>,
    /// The request path.
    pub path: String,
}

/// Percent-decodes a path segment; invalid escapes are kept literally.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Parses a query string into a map (last value wins, like Go's `Query().Get`).
pub fn parse_query(query: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = unescape(&k.replace('+', " "));
        let v = unescape(&v.replace('+', " "));
        out.entry(k).or_insert(v);
    }
    out
}

/// A boolean query parameter as kube-apiserver converts it (apimachinery's
/// `Convert_Slice_string_To_bool`): absent is false; present, only `0` and `false` (any case)
/// are false, and anything else — `true`, `True`, `1`, even an empty value — is true.
pub fn query_bool(query: &HashMap<String, String>, name: &str) -> bool {
    query.get(name).is_some_and(|v| parse_bool(v))
}

/// A present boolean parameter's value, by kube's rule (see [`query_bool`]).
pub fn parse_bool(v: &str) -> bool {
    !(v == "0" || v.eq_ignore_ascii_case("false"))
}

/// Whether a request is a watch: `watch` true by kube's rule, or the legacy `/watch/` path.
pub fn is_watch(uri: &http::Uri) -> bool {
    let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let after_version = match segments.first() {
        Some(&"api") => segments.get(2),
        Some(&"apis") => segments.get(3),
        _ => None,
    };
    after_version == Some(&"watch")
        || uri.query().is_some_and(|q| {
            // Go's Query().Get: the first value of the parameter.
            q.split('&').find_map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k == "watch").then(|| parse_bool(&unescape(v)))
            }) == Some(true)
        })
}

impl RequestInfo {
    /// Parses the request line the way kube-apiserver's `RequestInfoFactory` does.
    pub fn parse(method: &Method, path: &str, query: &HashMap<String, String>) -> RequestInfo {
        let mut info =
            RequestInfo { path: path.to_string(), verb: method.as_str().to_ascii_lowercase(), ..Default::default() };
        let mut parts: Vec<String> =
            path.trim_matches('/').split('/').filter(|p| !p.is_empty()).map(unescape).collect();
        info.parts = parts.clone();
        if parts.len() < 3 || !(parts[0] == "api" || parts[0] == "apis") {
            return info;
        }
        info.prefix = parts.remove(0);
        if info.prefix == "api" {
            info.version = parts.remove(0);
        } else {
            if parts.len() < 3 {
                // /apis/<group>/<version> and shorter are discovery, not resources.
                return info;
            }
            info.group = parts.remove(0);
            info.version = parts.remove(0);
        }
        info.is_resource = true;
        // The legacy /watch/ prefix.
        let mut watch_prefix = false;
        if parts.first().map(String::as_str) == Some("watch") {
            parts.remove(0);
            watch_prefix = true;
        }
        info.verb = match *method {
            Method::POST => "create",
            Method::GET | Method::HEAD => "get",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        }
        .to_string();
        if watch_prefix {
            info.verb = "watch".into();
        }
        if parts.first().map(String::as_str) == Some("namespaces") && parts.len() > 1 {
            info.namespace = parts[1].clone();
            // /namespaces/<ns>/<resource>... addresses a resource in the namespace, except the
            // namespace's own subresources.
            if parts.len() > 2 && parts[2] != "status" && parts[2] != "finalize" {
                parts.drain(..2);
            }
        }
        info.resource = parts.first().cloned().unwrap_or_default();
        info.name = parts.get(1).cloned().unwrap_or_default();
        info.subresource = parts.get(2).cloned().unwrap_or_default();
        if info.resource == "namespaces" {
            // /api/v1/namespaces/<name>: the namespace is the object.
            info.namespace.clear();
        }
        if info.name.is_empty() && info.verb == "get" {
            let watching = query_bool(query, "watch");
            info.verb = if watching || watch_prefix { "watch" } else { "list" }.into();
        }
        if info.name.is_empty() && info.verb == "delete" {
            info.verb = "deletecollection".into();
        }
        if watch_prefix && !info.name.is_empty() {
            info.verb = "watch".into();
        }
        info
    }

    /// The kind of path for logs and metrics.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(method: Method, path: &str, query: &str) -> RequestInfo {
        RequestInfo::parse(&method, path, &parse_query(Some(query)))
    }

    #[test]
    fn resource_paths_parse_like_kube_apiserver() {
        let i = parse(Method::GET, "/api/v1/namespaces/default/pods/web/status", "");
        assert_eq!(
            (
                i.verb.as_str(),
                i.group.as_str(),
                i.version.as_str(),
                i.namespace.as_str(),
                i.resource.as_str(),
                i.name.as_str(),
                i.subresource.as_str()
            ),
            ("get", "", "v1", "default", "pods", "web", "status")
        );
        let i = parse(Method::GET, "/apis/apps/v1/deployments", "watch=true");
        assert_eq!((i.verb.as_str(), i.group.as_str(), i.resource.as_str()), ("watch", "apps", "deployments"));
        let i = parse(Method::GET, "/api/v1/namespaces/kube-system", "");
        assert_eq!(
            (i.verb.as_str(), i.resource.as_str(), i.name.as_str(), i.namespace.as_str()),
            ("get", "namespaces", "kube-system", "")
        );
        let i = parse(Method::PUT, "/api/v1/namespaces/demo/finalize", "");
        assert_eq!(
            (i.verb.as_str(), i.resource.as_str(), i.name.as_str(), i.subresource.as_str()),
            ("update", "namespaces", "demo", "finalize")
        );
        let i = parse(Method::DELETE, "/api/v1/namespaces/default/configmaps", "");
        assert_eq!(i.verb, "deletecollection");
        let i = parse(Method::GET, "/api/v1/watch/namespaces/default/pods", "");
        assert_eq!((i.verb.as_str(), i.namespace.as_str(), i.resource.as_str()), ("watch", "default", "pods"));
        let i = parse(Method::GET, "/apis/apps/v1", "");
        assert!(!i.is_resource);
        let i = parse(Method::GET, "/api/v1/namespaces/a%2Fb/pods", "");
        assert_eq!(i.namespace, "a/b");
    }

    /// Pins apimachinery's `Convert_Slice_string_To_bool`: the official Python client sends
    /// `watch=True`, and only `0`/`false` in any case are false.
    #[test]
    fn booleans_convert_like_apimachinery() {
        for (q, want) in [
            ("watch=true", true),
            ("watch=True", true),
            ("watch=TRUE", true),
            ("watch=1", true),
            ("watch=yes", true),
            ("watch=", true),
            ("watch", true),
            ("watch=false", false),
            ("watch=False", false),
            ("watch=0", false),
            ("", false),
            ("watchx=true", false),
        ] {
            assert_eq!(query_bool(&parse_query(Some(q)), "watch"), want, "{q}");
            let uri: http::Uri = format!("/api/v1/pods?{q}").parse().unwrap();
            assert_eq!(is_watch(&uri), want, "{q}");
        }
        let i = parse(Method::GET, "/api/v1/pods", "watch=True");
        assert_eq!(i.verb, "watch");
    }

    #[test]
    fn query_values_are_decoded() {
        let q = parse_query(Some("labelSelector=app%3Dweb%2Ctier+in+(a)&limit=5&watch"));
        assert_eq!(q["labelSelector"], "app=web,tier in (a)");
        assert_eq!(q["limit"], "5");
        assert_eq!(q["watch"], "");
    }
}
