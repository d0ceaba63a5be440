//! The control planes of the running tenants, in this process: for each tenant a store (its
//! own SQLite file, or its prefix in a shared etcd), an RBAC authorizer, a token issuer and an
//! API server, reachable through the shared listener under `<tenant>.<domain>`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vt_apiserver::fairness::{Bounds, FairQueue, Limits};
use vt_apiserver::ipalloc::IpAddressAllocator;
use vt_apiserver::rbac::Rbac;
use vt_apiserver::serve::{Endpoint, tls_config};
use vt_apiserver::serviceaccount::{DEFAULT_ISSUER, Issuer, ServiceAccountTokens};
use vt_apiserver::{ApiServer, Config};
use vt_store::Store;
use vt_store::etcd::{EtcdOptions, EtcdStore};
use vt_store::sqlite::{SqliteOptions, SqliteStore};

use crate::metrics::Metrics;
use crate::pki::TenantPki;
use crate::router::Router;
use crate::tenant::TenantSpec;
use vt_apiserver::PodConnector;
use vt_apiserver::ipalloc::ServiceBackend;
use vt_syncer::Target;

mod sleep;

pub use sleep::State;

/// What every tenant control plane shares.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where tenants' SQLite files live (`<data>/tenants/<name>/store.db`).
    pub data_dir: PathBuf,
    /// Where clients reach the tenant listener (`host:port`, written into kubeconfigs).
    pub advertise: String,
    /// The IP address and port tenants' in-cluster `kubernetes` Service points at (the
    /// manager's own address on the host network).
    pub endpoint: SocketAddr,
    /// Tenants answer as `<tenant>.<domain>`.
    pub domain: String,
    /// Per-tenant limit of requests in flight (0: none).
    pub max_in_flight: usize,
    /// Per-tenant request rate, per second (0: none).
    pub qps: f64,
    /// Per-tenant burst above the rate.
    pub burst: f64,
    /// Per-tenant cap on open watches (0: none); a Tenant's `spec.limits` may set its own.
    pub max_watches: usize,
    /// Per-tenant cap on open connections (0: none); a Tenant's `spec.limits` may set its own.
    pub max_connections: usize,
    /// Requests executing at once across all tenants (fair-queued seats; 0: no fair queuing).
    pub seats: usize,
    /// Requests one tenant may have waiting for a seat.
    pub queue_length: usize,
    /// How long a request may wait for a seat before a 429.
    pub queue_wait: Duration,
    /// The host's Service IP ranges (tenants' Endpoints and webhook URLs never reach them).
    pub host_service_cidrs: vt_net::CidrSet,
    /// The host cluster's pod and node ranges (tenants' NetworkPolicy ip blocks never reach
    /// them).
    pub host_cluster_cidrs: vt_net::CidrSet,
    /// Address blocks every tenant's webhooks may call by URL.
    pub webhook_allow: vt_net::CidrSet,
    /// The manager's own namespace on the host.
    pub namespace: String,
    /// The domain under which each tenant owns `*.<tenant>.<domain>` for its Ingresses.
    pub ingress_domain: String,
    /// Bounds of the tenant listener's connections.
    pub serve: vt_apiserver::serve::ServeOptions,
    /// The address tenants' pods reach the tenant DNS server at (the DNS Service's cluster IP
    /// on a real host, the listen address on the embedded one); `None`: no tenant DNS.
    pub dns_server: Option<std::net::IpAddr>,
    /// The tenants' Service IP range.
    pub service_cidr: String,
    /// Whether tenants run their controllers (always, but to measure what they cost).
    pub controllers: bool,
    /// Whether tenants' pods are synced to the host (always, but to measure what it costs).
    pub syncer: bool,
}

impl Settings {
    /// The TLS server name of a tenant.
    pub fn server_name(&self, tenant: &str) -> String {
        format!("{tenant}.{}", self.domain)
    }

    /// The directory of a tenant's own files.
    pub fn tenant_dir(&self, tenant: &str) -> PathBuf {
        self.data_dir.join("tenants").join(tenant)
    }
}

/// What a tenant's control plane starts from (kept while it sleeps: its wake needs nothing
/// from the host).
struct Credentials {
    /// The CA's certificate (trusted for client certificates) and key (the controllers sign
    /// client certificate requests with it).
    ca: vt_pki::CertKey,
    serving: vt_pki::CertKey,
    sa_key: String,
    /// The front proxy's CA (`None` until the tenant's credentials have one); its client
    /// certificate is issued when the control plane starts, so a sleeping tenant holds only
    /// the CA.
    front_proxy_ca: Option<vt_pki::CertKey>,
}

impl Credentials {
    fn of(pki: &TenantPki) -> Arc<Credentials> {
        Arc::new(Credentials {
            ca: pki.ca.material().clone(),
            serving: pki.serving.clone(),
            sa_key: pki.sa_key.clone(),
            front_proxy_ca: pki.front_proxy.as_ref().map(|ca| ca.material().clone()),
        })
    }

    /// What the API server presents to aggregated API servers: a client certificate freshly
    /// issued by the front proxy's CA.
    fn front_proxy(&self) -> Option<Arc<vt_apiserver::FrontProxy>> {
        let ca = vt_pki::Ca::load(self.front_proxy_ca.clone()?)
            .map_err(|e| tracing::warn!(error = %e, "the front proxy's CA does not load"))
            .ok()?;
        vt_apiserver::FrontProxy::issue(&ca, &self.ca.cert_pem)
            .map_err(|e| tracing::warn!(error = %e, "no front proxy certificate"))
            .ok()
            .map(Arc::new)
    }
}

struct Running {
    api: ApiServer,
    server_name: String,
    /// The Tenant's spec it runs with, and its credentials (to sleep and wake with).
    spec: TenantSpec,
    creds: Arc<Credentials>,
    /// When a client's request last started (ms since the epoch), and when it started.
    last_request: Arc<AtomicU64>,
    started: u64,
    /// `spec.sleepAfter`, parsed once (the idle scheduler reads it every pass).
    sleep_after: Option<Duration>,
    /// What the syncer works with (a change restarts it).
    target: Option<Target>,
    /// The syncer: the tenant's pods and what they use, on the host.
    syncer: Option<vt_syncer::Handle>,
    /// The cluster's controllers; they stop with it.
    _controllers: Option<vt_controllers::Controllers>,
}

/// The running control planes.
pub struct ControlPlanes {
    settings: Settings,
    router: Arc<Router>,
    metrics: Arc<Metrics>,
    running: Mutex<HashMap<String, Running>>,
    /// The seats every tenant's requests share, fairly.
    fair: Option<Arc<FairQueue>>,
    /// The host, shared by every tenant's syncer (set once the manager runs against a host).
    host: std::sync::OnceLock<Arc<vt_syncer::Host>>,
    /// Sleeping tenants, and the wakes in progress.
    sleep: sleep::Sleepers,
    /// This, for tasks that outlive a call (set by [`ControlPlanes::attach`]).
    me: std::sync::OnceLock<std::sync::Weak<ControlPlanes>>,
    /// The replicas this one shares the tenants with, if it runs with others.
    replicas: std::sync::OnceLock<Arc<crate::replicas::Replicas>>,
}

impl ControlPlanes {
    /// No tenants running yet.
    pub fn new(settings: Settings, router: Arc<Router>, metrics: Arc<Metrics>) -> ControlPlanes {
        let fair =
            (settings.seats > 0).then(|| FairQueue::new(settings.seats, settings.queue_length, settings.queue_wait));
        ControlPlanes {
            fair,
            settings,
            router,
            metrics,
            running: Mutex::new(HashMap::new()),
            host: std::sync::OnceLock::new(),
            sleep: sleep::Sleepers::default(),
            me: std::sync::OnceLock::new(),
            replicas: std::sync::OnceLock::new(),
        }
    }

    /// Makes the router wake sleeping tenants through these control planes.
    pub fn attach(self: &Arc<Self>) {
        let _ = self.me.set(Arc::downgrade(self));
        let weak: std::sync::Weak<dyn crate::router::Wake> = Arc::downgrade(self) as _;
        self.router.set_waker(weak);
    }

    /// Shares the tenants with other replicas: connections for tenants they own are passed to
    /// them.
    pub fn set_replicas(&self, replicas: Arc<crate::replicas::Replicas>) {
        let r = replicas.clone();
        let suffix = format!(".{}", self.settings.domain.to_ascii_lowercase());
        self.router.set_forwarder(Box::new(move |server_name| match server_name.strip_suffix(&suffix) {
            Some(tenant) => r.locate(tenant),
            None => vt_apiserver::serve::Forward::Here,
        }));
        let _ = self.replicas.set(replicas);
    }

    /// The replicas, if this one runs with others.
    pub fn replicas(&self) -> Option<&Arc<crate::replicas::Replicas>> {
        self.replicas.get()
    }

    /// Tells the reconciler to look at `tenant` again (it slept, woke, or changed owner).
    pub fn notify(&self, tenant: &str) {
        self.sleep.changed(tenant);
    }

    fn me(&self) -> Option<Arc<ControlPlanes>> {
        self.me.get().and_then(std::sync::Weak::upgrade)
    }

    /// The shared settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// A tenant's egress policy: its webhooks reach its own Services, and by URL only the
    /// blocks the manager and its Tenant allow.
    fn egress(&self, target: &Target, spec: &TenantSpec) -> Result<Arc<vt_syncer::HostEgress>, String> {
        let mut allow = self.settings.webhook_allow.clone();
        for c in &spec.network.webhook_allow_cidrs {
            allow.insert(c.parse().map_err(|e| format!("spec.network.webhookAllowCIDRs: {e}"))?);
        }
        let own = vec![self.settings.endpoint.ip()];
        Ok(vt_syncer::HostEgress::new(self.host.get().cloned(), target.clone(), allow, own))
    }

    /// The tenant's DNS status: its pods' DNS server and the size of its zone.
    pub fn dns_status(&self, tenant: &str) -> Option<crate::tenant::DnsStatus> {
        let address = self.settings.dns_server?;
        let records = self.host.get().map(|h| {
            let (services, endpoints) = h.zone(&crate::tenant::host_namespace(tenant)).counts();
            (services + endpoints) as i64
        });
        Some(crate::tenant::DnsStatus { address: address.to_string(), records: records.unwrap_or(0) })
    }

    /// A tenant's bounds: the manager's, where its Tenant sets none.
    pub fn bounds(&self, spec: &TenantSpec) -> Bounds {
        let s = &self.settings;
        let l = &spec.limits;
        Bounds {
            max_in_flight: l.max_requests_inflight.map_or(s.max_in_flight, |n| n as usize),
            rate: l.qps.unwrap_or(s.qps),
            burst: s.burst.max(l.qps.unwrap_or(0.0)),
            max_watches: l.max_watches.map_or(s.max_watches, |n| n as usize),
            max_connections: l.max_connections.map_or(s.max_connections, |n| n as usize),
        }
    }

    /// The API server of a running tenant.
    pub fn api(&self, tenant: &str) -> Option<ApiServer> {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).get(tenant).map(|r| r.api.clone())
    }

    /// Names of the running tenants.
    pub fn names(&self) -> Vec<String> {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }

    /// Syncs tenants to `host` from now on.
    pub fn set_host(&self, host: Arc<vt_syncer::Host>) {
        if self.settings.syncer {
            let _ = self.host.set(host);
        }
    }

    /// Where and how a tenant's pods run on the host.
    pub fn target(&self, tenant: &str, spec: &TenantSpec) -> Target {
        let iso = &spec.isolation;
        Target {
            tenant: tenant.to_string(),
            namespace: crate::tenant::host_namespace(tenant),
            pool: iso.pool(tenant),
            node_selector: iso.node_selector.clone(),
            tolerations: iso.tolerations.iter().filter_map(|t| vt_apiserver::object::to_value(t).ok()).collect(),
            runtime_class: iso.runtime_class(),
            level: vt_syncer::security::Level::parse(&iso.security_level()),
            api_host: self.settings.endpoint.ip().to_string(),
            api_port: self.settings.endpoint.port(),
            api_server_name: self.settings.server_name(tenant),
            load_balancer_classes: spec.network.load_balancer_classes.clone(),
            dns_server: self.settings.dns_server.map(|ip| ip.to_string()),
            ingress: vt_syncer::ingress::IngressRules {
                domain: self.settings.ingress_domain.clone(),
                granted: spec.network.ingress_hosts.clone(),
                classes: spec.network.ingress_classes.clone(),
                default_class: spec.network.default_ingress_class.clone(),
            },
            storage_classes: spec.network.storage_classes.clone(),
            priority_classes: spec.network.priority_classes.clone(),
        }
    }

    /// Starts a tenant's control plane unless it runs (or sleeps) already, and restarts its
    /// syncer when the tenant's isolation settings change. With `lazy` (a tenant that ran
    /// before this process started), a tenant with no pods on the host comes back asleep: it
    /// starts on its first request (or in the background, if it never sleeps on its own).
    pub async fn ensure(&self, tenant: &str, spec: &TenantSpec, pki: &TenantPki, lazy: bool) -> Result<State, String> {
        let target = self.target(tenant, spec);
        if self.api(tenant).is_some() {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(r) = running.get_mut(tenant) {
                r.spec = spec.clone();
                r.sleep_after = spec.sleep_after().ok().flatten();
                if let Some(host) = self.host.get()
                    && r.target.as_ref().map(|t| format!("{t:?}")) != Some(format!("{target:?}"))
                {
                    r.syncer = None;
                    let virt = vt_controllers::client::in_process(r.api.clone());
                    r.syncer = Some(vt_syncer::start(host.clone(), virt, target.clone()));
                    r.target = Some(target);
                }
            }
            return Ok(State::Awake);
        }
        if self.sleep.update(tenant, spec) {
            return Ok(State::Asleep);
        }
        if lazy && !self.has_pods(tenant).await {
            self.route_asleep(tenant, spec, pki);
            return Ok(State::Asleep);
        }
        self.start(tenant, spec, Credentials::of(pki), Arc::new(AtomicU64::new(0))).await?;
        Ok(State::Awake)
    }

    /// Starts a tenant's control plane; its endpoint.
    async fn start(
        &self,
        tenant: &str,
        spec: &TenantSpec,
        creds: Arc<Credentials>,
        last_request: Arc<AtomicU64>,
    ) -> Result<Endpoint, String> {
        let target = self.target(tenant, spec);
        let store = &spec.store;
        // (A paused tenant's placeholder endpoint is replaced below.)
        let store: Arc<dyn Store> = match &store.etcd {
            Some(etcd) => {
                let prefix = etcd.prefix.clone().unwrap_or_else(|| format!("/vt/{tenant}/"));
                Arc::new(
                    EtcdStore::connect(EtcdOptions::new(etcd.endpoints.clone(), prefix))
                        .await
                        .map_err(|e| format!("etcd: {e}"))?,
                )
            }
            None => {
                let dir = self.settings.tenant_dir(tenant);
                std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                // Small caches: a manager holds thousands of these.
                let opts = SqliteOptions { cache_kib: 256, max_idle_readers: 1, ..Default::default() };
                Arc::new(SqliteStore::open(dir.join("store.db"), opts).await.map_err(|e| format!("store: {e}"))?)
            }
        };
        let authorizer = Rbac::start(store.clone()).await.map_err(|e| format!("rbac: {e}"))?;
        let server_name = self.settings.server_name(tenant);
        let issuer = Arc::new(Issuer::new(
            &vt_pki::pkcs8_der(&creds.sa_key).map_err(|e| e.to_string())?,
            DEFAULT_ISSUER,
            &format!("https://{}/openid/v1/jwks", self.settings.advertise),
            &creds.ca.cert_pem,
        )?);
        let config = Config {
            // Commits give the request's fair-queuing seat back while they wait for the disk.
            store: Arc::new(vt_apiserver::fairness::SeatedStore(store.clone())),
            authorizer,
            tokens: vec![Arc::new(ServiceAccountTokens::new(issuer.clone(), store))],
            cluster_ips: Arc::new(IpAddressAllocator::new(&self.settings.service_cidr)?),
            advertise: self.settings.endpoint,
            name: tenant.to_string(),
            bookmark_interval: Duration::from_secs(60),
            service_accounts: Some(issuer),
            limits: Some(Arc::new(Limits::new(self.bounds(spec), self.fair.clone()))),
            observer: Some(self.metrics.observer(tenant)),
            services: self
                .host
                .get()
                .map(|h| vt_syncer::HostServices::new(h.client.clone(), target.clone()) as Arc<dyn ServiceBackend>),
            pods: self.host.get().map(|h| vt_syncer::HostPods::new(h.clone(), target.clone()) as Arc<dyn PodConnector>),
            service_account_admission: true,
            // The level the host enforces on every pod of the tenant: refused at admission, as
            // kube refuses it, rather than created and left Pending.
            pod_security: Some(vt_apiserver::podsecurity::Level::parse(&spec.isolation.security_level())),
            // The host's classes, mirrored by the syncer: read-only in the tenant.
            host_provided: vt_syncer::classes::MIRRORED.iter().map(|(g, r)| (g.to_string(), r.to_string())).collect(),
            fenced: self.replicas.get().map(|r| {
                let r = r.clone();
                Arc::new(move || r.fenced()) as Arc<dyn Fn() -> bool + Send + Sync>
            }),
            egress: Some(self.egress(&target, spec)? as Arc<dyn vt_apiserver::egress::Egress>),
            front_proxy: creds.front_proxy(),
            metrics: self.host.get().map(|h| {
                vt_syncer::HostMetrics::new(h.clone(), target.clone())
                    as Arc<dyn vt_apiserver::metricsapi::MetricsSource>
            }),
        };
        let api = ApiServer::new(config).await.map_err(|e| format!("bootstrap: {}", e.message))?;
        let tls = Arc::new(tls_config(&creds.serving, &creds.ca.cert_pem)?);
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = running.get(tenant) {
            return self.router.resolve_ready(&r.server_name).ok_or_else(|| "the tenant is stopping".to_string());
        }
        let endpoint = Endpoint { last_request: Some(last_request.clone()), ..Endpoint::serving(tls, api.clone()) };
        self.router.insert(&server_name, endpoint.clone());
        let controllers =
            self.settings.controllers.then(|| vt_controllers::start(api.clone(), &creds.ca, vt_controllers::Set::Full));
        let syncer = self
            .host
            .get()
            .map(|h| vt_syncer::start(h.clone(), vt_controllers::client::in_process(api.clone()), target.clone()));
        if let Some(ip) = self.settings.dns_server {
            tokio::spawn(ensure_dns_service(api.clone(), ip));
        }
        running.insert(
            tenant.to_string(),
            Running {
                api,
                server_name,
                spec: spec.clone(),
                creds,
                last_request,
                started: vt_apiserver::serve::now_millis(),
                sleep_after: spec.sleep_after().ok().flatten(),
                target: Some(target),
                syncer,
                _controllers: controllers,
            },
        );
        Ok(endpoint)
    }

    /// Stops a tenant's control plane, awake or asleep (its store closes once in-flight
    /// requests finish; its watches end).
    pub fn stop(&self, tenant: &str) {
        if let Some(r) = self.running.lock().unwrap_or_else(|p| p.into_inner()).remove(tenant) {
            self.router.remove(&r.server_name);
        }
        if self.sleep.remove(tenant) {
            self.router.remove(&self.settings.server_name(tenant));
        }
    }

    /// Stops a tenant's control plane and answers its clients, over its own TLS identity,
    /// that it is paused (503), rather than dropping their connections. Its pods are stopped
    /// as if their nodes powered off: they run again on resume.
    pub async fn pause(&self, tenant: &str, pki: &TenantPki) -> Result<(), String> {
        let syncer = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
            .and_then(|r| r.syncer.as_ref().map(|s| s.tenant().clone()));
        if let Some(s) = syncer {
            s.power_off().await;
        }
        self.stop(tenant);
        let tls = Arc::new(tls_config(&pki.serving, pki.ca.cert_pem())?);
        let message = format!("tenant {tenant} is paused; `vt resume {tenant}` brings it back");
        self.router.insert(
            &self.settings.server_name(tenant),
            Endpoint { tls, api: None, unavailable: message, last_request: None },
        );
        Ok(())
    }
}

/// The tenant's `kube-system/kube-dns` Service, as on any cluster: its cluster IP is the
/// address the tenant's pods send queries to (the manager's DNS Service), ports 53/UDP,
/// 53/TCP and 9153. It exists only in the tenant (the syncer never copies it to the host).
async fn ensure_dns_service(api: ApiServer, ip: std::net::IpAddr) {
    use k8s_openapi::api::core::v1::Service;
    use kube::api::{Api, DeleteParams, PostParams};
    let services: Api<Service> = Api::namespaced(vt_controllers::client::in_process(api), "kube-system");
    let want: Service = match vt_apiserver::object::from_value(serde_json::json!({
        "metadata": {"name": "kube-dns", "namespace": "kube-system",
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "vt-dns", "kubernetes.io/cluster-service": "true"}},
        "spec": {"clusterIP": ip.to_string(), "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]}
    })) {
        Ok(s) => s,
        Err(_) => return,
    };
    for _ in 0..20 {
        match services.get_opt("kube-dns").await {
            Ok(Some(s)) if s.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some(&ip.to_string()) => return,
            Ok(Some(_)) => {
                let _ = services.delete("kube-dns", &DeleteParams::default()).await;
            }
            Ok(None) => match services.create(&PostParams::default(), &want).await {
                Ok(_) => return,
                Err(e) => tracing::debug!(error = %e, "could not create kube-system/kube-dns yet"),
            },
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tracing::warn!("could not create the tenant's kube-system/kube-dns Service");
}
