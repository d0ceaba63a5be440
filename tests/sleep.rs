//! Sleeping tenants, end to end through the `vt` binary on its embedded host: a tenant idle for
//! its `sleepAfter` sleeps (and `vt list` says so), its first kubectl request wakes it and is
//! answered from its untouched store, concurrent first requests share one wake, a kube-rs
//! watch held across a sleep resumes, a tenant with pods on the host stays awake, `vt sleep`
//! and `vt wake` work, and after a SIGKILL tenants come back asleep (unless they have pods)
//! and all answer.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::watcher;
use vt_testkit::{ManagerOptions, VtManager, eventually};

fn vt() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_vt"))
}

fn phase(m: &VtManager, tenant: &str) -> String {
    m.host_kubectl().ok(&["get", "tenant", tenant, "-o", "jsonpath={.status.phase}"])
}

fn manager() -> VtManager {
    // The manager logs each sleep and wake at info.
    VtManager::start_with(vt(), &[], ManagerOptions { log_level: "warn,vt_manager=info".into(), ..Default::default() })
}

fn wakes(m: &VtManager, tenant: &str) -> usize {
    m.log().lines().filter(|l| l.contains("awake") && l.contains(&format!("tenant=\"{tenant}\""))).count()
}

#[test]
fn idle_tenants_sleep_and_wake_on_their_first_request() {
    let m = manager();
    // Bad input is refused, and changes nothing.
    let out = m.vt(&["create", "bad", "--sleep-after", "soon"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("invalid sleepAfter \"soon\""), "{err}");
    assert!(m.host_kubectl().run(&["get", "tenant", "bad"]).stderr.starts_with(b"Error from server (NotFound)"));
    m.host_kubectl().ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: vt.dev/v1alpha1\nkind: Tenant\nmetadata: {name: odd}\nspec: {sleepAfter: \"10\"}\n",
    );
    eventually("the bad Tenant failed", || (phase(&m, "odd") == "Failed").then_some(()));
    let odd = m.vt_ok(&["describe", "odd"]);
    assert!(odd.contains("invalid sleepAfter"), "{odd}");

    m.vt_ok(&["create", "acme", "--sleep-after", "2s"]);
    let acme = m.tenant_kubectl("acme");
    acme.ok(&["create", "configmap", "kept", "--from-literal=k=v"]);
    eventually("acme asleep", || (phase(&m, "acme") == "Sleeping").then_some(()));
    let list = m.vt_ok(&["list"]);
    assert!(list.lines().any(|l| l.starts_with("acme") && l.contains("Sleeping")), "{list}");
    let describe = m.vt_ok(&["describe", "acme"]);
    assert!(describe.contains("Sleeping"), "{describe}");
    let before = wakes(&m, "acme");

    // The first request wakes it and is answered from the store as it was.
    assert_eq!(acme.ok(&["get", "configmap", "kept", "-o", "jsonpath={.data.k}"]), "v");
    assert_eq!(wakes(&m, "acme"), before + 1);
    eventually("acme ready", || (phase(&m, "acme") == "Ready").then_some(()));

    // Concurrent first requests share one wake.
    eventually("acme asleep again", || (phase(&m, "acme") == "Sleeping").then_some(()));
    let before = wakes(&m, "acme");
    let answers: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> =
            (0..6).map(|_| s.spawn(|| acme.ok(&["get", "configmap", "kept", "-o", "jsonpath={.data.k}"]))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(answers.iter().all(|a| a == "v"), "{answers:?}");
    assert_eq!(wakes(&m, "acme"), before + 1, "one wake for all");

    // `vt sleep` and `vt wake`.
    let out = m.vt_ok(&["sleep", "acme"]);
    assert!(out.contains("tenant acme is asleep"), "{out}");
    eventually("the status says asleep", || (phase(&m, "acme") == "Sleeping").then_some(()));
    let out = m.vt_ok(&["wake", "acme"]);
    assert!(out.contains("tenant acme is awake"), "{out}");
    eventually("the status says awake", || (phase(&m, "acme") == "Ready").then_some(()));
    let out = m.vt(&["sleep", "nobody"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no tenant named \"nobody\""));
}

/// A watch a client held when its tenant fell asleep resumes: kube-rs's watcher re-watches
/// from its last resourceVersion (waking the tenant) and sees what changed meanwhile.
#[test]
fn a_watch_resumes_across_a_sleep() {
    let m = manager();
    m.vt_ok(&["create", "acme", "--sleep-after", "1h"]);
    let yaml = m.vt_ok(&["connect", "acme", "--print"]);
    let writer = m.tenant_kubectl("acme");
    writer.ok(&["create", "configmap", "one"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let kc = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
        let client = kube::Client::try_from(cfg).unwrap();
        let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, "default");
        let mut events = watcher(api, watcher::Config::default()).boxed();
        let mut seen = Vec::new();
        let mut next = async || loop {
            match tokio::time::timeout(Duration::from_secs(30), events.next()).await {
                Ok(Some(Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)))) => {
                    return c.metadata.name.unwrap_or_default();
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("the watcher ended"),
                Err(_) => panic!("no event within 30s"),
            }
        };
        while !seen.contains(&"one".to_string()) {
            seen.push(next().await);
        }
        let out = tokio::task::block_in_place(|| m.vt_ok(&["sleep", "acme"]));
        assert!(out.contains("asleep"), "{out}");
        // Written while the watcher's stream was cut: the write wakes the tenant, the watcher
        // comes back and sees it.
        tokio::task::block_in_place(|| writer.ok(&["create", "configmap", "two"]));
        while !seen.contains(&"two".to_string()) {
            seen.push(next().await);
        }
    });
}

/// A tenant stays awake while its pods run on the host (its syncer keeps their status true);
/// after a SIGKILL, tenants that ran come back asleep unless they have pods, and every one
/// answers, with its data.
#[test]
fn pods_keep_a_tenant_awake_and_a_restart_starts_tenants_lazily() {
    let mut m = manager();
    m.vt_ok(&["create", "busy", "--sleep-after", "1s"]);
    let busy = m.tenant_kubectl("busy");
    busy.ok(&["run", "web", "--image=registry.example/web:1"]);
    eventually("the pod running", || {
        (busy.ok(&["get", "pod", "web", "-o", "jsonpath={.status.phase}"]) == "Running").then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(phase(&m, "busy"), "Ready", "a tenant with running pods stays awake");
    let out = m.vt(&["sleep", "busy"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("stays awake while its pods run"), "{err}");

    let names: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
    for n in &names {
        let args: Vec<&str> = if n == "t0" { vec!["create", n] } else { vec!["create", n, "--sleep-after", "1h"] };
        m.vt_ok(&args);
        m.tenant_kubectl(n).ok(&["create", "configmap", "mine", &format!("--from-literal=name={n}")]);
    }
    m.restart();
    // Tenants without pods come back asleep (t0, which never sleeps on its own, is started
    // in the background); busy, with its pod, starts at once.
    eventually("t3 asleep after the restart", || (phase(&m, "t3") == "Sleeping").then_some(()));
    eventually("t0 started in the background", || (phase(&m, "t0") == "Ready").then_some(()));
    eventually("busy awake", || (phase(&m, "busy") == "Ready").then_some(()));
    for n in &names {
        assert_eq!(m.tenant_kubectl(n).ok(&["get", "configmap", "mine", "-o", "jsonpath={.data.name}"]), *n);
    }
    assert_eq!(busy.ok(&["get", "pod", "web", "-o", "jsonpath={.status.phase}"]), "Running");
    // Its pod gone, the busy tenant sleeps.
    busy.ok(&["delete", "pod", "web", "--wait=true"]);
    eventually("busy asleep once its pod is gone", || (phase(&m, "busy") == "Sleeping").then_some(()));
}

/// `vt migrate` moves a closed store to etcd and back, objects intact; an open one is refused.
#[test]
fn a_tenant_moves_to_etcd_and_back() {
    let etcd = vt_testkit::EtcdServer::shared();
    let m = manager();
    m.vt_ok(&["create", "mover"]);
    let k = m.tenant_kubectl("mover");
    k.ok(&["create", "configmap", "before", "--from-literal=k=sqlite"]);
    let out = m.vt(&["migrate", "mover", "--etcd", etcd.endpoint()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("vt sleep mover"), "{err}");
    m.vt_ok(&["sleep", "mover"]);
    let prefix = format!("/vt/mover-{}/", vt_testkit::free_port());
    let out = m.vt_ok(&["migrate", "mover", "--etcd", etcd.endpoint(), "--etcd-prefix", &prefix]);
    assert!(out.contains("now stores them in etcd"), "{out}");
    let describe = m.vt_ok(&["describe", "mover"]);
    assert!(describe.contains(etcd.endpoint()), "{describe}");
    // Woken on etcd: the object is there, and new writes go to etcd.
    assert_eq!(k.ok(&["get", "configmap", "before", "-o", "jsonpath={.data.k}"]), "sqlite");
    k.ok(&["create", "configmap", "after", "--from-literal=k=etcd"]);
    let out = m.vt(&["migrate", "mover", "--etcd", etcd.endpoint()]);
    assert!(!out.status.success());
    m.vt_ok(&["sleep", "mover"]);
    let out = m.vt(&["migrate", "mover", "--sqlite"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("vt pause mover"));
    m.vt_ok(&["pause", "mover"]);
    m.vt_ok(&["migrate", "mover", "--sqlite"]);
    m.vt_ok(&["resume", "mover"]);
    assert_eq!(k.ok(&["get", "configmap", "before", "-o", "jsonpath={.data.k}"]), "sqlite");
    assert_eq!(k.ok(&["get", "configmap", "after", "-o", "jsonpath={.data.k}"]), "etcd");
    assert!(!m.vt_ok(&["describe", "mover"]).contains(etcd.endpoint()));
}
