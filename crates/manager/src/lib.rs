//! vt's tenant manager.
//!
//! Thousands of tenants in one process: a `Tenant` resource on the host cluster declares each
//! one ([`tenant`]); the reconciler ([`reconcile`]) gives it a host namespace with guardrails,
//! its own credentials ([`pki`]) and a control plane ([`controlplane`]) served on one TLS
//! listener routed by server name ([`router`]), with per-tenant fairness limits and metrics
//! ([`metrics`]).

pub mod controlplane;
pub mod kubeconfig;
pub mod metrics;
pub mod pki;
pub mod reconcile;
pub mod replicas;
pub mod router;
pub mod tenant;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::wait::{await_condition, conditions};

pub use controlplane::Settings;

/// Node pools the manager may provision for tenants (the embedded host's simulated nodes);
/// on a real host, pools are the operator's node groups and this is not used.
pub trait Pools: Send + Sync {
    /// Makes sure nodes of `pool` exist.
    fn ensure<'a>(&'a self, pool: &'a str) -> futures::future::BoxFuture<'a, Result<(), String>>;
    /// Removes the nodes of `pool`.
    fn remove<'a>(&'a self, pool: &'a str) -> futures::future::BoxFuture<'a, Result<(), String>>;
}

/// A running manager.
pub struct Manager {
    /// The running control planes.
    pub planes: Arc<controlplane::ControlPlanes>,
    /// The shared tenant listener's router.
    pub router: Arc<router::Router>,
    /// Metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// Node pools to provision, if the manager owns the nodes.
    pub pools: Option<Arc<dyn Pools>>,
    /// The host client for streams (logs, exec), without a read timeout.
    pub streams: Option<kube::Client>,
    /// The tenant DNS server's sockets and upstream resolvers, if it runs.
    pub dns: Option<Dns>,
    /// The replicas this one shares the tenants with, and its peer listener.
    replicas: Option<(Arc<replicas::Replicas>, tokio::net::TcpListener)>,
}

/// The tenant DNS server's bound sockets and its forwarder.
pub struct Dns {
    /// The UDP socket.
    pub udp: tokio::net::UdpSocket,
    /// The TCP listener (same address).
    pub tcp: tokio::net::TcpListener,
    /// Where names outside the cluster zone go.
    pub forwarder: vt_dns::Forwarder,
}

/// Installs the Tenant CRD on the host if it is missing, and waits until it is served.
pub async fn ensure_crd(host: &kube::Client) -> Result<(), String> {
    let crds: Api<CustomResourceDefinition> = Api::all(host.clone());
    let crd = tenant::Tenant::crd();
    let name = crd.metadata.name.clone().unwrap_or_default();
    match crds.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        // Without the right to create CRDs (a Helm install brings it), it must exist already.
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        Err(e) => return Err(format!("cannot install the Tenant CRD: {e}")),
    }
    tokio::time::timeout(Duration::from_secs(30), await_condition(crds, &name, conditions::is_crd_established()))
        .await
        .map_err(|_| "the Tenant CRD did not become established".to_string())?
        .map_err(|e| format!("waiting for the Tenant CRD: {e}"))?;
    Ok(())
}

/// Makes sure the manager's own namespace (where tenants' credentials live) exists.
pub async fn ensure_namespace(host: &kube::Client, name: &str) -> Result<(), String> {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(host.clone());
    let ns =
        vt_apiserver::object::from_value(serde_json::json!({"metadata": {"name": name}})).map_err(|e| e.to_string())?;
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        // There already, or not ours to create (a Helm install made it).
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 403 => Ok(()),
        Err(e) => Err(format!("cannot create the manager's namespace {name}: {e}")),
    }
}

impl Manager {
    /// A manager for `settings` (nothing runs until [`Manager::run`]).
    pub fn new(settings: Settings) -> Manager {
        let router = Arc::new(router::Router::default());
        let metrics = Arc::new(metrics::Metrics::default());
        let planes = Arc::new(controlplane::ControlPlanes::new(settings, router.clone(), metrics.clone()));
        planes.attach();
        Manager { planes, router, metrics, pools: None, streams: None, dns: None, replicas: None }
    }

    /// Shares the tenants with other replicas (see [`replicas`]), taking connections other
    /// replicas pass here on `peer`.
    pub fn with_replicas(mut self, settings: replicas::ReplicaSettings, peer: tokio::net::TcpListener) -> Manager {
        let r = replicas::Replicas::new(settings, &self.planes.settings().namespace);
        r.set_metrics(self.metrics.clone());
        self.planes.set_replicas(r.clone());
        self.replicas = Some((r, peer));
        self
    }

    /// Provisions tenants' node pools through `pools`.
    pub fn with_pools(mut self, pools: Arc<dyn Pools>) -> Manager {
        self.pools = Some(pools);
        self
    }

    /// Serves the tenants' DNS on `dns` once the host is watched.
    pub fn with_dns(mut self, dns: Dns) -> Manager {
        self.dns = Some(dns);
        self
    }

    /// Passes pods' streams (logs, exec, attach, port-forward) through `client` (one without a
    /// read timeout) rather than the host client.
    pub fn with_stream_client(mut self, client: kube::Client) -> Manager {
        self.streams = Some(client);
        self
    }

    /// Serves tenants on `listener` (and metrics on `admin`), reconciling the host's Tenants,
    /// until `shutdown` resolves (a replica then hands its tenants to the others first).
    pub async fn run(
        mut self,
        host: kube::Client,
        listener: tokio::net::TcpListener,
        admin: Option<tokio::net::TcpListener>,
        ready: impl std::future::Future<Output = ()>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), String> {
        ensure_crd(&host).await?;
        ensure_namespace(&host, &self.planes.settings().namespace).await?;
        // With replicas, every host write but the Leases' passes the fence.
        let raw_host = host.clone();
        let host = match &self.replicas {
            Some((r, _)) => replicas::fenced_client(host, r.clone()),
            None => host,
        };
        let serve = self.planes.settings().serve.clone();
        tokio::spawn(vt_apiserver::serve::serve_with(listener, self.router.clone(), serve));
        if let Some(admin) = admin {
            tokio::spawn(metrics::serve_admin(admin, self.metrics.clone()));
        }
        ready.await;
        // The host view every tenant's syncer shares: one watch per kind for all tenants.
        let shared = vt_syncer::Host::start(host.clone(), self.streams.clone());
        shared.set_observer(self.metrics.clone());
        shared.set_service_ranges(self.planes.settings().host_service_cidrs.clone());
        shared.set_cluster_ranges(self.planes.settings().host_cluster_cidrs.clone());
        if let Some(dns) = self.dns.take() {
            // One DNS server for every tenant, attributing queries by the host pods' addresses.
            let server = vt_dns::Server::new(shared.clone(), dns.forwarder);
            tokio::spawn(vt_dns::serve_udp(dns.udp, server.clone()));
            tokio::spawn(vt_dns::serve_tcp(dns.tcp, server));
        }
        shared.ready().await;
        self.planes.set_host(shared);
        tokio::spawn(self.planes.clone().run_idle());
        let mut leaving = None;
        if let Some((r, peer)) = self.replicas.take() {
            use futures::StreamExt;
            use kube::runtime::WatchStreamExt;
            let serve = self.planes.settings().serve.clone();
            tokio::spawn(vt_apiserver::serve::serve_with(
                peer,
                Arc::new(router::LocalOnly(self.router.clone())),
                serve,
            ));
            let (tenants, writer) = kube::runtime::reflector::store();
            let stream = kube::runtime::reflector(
                writer,
                kube::runtime::watcher(kube::Api::<tenant::Tenant>::all(raw_host.clone()), Default::default()),
            );
            tokio::spawn(stream.default_backoff().for_each(|_| async {}));
            let planes = Arc::downgrade(&self.planes);
            let stop_planes = planes.clone();
            leaving = Some((r.clone(), raw_host.clone()));
            tokio::spawn(r.run(
                raw_host,
                tenants,
                Arc::new(move |t: &str| {
                    if let Some(p) = planes.upgrade() {
                        p.notify(t);
                    }
                }),
                Arc::new(move |t: &str| {
                    if let Some(p) = stop_planes.upgrade() {
                        p.stop(t);
                    }
                }),
            ));
        }
        let ctx =
            Arc::new(reconcile::Context::new(host, self.planes.clone(), self.metrics.clone(), self.pools.clone()));
        tokio::select! {
            _ = reconcile::run(ctx) => Err("the Tenant watch ended".into()),
            _ = shutdown => {
                if let Some((r, host)) = leaving {
                    let planes = self.planes.clone();
                    r.leave(host, &move |t: &str| planes.stop(t)).await;
                }
                tracing::info!("vt server stopped");
                Ok(())
            }
        }
    }
}
