//! Real clients that vt's other tests do not use, each pinning a place where vt must behave as
//! kube-apiserver 1.33 does (issue: every client works unchanged).

use vt_testkit::VtServer;

fn vt() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_vt"))
}

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The official Python client's watches send `watch=True`; apimachinery's
/// `Convert_Slice_string_To_bool` makes any value but `0`/`false` true, so it must get a watch
/// stream (not a List) and see the events.
#[test]
fn the_python_clients_watch_sees_events() {
    let server = VtServer::start(vt(), &[]);
    let out = std::process::Command::new("python3")
        .arg(root().join("tests/python/watch_true.py"))
        .arg(&server.kubeconfig)
        .env("HOME", tempfile::tempdir().unwrap().path())
        .output()
        .expect("python3 with the kubernetes client (pip install kubernetes)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(r#"["ADDED", "from-python"]"#), "{stdout}");
}

/// client-go's field-manager upgrade (Helm 4 sends it on rollback) is a JSON patch that tests
/// and replaces `/metadata/resourceVersion`; a resourceVersion a patch sets is a precondition.
#[test]
fn json_patches_may_test_and_replace_the_resource_version() {
    let server = VtServer::start(vt(), &[]);
    let k = server.kubectl();
    k.ok(&["-n", "default", "create", "configmap", "c", "--from-literal=a=1"]);
    let rv = k.ok(&["-n", "default", "get", "configmap", "c", "-o", "jsonpath={.metadata.resourceVersion}"]);
    let patch = format!(
        r#"[{{"op":"test","path":"/metadata/resourceVersion","value":"{rv}"}},{{"op":"replace","path":"/metadata/resourceVersion","value":"{rv}"}},{{"op":"add","path":"/data/b","value":"2"}}]"#
    );
    k.ok(&["-n", "default", "patch", "configmap", "c", "--type=json", "-p", &patch]);
    assert_eq!(k.ok(&["-n", "default", "get", "configmap", "c", "-o", "jsonpath={.data.b}"]), "2");
    // Now the resourceVersion moved: the same patch's test fails (422), and a replace with the
    // old version is a conflict (409), as kube-apiserver answers.
    let err = k.fails(&["-n", "default", "patch", "configmap", "c", "--type=json", "-p", &patch]);
    assert!(err.contains("testing value /metadata/resourceVersion failed") || err.contains("test"), "{err}");
    let stale = format!(
        r#"[{{"op":"replace","path":"/metadata/resourceVersion","value":"{rv}"}},{{"op":"add","path":"/data/c","value":"3"}}]"#
    );
    let err = k.fails(&["-n", "default", "patch", "configmap", "c", "--type=json", "-p", &stale]);
    assert!(err.contains("Conflict") || err.contains("the object has been modified"), "{err}");
    // Merge patches too.
    let err = k.fails(&[
        "-n",
        "default",
        "patch",
        "configmap",
        "c",
        "--type=merge",
        "-p",
        &format!(r#"{{"metadata":{{"resourceVersion":"{rv}"}},"data":{{"d":"4"}}}}"#),
    ]);
    assert!(err.contains("the object has been modified"), "{err}");
}

/// Field selectors compare unset booleans and integers as Go formats their zero values
/// (kube's field label conversion functions): `spec.unschedulable=false` selects nodes that
/// never set it.
#[test]
fn field_selectors_see_unset_fields_as_their_zero_value() {
    let server = VtServer::start(vt(), &[]);
    let k = server.kubectl();
    k.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Node\nmetadata: {name: plain}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: cordoned}\nspec: {unschedulable: true}\n",
    );
    let names =
        |sel: &str| k.ok(&["get", "nodes", "--field-selector", sel, "-o", "jsonpath={.items[*].metadata.name}"]);
    assert_eq!(names("spec.unschedulable=false"), "plain");
    assert_eq!(names("spec.unschedulable=true"), "cordoned");
    assert_eq!(names("spec.unschedulable!=true"), "plain");
    k.ok(&["-n", "default", "create", "configmap", "x"]);
    k.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Event\nmetadata: {name: e1, namespace: default}\ninvolvedObject: {kind: ConfigMap, name: x, namespace: default}\nreason: Tested\nsource: {component: tester}\n",
    );
    let events = k.ok(&["-n", "default", "get", "events", "--field-selector", "source=tester", "-o", "name"]);
    assert!(events.contains("e1"), "{events}");
}

/// Deleting a Service deletes its Endpoints (kube's endpoints controller does; every
/// `helm uninstall` used to leave one behind).
#[test]
fn endpoints_go_with_their_service() {
    let server = VtServer::start(vt(), &["--controllers"]);
    let k = server.kubectl();
    k.ok(&["-n", "default", "create", "service", "clusterip", "web", "--tcp=80:80"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while k.run(&["-n", "default", "get", "endpoints", "web"]).status.code() != Some(0) {
        assert!(std::time::Instant::now() < deadline, "no Endpoints for the Service");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    k.ok(&["-n", "default", "delete", "service", "web"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while k.run(&["-n", "default", "get", "endpoints", "web"]).status.code() == Some(0) {
        assert!(std::time::Instant::now() < deadline, "the Endpoints outlived their Service");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A user minted the standard way (kube's "issue a certificate for a user" task): an RSA key
/// and CSR from `openssl`, a CertificateSigningRequest for `kubernetes.io/kube-apiserver-client`,
/// `kubectl certificate approve`, the certificate from `status.certificate` — signed by the
/// cluster's CA, so the server knows the user and groups it names (and RBAC gives them nothing
/// yet). Pinned alongside, as kube-apiserver's CSR strategy and validation behave: the
/// requester is recorded, a bad request is refused at create, approval goes only through
/// `/approval`, a denied request is never signed, a request for other usages fails with
/// `SignerValidationFailure`, and `kubectl get csr` / `kubectl get componentstatuses` print
/// kube's columns.
#[test]
fn a_certificate_request_approved_with_kubectl_mints_a_user() {
    let server = VtServer::start(vt(), &["--controllers"]);
    let k = server.kubectl();
    let dir = tempfile::tempdir().unwrap();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(dir.path()).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let b64 = |p: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(dir.path().join(p)).unwrap())
    };
    let request = |name: &str, usages: &str, csr: &str| {
        format!(
            "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {csr}\n  signerName: kubernetes.io/kube-apiserver-client\n  expirationSeconds: 86400\n  usages: [{usages}]\n"
        )
    };
    openssl(&["genrsa", "-out", "jane.key", "2048"]);
    openssl(&["req", "-new", "-key", "jane.key", "-out", "jane.csr", "-subj", "/CN=jane/O=dev"]);
    k.ok_stdin(&["create", "-f", "-"], &request("jane", "client auth", &b64("jane.csr")));
    let admin = k.ok(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]);
    assert_eq!(k.ok(&["get", "csr", "jane", "-o", "jsonpath={.spec.username}"]), admin);
    let table = k.ok(&["get", "csr", "jane"]);
    assert!(
        table.contains("SIGNERNAME") && table.contains("REQUESTEDDURATION") && table.contains("Pending"),
        "{table}"
    );
    // Approval through /status is refused; through kubectl (the /approval subresource) it holds.
    let forged = r#"{"status":{"conditions":[{"type":"Approved","status":"True","reason":"Forged"}]}}"#;
    let err = k.fails(&["patch", "csr", "jane", "--subresource=status", "--type=merge", "-p", forged]);
    assert!(
        err.contains(r#"updates may not add a condition of type \"Approved\""#) || err.contains("may not add"),
        "{err}"
    );
    assert!(k.ok(&["certificate", "approve", "jane"]).contains("approved"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let cert = loop {
        let c = k.ok(&["get", "csr", "jane", "-o", "jsonpath={.status.certificate}"]);
        if !c.is_empty() {
            break c;
        }
        assert!(std::time::Instant::now() < deadline, "never signed");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(k.ok(&["get", "csr", "jane"]).contains("Approved,Issued"));
    // The certificate, once issued, is never replaced.
    let err = k.fails(&[
        "patch",
        "csr",
        "jane",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"certificate":"AAAA"}}"#,
    ]);
    assert!(
        err.contains("updates may not modify existing certificate content") || err.contains("certificate"),
        "{err}"
    );
    // Jane's kubeconfig: the admin's with her certificate and key.
    use base64::Engine;
    std::fs::write(dir.path().join("jane.crt"), base64::engine::general_purpose::STANDARD.decode(&cert).unwrap())
        .unwrap();
    let kc = dir.path().join("jane.kubeconfig");
    std::fs::copy(&server.kubeconfig, &kc).unwrap();
    let jane = vt_testkit::Kubectl::new(&kc, None);
    let user = jane.ok(&["config", "view", "-o", "jsonpath={.contexts[0].context.user}"]);
    let (crt, key) = (dir.path().join("jane.crt"), dir.path().join("jane.key"));
    jane.ok(&[
        "config",
        "set-credentials",
        &user,
        &format!("--client-certificate={}", crt.display()),
        &format!("--client-key={}", key.display()),
        "--embed-certs",
    ]);
    let who = jane.ok(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}"]);
    assert!(who.starts_with("jane ") && who.contains("dev"), "{who}");
    let err = jane.fails(&["get", "pods"]);
    assert!(err.contains(r#"User "jane" cannot list resource "pods""#), "{err}");
    // Denied: never signed. Other usages: Failed, SignerValidationFailure. Garbage: refused.
    k.ok_stdin(&["create", "-f", "-"], &request("denied", "client auth", &b64("jane.csr")));
    k.ok(&["certificate", "deny", "denied"]);
    k.ok_stdin(&["create", "-f", "-"], &request("server", "server auth", &b64("jane.csr")));
    k.ok(&["certificate", "approve", "server"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while k.ok(&["get", "csr", "server", "-o", "jsonpath={.status.conditions[?(@.type=='Failed')].reason}"])
        != "SignerValidationFailure"
    {
        assert!(std::time::Instant::now() < deadline, "no Failed condition");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(k.ok(&["get", "csr", "denied", "-o", "jsonpath={.status.certificate}"]), "");
    assert!(k.ok(&["get", "csr", "denied"]).contains("Denied"));
    let err = k.fails_stdin(&["create", "-f", "-"], &request("garbage", "client auth", "Z2FyYmFnZQ=="));
    assert!(err.contains("spec.request: Invalid value"), "{err}");
    // componentstatuses: computed, with kube's deprecation warning and columns.
    let out = k.run(&["get", "componentstatuses"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(stderr.contains("v1 ComponentStatus is deprecated in v1.19+"), "{stderr}");
    for name in ["scheduler", "controller-manager", "etcd-0"] {
        assert!(stdout.lines().any(|l| l.starts_with(name) && l.contains("Healthy") && l.contains("ok")), "{stdout}");
    }
}

/// APIServices as kube-aggregator keeps them: every built-in group version has a local one
/// (`kubectl get apiservices` lists `v1.apps` Local/True); an APIService backed by a Service
/// claims its group — listed in discovery, its requests answered 503 `service unavailable` as
/// kube-aggregator answers while the API is down, so `kubectl top` says what it says on a
/// cluster whose metrics-server is down — and its `Available` condition says why
/// (ServiceNotFound, then MissingEndpoints once the Service exists without endpoints).
#[test]
fn apiservices_are_listed_and_unavailable_ones_answer_503() {
    let server = VtServer::start(vt(), &[]);
    let k = server.kubectl();
    // (Created in the background once the server runs, as kube-aggregator's autoregister does.)
    let table = vt_testkit::eventually("the local APIServices", || {
        let t = k.ok(&["get", "apiservices"]);
        t.contains("v1.storage.k8s.io").then_some(t)
    });
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["NAME", "SERVICE", "AVAILABLE", "AGE"], "{table}");
    for name in ["v1.", "v1.apps", "v2.autoscaling", "v1.apiregistration.k8s.io"] {
        let row = rows.iter().find(|r| r[0] == name).unwrap_or_else(|| panic!("no {name}: {table}"));
        assert_eq!(row[1..3], ["Local", "True"], "{table}");
    }
    // kube-aggregator's name rule: `<version>.<group>`.
    let err = k.fails_stdin(
        &["apply", "-f", "-"],
        "apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata: {name: metrics}\nspec: {group: metrics.k8s.io, version: v1beta1, groupPriorityMinimum: 100, versionPriority: 100}\n",
    );
    assert!(err.contains(r#"must be `spec.version+"."+spec.group`: "v1beta1.metrics.k8s.io""#), "{err}");
    // Without metrics.k8s.io, kubectl top says the API is not there.
    let err = k.fails(&["top", "pods", "-A"]);
    assert!(err.contains("Metrics API not available"), "{err}");

    k.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata: {name: v1beta1.metrics.k8s.io}\nspec:\n  group: metrics.k8s.io\n  version: v1beta1\n  service: {namespace: kube-system, name: metrics-server}\n  insecureSkipTLSVerify: true\n  groupPriorityMinimum: 100\n  versionPriority: 100\n",
    );
    let available = |k: &vt_testkit::Kubectl| {
        k.ok(&["get", "apiservice", "v1beta1.metrics.k8s.io", "--no-headers"])
            .split_whitespace()
            .skip(2)
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    vt_testkit::eventually_within("ServiceNotFound", std::time::Duration::from_secs(30), || {
        (available(&k) == "False (ServiceNotFound)").then_some(())
    });
    // Discovery lists the claimed group; its requests get kube-aggregator's 503.
    let groups = k.ok(&["get", "--raw", "/apis"]);
    assert!(groups.contains(r#""name":"metrics.k8s.io""#), "{groups}");
    let err = k.fails(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1"]);
    assert!(err.contains("the server is currently unable to handle the request"), "{err}");
    // Aggregated discovery marks the unavailable version Stale, which client-go leaves out of
    // the server's groups: kubectl top says what it says on a 1.33 cluster whose
    // metrics-server is down (a fresh discovery cache, so this is not the first answer kept).
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = format!("--cache-dir={}", cache.path().display());
    let err = k.fails(&[&cache_dir, "top", "pods", "-A"]);
    assert!(err.contains("Metrics API not available"), "{err}");
    // The Service without endpoints.
    k.ok(&["-n", "kube-system", "create", "service", "clusterip", "metrics-server", "--tcp=443:4443"]);
    vt_testkit::eventually_within("MissingEndpoints", std::time::Duration::from_secs(30), || {
        (available(&k) == "False (MissingEndpoints)").then_some(())
    });
    // Built-in groups are never claimed: their requests still work.
    k.ok(&["get", "deployments", "-A"]);
}
