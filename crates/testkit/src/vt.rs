//! The real `vt` binary and the real `kubectl`, for end-to-end tests.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::process::{Watched, tail};

/// A `vt apiserver` process on an ephemeral loopback port, with its own data directory.
pub struct VtServer {
    bin: PathBuf,
    args: Vec<String>,
    dir: tempfile::TempDir,
    process: Option<Watched>,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The admin kubeconfig the server wrote.
    pub kubeconfig: PathBuf,
}

impl VtServer {
    /// Starts `vt apiserver` (binary `bin`) with `extra` arguments, on SQLite in a temporary
    /// directory unless `extra` names etcd endpoints.
    pub fn start(bin: &Path, extra: &[&str]) -> VtServer {
        let dir = tempfile::Builder::new().prefix("vt-e2e-").tempdir().expect("temp dir");
        let mut args =
            vec!["apiserver".to_string(), "--data-dir".into(), dir.path().join("data").display().to_string()];
        args.extend(["--listen".to_string(), "127.0.0.1:0".into()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut s = VtServer {
            bin: bin.to_path_buf(),
            args,
            dir,
            process: None,
            url: String::new(),
            kubeconfig: PathBuf::new(),
        };
        s.spawn();
        // Restarts reuse the port the first start got.
        let port = s.url.rsplit(':').next().expect("port").to_string();
        if let Some(i) = s.args.iter().position(|a| a == "127.0.0.1:0") {
            s.args[i] = format!("127.0.0.1:{port}");
        }
        s
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("vt.log")
    }

    fn spawn(&mut self) {
        let before = std::fs::read_to_string(self.log_path()).map(|l| l.len()).unwrap_or(0);
        let p = Watched::spawn(&self.bin, &self.args, &[("VT_LOG", "warn")], &self.log_path(), None).expect("start vt");
        self.process = Some(p);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            if let Some(line) = log[before.min(log.len())..].lines().find(|l| l.starts_with("serving on ")) {
                let rest = line.trim_start_matches("serving on ");
                let (url, kc) = rest.split_once(", kubeconfig ").expect("serving line");
                self.url = url.to_string();
                self.kubeconfig = PathBuf::from(kc.trim());
                return;
            }
            if !self.process.as_ref().is_some_and(Watched::alive) {
                panic!("vt exited before serving; its log:\n{}", tail(&log, 40));
            }
            if Instant::now() > deadline {
                panic!("vt did not serve within 60s; its log:\n{}", tail(&log, 40));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Kills the server with SIGKILL and starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The process id of the running server.
    pub fn pid(&self) -> u32 {
        self.process.as_ref().map(Watched::pid).unwrap_or(0)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A kubectl for this server, with its own discovery cache.
    pub fn kubectl(&self) -> Kubectl {
        Kubectl::new(&self.kubeconfig, None)
    }
}

impl Drop for VtServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The real kubectl, pointed at one kubeconfig with its own cache directory (never the user's
/// `~/.kube`).
pub struct Kubectl {
    binary: PathBuf,
    kubeconfig: PathBuf,
    cache: tempfile::TempDir,
}

impl Kubectl {
    /// A kubectl for `kubeconfig`; `version` (e.g. `"1.27"`) picks a specific installed kubectl
    /// instead of the version dispatcher on the `PATH` (or `VT_KUBECTL`).
    pub fn new(kubeconfig: &Path, version: Option<&str>) -> Kubectl {
        let binary = match version {
            Some(v) => {
                let p = PathBuf::from(format!("/usr/lib/google-cloud-sdk/bin/kubectl.{v}"));
                assert!(p.exists(), "kubectl {v} is not installed at {}", p.display());
                p
            }
            None => std::env::var_os("VT_KUBECTL").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("kubectl")),
        };
        Kubectl { binary, kubeconfig: kubeconfig.to_path_buf(), cache: tempfile::tempdir().expect("cache dir") }
    }

    /// The kubectl binary.
    pub fn binary_path(&self) -> PathBuf {
        self.binary.clone()
    }

    /// The kubeconfig.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.kubeconfig.clone()
    }

    /// The same kubeconfig with a specific kubectl version.
    pub fn version(&self, v: &str) -> Kubectl {
        Kubectl::new(&self.kubeconfig, Some(v))
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.binary);
        c.env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.cache.path())
            .env_remove("KUBECTL_EXTERNAL_DIFF")
            .arg("--cache-dir")
            .arg(self.cache.path().join("cache"))
            .arg("--request-timeout=30s")
            .args(args);
        c
    }

    /// Starts kubectl in the background (e.g. `get -w`), its output discarded; kill it when done.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run kubectl: {e}"))
    }

    /// Starts kubectl in the background with its stdout captured.
    pub fn spawn_piped(&self, args: &[&str]) -> std::process::Child {
        self.command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run kubectl: {e}"))
    }

    /// Runs kubectl.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap_or_else(|e| panic!("cannot run kubectl: {e}"))
    }

    /// Runs kubectl with `input` on stdin.
    pub fn run_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run kubectl: {e}"));
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
        child.wait_with_output().expect("kubectl output")
    }

    /// Runs kubectl and returns its stdout; panics with its stderr if it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "kubectl {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Like [`Kubectl::ok`] with `input` on stdin.
    pub fn ok_stdin(&self, args: &[&str], input: &str) -> String {
        let out = self.run_stdin(args, input);
        assert!(out.status.success(), "kubectl {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl, which must fail, and returns its stderr.
    /// Runs kubectl with `input` on stdin, expecting failure; returns stderr.
    pub fn fails_stdin(&self, args: &[&str], input: &str) -> String {
        let out = self.run_stdin(args, input);
        assert!(!out.status.success(), "kubectl {args:?} unexpectedly succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs kubectl, expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} unexpectedly succeeded:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}
