//! The `vt` command.

mod apiserver;
mod lifecycle;
mod migrate;
mod paths;
mod server;
mod tenants;

use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

/// vt — a Kubernetes cluster for every customer, at megabytes and milliseconds each.
#[derive(Parser)]
#[command(name = "vt", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    host: tenants::HostArgs,
    /// Log format on stderr: `text` (colours only on a terminal) or `json` (one object a line).
    #[arg(long, value_enum, default_value = "text", env = "VT_LOG_FORMAT", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the tenant manager (with its own embedded host unless --host-kubeconfig is given).
    Server(Box<server::Args>),
    /// Create a tenant and wait until it is ready.
    Create(tenants::CreateArgs),
    /// Use a tenant: merge its kubeconfig as context vt-NAME (or --print it, or run `-- CMD`).
    Connect(tenants::ConnectArgs),
    /// Switch back to the kubeconfig context used before `vt connect`.
    Disconnect,
    /// List tenants.
    List {
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: tenants::Format,
    },
    /// Show a tenant in detail.
    Describe {
        /// The tenant.
        name: String,
    },
    /// Delete a tenant: its control plane, host namespace and data.
    Delete {
        /// The tenant.
        name: String,
        /// Return without waiting for the deletion to finish.
        #[arg(long)]
        no_wait: bool,
    },
    /// Stop a tenant's control plane and remove its pods (its data stays).
    Pause {
        /// The tenant.
        name: String,
    },
    /// Bring a paused tenant back.
    Resume {
        /// The tenant.
        name: String,
    },
    /// Put a tenant to sleep now: its control plane leaves memory until its next request
    /// (refused while its pods run on the host).
    Sleep {
        /// The tenant.
        name: String,
    },
    /// Wake a sleeping tenant now, rather than at its next request.
    Wake {
        /// The tenant.
        name: String,
    },
    /// Move a sleeping or paused tenant's store to etcd (so any manager replica can serve
    /// it), or back to SQLite; objects and credentials stay, clients re-list.
    Migrate {
        /// The tenant.
        name: String,
        /// Client URLs of the etcd cluster to move to.
        #[arg(long, value_delimiter = ',', required_unless_present = "sqlite", conflicts_with = "sqlite")]
        etcd: Vec<String>,
        /// The key prefix in etcd (`/vt/<tenant>/` by default).
        #[arg(long, requires = "etcd")]
        etcd_prefix: Option<String>,
        /// Move back to the tenant's SQLite file in the manager's data directory.
        #[arg(long)]
        sqlite: bool,
    },
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Run one standalone virtual API server (for testing and benchmarking).
    Apiserver(apiserver::Args),
    /// Print the Tenant CustomResourceDefinition (what charts/vt/crds holds).
    #[command(hide = true)]
    Crd,
    /// Print the data directory in use (scripts use it to find the server's files).
    #[command(hide = true)]
    DataDir,
}

/// Log formats.
#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// tracing-subscriber's JSON, one object per line (for log collectors).
    Json,
}

/// Logs to stderr, filtered by `VT_LOG` (`info` by default). Colour codes only go to a terminal
/// (and never with `NO_COLOR` set), so files and collectors get plain text.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("VT_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_current_span(false).init(),
        LogFormat::Text => {
            let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(ansi).init()
        }
    }
}

fn main() -> std::process::ExitCode {
    // One crypto provider for the whole process (kube and our TLS both use ring).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vt: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let timeout = Duration::from_secs(120);
    let host = cli.host.clone();
    let result = rt.block_on(async move {
        let ok = |r: Result<(), String>| r.map(|()| std::process::ExitCode::SUCCESS);
        match cli.command {
            Command::Server(args) => ok(server::run(*args, host.data_dir.clone()).await),
            Command::Create(args) => ok(tenants::create(&host, args).await),
            Command::Connect(args) => tenants::connect(&host, args).await,
            Command::Disconnect => ok(tenants::disconnect()),
            Command::List { output } => ok(tenants::list(&host, output).await),
            Command::Describe { name } => ok(tenants::describe(&host, &name).await),
            Command::Delete { name, no_wait } => ok(tenants::delete(&host, &name, !no_wait, timeout).await),
            Command::Pause { name } => ok(lifecycle::set_paused(&host, &name, true, timeout).await),
            Command::Resume { name } => ok(lifecycle::set_paused(&host, &name, false, timeout).await),
            Command::Sleep { name } => ok(lifecycle::set_sleeping(&host, &name, true, timeout).await),
            Command::Wake { name } => ok(lifecycle::set_sleeping(&host, &name, false, timeout).await),
            Command::Migrate { name, etcd, etcd_prefix, sqlite } => {
                let to = if sqlite {
                    migrate::Destination::Sqlite
                } else {
                    migrate::Destination::Etcd { endpoints: etcd, prefix: etcd_prefix }
                };
                ok(migrate::migrate(&host, &name, to).await)
            }
            Command::Completions { shell } => {
                clap_complete::generate(shell, &mut Cli::command(), "vt", &mut std::io::stdout());
                Ok(std::process::ExitCode::SUCCESS)
            }
            Command::Apiserver(args) => ok(apiserver::run(args).await),
            Command::DataDir => {
                println!("{}", host.data_dir.display());
                Ok(std::process::ExitCode::SUCCESS)
            }
            Command::Crd => {
                use kube::CustomResourceExt;
                let crd =
                    vt_apiserver::object::to_value(vt_manager::tenant::Tenant::crd()).map_err(|e| e.to_string())?;
                print!("{}", serde_saphyr::to_string(&crd).map_err(|e| e.to_string())?);
                Ok(std::process::ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vt: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
