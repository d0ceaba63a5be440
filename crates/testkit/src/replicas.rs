//! Several `vt server` replicas against one separately started host (`vt apiserver`), tenants
//! on a real etcd: what the replica tests and the replica benchmark run. In front of them,
//! what a host Service does: one address, connections spread over the replicas that accept.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::{EtcdServer, Kubectl, VtServer, Watched, free_port};

/// One `vt server` replica.
pub struct Replica {
    /// Its id (`vt-<i>`).
    pub id: String,
    /// Its tenant listener (`127.0.0.1:PORT`).
    pub listen: String,
    bin: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    process: Option<Watched>,
}

impl Replica {
    fn start(bin: &Path, dir: &Path, i: usize, host_kc: &Path, advertise: &str) -> Replica {
        let id = format!("vt-{i}");
        let listen = format!("127.0.0.1:{}", free_port());
        // The peer port is picked by the server and published in its member Lease.
        let peer = "127.0.0.1:0".to_string();
        let data = dir.join(&id);
        let args: Vec<String> = [
            "server",
            "--host-kubeconfig",
            &host_kc.display().to_string(),
            "--data-dir",
            &data.display().to_string(),
            "--listen",
            &listen,
            "--advertise",
            advertise,
            "--admin-listen",
            "",
            "--replica-id",
            &id,
            "--peer-listen",
            &peer,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut r =
            Replica { id, listen, bin: bin.to_path_buf(), args, log: dir.join(format!("vt-{i}.log")), process: None };
        r.spawn();
        r
    }

    /// Starts it (again), waiting until it serves.
    pub fn spawn(&mut self) {
        let before = self.log().matches("vt server: tenants on").count();
        let p = Watched::spawn(&self.bin, &self.args, &[("VT_LOG", "warn,vt_manager=info")], &self.log, None)
            .expect("start vt server");
        self.process = Some(p);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.log().matches("vt server: tenants on").count() == before {
            assert!(Instant::now() < deadline, "{} did not serve:\n{}", self.id, self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it runs.
    pub fn running(&self) -> bool {
        self.process.is_some()
    }

    /// SIGTERM (how Kubernetes stops a pod), then waits for the process to end: how long it
    /// took.
    pub fn terminate(&mut self) -> Duration {
        let t0 = Instant::now();
        self.signal("-TERM");
        while self.process.as_ref().is_some_and(Watched::alive) {
            assert!(t0.elapsed() < Duration::from_secs(30), "{} did not end after SIGTERM:\n{}", self.id, self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
        let took = t0.elapsed();
        self.kill();
        took
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Sends `sig` (`-STOP`, `-CONT`, ...).
    pub fn signal(&self, sig: &str) {
        let pid = self.process.as_ref().expect("running").pid();
        assert!(std::process::Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
    }
}

/// The host, etcd and the replicas.
pub struct Fleet {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The host cluster.
    pub host: VtServer,
    /// The tenants' etcd.
    pub etcd: EtcdServer,
    /// The replicas.
    pub replicas: Vec<Replica>,
    /// The one address in front of them (what tenants' kubeconfigs name).
    pub front: String,
}

/// What a host Service with the replicas as endpoints does, for the tests: each connection
/// goes, bytes untouched, to the next replica in turn that accepts it (a stopped replica
/// refuses, as a pod leaving the endpoints would).
fn front(listener: TcpListener, backends: Vec<String>) {
    let next = Arc::new(AtomicUsize::new(0));
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let (backends, next) = (backends.clone(), next.clone());
        std::thread::spawn(move || {
            let start = next.fetch_add(1, Ordering::Relaxed);
            let upstream = (0..backends.len()).find_map(|k| {
                let addr = backends[(start + k) % backends.len()].parse().ok()?;
                TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()
            });
            let Some(upstream) = upstream else { return };
            let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
            let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), upstream.try_clone()) else { return };
            let (mut c1, mut u1) = (client, upstream);
            let up = std::thread::spawn(move || {
                let _ = std::io::copy(&mut c1, &mut u1);
                let _ = u1.shutdown(std::net::Shutdown::Write);
            });
            let _ = std::io::copy(&mut u2, &mut c2);
            let _ = c2.shutdown(std::net::Shutdown::Both);
            let _ = up.join();
        });
    }
}

impl Fleet {
    /// Starts etcd, a host and `n` replicas of `bin`.
    pub fn start(bin: &Path, n: usize) -> Fleet {
        let dir = tempfile::Builder::new().prefix("vt-replicas-").tempdir().unwrap();
        let etcd = EtcdServer::start();
        let host = VtServer::start(bin, &["--controllers"]);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the front");
        let front_addr = listener.local_addr().expect("front address").to_string();
        let replicas: Vec<Replica> =
            (0..n).map(|i| Replica::start(bin, dir.path(), i, &host.kubeconfig, &front_addr)).collect();
        let backends = replicas.iter().map(|r| r.listen.clone()).collect();
        std::thread::spawn(move || front(listener, backends));
        Fleet { dir, bin: bin.to_path_buf(), host, etcd, replicas, front: front_addr }
    }

    /// The tenant's kubeconfig as `vt connect` gives it: through the front.
    pub fn kubeconfig(&self, tenant: &str) -> String {
        self.vt_ok(&["connect", tenant, "--print"])
    }

    /// A kubectl for `tenant` through the front.
    pub fn kubectl(&self, tenant: &str) -> Kubectl {
        let path = self.dir.path().join(format!("{tenant}-front-{}.kubeconfig", free_port()));
        std::fs::write(&path, self.kubeconfig(tenant)).unwrap();
        Kubectl::new(&path, None)
    }

    /// Runs the `vt` CLI against the host.
    pub fn vt(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(&self.bin)
            .arg("--host-kubeconfig")
            .arg(&self.host.kubeconfig)
            .args(args)
            .env("HOME", self.dir.path())
            .output()
            .unwrap()
    }

    /// [`Fleet::vt`], its stdout; panics on failure.
    pub fn vt_ok(&self, args: &[&str]) -> String {
        let out = self.vt(args);
        assert!(out.status.success(), "vt {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The replica the tenant's status names.
    pub fn owner(&self, tenant: &str) -> String {
        self.host.kubectl().ok(&["get", "tenant", tenant, "-o", "jsonpath={.status.owner}"])
    }

    /// The holder of the tenant's ownership Lease.
    pub fn holder(&self, tenant: &str) -> String {
        self.lease_field(tenant, "holderIdentity")
    }

    /// A field of the tenant's ownership Lease's spec.
    pub fn lease_field(&self, tenant: &str, field: &str) -> String {
        self.host.kubectl().ok(&[
            "-n",
            "vt-system",
            "get",
            "lease",
            &format!("vt-tenant-{tenant}"),
            "-o",
            &format!("jsonpath={{.spec.{field}}}"),
        ])
    }

    /// The tenant's kubeconfig, its server replica `via`'s listener.
    pub fn kubeconfig_via(&self, tenant: &str, via: usize) -> String {
        let kc = self.vt_ok(&["connect", tenant, "--print"]);
        let server = kc.lines().find_map(|l| l.trim().strip_prefix("server: ")).unwrap().to_string();
        kc.replace(&server, &format!("https://{}", self.replicas[via].listen))
    }

    /// A kubectl for `tenant` through replica `via`'s listener.
    pub fn kubectl_via(&self, tenant: &str, via: usize) -> Kubectl {
        let path = self.dir.path().join(format!("{tenant}-via-{via}-{}.kubeconfig", free_port()));
        std::fs::write(&path, self.kubeconfig_via(tenant, via)).unwrap();
        Kubectl::new(&path, None)
    }

    /// The index of replica `id`.
    pub fn index_of(&self, id: &str) -> usize {
        self.replicas.iter().position(|r| r.id == id).unwrap()
    }
}
