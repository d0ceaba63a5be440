//! Several manager replicas, as real processes: three `vt server`s against one separately
//! started host (`vt apiserver`), tenants on a real etcd. Tenants spread over the replicas,
//! any replica's listener reaches any tenant (connections pass, untouched, to the owner), a
//! SIGKILLed owner's tenants serve again from another replica with every acknowledged write,
//! their controllers run once (no duplicate host pods), a replica paused past its Lease
//! (SIGSTOP) is deposed and does not fight the new owner when it resumes (SIGCONT), and a
//! rolling restart of all three under steady load fails no request a client-go-like retry
//! does not absorb.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vt_testkit::eventually_within as eventually;
use vt_testkit::replicas::Fleet;
use vt_testkit::tls::TenantClient;

#[path = "support/load.rs"]
mod load;

fn vt() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_vt"))
}

#[test]
fn replicas_share_tenants_forward_connections_and_take_over_a_dead_owner() {
    let mut f = Fleet::start(vt(), 3);
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
    let other = (0..3).find(|i| *i != pi && f.replicas[*i].running()).unwrap();
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
    let transitions = f.lease_field(&names[1], "leaseTransitions");
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

    rolling_restart_under_load(&mut f, &names);
}

/// Each replica in turn stopped as Kubernetes stops a pod (SIGTERM) and started again, while
/// a kube-rs load writes and reads six tenants and kubectl reads one, all through the front.
fn rolling_restart_under_load(f: &mut Fleet, names: &[String]) {
    let load = load::Load::start(names[..6].iter().map(|n| (n.clone(), f.kubeconfig(n))).collect());
    let reader = f.kubectl(&names[0]);
    let stop = Arc::new(AtomicBool::new(false));
    let (stop_reads, want) = (stop.clone(), names[0].clone());
    let reads = std::thread::spawn(move || {
        let (mut n, mut failed) = (0, Vec::new());
        while !stop_reads.load(Ordering::Relaxed) {
            let out = reader.run(&["get", "configmap", "acked", "-o", "jsonpath={.data.n}"]);
            n += 1;
            if !out.status.success() || out.stdout != want.as_bytes() {
                failed.push(String::from_utf8_lossy(&out.stderr).into_owned());
            }
        }
        (n, failed)
    });
    std::thread::sleep(Duration::from_secs(2));
    let rt = tokio::runtime::Runtime::new().unwrap();
    for i in 0..3 {
        let id = f.replicas[i].id.clone();
        let its = names.iter().find(|n| f.holder(n) == id).expect("every replica owns a tenant").clone();
        let took = f.replicas[i].terminate();
        assert!(
            f.replicas[i].log().contains("leaving"),
            "{id} did not hand its tenants over:\n{}",
            f.replicas[i].log()
        );
        eprintln!("rolling restart: {id} ended {:.2}s after SIGTERM", took.as_secs_f64());
        // It left rather than waiting out its Lease: its member Lease is gone, and (the
        // process having waited for it) its tenants have new owners.
        let member = f.host.kubectl().run(&["-n", "vt-system", "get", "lease", &format!("vt-replica-{id}")]);
        assert!(!member.status.success(), "{id}'s member Lease outlived it");
        let peer = f.holder(&its);
        assert!(!peer.is_empty() && peer != id, "{its} not taken over: {peer:?}");
        // A connection held open to the tenant's interim owner, asked again once the tenant is
        // handed back, is told what kube-apiserver tells clients while it shuts down: 429,
        // Retry-After, and the connection closes (clients retry on a new one).
        let client = TenantClient::from_kubeconfig(&f.kubeconfig_via(&its, f.index_of(&peer)));
        let mut held = rt.block_on(client.connect());
        let first = rt.block_on(client.ask(&mut held, "/version"));
        assert!(first.starts_with("HTTP/1.1 200"), "{first}");
        f.replicas[i].spawn();
        eventually(&format!("{its} handed back to {id}"), Duration::from_secs(30), || {
            (f.holder(&its) == id).then_some(())
        });
        let moved = rt.block_on(client.ask(&mut held, "/version")).to_ascii_lowercase();
        assert!(moved.starts_with("http/1.1 429"), "{moved}");
        for h in ["retry-after: 1\r\n", "connection: close\r\n", "\"reason\":\"toomanyrequests\""] {
            assert!(moved.contains(h), "no {h:?} in {moved}");
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let tally = load.finish();
    stop.store(true, Ordering::Relaxed);
    let (read, read_failures) = reads.join().unwrap();
    eprintln!(
        "rolling restart: {} operations ok, {} retried after 429, {} connection breaks retried, slowest {:.2}s; kubectl: {read} reads",
        tally.ok,
        tally.retried_after,
        tally.resets,
        tally.slowest.as_secs_f64()
    );
    assert!(tally.failed.is_empty(), "requests failed during the rolling restart: {:#?}", tally.failed);
    assert!(read_failures.is_empty(), "kubectl reads failed during the rolling restart: {read_failures:#?}");
    assert!(tally.ok > 100 && read > 10, "too little load: {} operations, {read} reads", tally.ok);
    // Every acknowledged write is there.
    for n in &names[..6] {
        let have = f.kubectl(n).ok(&["get", "configmaps", "-o", "name"]);
        let have: std::collections::HashSet<&str> = have.lines().collect();
        for (t, cm) in tally.acked.iter().filter(|(t, _)| t == n) {
            assert!(have.contains(format!("configmap/{cm}").as_str()), "{t}: acknowledged {cm} is missing");
        }
    }
}
