//! `vt server`: the tenant manager. With a host kubeconfig it manages tenants on that cluster;
//! without one it brings its own host: vt's API server on SQLite in the data directory, with
//! simulated nodes (one pool per tenant), so everything works on a laptop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use vt_manager::{Manager, Pools, Settings};
use vt_nodesim::NodeSim;

/// Arguments of `vt server`.
#[derive(clap::Args)]
pub struct Args {
    /// Address of the tenant listener (one TLS port for every tenant, routed by server name).
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Where clients reach the tenant listener (`host:port` in kubeconfigs); the listen
    /// address if unset.
    #[arg(long)]
    advertise: Option<String>,
    /// The IP tenants' in-cluster `kubernetes` Service points at (`$POD_IP` in a pod); the
    /// listen address if unset.
    #[arg(long, env = "POD_IP")]
    advertise_ip: Option<std::net::IpAddr>,
    /// Tenants answer as `<tenant>.<domain>` (the TLS server name in their kubeconfigs).
    #[arg(long, default_value = "vt.local")]
    domain: String,
    /// Kubeconfig of a host cluster; without it (and without --host-in-cluster), vt runs its
    /// own embedded host.
    #[arg(long, env = "VT_HOST_KUBECONFIG")]
    host_kubeconfig: Option<PathBuf>,
    /// Manage the cluster this pod runs in (its service account).
    #[arg(long, conflicts_with = "host_kubeconfig")]
    host_in_cluster: bool,
    /// Address of the embedded host's API server.
    #[arg(long, default_value = "127.0.0.1:6443")]
    host_listen: SocketAddr,
    /// Address of the admin endpoint (`/metrics`, `/healthz`); empty to disable.
    #[arg(long, default_value = "127.0.0.1:9090")]
    admin_listen: String,
    /// Address range of the simulated pods (embedded host only; each node a /24 of it). A
    /// range in 127.0.0.0/8 lets a local process stand in for a pod by binding its address.
    #[arg(long, default_value = vt_nodesim::DEFAULT_POD_CIDR)]
    sim_pod_cidr: String,
    /// Simulated nodes per tenant pool (embedded host only).
    #[arg(long, default_value_t = 2)]
    nodes_per_pool: usize,
    /// Per-tenant limit of requests in flight (watches excluded; 0: none).
    #[arg(long, default_value_t = 200)]
    max_requests_inflight: usize,
    /// Per-tenant request rate per second (0: none).
    #[arg(long, default_value_t = 500.0)]
    qps: f64,
    /// Per-tenant burst above the rate.
    #[arg(long, default_value_t = 1000.0)]
    burst: f64,
    /// Per-tenant cap on open watches (0: none; a Tenant's spec.limits overrides).
    #[arg(long, default_value_t = 1000)]
    max_watches: usize,
    /// Per-tenant cap on open connections (0: none; a Tenant's spec.limits overrides).
    #[arg(long, default_value_t = 1000)]
    max_connections: usize,
    /// Requests computing at once across all tenants, shared fairly (0: no fair queuing;
    /// default: one per CPU, at least 2). A request gives its seat back while it waits for
    /// a commit or a webhook.
    #[arg(long)]
    max_concurrent_requests: Option<usize>,
    /// Requests one tenant may have waiting for a shared seat (beyond: 429).
    #[arg(long, default_value_t = 50)]
    max_queued_requests: usize,
    /// Address blocks tenants' webhooks may call by URL (comma-separated; loopback,
    /// link-local, the manager's own and the host's Service addresses are refused regardless).
    #[arg(long, value_delimiter = ',')]
    webhook_allow_cidrs: Vec<String>,
    /// The host cluster's Service IP ranges (comma-separated): tenants' Endpoints and webhooks
    /// never reach into them (default: the embedded host's, or 10.96.0.0/12 on a real host).
    #[arg(long, value_delimiter = ',')]
    host_service_cidr: Vec<String>,
    /// How long a client may take to send a request's headers, and to finish the TLS
    /// handshake (seconds).
    #[arg(long, default_value_t = 10, hide = true)]
    header_timeout: u64,
    /// How long a connection may stay open with no request in flight (seconds).
    #[arg(long, default_value_t = 90, hide = true)]
    idle_timeout: u64,
    /// Where the tenant DNS server listens (UDP and TCP; default: an ephemeral loopback port
    /// with the embedded host; none on a real host unless given, e.g. 0.0.0.0:5353 in a pod).
    #[arg(long)]
    dns_listen: Option<SocketAddr>,
    /// The address tenants' pods send DNS queries to (the cluster IP of the host Service in
    /// front of --dns-listen); default: the --dns-listen address.
    #[arg(long)]
    dns_server_ip: Option<std::net::IpAddr>,
    /// The host Service (in --namespace) in front of --dns-listen: its cluster IP is what
    /// tenants' pods send queries to (what the chart sets; --dns-server-ip gives it directly).
    #[arg(long, conflicts_with = "dns_server_ip")]
    dns_service: Option<String>,
    /// Upstream resolvers for names outside the tenants' cluster zone (comma-separated
    /// `ip[:port]`; default: this machine's /etc/resolv.conf).
    #[arg(long, value_delimiter = ',')]
    dns_upstream: Vec<String>,
    /// The host cluster's pod and node address ranges (comma-separated): tenants'
    /// NetworkPolicy ip blocks never reach into them, so `0.0.0.0/0` means the world outside
    /// the cluster (default: every private range — 10/8, 172.16/12, 192.168/16, 100.64/10,
    /// fc00::/7 — set the cluster's own to let tenants reach other private networks).
    #[arg(long, value_delimiter = ',')]
    host_cluster_cidr: Vec<String>,
    /// Tenants' Ingresses may claim `*.<tenant>.<ingress-domain>` (default: --domain).
    #[arg(long)]
    ingress_domain: Option<String>,
    /// This replica's identity when several share the tenants (`$POD_NAME` in the chart's
    /// StatefulSet); the host name if unset.
    #[arg(long, env = "POD_NAME")]
    replica_id: Option<String>,
    /// Run as one of several replicas sharing the tenants: other replicas pass connections
    /// for the tenants this one serves to this address (off: a single manager).
    #[arg(long)]
    peer_listen: Option<SocketAddr>,
    /// Where the other replicas reach --peer-listen (`host:port`); default: the pod IP (or
    /// the listen address) and the peer port.
    #[arg(long)]
    peer_advertise: Option<String>,
    /// The manager's own namespace on the host (tenants' credentials live there).
    #[arg(long, env = "POD_NAMESPACE", default_value = "vt-system")]
    namespace: String,
    /// The tenants' Service IP range.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cidr: String,
    /// Run the controllers inside every tenant (off only to measure what they cost).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, hide = true)]
    tenant_controllers: bool,
    /// Sync tenants' pods to the host (off only to measure what the syncer costs).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, hide = true)]
    tenant_syncer: bool,
}

/// Simulated node pools on the embedded host.
struct SimPools {
    sim: Arc<NodeSim>,
    per_pool: usize,
}

impl Pools for SimPools {
    fn ensure<'a>(&'a self, pool: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { self.sim.ensure_pool(pool, self.per_pool).await.map_err(|e| e.to_string()) })
    }

    fn remove<'a>(&'a self, pool: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { self.sim.remove_pool(pool).await.map_err(|e| e.to_string()) })
    }
}

/// The embedded host's Service range.
const EMBEDDED_SERVICE_CIDR: &str = "10.128.0.0/12";

/// Runs the manager until killed, keeping its data (tenants' stores, the embedded host's store)
/// in `data_dir`.
pub async fn run(args: Args, data_dir: PathBuf) -> Result<(), String> {
    std::fs::create_dir_all(&data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let mut sim_pods = None;
    let (host_kubeconfig, embedded) = match &args.host_kubeconfig {
        _ if args.host_in_cluster => (PathBuf::new(), false),
        Some(p) => (p.clone(), false),
        None => {
            let host = crate::apiserver::Args {
                data_dir: data_dir.join("host"),
                listen: args.host_listen,
                etcd: Vec::new(),
                etcd_prefix: String::new(),
                service_cidr: EMBEDDED_SERVICE_CIDR.into(),
                compaction_interval: 60,
                compaction_retain: 10_000,
                token_auth_file: None,
                bookmark_interval: 60,
                // The embedded host behaves like a real cluster: kube-controller-manager's set.
                controllers: true,
                simulate_nodes: 0,
            };
            let started = crate::apiserver::start(&host).await?;
            sim_pods = Some(started.sim_pods.clone());
            (started.kubeconfig, true)
        }
    };
    let config = if args.host_in_cluster {
        kube::Config::incluster().map_err(|e| format!("not running in a cluster: {e}"))?
    } else {
        let kc = kube::config::Kubeconfig::read_from(&host_kubeconfig)
            .map_err(|e| format!("{}: {e}", host_kubeconfig.display()))?;
        kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.map_err(|e| e.to_string())?
    };
    // Streams (logs -f, exec, port-forward) are passed through for as long as they last: their
    // client has no read timeout.
    let mut stream_config = config.clone();
    stream_config.read_timeout = None;
    let streams = kube::Client::try_from(stream_config).map_err(|e| e.to_string())?;
    let host = kube::Client::try_from(config).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let local = if bound.ip().is_unspecified() { SocketAddr::from(([127, 0, 0, 1], bound.port())) } else { bound };
    let advertise = args.advertise.clone().unwrap_or_else(|| local.to_string());
    let endpoint = SocketAddr::new(args.advertise_ip.unwrap_or(local.ip()), bound.port());
    // The tenant DNS server: bound now (a taken port is an error at start), served once the
    // host's pods are watched.
    let dns_listen = args.dns_listen.or(embedded.then(|| SocketAddr::from(([127, 0, 0, 1], 0))));
    let dns = match dns_listen {
        Some(addr) => {
            let (udp, tcp, bound) = bind_dns(addr).await?;
            let upstreams = if args.dns_upstream.is_empty() {
                vt_dns::Forwarder::resolv_conf(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
            } else {
                args.dns_upstream
                    .iter()
                    .map(|u| {
                        u.parse::<SocketAddr>()
                            .or_else(|_| u.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                            .map_err(|_| format!("--dns-upstream: invalid address {u:?}"))
                    })
                    .collect::<Result<Vec<_>, _>>()?
            };
            Some((bound, vt_manager::Dns { udp, tcp, forwarder: vt_dns::Forwarder::new(upstreams, 10_000) }))
        }
        None => None,
    };
    let dns_addr = dns.as_ref().map(|(a, _)| *a);
    let dns_service_ip = match &args.dns_service {
        Some(name) => Some(service_ip(&host, &args.namespace, name).await?),
        None => None,
    };
    let settings = Settings {
        data_dir: data_dir.clone(),
        advertise: advertise.clone(),
        endpoint,
        domain: args.domain.clone(),
        max_in_flight: args.max_requests_inflight,
        qps: args.qps,
        burst: args.burst,
        max_watches: args.max_watches,
        max_connections: args.max_connections,
        seats: args.max_concurrent_requests.unwrap_or_else(|| {
            std::thread::available_parallelism().map(std::num::NonZeroUsize::get).unwrap_or(2).max(2)
        }),
        queue_length: args.max_queued_requests,
        queue_wait: std::time::Duration::from_secs(15),
        host_service_cidrs: {
            let given = args.host_service_cidr.join(",");
            let spec = if !given.is_empty() {
                given
            } else if embedded {
                EMBEDDED_SERVICE_CIDR.to_string()
            } else {
                "10.96.0.0/12".to_string()
            };
            vt_net::CidrSet::parse_list(&spec).map_err(|e| format!("--host-service-cidr: {e}"))?
        },
        host_cluster_cidrs: {
            let given = args.host_cluster_cidr.join(",");
            let spec = if given.is_empty() {
                "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7".to_string()
            } else {
                given
            };
            vt_net::CidrSet::parse_list(&spec).map_err(|e| format!("--host-cluster-cidr: {e}"))?
        },
        webhook_allow: vt_net::CidrSet::parse_list(&args.webhook_allow_cidrs.join(","))
            .map_err(|e| format!("--webhook-allow-cidrs: {e}"))?,
        namespace: args.namespace.clone(),
        ingress_domain: args.ingress_domain.clone().unwrap_or_else(|| args.domain.clone()),
        dns_server: args
            .dns_server_ip
            .or(dns_service_ip)
            .or(dns_addr.map(|a| if a.ip().is_unspecified() { local.ip() } else { a.ip() })),
        serve: vt_apiserver::serve::ServeOptions {
            handshake_timeout: std::time::Duration::from_secs(args.header_timeout.max(1)),
            header_timeout: std::time::Duration::from_secs(args.header_timeout.max(1)),
            idle_timeout: std::time::Duration::from_secs(args.idle_timeout.max(1)),
            ..Default::default()
        },
        service_cidr: args.service_cidr.clone(),
        controllers: args.tenant_controllers,
        syncer: args.tenant_syncer,
    };
    let mut manager = Manager::new(settings).with_stream_client(streams);
    if let Some((_, dns)) = dns {
        manager = manager.with_dns(dns);
    }
    if embedded {
        let cidr = args.sim_pod_cidr.parse().map_err(|e| format!("--sim-pod-cidr: {e}"))?;
        let sim = NodeSim::with_pod_cidr(host.clone(), cidr);
        if let Some(c) = &sim_pods {
            c.attach(&sim);
        }
        sim.start().await.map_err(|e| format!("simulated nodes: {e}"))?;
        manager = manager.with_pools(Arc::new(SimPools { sim, per_pool: args.nodes_per_pool.max(1) }));
    }
    let admin = if args.admin_listen.is_empty() {
        None
    } else {
        let addr: SocketAddr = args.admin_listen.parse().map_err(|e| format!("--admin-listen: {e}"))?;
        Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?)
    };
    let admin_addr = admin.as_ref().and_then(|a| a.local_addr().ok());
    if let Some(peer) = args.peer_listen {
        let listener =
            tokio::net::TcpListener::bind(peer).await.map_err(|e| format!("cannot listen on {peer}: {e}"))?;
        let bound = listener.local_addr().map_err(|e| e.to_string())?;
        let ip = if bound.ip().is_unspecified() { args.advertise_ip.unwrap_or(local.ip()) } else { bound.ip() };
        let address = args.peer_advertise.clone().unwrap_or_else(|| SocketAddr::new(ip, bound.port()).to_string());
        let id = match &args.replica_id {
            Some(id) if !id.is_empty() => id.clone(),
            _ => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .map_err(|e| format!("--replica-id is needed (no host name: {e})"))?,
        };
        let label = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
        if id.is_empty() || id.len() > 63 || !id.chars().all(label) || id.starts_with(['-', '.']) {
            return Err(format!("--replica-id {id:?}: want lowercase letters, digits, '-' and '.' (at most 63)"));
        }
        manager = manager.with_replicas(vt_manager::replicas::ReplicaSettings::new(&id, &address), listener);
    }
    tracing::info!(tenants = %bound, embedded, "vt server starting");
    let ready = async {
        // A line tests and scripts can wait for.
        println!(
            "vt server: tenants on https://{advertise} (as <tenant>.{}), host {}{}",
            args.domain,
            if args.host_in_cluster {
                "in-cluster".to_string()
            } else {
                format!("kubeconfig {}", host_kubeconfig.display())
            },
            admin_addr.map(|a| format!(", metrics http://{a}/metrics")).unwrap_or_default(),
        );
        if let Some(a) = dns_addr {
            println!("vt server: tenant DNS on {a} (UDP and TCP)");
        }
    };
    manager.run(host, listener, admin, ready, terminated()).await
}

/// Resolves on SIGTERM (how Kubernetes stops a pod) or SIGINT.
async fn terminated() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot catch SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = term => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
    }
}

/// The DNS server's UDP and TCP sockets on one port. Port 0 takes a free UDP port, and tries
/// again when its TCP twin is taken by someone else.
async fn bind_dns(addr: SocketAddr) -> Result<(tokio::net::UdpSocket, tokio::net::TcpListener, SocketAddr), String> {
    let mut attempt = 0;
    loop {
        let udp =
            tokio::net::UdpSocket::bind(addr).await.map_err(|e| format!("cannot listen for DNS on {addr}: {e}"))?;
        let bound = udp.local_addr().map_err(|e| e.to_string())?;
        match tokio::net::TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp, bound)),
            Err(e) if addr.port() == 0 && attempt < 20 => {
                tracing::debug!(%bound, error = %e, "the TCP twin of a free UDP port is taken; another");
                attempt += 1;
            }
            Err(e) => return Err(format!("cannot listen for DNS on {bound} (TCP): {e}")),
        }
    }
}

/// The cluster IP of Service `namespace/name` on the host (waiting a little for one).
async fn service_ip(host: &kube::Client, namespace: &str, name: &str) -> Result<std::net::IpAddr, String> {
    let services: kube::Api<k8s_openapi::api::core::v1::Service> = kube::Api::namespaced(host.clone(), namespace);
    for _ in 0..60 {
        if let Ok(Some(s)) = services.get_opt(name).await
            && let Some(ip) = s.spec.and_then(|s| s.cluster_ip).and_then(|ip| ip.parse().ok())
        {
            return Ok(ip);
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    Err(format!("--dns-service: Service {namespace}/{name} has no cluster IP"))
}
