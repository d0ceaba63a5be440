//! The tenant manager end to end, through the `vt` binary on its embedded host: tenants are
//! created, connected to with the real kubectl and isolated from each other (objects and
//! certificates), their host namespaces carry the guardrails, pause/resume keeps their data,
//! deletion removes their namespace and data, and a SIGKILLed manager brings every tenant back.

use std::time::Duration;

use vt_testkit::VtManager;

fn vt() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_vt"))
}

#[test]
fn tenants_lifecycle_isolation_and_restart() {
    let mut m = VtManager::start(vt(), &[]);
    for t in ["alpha", "bravo", "charlie"] {
        let out = m.vt_ok(&["create", t]);
        assert!(out.contains(&format!("tenant {t} is ready")), "{out}");
    }
    let list = m.vt_ok(&["list"]);
    assert_eq!(list.lines().filter(|l| l.contains("Ready")).count(), 3, "{list}");
    assert!(list.starts_with("NAME"), "{list}");
    let json = m.vt_ok(&["list", "-o", "json"]);
    assert!(json.contains(r#""name": "bravo""#), "{json}");

    // Each tenant is its own cluster: cluster-admin there, objects invisible elsewhere.
    let alpha = m.tenant_kubectl("alpha");
    let bravo = m.tenant_kubectl("bravo");
    assert_eq!(alpha.ok(&["auth", "can-i", "*", "*"]).trim(), "yes");
    alpha.ok(&["create", "namespace", "shop"]);
    alpha.ok(&["-n", "shop", "create", "configmap", "secret-recipe", "--from-literal=sauce=42"]);
    assert!(bravo.fails(&["get", "namespace", "shop"]).contains("NotFound"));
    assert!(!bravo.ok(&["get", "configmaps", "-A", "-o", "name"]).contains("secret-recipe"));
    // A tenant's certificate is refused by another tenant's endpoint.
    let alpha_kc = m.vt_ok(&["connect", "alpha", "--print"]);
    let cross = alpha_kc
        .replace("tls-server-name: alpha.vt.local", "tls-server-name: bravo.vt.local")
        .lines()
        .filter(|l| !l.trim_start().starts_with("certificate-authority-data"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace(
            "tls-server-name: bravo.vt.local",
            "tls-server-name: bravo.vt.local\n    insecure-skip-tls-verify: true",
        );
    let path = m.data_dir().join("cross.kubeconfig");
    std::fs::write(&path, cross).unwrap();
    let out = vt_testkit::Kubectl::new(&path, None).run(&["get", "namespaces"]);
    assert!(!out.status.success(), "alpha's certificate must not work at bravo");

    // `vt connect -- CMD` runs a command with the tenant's kubeconfig.
    let out = m.vt_ok(&["connect", "alpha", "--", "kubectl", "get", "namespace", "shop", "-o", "name"]);
    assert_eq!(out.trim(), "namespace/shop");
    // `vt connect` merges a context into the user's kubeconfig; `disconnect` restores.
    let out = m.vt_ok(&["connect", "bravo"]);
    assert!(out.contains(r#"Switched to context "vt-bravo""#), "{out}");
    m.vt_ok(&["disconnect"]);

    // The host namespace carries the guardrails; simulated nodes say what they are.
    let host = m.host_kubectl();
    let labels = host.ok(&["get", "namespace", "vt-alpha", "-o", "jsonpath={.metadata.labels}"]);
    assert!(
        labels.contains(r#""pod-security.kubernetes.io/enforce":"baseline""#)
            && labels.contains(r#""vt.dev/tenant":"alpha""#),
        "{labels}"
    );
    let guard = host.ok(&["-n", "vt-alpha", "get", "resourcequota,limitrange,networkpolicy", "-o", "name"]);
    for want in ["resourcequota/vt-quota", "limitrange/vt-defaults", "networkpolicy.networking.k8s.io/vt-isolation"] {
        assert!(guard.contains(want), "{guard}");
    }
    let nodes = host.ok(&["get", "nodes", "-o", "wide", "-l", "vt.dev/pool=alpha"]);
    assert!(nodes.contains("vt simulated node") && nodes.contains("sim-alpha-0"), "{nodes}");

    // Pause stops the control plane; resume brings it back with its data.
    m.vt_ok(&["pause", "alpha"]);
    assert!(m.vt_ok(&["list"]).lines().any(|l| l.starts_with("alpha") && l.contains("Paused")));
    // (503 ServiceUnavailable; kubectl's raw mode prints the Status message.)
    let out = alpha.run(&["get", "--raw", "/api/v1/namespaces"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("tenant alpha is paused"), "a paused tenant says so: {err}");
    m.vt_ok(&["resume", "alpha"]);
    assert_eq!(alpha.ok(&["-n", "shop", "get", "configmap", "secret-recipe", "-o", "jsonpath={.data.sauce}"]), "42");

    // Delete removes the control plane, the host namespace and the data.
    m.vt_ok(&["delete", "charlie"]);
    assert!(!m.data_dir().join("tenants").join("charlie").exists());
    let mut gone = false;
    for _ in 0..100 {
        if !host.run(&["get", "namespace", "vt-charlie"]).status.success() {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(gone, "the host namespace of a deleted tenant goes");

    // A SIGKILLed manager restores every tenant with its objects.
    m.restart();
    let mut back = String::new();
    for _ in 0..100 {
        let out = alpha.run(&["-n", "shop", "get", "configmap", "secret-recipe", "-o", "jsonpath={.data.sauce}"]);
        if out.status.success() {
            back = String::from_utf8_lossy(&out.stdout).into_owned();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(back, "42");
    bravo.ok(&["get", "namespaces"]);
    assert_eq!(m.vt_ok(&["list"]).lines().filter(|l| l.contains("Ready")).count(), 2);

    // Metrics name every tenant.
    let metrics = std::process::Command::new("curl").args(["-s", &format!("http://{}/metrics", m.admin)]).output();
    if let Ok(out) = metrics {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(r#"tenant="alpha""#), "{text}");
    }
}

#[test]
fn clear_errors() {
    let m = VtManager::start(vt(), &[]);
    for (args, want) in [
        (vec!["create", "Not_Valid"], "invalid tenant name \"Not_Valid\""),
        (vec!["create", "x".repeat(41).leak()], "longer than 40 characters"),
        (vec!["connect", "ghost"], "no tenant named \"ghost\""),
        (vec!["delete", "ghost"], "no tenant named \"ghost\""),
    ] {
        let out = m.vt(&args);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    m.vt_ok(&["create", "once"]);
    let err = String::from_utf8_lossy(&m.vt(&["create", "once"]).stderr).into_owned();
    assert!(err.contains("tenant \"once\" already exists"), "{err}");
    // Without a manager: a clear message, not a stack of errors.
    let out = std::process::Command::new(vt())
        .args(["--host-kubeconfig", "/nonexistent/kubeconfig", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/kubeconfig"));
}

/// One noisy tenant gets kube's 429 (with Retry-After) beyond its rate while another tenant of
/// the same manager is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noisy_tenant_is_limited_not_its_neighbours() {
    let m = VtManager::start(vt(), &["--qps", "5", "--burst", "5", "--max-requests-inflight", "4"]);
    let (noisy, quiet, _manager) = tokio::task::spawn_blocking(move || {
        m.vt_ok(&["create", "noisy"]);
        m.vt_ok(&["create", "quiet"]);
        let kc = |t: &str| m.vt_ok(&["connect", t, "--print"]);
        (kc("noisy"), kc("quiet"), m)
    })
    .await
    .unwrap();
    let client = |yaml: String| async move {
        let kc = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
        let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
        cfg.default_retry = false;
        kube::Client::try_from(cfg).unwrap()
    };
    let noisy = client(noisy).await;
    let quiet = client(quiet).await;
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let c = noisy.clone();
        tasks.push(tokio::spawn(async move {
            let req = http::Request::get("/api/v1/namespaces").body(Vec::new()).unwrap();
            let resp = c.send(req.map(kube::client::Body::from)).await.unwrap();
            (resp.status().as_u16(), resp.headers().get("retry-after").is_some())
        }));
    }
    let mut limited = 0;
    for t in tasks {
        let (code, retry_after) = t.await.unwrap();
        if code == 429 {
            assert!(retry_after, "429 carries Retry-After");
            limited += 1;
        } else {
            assert_eq!(code, 200);
        }
    }
    assert!(limited > 0, "40 requests at once exceed a rate of 5/s");
    // The neighbour is unaffected.
    let req = http::Request::get("/api/v1/namespaces").body(Vec::new()).unwrap();
    quiet.request_text(req).await.unwrap();
}

#[test]
fn shell_completions() {
    let out = std::process::Command::new(vt()).args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(script.contains("_vt()") && script.contains("connect"), "{script}");
}
