//! The real `vt server` (embedded host) and the real `vt` CLI, for end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::process::{Watched, tail};
use crate::vt::Kubectl;

/// A free loopback port (bound and released; fine for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A `vt server` with its embedded host, on ephemeral loopback ports and its own data dir.
pub struct VtManager {
    bin: PathBuf,
    args: Vec<String>,
    dir: tempfile::TempDir,
    process: Option<Watched>,
    /// The tenant listener (`127.0.0.1:PORT`).
    pub listen: String,
    /// The admin endpoint (`127.0.0.1:PORT`).
    pub admin: String,
}

impl VtManager {
    /// Starts `vt server` (binary `bin`) with `extra` arguments.
    pub fn start(bin: &Path, extra: &[&str]) -> VtManager {
        let dir = tempfile::Builder::new().prefix("vt-manager-").tempdir().expect("temp dir");
        let listen = format!("127.0.0.1:{}", free_port());
        let admin = format!("127.0.0.1:{}", free_port());
        let mut args: Vec<String> = vec![
            "server".into(),
            "--data-dir".into(),
            dir.path().join("data").display().to_string(),
            "--listen".into(),
            listen.clone(),
            "--host-listen".into(),
            format!("127.0.0.1:{}", free_port()),
            "--admin-listen".into(),
            admin.clone(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut m = VtManager { bin: bin.to_path_buf(), args, dir, process: None, listen, admin };
        m.spawn();
        m
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("vt-server.log")
    }

    fn spawn(&mut self) {
        let before = std::fs::read_to_string(self.log_path()).map(|l| l.len()).unwrap_or(0);
        let p = Watched::spawn(&self.bin, &self.args, &[("VT_LOG", "warn")], &self.log_path(), None)
            .expect("start vt server");
        self.process = Some(p);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            if log[before.min(log.len())..].lines().any(|l| l.starts_with("vt server: ")) {
                return;
            }
            if !self.process.as_ref().is_some_and(Watched::alive) {
                panic!("vt server exited before serving; its log:\n{}", tail(&log, 40));
            }
            if Instant::now() > deadline {
                panic!("vt server did not serve within 60s; its log:\n{}", tail(&log, 40));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the manager with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Kills the manager with SIGKILL and starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The process id of the running manager.
    pub fn pid(&self) -> u32 {
        self.process.as_ref().map(Watched::pid).unwrap_or(0)
    }

    /// The manager's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs the `vt` CLI against this manager.
    pub fn vt(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(args)
            .env("HOME", self.dir.path())
            .env_remove("KUBECONFIG")
            .env_remove("VT_HOST_KUBECONFIG")
            .output()
            .expect("run vt")
    }

    /// Runs the CLI and returns its stdout; panics with its stderr on failure.
    pub fn vt_ok(&self, args: &[&str]) -> String {
        let out = self.vt(args);
        assert!(
            out.status.success(),
            "vt {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A kubectl for the embedded host.
    pub fn host_kubectl(&self) -> Kubectl {
        Kubectl::new(&self.data_dir().join("host").join("admin.kubeconfig"), None)
    }

    /// A kubectl for a tenant (its kubeconfig from `vt connect --print`).
    pub fn tenant_kubectl(&self, tenant: &str) -> Kubectl {
        let kc = self.vt_ok(&["connect", tenant, "--print"]);
        let path = self.dir.path().join(format!("{tenant}-{}.kubeconfig", free_port()));
        std::fs::write(&path, kc).expect("write kubeconfig");
        Kubectl::new(&path, None)
    }
}

impl Drop for VtManager {
    fn drop(&mut self) {
        self.kill();
    }
}
