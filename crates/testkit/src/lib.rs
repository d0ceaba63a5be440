//! Test fixtures for vt: a real etcd server on a loopback port, the real `vt` binary with the
//! real kubectl, and free ports.
//!
//! Servers started here never outlive the test process: each runs under a small shell
//! watchdog that kills it (and removes its data) as soon as the test process's end of a pipe
//! closes, which happens even when the test process is killed.

pub mod https;
pub mod manager;
pub mod process;
pub mod replicas;
pub mod tls;
pub mod vt;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use manager::{Options as ManagerOptions, VtManager};
pub use process::Watched;
pub use vt::{Kubectl, VtServer};

/// A free TCP port on 127.0.0.1 (free when this returns; callers bind it promptly).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind an ephemeral port on 127.0.0.1")
}

/// The etcd binary, or a panic that says how to install it: etcd tests never skip silently.
pub fn etcd_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let candidates = std::env::var_os("VT_ETCD_BIN")
        .map(PathBuf::from)
        .into_iter()
        .chain(std::env::split_paths(&path).map(|d| d.join("etcd")));
    for c in candidates {
        if c.is_file() {
            return c;
        }
    }
    panic!(
        "etcd is not installed, and the etcd backend tests need a real etcd server.\n\
         Install it with `apt-get install -y etcd-server` (Debian/Ubuntu), or point VT_ETCD_BIN at an etcd binary."
    )
}

/// A real etcd server, started on free loopback ports with a temporary data directory.
pub struct EtcdServer {
    endpoint: String,
    data_dir: PathBuf,
    args: Vec<String>,
    process: Option<Watched>,
    /// Whether the watchdog removes the data directory when the test process exits (for the
    /// shared server, which is never dropped).
    cleanup_on_exit: bool,
}

impl EtcdServer {
    /// Starts a dedicated etcd server; it stops and its data is removed when this is dropped.
    pub fn start() -> EtcdServer {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start() {
                Ok(s) => return s,
                Err(e) => last = e,
            }
        }
        panic!("etcd did not start: {last}");
    }

    /// A server shared by every test of the current test binary (each test should use its own
    /// key prefix). Tests that compact must use [`EtcdServer::start`]: compaction is
    /// cluster-wide.
    pub fn shared() -> &'static EtcdServer {
        static SHARED: OnceLock<EtcdServer> = OnceLock::new();
        SHARED.get_or_init(|| {
            let mut server = EtcdServer::start();
            server.cleanup_on_exit = true;
            // Restart under a watchdog that also removes the data when the process exits.
            server.restart();
            server
        })
    }

    /// The client URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The process id of the etcd server.
    pub fn pid(&self) -> u32 {
        self.process.as_ref().map(Watched::pid).unwrap_or(0)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn try_start() -> Result<EtcdServer, String> {
        let data_dir = tempfile::Builder::new()
            .prefix("vt-etcd-")
            .tempdir()
            .map_err(|e| format!("cannot create a data dir: {e}"))?
            .keep();
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let args = vec![
            "--name=vt-test".to_string(),
            format!("--data-dir={}", data_dir.join("data").display()),
            format!("--listen-client-urls={endpoint}"),
            format!("--advertise-client-urls={endpoint}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=vt-test={peer_url}"),
            // Room for vt's largest objects (etcd's default is 1.5 MiB per request).
            "--max-request-bytes=8388608".to_string(),
            "--quota-backend-bytes=8589934592".to_string(),
            "--logger=zap".to_string(),
            "--log-outputs=stderr".to_string(),
        ];
        let mut server = EtcdServer { endpoint, data_dir, args, process: None, cleanup_on_exit: false };
        server.spawn()?;
        Ok(server)
    }

    /// Starts the etcd process under its watchdog and waits until it is healthy.
    fn spawn(&mut self) -> Result<(), String> {
        let cleanup = self.cleanup_on_exit.then_some(self.data_dir.as_path());
        let process = Watched::spawn(&etcd_binary(), &self.args, &[], &self.data_dir.join("etcd.log"), cleanup)?;
        self.process = Some(process);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if healthy(&self.endpoint) {
                return Ok(());
            }
            if !self.process.as_ref().is_some_and(Watched::alive) {
                let log = self.process.as_ref().map(Watched::log).unwrap_or_default();
                self.stop();
                return Err(format!("etcd exited; its log:\n{}", process::tail(&log, 40)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop();
        Err("etcd did not become healthy within 30s".into())
    }

    /// Kills the server with SIGKILL, as a crash would, keeping its data.
    pub fn kill(&mut self) {
        self.stop();
    }

    /// Starts the server again on the same ports and data after [`EtcdServer::kill`].
    pub fn restart(&mut self) {
        self.stop();
        self.spawn().unwrap_or_else(|e| panic!("etcd did not restart: {e}"));
    }

    fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Whether etcd at `endpoint` answers its health check.
fn healthy(endpoint: &str) -> bool {
    let addr = endpoint.trim_start_matches("http://");
    let Ok(mut conn) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    if conn.write_all(format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = conn.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

/// Polls `f` every 100 ms until it returns something (then returns it), for at most `limit`;
/// panics naming `what` after that. Waits of over 3 s are reported on stderr.
pub fn eventually_within<T>(what: &str, limit: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let started = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            if started.elapsed() > std::time::Duration::from_secs(3) {
                eprintln!("{what}: {:.1}s", started.elapsed().as_secs_f64());
            }
            return v;
        }
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// [`eventually_within`] a minute.
pub fn eventually<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    eventually_within(what, std::time::Duration::from_secs(60), f)
}

/// The resident set size of a process, in KiB (0 if it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
