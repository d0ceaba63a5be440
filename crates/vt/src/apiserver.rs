//! `vt apiserver`: one standalone virtual API server on a loopback (or any) port, with its own
//! CA and an admin kubeconfig, on SQLite (default) or etcd.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use vt_apiserver::auth::StaticTokens;
use vt_apiserver::ipalloc::IpAddressAllocator;
use vt_apiserver::rbac::Rbac;
use vt_apiserver::serve::{Endpoint, Single, serve, tls_config};
use vt_apiserver::serviceaccount::{Issuer, ServiceAccountTokens};
use vt_apiserver::{ApiServer, Config};
use vt_pki::{Ca, CertKey};
use vt_store::Store;
use vt_store::etcd::{EtcdOptions, EtcdStore};
use vt_store::sqlite::{CompactionPolicy, SqliteOptions, SqliteStore};

/// Arguments of `vt apiserver`.
#[derive(clap::Args, Clone)]
pub struct Args {
    /// Directory for the store, certificates and the admin kubeconfig.
    #[arg(long, default_value = "vt-data")]
    pub(crate) data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub(crate) listen: SocketAddr,
    /// etcd endpoints (comma-separated); without them the store is SQLite in the data dir.
    #[arg(long, value_delimiter = ',')]
    pub(crate) etcd: Vec<String>,
    /// Key prefix in etcd.
    #[arg(long, default_value = "/vt/standalone")]
    pub(crate) etcd_prefix: String,
    /// The Service cluster IP range.
    #[arg(long, default_value = "10.96.0.0/12")]
    pub(crate) service_cidr: String,
    /// How often the SQLite store compacts its history, in seconds (0 disables).
    #[arg(long, default_value_t = 60)]
    pub(crate) compaction_interval: u64,
    /// How many revisions of history the SQLite store keeps for watches and paginated lists.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) compaction_retain: i64,
    /// A CSV file of bearer tokens (`token,user,uid[,"group1,group2"]`), as kube-apiserver's
    /// `--token-auth-file`.
    #[arg(long)]
    pub(crate) token_auth_file: Option<PathBuf>,
    /// Seconds between watch bookmarks.
    #[arg(long, default_value_t = 60, hide = true)]
    pub(crate) bookmark_interval: u64,
    /// Run every controller kube-controller-manager would (ServiceAccounts, Deployments,
    /// ReplicaSets, StatefulSets, DaemonSets, Jobs, CronJobs, Endpoints, PodDisruptionBudgets),
    /// as every tenant does. Namespace lifecycle, garbage collection and pod GC always run.
    #[arg(long)]
    pub(crate) controllers: bool,
    /// Simulated nodes in this cluster (scheduler and kubelet included), for experiments.
    #[arg(long, default_value_t = 0)]
    pub(crate) simulate_nodes: usize,
}

/// The CA kept in `dir` as `<stem>.crt` and `<stem>.key`, created once.
fn read_or_create_ca(dir: &std::path::Path, stem: &str, common_name: &str) -> Result<Ca, String> {
    let (cert, key) = (dir.join(format!("{stem}.crt")), dir.join(format!("{stem}.key")));
    if cert.exists() && key.exists() {
        let material = CertKey {
            cert_pem: std::fs::read_to_string(&cert).map_err(|e| format!("{}: {e}", cert.display()))?,
            key_pem: std::fs::read_to_string(&key).map_err(|e| format!("{}: {e}", key.display()))?,
        };
        return Ca::load(material).map_err(|e| e.to_string());
    }
    let ca = Ca::generate(common_name).map_err(|e| e.to_string())?;
    write_private(&cert, &ca.material().cert_pem)?;
    write_private(&key, &ca.material().key_pem)?;
    Ok(ca)
}

fn write_private(path: &std::path::Path, contents: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(contents.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}

/// A started API server.
pub struct Started {
    /// `https://addr`.
    pub url: String,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// Serves `kubectl logs` (and refuses `exec`) for pods on simulated nodes, once a
    /// simulation is attached.
    pub sim_pods: Arc<vt_nodesim::SimConnector>,
}

/// Runs the server until killed.
pub async fn run(args: Args) -> Result<(), String> {
    let started = start(&args).await?;
    // A line tests and scripts can wait for.
    println!("serving on {}, kubeconfig {}", started.url, started.kubeconfig.display());
    std::future::pending::<()>().await;
    Ok(())
}

/// Starts the server (serving in the background) and writes its admin kubeconfig.
pub async fn start(args: &Args) -> Result<Started, String> {
    std::fs::create_dir_all(&args.data_dir).map_err(|e| format!("{}: {e}", args.data_dir.display()))?;
    let store: Arc<dyn Store> = if args.etcd.is_empty() {
        Arc::new(
            SqliteStore::open(
                args.data_dir.join("store.db"),
                SqliteOptions {
                    compaction: CompactionPolicy {
                        interval: std::time::Duration::from_secs(args.compaction_interval),
                        retain_revisions: args.compaction_retain,
                    },
                    ..SqliteOptions::default()
                },
            )
            .await
            .map_err(|e| e.to_string())?,
        )
    } else {
        Arc::new(
            EtcdStore::connect(EtcdOptions::new(args.etcd.clone(), args.etcd_prefix.clone()))
                .await
                .map_err(|e| e.to_string())?,
        )
    };
    let ca = read_or_create_ca(&args.data_dir, "ca", "vt-apiserver-ca")?;
    let front_proxy_ca = read_or_create_ca(&args.data_dir, "front-proxy-ca", "vt-apiserver-front-proxy-ca")?;
    let ips = vec![args.listen.ip()];
    let serving = ca
        .issue_server("vt-apiserver", &["localhost".into(), "kubernetes".into(), "kubernetes.default.svc".into()], &ips)
        .map_err(|e| e.to_string())?;
    let admin =
        ca.issue_client("vt-admin", Some("system:masters"), vt_pki::DEFAULT_VALIDITY).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let server = format!("https://{addr}");
    let kubeconfig =
        vt_manager::kubeconfig::render("vt", &server, ca.cert_pem(), &admin.cert_pem, &admin.key_pem, None);
    let kc_path = args.data_dir.join("admin.kubeconfig");
    write_private(&kc_path, &kubeconfig)?;
    let authorizer = Rbac::start(store.clone()).await.map_err(|e| format!("cannot read RBAC objects: {e}"))?;
    // The ServiceAccount token signing key, created once with the data directory.
    let sa_key_path = args.data_dir.join("sa.key");
    let sa_key = match std::fs::read_to_string(&sa_key_path) {
        Ok(k) => k,
        Err(_) => {
            let k = vt_pki::generate_signing_key().map_err(|e| e.to_string())?;
            write_private(&sa_key_path, &k)?;
            k
        }
    };
    let issuer = Arc::new(Issuer::new(
        &vt_pki::pkcs8_der(&sa_key).map_err(|e| format!("{}: {e}", sa_key_path.display()))?,
        vt_apiserver::serviceaccount::DEFAULT_ISSUER,
        &format!("{server}/openid/v1/jwks"),
        ca.cert_pem(),
    )?);
    let mut tokens: Vec<Arc<dyn vt_apiserver::auth::TokenAuthenticator>> =
        vec![Arc::new(ServiceAccountTokens::new(issuer.clone(), store.clone()))];
    let sim_pods = vt_nodesim::SimConnector::new();
    let config = Config {
        store,
        authorizer,
        tokens: {
            if let Some(path) = &args.token_auth_file {
                let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
                let file = StaticTokens::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
                tokens.insert(0, Arc::new(file));
            }
            tokens
        },
        cluster_ips: Arc::new(IpAddressAllocator::new(&args.service_cidr)?),
        advertise: addr,
        name: "standalone".into(),
        bookmark_interval: std::time::Duration::from_secs(args.bookmark_interval.max(1)),
        service_accounts: Some(issuer),
        limits: None,
        observer: None,
        services: None,
        pods: Some(sim_pods.clone() as Arc<dyn vt_apiserver::PodConnector>),
        service_account_admission: args.controllers,
        egress: None,
        pod_security: None,
        host_provided: Vec::new(),
        fenced: None,
        front_proxy: Some(Arc::new(vt_apiserver::FrontProxy::issue(&front_proxy_ca, ca.cert_pem())?)),
        metrics: None,
    };
    let api = ApiServer::new(config).await.map_err(|e| format!("bootstrap failed: {e}"))?;
    let tls = Arc::new(tls_config(&serving, ca.cert_pem())?);
    tracing::info!(%addr, kubeconfig = %kc_path.display(), "vt apiserver serving");
    let set = if args.controllers { vt_controllers::Set::Full } else { vt_controllers::Set::Lifecycle };
    // Kept for the process's life.
    std::mem::forget(vt_controllers::start(api.clone(), ca.material(), set));
    if args.simulate_nodes > 0 {
        let sim = vt_nodesim::NodeSim::new(vt_controllers::client::in_process(api.clone()));
        sim_pods.attach(&sim);
        sim.start().await.map_err(|e| format!("simulated nodes: {e}"))?;
        for i in 0..args.simulate_nodes {
            let spec = vt_nodesim::NodeSpec { name: format!("sim-{i}"), ..Default::default() };
            sim.add_node(&spec).await.map_err(|e| format!("simulated nodes: {e}"))?;
        }
    }
    tokio::spawn(serve(listener, Arc::new(Single(Endpoint::serving(tls, api)))));
    Ok(Started { url: server, kubeconfig: kc_path, sim_pods })
}
