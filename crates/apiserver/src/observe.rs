//! What a request is counted as in metrics: kube-apiserver's `apiserver_request_total` labels
//! (`verb`, `dry_run`, `group`, `version`, `resource`, `subresource`, `scope`, `component`),
//! computed the way its metrics filter computes them, so existing dashboards and alerts apply.
//!
//! Verbs are kube's metric verbs, not RBAC's: `GET`, `LIST`, `WATCH`, `POST` (create), `PUT`
//! (update), `PATCH`, `APPLY` (server-side apply), `DELETE`, `DELETECOLLECTION`, `CONNECT`
//! (exec, attach, port-forward, proxy); anything else is `other`. Label values are bounded:
//! group, version and resource come from the registry (a path naming nothing served counts as
//! resource `""`), subresources from its rows, and `dry_run` is `All` or empty.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method, Uri};

use crate::registry::Registry;
use crate::request::{RequestInfo, parse_query};

/// The labels of one request, as kube-apiserver's metrics give them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RequestLabels {
    /// kube's metric verb (`LIST`, `WATCH`, `POST`, `APPLY`, ...).
    pub verb: &'static str,
    /// `All` for dry runs, else empty.
    pub dry_run: &'static str,
    /// The API group (`""` for core and for non-resource requests).
    pub group: String,
    /// The API version.
    pub version: String,
    /// The resource (plural), if the registry serves it.
    pub resource: String,
    /// The subresource, if the resource has it.
    pub subresource: String,
    /// `resource` (one object), `namespace`, `cluster`, or empty for non-resource requests.
    pub scope: &'static str,
}

impl RequestLabels {
    /// The labels of a request to `uri` with `method`, resolved against `registry`.
    pub fn of(registry: &Registry, method: &Method, uri: &Uri, headers: &HeaderMap) -> RequestLabels {
        let query = parse_query(uri.query());
        let info = RequestInfo::parse(method, uri.path(), &query);
        let dry_run = if query.get("dryRun").is_some_and(|v| v == "All") { "All" } else { "" };
        if !info.is_resource {
            let verb = match *method {
                Method::GET | Method::HEAD => "GET",
                Method::POST => "POST",
                Method::PUT => "PUT",
                Method::PATCH => "PATCH",
                Method::DELETE => "DELETE",
                _ => "other",
            };
            return RequestLabels { verb, dry_run, ..Default::default() };
        }
        let served = registry.get(&info.group, &info.version, &info.resource);
        let subresource = match &served {
            Some(rt) if !info.subresource.is_empty() && rt.subresource(&info.subresource).is_some() => {
                info.subresource.clone()
            }
            _ => String::new(),
        };
        let connect = matches!(subresource.as_str(), "exec" | "attach" | "portforward" | "proxy");
        let verb = match info.verb.as_str() {
            _ if connect => "CONNECT",
            "get" => "GET",
            "list" => "LIST",
            "watch" => "WATCH",
            "create" => "POST",
            "update" => "PUT",
            "patch" if is_apply(headers) => "APPLY",
            "patch" => "PATCH",
            "delete" => "DELETE",
            "deletecollection" => "DELETECOLLECTION",
            _ => "other",
        };
        let scope = if !info.name.is_empty() {
            "resource"
        } else if !info.namespace.is_empty() {
            "namespace"
        } else {
            "cluster"
        };
        match served {
            Some(rt) => RequestLabels {
                verb,
                dry_run,
                group: rt.group.clone(),
                version: rt.version.clone(),
                resource: rt.plural.clone(),
                subresource,
                scope,
            },
            None => RequestLabels { verb, dry_run, scope, ..Default::default() },
        }
    }

    /// Whether this is a watch (a long-running request).
    pub fn is_watch(&self) -> bool {
        self.verb == "WATCH"
    }
}

fn is_apply(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim() == "application/apply-patch+yaml"))
}

/// Observes served requests (the manager's per-tenant metrics).
pub trait RequestObserver: Send + Sync {
    /// A request finished with status `code` after `elapsed`. Watches are reported when they
    /// end, with their whole duration, as kube-apiserver reports them.
    fn observe(&self, labels: &RequestLabels, code: u16, elapsed: Duration);
    /// A long-running request (a watch) started (`+1`) or ended (`-1`).
    fn long_running(&self, labels: &RequestLabels, delta: i64) {
        let _ = (labels, delta);
    }
}

/// Held by a watch's response body: reports the watch's end when the body is dropped.
pub(crate) struct WatchGuard {
    pub observer: Arc<dyn RequestObserver>,
    pub labels: RequestLabels,
    pub started: std::time::Instant,
}

impl WatchGuard {
    pub(crate) fn new(observer: Arc<dyn RequestObserver>, labels: RequestLabels, started: std::time::Instant) -> Self {
        observer.long_running(&labels, 1);
        WatchGuard { observer, labels, started }
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.observer.long_running(&self.labels, -1);
        self.observer.observe(&self.labels, 200, self.started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(method: Method, uri: &str, ctype: Option<&str>) -> RequestLabels {
        let mut h = HeaderMap::new();
        if let Some(c) = ctype {
            h.insert(http::header::CONTENT_TYPE, c.parse().unwrap());
        }
        RequestLabels::of(&Registry::builtin(), &method, &uri.parse().unwrap(), &h)
    }

    /// Pins kube-apiserver's metric verbs and scopes (apiserver/pkg/endpoints/metrics).
    #[test]
    fn verbs_and_scopes_as_kube_counts_them() {
        let l = labels(Method::GET, "/api/v1/namespaces/default/pods", None);
        assert_eq!((l.verb, l.resource.as_str(), l.scope), ("LIST", "pods", "namespace"));
        let l = labels(Method::GET, "/api/v1/pods?watch=1", None);
        assert_eq!((l.verb, l.scope), ("WATCH", "cluster"));
        let l = labels(Method::GET, "/api/v1/watch/namespaces/a/pods", None);
        assert_eq!(l.verb, "WATCH");
        let l = labels(Method::GET, "/apis/apps/v1/namespaces/a/deployments/web", None);
        assert_eq!((l.verb, l.group.as_str(), l.version.as_str(), l.scope), ("GET", "apps", "v1", "resource"));
        let l = labels(Method::POST, "/api/v1/namespaces/a/configmaps?dryRun=All", None);
        assert_eq!((l.verb, l.dry_run), ("POST", "All"));
        let l = labels(Method::PUT, "/apis/apps/v1/namespaces/a/deployments/web/status", None);
        assert_eq!((l.verb, l.subresource.as_str()), ("PUT", "status"));
        let l = labels(Method::PATCH, "/api/v1/namespaces/a/configmaps/c", Some("application/apply-patch+yaml"));
        assert_eq!(l.verb, "APPLY");
        let l = labels(Method::PATCH, "/api/v1/namespaces/a/configmaps/c", Some("application/merge-patch+json"));
        assert_eq!(l.verb, "PATCH");
        let l = labels(Method::DELETE, "/api/v1/namespaces/a/configmaps", None);
        assert_eq!(l.verb, "DELETECOLLECTION");
        let l = labels(Method::POST, "/api/v1/namespaces/a/pods/p/exec?command=ls", None);
        assert_eq!((l.verb, l.subresource.as_str()), ("CONNECT", "exec"));
    }

    /// Label values stay within what the registry serves: unknown paths collapse.
    #[test]
    fn unknown_paths_collapse() {
        let l = labels(Method::GET, "/apis/example.com/v1/widgets-1234", None);
        assert_eq!((l.group.as_str(), l.resource.as_str()), ("", ""));
        let l = labels(Method::GET, "/api/v1/namespaces/a/pods/p/nonsense-42", None);
        assert_eq!((l.resource.as_str(), l.subresource.as_str()), ("pods", ""));
        let l = labels(Method::GET, "/healthz/anything-at-all", None);
        assert_eq!((l.verb, l.resource.as_str(), l.scope), ("GET", "", ""));
        let l = labels(Method::POST, "/api/v1/namespaces/a/configmaps?dryRun=garbage", None);
        assert_eq!(l.dry_run, "");
    }
}
