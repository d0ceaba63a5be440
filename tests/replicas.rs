//! Several manager replicas, as real processes: three `vt server`s against one separately
//! started host (`vt apiserver`), tenants on a real etcd. Tenants spread over the replicas,
//! any replica's listener reaches any tenant (connections pass, untouched, to the owner), a
//! SIGKILLed owner's tenants serve again from another replica with every acknowledged write,
//! their controllers run once (no duplicate host pods), and a replica paused past its Lease
//! (SIGSTOP) is deposed and does not fight the new owner when it resumes (SIGCONT).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vt_testkit::{EtcdServer, Kubectl, VtServer, Watched, free_port};

fn vt() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_vt"))
}

fn eventually<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    let deadline = started + limit;
    loop {
        if let Some(v) = f() {
            if started.elapsed() > Duration::from_secs(3) {
                eprintln!("{what}: {:.1}s", started.elapsed().as_secs_f64());
            }
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One `vt server` replica.
struct Replica {
    id: String,
    listen: String,
    args: Vec<String>,
    log: PathBuf,
    process: Option<Watched>,
}

impl Replica {
    fn start(dir: &Path, i: usize, host_kc: &Path, advertise: &str) -> Replica {
        let id = format!("vt-{i}");
        let listen = format!("127.0.0.1:{}", free_port());
        let peer = format!("127.0.0.1:{}", free_port());
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
        let mut r = Replica { id, listen, args, log: dir.join(format!("vt-{i}.log")), process: None };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let before = self.log().matches("vt server: tenants on").count();
        let p = Watched::spawn(vt(), &self.args, &[("VT_LOG", "warn,vt_manager=info")], &self.log, None)
            .expect("start vt server");
        self.process = Some(p);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.log().matches("vt server: tenants on").count() == before {
            assert!(Instant::now() < deadline, "{} did not serve:\n{}", self.id, self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.process.as_ref().expect("running").pid();
        assert!(std::process::Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
    }
}

struct Fleet {
    dir: tempfile::TempDir,
    host: VtServer,
    etcd: EtcdServer,
    replicas: Vec<Replica>,
}

impl Fleet {
    fn start(n: usize) -> Fleet {
        let dir = tempfile::Builder::new().prefix("vt-replicas-").tempdir().unwrap();
        let etcd = EtcdServer::start();
        let host = VtServer::start(vt(), &["--controllers"]);
        let front = format!("127.0.0.1:{}", free_port());
        let mut replicas = Vec::new();
        for i in 0..n {
            replicas.push(Replica::start(dir.path(), i, &host.kubeconfig, &front));
        }
        Fleet { dir, host, etcd, replicas }
    }

    fn vt(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(vt())
            .arg("--host-kubeconfig")
            .arg(&self.host.kubeconfig)
            .args(args)
            .env("HOME", self.dir.path())
            .output()
            .unwrap()
    }

    fn vt_ok(&self, args: &[&str]) -> String {
        let out = self.vt(args);
        assert!(out.status.success(), "vt {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn owner(&self, tenant: &str) -> String {
        self.host.kubectl().ok(&["get", "tenant", tenant, "-o", "jsonpath={.status.owner}"])
    }

    fn holder(&self, tenant: &str) -> String {
        self.host.kubectl().ok(&[
            "-n",
            "vt-system",
            "get",
            "lease",
            &format!("vt-tenant-{tenant}"),
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
    }

    /// A kubectl for `tenant` through replica `via`'s listener.
    fn kubectl_via(&self, tenant: &str, via: usize) -> Kubectl {
        let kc = self.vt_ok(&["connect", tenant, "--print"]);
        let server = kc.lines().find_map(|l| l.trim().strip_prefix("server: ")).unwrap().to_string();
        let kc = kc.replace(&server, &format!("https://{}", self.replicas[via].listen));
        let path = self.dir.path().join(format!("{tenant}-via-{via}-{}.kubeconfig", free_port()));
        std::fs::write(&path, kc).unwrap();
        Kubectl::new(&path, None)
    }

    fn index_of(&self, id: &str) -> usize {
        self.replicas.iter().position(|r| r.id == id).unwrap()
    }
}

#[test]
fn replicas_share_tenants_forward_connections_and_take_over_a_dead_owner() {
    let mut f = Fleet::start(3);
    let names: Vec<String> = (0..9).map(|i| format!("t{i}")).collect();
    for n in &names {
        f.vt_ok(&["create", n, "--etcd", f.etcd.endpoint()]);
    }
    // A tenant on SQLite lives on its owner's volume.
    f.vt_ok(&["create", "local"]);
    let local_owner = f.owner("local");
    f.kubectl_via("local", 0).ok(&["create", "configmap", "kept", "--from-literal=on=sqlite"]);
    // Every tenant has one owner, and every replica owns some.
    let owners: Vec<String> = names.iter().map(|n| f.owner(n)).collect();
    for r in &f.replicas {
        assert!(owners.contains(&r.id), "{} owns nothing: {owners:?}", r.id);
    }
    let list = f.vt_ok(&["list"]);
    assert!(list.contains("OWNER") && list.contains("vt-1"), "{list}");
    // Any replica's listener reaches any tenant: write through one, read through another.
    for (i, n) in names.iter().enumerate() {
        f.kubectl_via(n, i % 3).ok(&["create", "configmap", "acked", &format!("--from-literal=n={n}")]);
        assert_eq!(f.kubectl_via(n, (i + 1) % 3).ok(&["get", "configmap", "acked", "-o", "jsonpath={.data.n}"]), *n);
    }
    // A Deployment in a tenant the replica about to die owns.
    let victim = f.owner(&names[0]);
    let vi = f.index_of(&victim);
    let survivor = (vi + 1) % 3;
    f.kubectl_via(&names[0], survivor).ok(&[
        "create",
        "deployment",
        "web",
        "--image=registry.example/web:1",
        "--replicas=2",
    ]);
    let host = f.host.kubectl();
    let host_pods = |t: &str| -> usize {
        host.ok(&["-n", &format!("vt-{t}"), "get", "pods", "-o", "name"]).lines().filter(|l| !l.is_empty()).count()
    };
    eventually("two host pods", Duration::from_secs(60), || (host_pods(&names[0]) == 2).then_some(()));

    // SIGKILL the owner: its tenants serve again from the others, with every write.
    let theirs: Vec<String> = names.iter().filter(|n| f.owner(n) == victim).cloned().collect();
    f.replicas[vi].kill();
    let killed = Instant::now();
    for n in &theirs {
        let k = f.kubectl_via(n, survivor);
        eventually(&format!("{n} serving again"), Duration::from_secs(30), || {
            let out = k.run(&["get", "configmap", "acked", "-o", "jsonpath={.data.n}"]);
            (out.status.success() && String::from_utf8_lossy(&out.stdout) == **n).then_some(())
        });
    }
    eprintln!("failover: all of {victim}'s tenants answered {:.1}s after its SIGKILL", killed.elapsed().as_secs_f64());
    for n in &theirs {
        let h = f.holder(n);
        assert!(!h.is_empty() && h != victim, "{n} still held by {h}");
    }
    // Its controllers and syncer run once: still two host pods, and they stay two.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(host_pods(&names[0]), 2);

    // A replica paused past its Lease is deposed; resumed, it does not act as the owner.
    let paused_id = f.holder(&names[1]);
    let pi = f.index_of(&paused_id);
    let other = (0..3).find(|i| *i != pi && f.replicas[*i].process.is_some()).unwrap();
    f.replicas[pi].signal("-STOP");
    eventually(&format!("{} taken over", names[1]), Duration::from_secs(30), || {
        let h = f.holder(&names[1]);
        (!h.is_empty() && h != paused_id).then_some(())
    });
    f.kubectl_via(&names[1], other).ok(&["create", "configmap", "after-takeover"]);
    let new_owner = f.holder(&names[1]);
    f.replicas[pi].signal("-CONT");
    // Resumed, it learns it was deposed and passes the tenant's connections to the new owner
    // (depending on timing it notices by its own deadline or by the Lease: either way it stops).
    let via_resumed = f.kubectl_via(&names[1], pi);
    eventually("a write through the resumed replica", Duration::from_secs(20), || {
        via_resumed.run(&["create", "configmap", "through-resumed"]).status.success().then_some(())
    });
    // It may get the tenant back, but only as a handoff from the new owner (a release, then a
    // guarded take): the Lease counts both takeovers, and nothing written in between is lost.
    assert_ne!(new_owner, paused_id);
    std::thread::sleep(Duration::from_secs(2));
    let transitions = f.host.kubectl().ok(&[
        "-n",
        "vt-system",
        "get",
        "lease",
        &format!("vt-tenant-{}", names[1]),
        "-o",
        "jsonpath={.spec.leaseTransitions}",
    ]);
    let expect = if f.holder(&names[1]) == paused_id { 2 } else { 1 };
    assert!(transitions.parse::<i32>().unwrap() >= expect, "transitions {transitions}");
    let k = f.kubectl_via(&names[1], other);
    assert_eq!(k.ok(&["get", "configmap", "acked", "-o", "jsonpath={.data.n}"]), names[1]);
    k.ok(&["get", "configmap", "after-takeover"]);
    k.ok(&["get", "configmap", "through-resumed"]);

    // The killed replica comes back; its tenants are handed back to it (it is their
    // preferred replica again), and every tenant answers through every live replica.
    f.replicas[vi].spawn();
    eventually("a tenant handed back", Duration::from_secs(30), || (f.holder(&theirs[0]) == victim).then_some(()));
    for n in &names {
        for via in 0..3 {
            let k = f.kubectl_via(n, via);
            eventually(&format!("{n} via vt-{via}"), Duration::from_secs(30), || {
                let out = k.run(&["get", "configmap", "acked", "-o", "jsonpath={.data.n}"]);
                (out.status.success() && String::from_utf8_lossy(&out.stdout) == **n).then_some(())
            });
        }
    }
    assert_eq!(host_pods(&names[0]), 2);

    // The SQLite tenant is down while its replica is, never taken over, and back with its
    // data when the replica returns.
    let li = f.index_of(&local_owner);
    f.replicas[li].kill();
    let other = (li + 1) % 3;
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(f.holder("local"), local_owner, "a SQLite tenant stays with its replica");
    let t0 = Instant::now();
    assert!(
        !f.kubectl_via("local", other)
            .run(&["get", "--raw", "/api/v1/namespaces/default/configmaps/kept", "--request-timeout=2s"])
            .status
            .success()
    );
    eprintln!("down check: {:.1}s", t0.elapsed().as_secs_f64());
    f.replicas[li].spawn();
    let k = f.kubectl_via("local", other);
    eventually("the SQLite tenant back", Duration::from_secs(30), || {
        let out = k.run(&["get", "configmap", "kept", "-o", "jsonpath={.data.on}"]);
        (out.status.success() && out.stdout == b"sqlite").then_some(())
    });
}
