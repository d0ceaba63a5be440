//! vt's Kubernetes-compatible API server.
//!
//! One [`ApiServer`] serves one virtual cluster over a [`vt_store::Store`]: kube-apiserver's
//! URLs, verbs, discovery, watch and error semantics, so kubectl, client-go, kube-rs and Helm
//! work against it unchanged. Requests flow
//!
//! ```text
//! TLS (serve.rs) → authn (client cert / bearer) → RequestInfo (request.rs) → authz (auth.rs)
//!   → discovery (discovery.rs) | REST (rest.rs, watch.rs) → strategy (defaults, validation)
//!   → store; watch fan-out through one cache per resource type (watchcache.rs)
//! ```

// `ApiError` carries a whole `metav1.Status` (message, details, causes); errors are the cold
// path, and boxing it would only move the allocation.
#![allow(clippy::result_large_err)]

pub mod admission;
mod aggregator;
pub mod auth;
pub mod body;
mod bootstrap;
pub mod cel;
pub mod crd;
mod discovery;
pub mod egress;
pub mod fairness;
mod fields;
pub mod gojson;
pub mod ipalloc;
pub mod metricsapi;
mod mirror;
mod namespaces;
pub mod negotiate;
pub mod object;
pub mod observe;
mod openapi;
mod outbound;
pub mod podsecurity;
pub mod protobuf;
pub mod quantity;
pub mod rbac;
pub mod registry;
pub mod request;
mod rest;
pub mod selector;
pub mod serve;
pub mod serviceaccount;
pub mod smp;
pub(crate) mod sni;
pub mod ssa;
pub mod status;
mod strategy;
pub mod table;
pub mod validation;
mod watch;
pub mod watchcache;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use vt_store::Store;

use crate::auth::{Attributes, Authorizer, Decision, TokenAuthenticator, UserInfo};
use crate::body::Body;
use crate::registry::Registry;
use crate::request::RequestInfo;
use crate::status::ApiError;
use crate::watchcache::WatchCache;

/// Request bodies larger than this are refused with 413, as kube-apiserver does.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// The Kubernetes version vt's API server reports and implements.
pub const KUBERNETES_MINOR: &str = "33";

/// Settings of an API server.
#[derive(Clone)]
pub struct Config {
    /// The store holding this cluster's objects.
    pub store: Arc<dyn Store>,
    /// Decides what each user may do.
    pub authorizer: Arc<dyn Authorizer>,
    /// Checks bearer tokens (tried in order).
    pub tokens: Vec<Arc<dyn TokenAuthenticator>>,
    /// Allocates Service cluster IPs.
    pub cluster_ips: Arc<dyn ipalloc::ClusterIpAllocator>,
    /// The address and port clients reach this server at (the `kubernetes` Service's
    /// endpoint).
    pub advertise: std::net::SocketAddr,
    /// A name for logs and metrics (the tenant).
    pub name: String,
    /// How often watches with `allowWatchBookmarks` get a bookmark (kube-apiserver: a minute).
    pub bookmark_interval: std::time::Duration,
    /// Issues and verifies ServiceAccount tokens (TokenRequest, OIDC discovery, legacy token
    /// Secrets); `None` serves none of them.
    pub service_accounts: Option<Arc<serviceaccount::Issuer>>,
    /// Request limits of this cluster (429 beyond them); `None` for none.
    pub limits: Option<Arc<fairness::Limits>>,
    /// Told of every request (metrics); `None` for nobody.
    pub observer: Option<Arc<dyn RequestObserver>>,
    /// Where Services really live (a virtual cluster's host); `None`: here, with
    /// [`Config::cluster_ips`] and this server's node ports.
    pub services: Option<Arc<dyn ipalloc::ServiceBackend>>,
    /// Where pods really run, for their `log`, `exec`, `attach` and `portforward`
    /// subresources; `None` answers that no node is reachable.
    pub pods: Option<Arc<dyn PodConnector>>,
    /// Decides where webhooks may be called; `None`: anywhere their configurations say, with
    /// Services resolved through this cluster's own Endpoints (a standalone server, whose
    /// users are its operators).
    pub egress: Option<Arc<dyn egress::Egress>>,
    /// Kinds (group, plural) the host provides (a virtual cluster's StorageClasses and other
    /// classes): only [`HOST_SYNC_USER`] writes them.
    pub host_provided: Vec<(String, String)>,
    /// Says whether this server may no longer write (a manager replica that lost its
    /// ownership of the cluster): writes then get 503 before they reach the store.
    pub fenced: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
    /// The Pod Security level every namespace enforces at least (PodSecurity admission;
    /// namespace labels may tighten it); `None`: no PodSecurity admission.
    pub pod_security: Option<podsecurity::Level>,
    /// Run the ServiceAccount admission plugin on pods (needs the ServiceAccount controller
    /// running, which creates the `default` ServiceAccounts pods default to).
    pub service_account_admission: bool,
    /// What this server presents to aggregated API servers; `None`: it proxies to them
    /// without a client certificate (and they cannot trust its headers).
    pub front_proxy: Option<Arc<FrontProxy>>,
    /// Where pods' and nodes' resource usage comes from (`metrics.k8s.io`, a virtual cluster's
    /// host); `None`: the group is served only by an APIService of the cluster's own.
    pub metrics: Option<Arc<dyn metricsapi::MetricsSource>>,
}

/// The front proxy: what this server presents to the aggregated API servers it proxies to,
/// and publishes for them in `kube-system/extension-apiserver-authentication`
/// (kube-apiserver's `--proxy-client-cert-file`/`--proxy-client-key-file`,
/// `--requestheader-client-ca-file` and `--client-ca-file`).
pub struct FrontProxy {
    /// The CA that signed [`FrontProxy::client`] (PEM), trusted by aggregated servers for it
    /// alone.
    pub ca_pem: String,
    /// The proxy's client certificate (`CN=front-proxy-client`) and key.
    pub client: vt_pki::CertKey,
    /// The CA of this cluster's client certificates (PEM).
    pub client_ca_pem: String,
}

impl FrontProxy {
    /// The front proxy of a cluster whose client certificates `client_ca_pem` signs, with a
    /// client certificate freshly issued by `ca`.
    pub fn issue(ca: &vt_pki::Ca, client_ca_pem: &str) -> Result<FrontProxy, String> {
        let client =
            ca.issue_client("front-proxy-client", None, vt_pki::DEFAULT_VALIDITY).map_err(|e| e.to_string())?;
        Ok(FrontProxy { ca_pem: ca.cert_pem().to_string(), client, client_ca_pem: client_ca_pem.to_string() })
    }
}

impl Config {
    /// An API server with nothing but `store`: system:masters-only authorization, Service
    /// IPs from 10.96.0.0/12, no tokens, limits, observer, syncer backends, admission extras
    /// or fence — what benchmarks and tests that drive an API server in process start from
    /// (`Config { pods: ..., ..Config::basic(store, name) }` for more).
    pub fn basic(store: Arc<dyn Store>, name: &str) -> Config {
        let cluster_ips = ipalloc::IpAddressAllocator::new("10.96.0.0/12").map(Arc::new);
        Config {
            store,
            authorizer: Arc::new(auth::MastersOnly),
            tokens: Vec::new(),
            cluster_ips: match cluster_ips {
                Ok(a) => a,
                Err(e) => unreachable!("a constant CIDR: {e}"),
            },
            advertise: std::net::SocketAddr::from(([127, 0, 0, 1], 6443)),
            name: name.to_string(),
            bookmark_interval: std::time::Duration::from_secs(60),
            service_accounts: None,
            limits: None,
            observer: None,
            services: None,
            pods: None,
            egress: None,
            host_provided: Vec::new(),
            fenced: None,
            pod_security: None,
            service_account_admission: false,
            front_proxy: None,
            metrics: None,
        }
    }
}

/// Connects the streaming subresources of pods (`log`, `exec`, `attach`, `portforward`) to where
/// the pods run. Requests arrive authorized, with the HTTP upgrade (WebSocket or SPDY) still
/// pending in the request's extensions, so a connector can pass the upgraded stream through.
pub trait PodConnector: Send + Sync {
    /// Serves `req` for `pod` (the stored object) and `subresource`.
    fn connect<'a>(
        &'a self,
        pod: &'a Value,
        subresource: &'a str,
        req: Request<Bytes>,
    ) -> futures::future::BoxFuture<'a, Response<Body>>;
}

pub use observe::{RequestLabels, RequestObserver};

/// The user the in-process controllers and syncer act as (`system:kube-controller-manager`):
/// the only one that may write what [`Config::host_provided`] lists.
pub const HOST_SYNC_USER: &str = "system:kube-controller-manager";

/// A Kubernetes API server for one virtual cluster. Cloning is cheap.
#[derive(Clone)]
pub struct ApiServer {
    inner: Arc<Inner>,
}

/// A reference to an [`ApiServer`] that does not keep it running (in-process clients hold
/// these, so a stopped cluster really stops).
#[derive(Clone)]
pub struct WeakApiServer {
    inner: std::sync::Weak<Inner>,
}

impl WeakApiServer {
    /// The server, if it still runs.
    pub fn upgrade(&self) -> Option<ApiServer> {
        self.inner.upgrade().map(|inner| ApiServer { inner })
    }
}

struct Inner {
    config: Config,
    registry: Registry,
    caches: tokio::sync::Mutex<HashMap<String, Arc<WatchCache>>>,
    /// Namespaces and whether each is terminating, kept by the namespace task from the
    /// namespaces watch (the NamespaceLifecycle check reads it, falling back to the store).
    namespaces: std::sync::RwLock<HashMap<String, bool>>,
    /// The cluster's admission webhooks, mirrored from the store.
    webhooks: std::sync::OnceLock<Arc<admission::Webhooks>>,
    /// OpenAPI documents that include custom resources: (registry generation, bytes) by path.
    documents: Mutex<HashMap<String, (u64, Bytes)>>,
    /// The aggregator's view of the APIServices.
    aggregator: aggregator::State,
    /// Stops the namespace index and the CRD tasks when the server is dropped.
    _background: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Dropped with the server: its watches end (clients resume, as after any restart), so a
    /// stopped or sleeping cluster holds nothing.
    stopped: tokio::sync::watch::Sender<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in self._background.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            task.abort();
        }
    }
}

impl ApiServer {
    /// Creates a server and bootstraps its cluster (default namespaces, the `kubernetes`
    /// Service, default RBAC roles) if that has not happened yet.
    pub async fn new(config: Config) -> Result<ApiServer, ApiError> {
        let api = ApiServer {
            inner: Arc::new(Inner {
                config,
                registry: Registry::builtin(),
                caches: tokio::sync::Mutex::new(HashMap::new()),
                namespaces: std::sync::RwLock::new(HashMap::new()),
                documents: Mutex::new(HashMap::new()),
                aggregator: Default::default(),
                webhooks: std::sync::OnceLock::new(),
                _background: Mutex::new(Vec::new()),
                stopped: tokio::sync::watch::channel(()).0,
            }),
        };
        let webhooks = admission::Webhooks::start(api.store().clone())
            .await
            .map_err(|e| status::from_store(e, &Default::default(), ""))?;
        let _ = api.inner.webhooks.set(webhooks);
        bootstrap::run(&api).await?;
        // Custom resources are served from the first request on, also after a restart.
        crd::load(&api).await;
        let namespace_index = tokio::spawn(namespaces::run(Arc::downgrade(&api.inner)));
        let crds = tokio::spawn(crd::run(Arc::downgrade(&api.inner)));
        let mut background = api.inner._background.lock().unwrap_or_else(|p| p.into_inner());
        background.push(namespace_index.abort_handle());
        background.push(crds.abort_handle());
        background.push(tokio::spawn(aggregator::run(api.downgrade())).abort_handle());
        drop(background);
        Ok(api)
    }

    /// A reference that does not keep the server running.
    pub fn downgrade(&self) -> WeakApiServer {
        WeakApiServer { inner: Arc::downgrade(&self.inner) }
    }

    /// A signal that fires (its `changed()` errs) once this server is dropped.
    pub(crate) fn stopped(&self) -> tokio::sync::watch::Receiver<()> {
        self.inner.stopped.subscribe()
    }

    /// An identity of this server, distinct from every other live server in the process.
    pub(crate) fn id(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.config.store
    }

    /// The registry of served types.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The admission webhooks (once the server is running).
    pub(crate) fn webhooks(&self) -> Option<&Arc<admission::Webhooks>> {
        self.inner.webhooks.get()
    }

    /// A document derived from this server's registry, rebuilt when the registry changes.
    pub(crate) fn cached_document(&self, key: &str, build: impl FnOnce() -> Vec<u8>) -> Bytes {
        let generation = self.registry().generation();
        let mut docs = self.inner.documents.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((g, b)) = docs.get(key)
            && *g == generation
        {
            return b.clone();
        }
        let b = Bytes::from(build());
        docs.insert(key.to_string(), (generation, b.clone()));
        b
    }

    /// The server's settings.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The aggregator's view of the APIServices.
    pub(crate) fn aggregator(&self) -> &aggregator::State {
        &self.inner.aggregator
    }

    /// A stored object's JSON (without its resourceVersion), if `key` holds one: for reads of
    /// a few objects of other kinds than the request's (Services, namespaces, ...).
    pub(crate) async fn stored(&self, key: &str) -> Option<Value> {
        match self.store().get(key.as_bytes()).await {
            Ok(Some(kv)) => serde_json::from_slice(&kv.value).ok(),
            _ => None,
        }
    }

    /// Whether namespace `name` is terminating, if the namespace index knows it.
    pub(crate) fn namespace_terminating(&self, name: &str) -> Option<bool> {
        self.inner.namespaces.read().unwrap_or_else(|p| p.into_inner()).get(name).copied()
    }

    /// Records a namespace's state (`None`: deleted) in the namespace index.
    pub(crate) fn index_namespace(&self, name: &str, terminating: Option<bool>) {
        let mut idx = self.inner.namespaces.write().unwrap_or_else(|p| p.into_inner());
        match terminating {
            Some(t) => idx.insert(name.to_string(), t),
            None => idx.remove(name),
        };
    }

    /// The shared watch of the objects under `prefix`, started on first use.
    pub(crate) async fn cache(&self, prefix: &str) -> Result<Arc<WatchCache>, ApiError> {
        let mut caches = self.inner.caches.lock().await;
        if let Some(c) = caches.get(prefix) {
            return Ok(c.clone());
        }
        let cache = WatchCache::start(self.store().clone(), Bytes::copy_from_slice(prefix.as_bytes()))
            .await
            .map_err(|e| status::from_store(e, &Default::default(), ""))?;
        caches.insert(prefix.to_string(), cache.clone());
        Ok(cache)
    }

    /// Serves one HTTP request. `cert_user` is the user of a verified client certificate.
    pub async fn handle(&self, req: Request<hyper::body::Incoming>, cert_user: Option<UserInfo>) -> Response<Body> {
        let started = std::time::Instant::now();
        let observer = self.inner.config.observer.clone();
        let labels =
            observer.as_ref().map(|_| RequestLabels::of(self.registry(), req.method(), req.uri(), req.headers()));
        let long_running = request::is_watch(req.uri());
        let admission = match &self.inner.config.limits {
            Some(l) => match l.admit(long_running).await {
                Some(admitted) => admitted,
                None => {
                    let resp = error_response(&ApiError::too_many_requests(1));
                    if let (Some(o), Some(l)) = (&observer, &labels) {
                        o.observe(l, resp.status().as_u16(), started.elapsed());
                    }
                    return resp;
                }
            },
            None => fairness::Admission::Free,
        };
        // A watch's slot lives as long as its stream; a request's slot and seat until it is
        // answered (the seat given back while it waits on commits and webhooks).
        let (watch_slot, _slot, seat) = match admission {
            fairness::Admission::Watch(slot) => (Some(slot), None, None),
            fairness::Admission::Request(slot, seat) => (None, Some(slot), seat),
            fairness::Admission::Free => (None, None, None),
        };
        let mut resp = match (&self.inner.config.limits, seat) {
            (Some(limits), Some(seat)) => limits.seated(Some(seat), self.handle_inner(req, cert_user)).await,
            _ => self.handle_inner(req, cert_user).await,
        };
        if let Some(slot) = watch_slot {
            resp = resp.map(|b| body::guarded(b, slot));
        }
        match (observer, labels) {
            // A watch is counted when it ends, with its whole duration (as kube-apiserver).
            (Some(o), Some(l)) if l.is_watch() && resp.status() == http::StatusCode::OK => {
                let guard = observe::WatchGuard::new(o, l, started);
                resp.map(|b| body::guarded(b, guard))
            }
            (Some(o), Some(l)) => {
                o.observe(&l, resp.status().as_u16(), started.elapsed());
                resp
            }
            _ => resp,
        }
    }

    async fn handle_inner(&self, req: Request<hyper::body::Incoming>, cert_user: Option<UserInfo>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return error_response(&ApiError::too_large(MAX_BODY));
            }
            Err(e) => {
                return error_response(&ApiError::bad_request(format!("unable to read the request body: {e}")));
            }
        };
        let user = match self.authenticate(&parts.headers, cert_user).await {
            Ok(u) => u,
            Err(e) => return error_response(&e),
        };
        let user = match self.impersonate(&parts.headers, user).await {
            Ok(u) => u,
            Err(e) => return error_response(&e),
        };
        self.handle_as(Request::from_parts(parts, body), user).await
    }

    /// Kubernetes impersonation (`Impersonate-User`, `-Group`, `-Uid`, `-Extra-<key>`): the
    /// requester needs the `impersonate` verb on each (users, groups, serviceaccounts, uids,
    /// userextras/<key>); the request then runs as the impersonated user.
    async fn impersonate(&self, headers: &http::HeaderMap, requester: UserInfo) -> Result<UserInfo, ApiError> {
        let values = |name: &str| -> Vec<String> {
            headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect()
        };
        let user = values("impersonate-user").into_iter().next();
        let groups = values("impersonate-group");
        let uid = values("impersonate-uid").into_iter().next();
        let mut extra: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (k, v) in headers {
            if let Some(key) = k.as_str().strip_prefix("impersonate-extra-")
                && let Ok(v) = v.to_str()
            {
                let key = percent_decode(key);
                extra.entry(key).or_default().push(v.to_string());
            }
        }
        let Some(name) = user else {
            if !groups.is_empty() || uid.is_some() || !extra.is_empty() {
                return Err(ApiError::internal(
                    "requested [Impersonate-Group/Uid/Extra] without impersonating a user".to_string(),
                ));
            }
            return Ok(requester);
        };
        let check = |verb_target: (&'static str, &'static str, String, String)| {
            let (group, resource, ns, target) = verb_target;
            Attributes {
                user: requester.clone(),
                verb: "impersonate".into(),
                is_resource: true,
                namespace: ns,
                api_group: group.into(),
                resource: resource.into(),
                name: target,
                ..Default::default()
            }
        };
        let mut asks = Vec::new();
        match name.strip_prefix("system:serviceaccount:").and_then(|r| r.split_once(':')) {
            Some((ns, sa)) => asks.push(check(("", "serviceaccounts", ns.to_string(), sa.to_string()))),
            None => asks.push(check(("", "users", String::new(), name.clone()))),
        }
        for g in &groups {
            asks.push(check(("", "groups", String::new(), g.clone())));
        }
        if let Some(u) = &uid {
            asks.push(check(("authentication.k8s.io", "uids", String::new(), u.clone())));
        }
        for (key, vs) in &extra {
            for v in vs {
                let mut a = check(("authentication.k8s.io", "userextras", String::new(), v.clone()));
                a.subresource = key.clone();
                asks.push(a);
            }
        }
        for a in &asks {
            if let Decision::Deny(_) = self.inner.config.authorizer.authorize(a).await {
                let gr = status::GroupResource::new(a.api_group.clone(), a.resource.clone());
                let what = if a.subresource.is_empty() {
                    a.resource.clone()
                } else {
                    format!("{}/{}", a.resource, a.subresource)
                };
                let scope = if a.namespace.is_empty() {
                    "at the cluster scope".to_string()
                } else {
                    format!("in the namespace {:?}", a.namespace)
                };
                return Err(ApiError::forbidden(
                    &gr,
                    &a.name,
                    &format!(
                        "User {:?} cannot impersonate resource {what:?} in API group {:?} {scope}",
                        requester.name, a.api_group
                    ),
                ));
            }
        }
        let mut out = UserInfo { name: name.clone(), uid: uid.unwrap_or_default(), groups, extra };
        if let Some((ns, _)) = name.strip_prefix("system:serviceaccount:").and_then(|r| r.split_once(':')) {
            for g in ["system:serviceaccounts".to_string(), format!("system:serviceaccounts:{ns}")] {
                if !out.groups.contains(&g) {
                    out.groups.push(g);
                }
            }
        }
        if name != "system:anonymous" && !out.in_group(auth::AUTHENTICATED) {
            out.groups.push(auth::AUTHENTICATED.into());
        }
        Ok(out)
    }

    /// Who is making the request: the client certificate's user, or the bearer token's, or
    /// the anonymous user. An invalid token is a 401 even when anonymous access would do.
    async fn authenticate(&self, headers: &http::HeaderMap, cert_user: Option<UserInfo>) -> Result<UserInfo, ApiError> {
        if let Some(u) = cert_user {
            return Ok(u);
        }
        let Some(auth) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return Ok(UserInfo::anonymous());
        };
        let Some(token) = auth.strip_prefix("Bearer ").or_else(|| auth.strip_prefix("bearer ")).map(str::trim) else {
            return Err(ApiError::unauthorized());
        };
        for authn in &self.inner.config.tokens {
            if let Some(user) = authn.authenticate(token).await {
                return Ok(user);
            }
        }
        Err(ApiError::unauthorized())
    }

    /// Serves a request whose body is already read, as `user` (in-process clients use this).
    pub async fn handle_as(&self, req: Request<Bytes>, user: UserInfo) -> Response<Body> {
        let audit_id = uuid::Uuid::new_v4().to_string();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query = request::parse_query(req.uri().query());
        let info = RequestInfo::parse(&method, &path, &query);
        let attrs = Attributes {
            user: user.clone(),
            verb: info.verb.clone(),
            is_resource: info.is_resource,
            namespace: info.namespace.clone(),
            api_group: info.group.clone(),
            resource: info.resource.clone(),
            subresource: info.subresource.clone(),
            name: info.name.clone(),
            path: path.clone(),
        };
        let mut resp = match self.inner.config.authorizer.authorize(&attrs).await {
            Decision::Allow => match self.route(req, &info, &query, &user).await {
                Ok(r) => r,
                Err(e) => error_response(&e),
            },
            Decision::Deny(_) if user.is_anonymous() => error_response(&ApiError::unauthorized()),
            Decision::Deny(reason) => {
                let mut msg = auth::forbidden_message(&attrs);
                if !reason.is_empty() {
                    msg.push_str(": ");
                    msg.push_str(&reason);
                }
                let gr = status::GroupResource::new(info.group.clone(), info.resource.clone());
                let e = if info.is_resource {
                    ApiError::forbidden(&gr, &info.name, &msg)
                } else {
                    ApiError::new(403, "Forbidden", format!("forbidden: {msg}"))
                };
                error_response(&e)
            }
        };
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&audit_id) {
            h.insert("audit-id", v);
        }
        h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-cache, private"));
        tracing::debug!(tenant = %self.inner.config.name, verb = %info.verb, resource = %info.resource, path = %path, status = resp.status().as_u16(), "request");
        resp
    }

    async fn route(
        &self,
        req: Request<Bytes>,
        info: &RequestInfo,
        query: &HashMap<String, String>,
        user: &UserInfo,
    ) -> Result<Response<Body>, ApiError> {
        if info.is_resource {
            // The local APIServices exist from the first time anyone reads or writes them.
            if info.group == "apiregistration.k8s.io"
                && user.name != bootstrap::SYSTEM_USER
                && let Err(e) = aggregator::ensure_local(self).await
            {
                tracing::warn!(error = %e.message, "local APIServices not created");
            }
            // A group version nobody here serves may be claimed by an APIService.
            if self.registry().get(&info.group, &info.version, &info.resource).is_none()
                && let Some(route) = aggregator::route(self, &info.parts).await
            {
                return match route {
                    aggregator::Route::Answer(resp) => Ok(resp),
                    aggregator::Route::Proxy(a) => Ok(aggregator::forward(self, &a, req, user).await),
                    aggregator::Route::Metrics => metricsapi::handle(self, info, query).await,
                };
            }
            return rest::handle(self, req, info, query, user).await;
        }
        let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let method = req.method().clone();
        match (&method, info.path.trim_end_matches('/')) {
            (&http::Method::GET, "/version") => Ok(json_response(StatusCode::OK, &discovery::version())),
            (&http::Method::GET, "/.well-known/openid-configuration") => match &self.inner.config.service_accounts {
                Some(i) => Ok(json_response(StatusCode::OK, &i.openid_configuration())),
                None => Err(ApiError::not_found_path()),
            },
            (&http::Method::GET, "/openid/v1/jwks") => match &self.inner.config.service_accounts {
                Some(i) => Ok(json_response(StatusCode::OK, &i.jwks())),
                None => Err(ApiError::not_found_path()),
            },
            (&http::Method::GET, p) if is_health(p) => Ok(text_response(StatusCode::OK, "ok")),
            (&http::Method::GET, "/api") => Ok(discovery::api(self, accept.as_deref())),
            (&http::Method::GET, "/apis") => {
                Ok(discovery::apis(self, accept.as_deref(), &aggregator::claimed_groups(self).await))
            }
            (&http::Method::GET, p) if p.starts_with("/openapi/") => openapi::handle(self, p, accept.as_deref()),
            (&http::Method::GET, p) if p.starts_with("/api/") || p.starts_with("/apis/") => {
                match discovery::group_or_version(self, &info.parts) {
                    Err(e) if e.code == 404 => match aggregator::route(self, &info.parts).await {
                        Some(aggregator::Route::Answer(resp)) => Ok(resp),
                        Some(aggregator::Route::Proxy(a)) => Ok(aggregator::forward(self, &a, req, user).await),
                        Some(aggregator::Route::Metrics) => metricsapi::discovery(&info.parts).ok_or(e),
                        None => Err(e),
                    },
                    answer => answer,
                }
            }
            (m, _) if m != http::Method::GET => Err(ApiError::method_not_allowed(&Default::default(), m.as_str())),
            _ => Err(ApiError::not_found_path()),
        }
    }
}

/// Decodes `%XX` escapes (impersonated extra keys are percent-encoded in header names).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(v) = u8::from_str_radix(hex, 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_health(p: &str) -> bool {
    ["/healthz", "/livez", "/readyz"]
        .iter()
        .any(|h| p == *h || p.strip_prefix(h).is_some_and(|rest| rest.starts_with('/')))
}

impl ApiError {
    /// The 404 of an unknown path.
    pub fn not_found_path() -> ApiError {
        ApiError::new(404, "NotFound", "the server could not find the requested resource")
    }
}

/// A JSON response.
pub fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    let mut bytes = gojson::to_vec(v);
    bytes.push(b'\n');
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body::full(bytes))
        .expect("valid response")
}

/// A JSON response from already encoded bytes (the newline Go's encoder ends a value with
/// is added).
pub fn json_bytes_response(code: StatusCode, mut bytes: Vec<u8>) -> Response<Body> {
    bytes.push(b'\n');
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body::full(bytes))
        .expect("valid response")
}

/// A plain-text response.
pub fn text_response(code: StatusCode, text: &str) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header("x-content-type-options", "nosniff")
        .body(body::full(text.to_string()))
        .expect("valid response")
}

/// The response of an error: its `Status` with its code.
pub fn error_response(e: &ApiError) -> Response<Body> {
    let mut resp =
        json_response(StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &e.to_status());
    if let Some(r) = e.retry_after
        && let Ok(v) = HeaderValue::from_str(&r.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}
