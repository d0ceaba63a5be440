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
