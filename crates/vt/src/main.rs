//! The `vt` command.

mod apiserver;
mod kubeconfig;

use clap::{Parser, Subcommand};

/// vt — virtual Kubernetes control planes.
#[derive(Parser)]
#[command(name = "vt", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one standalone virtual API server (for testing and benchmarking).
    Apiserver(apiserver::Args),
}

fn main() -> std::process::ExitCode {
    // One crypto provider for the whole process (kube and our TLS both use ring).
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("VT_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vt: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Apiserver(args) => apiserver::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vt: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
