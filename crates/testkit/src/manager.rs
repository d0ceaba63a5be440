//! The real `vt server` (embedded host) and the real `vt` CLI, for end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{Output, Watched, tail};
use crate::vt::Kubectl;

/// A free loopback port (bound and released; fine for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// How a [`VtManager`] runs beyond its arguments.
#[derive(Clone, Debug)]
pub struct Options {
    /// Pass no `--data-dir`: the server and the CLI use the default per-user directory under
    /// a temporary `HOME`, and run from different working directories.
    pub default_data_dir: bool,
    /// Write stderr (the logs) apart from stdout, to [`VtManager::stderr_log`].
    pub split_stderr: bool,
    /// `VT_LOG` (`warn` by default, to keep test logs short).
    pub log_level: String,
    /// More environment variables of the server (`MALLOC_ARENA_MAX`, ...).
    pub env: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options { default_data_dir: false, split_stderr: false, log_level: "warn".into(), env: Vec::new() }
    }
}

/// A `vt server` with its embedded host, on ephemeral loopback ports and its own data dir.
pub struct VtManager {
    bin: PathBuf,
    args: Vec<String>,
    opts: Options,
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
        VtManager::start_with(bin, extra, Options::default())
    }

    /// Starts `vt server` with `extra` arguments and `opts`.
    pub fn start_with(bin: &Path, extra: &[&str], opts: Options) -> VtManager {
        let dir = tempfile::Builder::new().prefix("vt-manager-").tempdir().expect("temp dir");
        // Port 0 everywhere: the server picks free ports itself and says which (ports picked
        // here could be taken by a test running alongside before the server binds them).
        let (listen, admin) = ("127.0.0.1:0".to_string(), "127.0.0.1:0".to_string());
        let mut args: Vec<String> = vec!["server".into()];
        if !opts.default_data_dir {
            args.extend(["--data-dir".into(), dir.path().join("data").display().to_string()]);
        }
        args.extend([
            "--listen".into(),
            listen.clone(),
            "--host-listen".into(),
            "127.0.0.1:0".into(),
            "--admin-listen".into(),
            admin.clone(),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut m = VtManager { bin: bin.to_path_buf(), args, opts, dir, process: None, listen, admin };
        m.spawn();
        m.pin_ports();
        m
    }

    /// Reads the ports the server bound from what it printed and wrote, and starts it on the
    /// same ones from now on (clients' kubeconfigs name them).
    fn pin_ports(&mut self) {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let line =
            log.lines().find(|l| l.starts_with("vt server: tenants on https://")).unwrap_or_default().to_string();
        if let Some(listen) = line.strip_prefix("vt server: tenants on https://").and_then(|r| r.split(' ').next()) {
            self.listen = listen.to_string();
        }
        if let Some(admin) = line.split("metrics http://").nth(1).and_then(|r| r.strip_suffix("/metrics")) {
            self.admin = admin.to_string();
        }
        let host_kc =
            std::fs::read_to_string(self.data_dir().join("host").join("admin.kubeconfig")).unwrap_or_default();
        let host = host_kc
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: https://"))
            .map(str::to_string)
            .unwrap_or_default();
        let mut args = self.args.clone();
        for (flag, value) in [("--listen", &self.listen), ("--admin-listen", &self.admin), ("--host-listen", &host)] {
            if let Some(i) = args.iter().position(|a| a == flag)
                && !value.is_empty()
            {
                args[i + 1] = value.clone();
            }
        }
        self.args = args;
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("vt-server.log")
    }

    /// The file the server's stderr goes to when [`Options::split_stderr`] is set.
    pub fn stderr_log(&self) -> PathBuf {
        self.dir.path().join("vt-server.stderr")
    }

    /// The `HOME` the server and the CLI run with.
    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    /// The working directory of the server (`server-cwd`) or the CLI (`cli-cwd`).
    fn cwd(&self, which: &str) -> PathBuf {
        let d = self.dir.path().join(which);
        std::fs::create_dir_all(&d).expect("working directory");
        d
    }

    fn spawn(&mut self) {
        let before = std::fs::read_to_string(self.log_path()).map(|l| l.len()).unwrap_or(0);
        let home = self.dir.path().display().to_string();
        let mut envs = vec![("VT_LOG", self.opts.log_level.as_str()), ("HOME", home.as_str()), ("XDG_DATA_HOME", "")];
        envs.extend(self.opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let stderr = self.opts.split_stderr.then(|| self.stderr_log());
        let cwd = self.cwd("server-cwd");
        let out = Output { log: &self.log_path(), stderr: stderr.as_deref(), cwd: Some(&cwd) };
        let p = Watched::spawn_with(&self.bin, &self.args, &envs, &out, None).expect("start vt server");
        self.process = Some(p);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            if log[before.min(log.len())..].lines().any(|l| l.starts_with("vt server: ")) {
                return;
            }
            if !self.process.as_ref().is_some_and(Watched::alive) {
                // A panic's message first (a backtrace would push it out of the tail).
                let panic: String =
                    log.lines().skip_while(|l| !l.contains("panicked at")).take(3).collect::<Vec<_>>().join("\n");
                panic!("vt server exited before serving; {panic}\nits log:\n{}", tail(&log, 40));
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

    /// The manager's log so far (stdout, then stderr if it goes apart).
    pub fn log(&self) -> String {
        let mut log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        if self.opts.split_stderr {
            log.push_str(&std::fs::read_to_string(self.stderr_log()).unwrap_or_default());
        }
        log
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        if self.opts.default_data_dir { self.dir.path().join(".local/share/vt") } else { self.dir.path().join("data") }
    }

    /// Runs the `vt` CLI against this manager (from another working directory than the
    /// server's).
    pub fn vt(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(&self.bin);
        if !self.opts.default_data_dir {
            cmd.arg("--data-dir").arg(self.data_dir());
        }
        cmd.args(args)
            .current_dir(self.cwd("cli-cwd"))
            .env("HOME", self.dir.path())
            .env_remove("XDG_DATA_HOME")
            .env_remove("VT_DATA_DIR")
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
