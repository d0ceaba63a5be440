//! End-to-end: what a cluster-admin's everyday tools do, against the real `vt apiserver`:
//! kubectl 1.27 and 1.33 (apply client- and server-side, diff, edit, strategic patch, scale,
//! set image, label/annotate, explain, wide and custom-column output, watch tables, wait,
//! auth can-i, describe) and Helm 4 through its Go library (helm-python-sdk).

use vt_testkit::{Kubectl, VtServer};

fn vt() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_vt"))
}

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web, tier: front}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
        env: [{name: A, value: "1"}, {name: B, value: "2"}]
      - name: sidecar
        image: busybox:1.36
"#;

/// The same Deployment without the `tier` label, env B and the sidecar.
const DEPLOYMENT_TRIMMED: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
        env: [{name: A, value: "1"}]
"#;

fn jsonpath(k: &Kubectl, ns: &str, what: &str, path: &str) -> String {
    k.ok(&["-n", ns, "get", what, "-o", &format!("jsonpath={path}")])
}

/// Client-side apply: create, unchanged, update, and a field dropped from the manifest is
/// removed (three-way strategic merge computed by kubectl from our OpenAPI).
fn client_side_apply(k: &Kubectl, ns: &str) {
    assert!(k.ok_stdin(&["-n", ns, "apply", "-f", "-"], DEPLOYMENT).contains("deployment.apps/web created"));
    assert!(k.ok_stdin(&["-n", ns, "apply", "-f", "-"], DEPLOYMENT).contains("unchanged"));
    let diff = k.run_stdin(&["-n", ns, "diff", "-f", "-"], DEPLOYMENT_TRIMMED);
    assert_eq!(diff.status.code(), Some(1), "diff exits 1 when there are differences");
    let diff = String::from_utf8_lossy(&diff.stdout);
    assert!(diff.contains("-    tier: front") && diff.contains("sidecar"), "{diff}");
    assert!(k.ok_stdin(&["-n", ns, "apply", "-f", "-"], DEPLOYMENT_TRIMMED).contains("configured"));
    assert_eq!(jsonpath(k, ns, "deploy/web", "{.metadata.labels}"), r#"{"app":"web"}"#);
    assert_eq!(jsonpath(k, ns, "deploy/web", "{.spec.template.spec.containers[*].name}"), "nginx");
    assert_eq!(jsonpath(k, ns, "deploy/web", "{.spec.template.spec.containers[0].env[*].name}"), "A");
    k.ok(&["-n", ns, "delete", "deploy", "web"]);
}

/// Server-side apply: create, conflict with another manager, --force-conflicts, pruning.
fn server_side_apply(k: &Kubectl, ns: &str) {
    assert!(k.ok_stdin(&["-n", ns, "apply", "--server-side", "-f", "-"], DEPLOYMENT).contains("serverside-applied"));
    k.ok(&["-n", ns, "patch", "deploy", "web", "--type", "merge", "-p", r#"{"spec":{"replicas":5}}"#]);
    let out = k.run_stdin(&["-n", ns, "apply", "--server-side", "-f", "-"], DEPLOYMENT);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"Apply failed with 1 conflict: conflict with "kubectl-patch""#)
            && err.contains(".spec.replicas"),
        "{err}"
    );
    k.ok_stdin(&["-n", ns, "apply", "--server-side", "--force-conflicts", "-f", "-"], DEPLOYMENT);
    assert_eq!(jsonpath(k, ns, "deploy/web", "{.spec.replicas}"), "2");
    k.ok_stdin(&["-n", ns, "apply", "--server-side", "-f", "-"], DEPLOYMENT_TRIMMED);
    assert_eq!(
        jsonpath(k, ns, "deploy/web", "{.spec.template.spec.containers[*].name}"),
        "nginx",
        "the sidecar is pruned"
    );
    assert_eq!(jsonpath(k, ns, "deploy/web", "{.metadata.labels}"), r#"{"app":"web"}"#);
    let managers = jsonpath(k, ns, "deploy/web", "{range .metadata.managedFields[*]}{.manager}:{.operation} {end}");
    assert!(managers.contains("kubectl:Apply"), "{managers}");
}

/// Editing, patching, scaling, images, labels, annotations, rollout.
fn everyday_edits(k: &Kubectl, ns: &str, dir: &std::path::Path) {
    let editor = dir.join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nsed -i 's/replicas: 2/replicas: 4/' \"$1\"\n").unwrap();
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(k_binary(k))
        .env("KUBECONFIG", k_config(k))
        .env("EDITOR", &editor)
        .args(["-n", ns, "edit", "deploy/web"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(jsonpath(k, ns, "deploy/web", "{.spec.replicas}"), "4");
    // Strategic merge is kubectl patch's default: containers merge by name.
    k.ok(&[
        "-n",
        ns,
        "patch",
        "deploy",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"cache","image":"redis:7"}]}}}}"#,
    ]);
    assert_eq!(jsonpath(k, ns, "deploy/web", "{.spec.template.spec.containers[*].name}"), "nginx cache");
    k.ok(&["-n", ns, "set", "image", "deploy/web", "nginx=nginx:1.28"]);
    assert_eq!(jsonpath(k, ns, "deploy/web", "{.spec.template.spec.containers[0].image}"), "nginx:1.28");
    k.ok(&["-n", ns, "scale", "deploy/web", "--replicas=1"]);
    assert_eq!(jsonpath(k, ns, "deploy/web", "{.spec.replicas}"), "1");
    k.ok(&["-n", ns, "label", "deploy/web", "app=changed", "--overwrite"]);
    k.ok(&["-n", ns, "annotate", "deploy/web", "note=one"]);
    k.ok(&["-n", ns, "annotate", "deploy/web", "note=two", "--overwrite"]);
    assert_eq!(jsonpath(k, ns, "deploy/web", "{.metadata.labels.app}/{.metadata.annotations.note}"), "changed/two");
    let err = k.fails(&["-n", ns, "annotate", "deploy/web", "note=three"]);
    assert!(err.contains("already has a value"), "{err}");
    k.ok(&["-n", ns, "rollout", "restart", "deploy/web"]);
    assert!(
        !jsonpath(k, ns, "deploy/web", "{.spec.template.metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}")
            .is_empty()
    );
}

fn k_binary(k: &Kubectl) -> std::path::PathBuf {
    k.binary_path()
}

fn k_config(k: &Kubectl) -> std::path::PathBuf {
    k.kubeconfig_path()
}

/// explain reads our OpenAPI v3 schemas.
fn explain(k: &Kubectl) {
    let out = k.ok(&["explain", "pod.spec.containers"]);
    assert!(out.contains("FIELD: containers <[]Container>") && out.contains("imagePullPolicy"), "{out}");
    let out = k.ok(&["explain", "deployment.spec.strategy.rollingUpdate"]);
    assert!(out.contains("maxSurge"), "{out}");
}

/// wait for a condition, a jsonpath and a deletion; describe; auth can-i.
fn wait_describe_can_i(k: &Kubectl, ns: &str) {
    k.ok_stdin(
        &["-n", ns, "apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: busybox:1.36}]\n",
    );
    k.ok(&[
        "-n",
        ns,
        "patch",
        "pod",
        "p",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"True"}],"phase":"Running"}}"#,
    ]);
    k.ok(&["-n", ns, "wait", "--for=condition=Ready", "pod/p", "--timeout=20s"]);
    k.ok(&["-n", ns, "wait", "--for=jsonpath={.status.phase}=Running", "pod/p", "--timeout=20s"]);
    let pod = k.ok(&["-n", ns, "describe", "pod", "p"]);
    assert!(pod.contains("Name:") && pod.contains("busybox:1.36") && pod.contains("Ready"), "{pod}");
    let deploy = k.ok(&["-n", ns, "describe", "deployment", "web"]);
    assert!(deploy.contains("Replicas:") && deploy.contains("nginx:1.28"), "{deploy}");
    let nsd = k.ok(&["describe", "namespace", ns]);
    assert!(nsd.contains("Status:") && nsd.contains("Active"), "{nsd}");
    k.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Node\nmetadata: {name: node-a, labels: {kubernetes.io/hostname: node-a}}\n",
    );
    let node = k.ok(&["describe", "node", "node-a"]);
    assert!(node.contains("Name:") && node.contains("node-a"), "{node}");
    // auth can-i sends a protobuf SelfSubjectAccessReview.
    assert_eq!(k.ok(&["auth", "can-i", "create", "deployments"]).trim(), "yes");
    let child = std::process::Command::new(k_binary(k))
        .env("KUBECONFIG", k_config(k))
        .args(["-n", ns, "wait", "--for=delete", "pod/p", "--timeout=30s"])
        .spawn()
        .unwrap();
    k.ok(&["-n", ns, "delete", "pod", "p", "--wait=false"]);
    assert!(child.wait_with_output().unwrap().status.success(), "wait --for=delete");
}

/// Server-side printing: `-o wide` shows the priority-1 columns, custom columns read the
/// row objects, `get -w` prints a table row per event.
fn printing(k: &Kubectl, ns: &str) {
    let wide = k.ok(&["-n", ns, "get", "deploy", "web", "-o", "wide"]);
    let mut lines = wide.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"],
        "{wide}"
    );
    let row: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!((row[0], row[1], row[5], row[7]), ("web", "0/1", "nginx,cache", "app=web"), "{wide}");
    let narrow = k.ok(&["-n", ns, "get", "deploy"]);
    assert!(narrow.starts_with("NAME") && !narrow.contains("CONTAINERS"), "{narrow}");
    let custom = k.ok(&["-n", ns, "get", "deploy", "-o", "custom-columns=N:.metadata.name,R:.spec.replicas"]);
    assert_eq!(custom.split_whitespace().collect::<Vec<_>>(), ["N", "R", "web", "1"]);
    // --sort-by asks for Tables with whole objects (includeObject=Object).
    let sorted = k.ok(&["get", "namespaces", "--sort-by=.metadata.name", "-o", "name"]);
    let names: Vec<&str> = sorted.lines().collect();
    let mut expected = names.clone();
    expected.sort();
    assert!(names.len() >= 4 && names == expected, "{sorted}");
    let nodes = k.ok(&["get", "nodes", "-o", "wide"]);
    assert!(nodes.contains("INTERNAL-IP") && nodes.contains("node-a"), "{nodes}");

    // get -w: the initial rows, then one row per change.
    let mut child = std::process::Command::new(k_binary(k))
        .env("KUBECONFIG", k_config(k))
        .args(["-n", ns, "get", "pods", "-w", "--output-watch-events"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |what: &str| -> String {
        rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap_or_else(|_| panic!("no watch line for {what}"))
    };
    // kubectl lists, then watches from the list's resourceVersion: nothing is missed whether the
    // pod lands in the list or in the watch, and either way it prints as ADDED.
    k.ok_stdin(
        &["-n", ns, "apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: watched}\nspec:\n  containers: [{name: c, image: busybox:1.36}]\n",
    );
    let header = next("the header");
    assert!(header.starts_with("EVENT") && header.contains("READY") && header.contains("RESTARTS"), "{header}");
    let added = next("ADDED");
    assert!(added.starts_with("ADDED") && added.contains("watched") && added.contains("Pending"), "{added}");
    k.ok(&["-n", ns, "label", "pod", "watched", "seen=yes"]);
    let modified = next("MODIFIED");
    assert!(modified.starts_with("MODIFIED") && modified.contains("watched"), "{modified}");
    let _ = child.kill();
    let _ = child.wait();
    k.ok(&["-n", ns, "delete", "pod", "watched"]);
}

fn scenario(server: &VtServer, version: &str) {
    let k = server.kubectl().version(version);
    let ns = format!("tools-{}", version.replace('.', "-"));
    k.ok(&["create", "namespace", &ns]);
    let dir = tempfile::tempdir().unwrap();
    client_side_apply(&k, &ns);
    server_side_apply(&k, &ns);
    everyday_edits(&k, &ns, dir.path());
    explain(&k);
    wait_describe_can_i(&k, &ns);
    printing(&k, &ns);
}

#[test]
fn kubectl_1_33_tools() {
    let server = VtServer::start(vt(), &[]);
    scenario(&server, "1.33");
}

#[test]
fn kubectl_1_27_tools() {
    let server = VtServer::start(vt(), &[]);
    scenario(&server, "1.27");
}

/// Helm 4 applies server-side by default: install, upgrade, rollback and uninstall of a chart
/// with a Deployment, Service, ConfigMap, Secret, ServiceAccount, Role and RoleBinding.
#[test]
fn helm_4_release_lifecycle() {
    let server = VtServer::start(vt(), &[]);
    let k = server.kubectl();
    k.ok(&["create", "namespace", "helm"]);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/helm");
    let out = std::process::Command::new("python3")
        .arg(root.join("lifecycle.py"))
        .arg(&server.kubeconfig)
        .arg(root.join("chart"))
        .arg("helm")
        .env("HOME", tempfile::tempdir().unwrap().path())
        .output()
        .expect("python3 with helm-python-sdk (pip install helm-python-sdk)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "helm failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("install 1 deployed"), "{stdout}");
    assert!(stdout.contains("upgrade 2 deployed"), "{stdout}");
    assert!(stdout.contains(r#"history [[1, "superseded"], [2, "superseded"], [3, "deployed"]]"#), "{stdout}");
    assert!(stdout.contains("uninstall"), "{stdout}");
    // Everything the release made is gone; only Helm's nothing remains.
    let left = k.ok(&["-n", "helm", "get", "deploy,svc,cm,secret,sa,role,rolebinding", "-o", "name"]);
    let left: Vec<&str> =
        left.lines().filter(|l| !l.contains("kube-root-ca") && !l.contains("serviceaccount/default")).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
