//! End-to-end: the real `vt apiserver` binary on a loopback port, driven by the real kubectl,
//! on both store backends (SQLite, and a real etcd started by the test).
//!
//! Each step names the kube-apiserver behaviour it pins.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use vt_testkit::{EtcdServer, Kubectl, VtServer};

const MULTI_DOC: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
        ports: [{containerPort: 80}]
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 80}]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  mode: prod
"#;

fn vt() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_vt"))
}

/// `kubectl get -w` receives the events of a create and a delete, and the stream ends with
/// `--request-timeout` (a watch is bounded).
fn watch_sees_changes(k: &Kubectl, server: &VtServer, ns: &str) {
    let mut child = std::process::Command::new("kubectl")
        .env("KUBECONFIG", &server.kubeconfig)
        .args(["--request-timeout=8s", "-n", ns, "get", "configmaps", "-w", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The initial list arrives first: the watch is established after it.
    let header = lines.next().expect("initial list").unwrap();
    assert!(header.contains("NAME"), "{header}");
    k.ok(&["-n", ns, "create", "configmap", "watched", "--from-literal=x=y"]);
    k.ok(&["-n", ns, "delete", "configmap", "watched"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    for line in lines {
        let line = line.unwrap();
        if line.contains("watched") {
            seen.push(line.split_whitespace().next().unwrap_or("").to_string());
        }
        if seen.len() >= 2 || Instant::now() > deadline {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(seen, vec!["ADDED", "DELETED"], "watch events for the configmap");
}

fn scenario(server: &VtServer) {
    let k = server.kubectl();
    // /version reports 1.33, which is how the kubectl dispatcher picks its binary.
    let version = k.ok(&["version", "-o", "json"]);
    assert!(version.contains(r#""minor": "33""#), "{version}");

    // Discovery: every built-in resource and group version of 1.33.
    let resources = k.ok(&["api-resources"]);
    for r in
        ["pods ", "deployments ", "customresourcedefinitions ", "leases ", "ipaddresses ", "horizontalpodautoscalers "]
    {
        assert!(resources.contains(r), "api-resources lacks {r}");
    }
    let versions = k.ok(&["api-versions"]);
    for gv in
        ["v1\n", "apps/v1", "autoscaling/v1", "autoscaling/v2", "rbac.authorization.k8s.io/v1", "events.k8s.io/v1"]
    {
        assert!(versions.contains(gv), "api-versions lacks {gv}");
    }

    // The bootstrap namespaces, and a namespace lifecycle.
    let ns = k.ok(&["get", "ns", "-o", "name"]);
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(&format!("namespace/{n}")), "{ns}");
    }
    k.ok(&["create", "namespace", "e2e"]);
    assert_eq!(k.ok(&["get", "ns", "e2e", "-o", "jsonpath={.status.phase}"]), "Active");
    assert_eq!(k.ok(&["get", "ns", "e2e", "-o", "jsonpath={.metadata.labels.kubernetes\\.io/metadata\\.name}"]), "e2e");

    // Typed create commands (protobuf request bodies) and -o yaml|json|jsonpath.
    k.ok(&["-n", "e2e", "create", "configmap", "cm1", "--from-literal=a=b"]);
    k.ok(&["-n", "e2e", "create", "secret", "generic", "s1", "--from-literal=password=hunter2"]);
    assert_eq!(k.ok(&["-n", "e2e", "get", "cm", "cm1", "-o", "jsonpath={.data.a}"]), "b");
    assert_eq!(k.ok(&["-n", "e2e", "get", "secret", "s1", "-o", "jsonpath={.data.password}"]), "aHVudGVyMg==");
    assert_eq!(k.ok(&["-n", "e2e", "get", "secret", "s1", "-o", "jsonpath={.type}"]), "Opaque");
    let yaml = k.ok(&["-n", "e2e", "get", "cm", "cm1", "-o", "yaml"]);
    assert!(
        yaml.contains("uid: ") && yaml.contains("resourceVersion: ") && yaml.contains("creationTimestamp: "),
        "{yaml}"
    );
    let json = k.ok(&["-n", "e2e", "get", "cm", "cm1", "-o", "json"]);
    assert!(json.contains(r#""kind": "ConfigMap""#), "{json}");

    // Labels, annotations, selectors.
    k.ok(&["-n", "e2e", "label", "cm", "cm1", "tier=web"]);
    k.ok(&["-n", "e2e", "annotate", "cm", "cm1", "owner=team-a"]);
    k.ok(&["-n", "e2e", "create", "configmap", "cm2", "--from-literal=c=d"]);
    let labelled = k.ok(&["-n", "e2e", "get", "cm", "--show-labels", "-l", "tier=web"]);
    assert!(labelled.contains("cm1") && labelled.contains("tier=web") && !labelled.contains("cm2"), "{labelled}");
    let not_web = k.ok(&["-n", "e2e", "get", "cm", "-l", "tier!=web", "-o", "name"]);
    assert_eq!(not_web.trim(), "configmap/cm2");
    let by_name = k.ok(&["-n", "e2e", "get", "cm", "--field-selector", "metadata.name=cm2", "-o", "name"]);
    assert_eq!(by_name.trim(), "configmap/cm2");
    assert_eq!(k.ok(&["-n", "e2e", "get", "cm", "cm1", "-o", "jsonpath={.metadata.annotations.owner}"]), "team-a");

    // Watch.
    watch_sees_changes(&k, server, "e2e");

    // A multi-document create -f, then replace and both patch types.
    k.ok_stdin(&["-n", "e2e", "create", "-f", "-"], MULTI_DOC);
    assert_eq!(
        k.ok(&["-n", "e2e", "get", "deploy", "web", "-o", "jsonpath={.spec.strategy.rollingUpdate.maxSurge}"]),
        "25%",
        "Deployment defaults"
    );
    let ip = k.ok(&["-n", "e2e", "get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    assert!(ip.starts_with("10."), "a cluster IP from the service range: {ip}");
    let settings = k.ok(&["-n", "e2e", "get", "cm", "settings", "-o", "yaml"]);
    k.ok_stdin(&["replace", "-f", "-"], &settings.replace("mode: prod", "mode: staging"));
    assert_eq!(k.ok(&["-n", "e2e", "get", "cm", "settings", "-o", "jsonpath={.data.mode}"]), "staging");
    // A stale replace is a conflict.
    let stale = k.run_stdin(&["replace", "-f", "-"], &settings);
    assert!(!stale.status.success());
    assert!(
        String::from_utf8_lossy(&stale.stderr).contains("the object has been modified"),
        "{}",
        String::from_utf8_lossy(&stale.stderr)
    );
    k.ok(&["-n", "e2e", "patch", "cm", "settings", "--type", "merge", "-p", r#"{"data":{"extra":"1"}}"#]);
    k.ok(&[
        "-n",
        "e2e",
        "patch",
        "cm",
        "settings",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/data/extra"},{"op":"add","path":"/data/j","value":"2"}]"#,
    ]);
    assert_eq!(
        k.ok(&["-n", "e2e", "get", "cm", "settings", "-o", "jsonpath={.data}"]),
        r#"{"j":"2","mode":"staging"}"#
    );
    // generation moves with the spec only.
    k.ok(&["-n", "e2e", "patch", "deploy", "web", "--type", "merge", "-p", r#"{"spec":{"replicas":3}}"#]);
    k.ok(&["-n", "e2e", "label", "deploy", "web", "x=y"]);
    assert_eq!(
        k.ok(&["-n", "e2e", "get", "deploy", "web", "-o", "jsonpath={.spec.replicas}/{.metadata.generation}"]),
        "3/2"
    );
    k.ok(&["-n", "e2e", "scale", "deploy", "web", "--replicas=4"]);
    assert_eq!(k.ok(&["-n", "e2e", "get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]), "4");

    // kubectl's usual messages for a missing object and an invalid name.
    let missing = k.fails(&["-n", "e2e", "get", "cm", "nope"]);
    assert!(missing.contains(r#"Error from server (NotFound): configmaps "nope" not found"#), "{missing}");
    let invalid = k.fails(&["-n", "e2e", "create", "configmap", "Bad_Name"]);
    assert!(invalid.contains(r#"ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain"#), "{invalid}");
    let no_ns = k.fails(&["-n", "nowhere", "create", "configmap", "x"]);
    assert!(no_ns.contains(r#"namespaces "nowhere" not found"#), "{no_ns}");

    // delete --all, then deleting the namespace empties and removes it.
    k.ok(&["-n", "e2e", "delete", "cm", "--all"]);
    assert_eq!(k.ok(&["-n", "e2e", "get", "cm", "-o", "name"]), "");
    k.ok(&["delete", "namespace", "e2e", "--timeout=60s"]);
    let gone = k.fails(&["get", "ns", "e2e"]);
    assert!(gone.contains("NotFound"), "{gone}");
    let protected = k.fails(&["delete", "namespace", "kube-system"]);
    assert!(protected.contains("this namespace may not be deleted"), "{protected}");
}

#[test]
fn kubectl_against_sqlite() {
    let server = VtServer::start(vt(), &[]);
    scenario(&server);
}

#[test]
fn kubectl_against_etcd() {
    let etcd = EtcdServer::start();
    let server = VtServer::start(vt(), &["--etcd", etcd.endpoint(), "--etcd-prefix", "/vt/e2e"]);
    scenario(&server);
}

/// Bad input gets kube-apiserver's Status and changes nothing.
#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let server = VtServer::start(vt(), &[]);
    let k = server.kubectl();
    k.ok(&["create", "namespace", "bad"]);
    k.ok(&["-n", "bad", "create", "configmap", "keep", "--from-literal=a=b"]);
    let before = k.ok(&["-n", "bad", "get", "cm", "keep", "-o", "jsonpath={.metadata.resourceVersion}"]);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.display().to_string()
    };
    // Malformed JSON: 400 BadRequest.
    let f = write("bad.json", b"{\"metadata\": ");
    let err = k.fails(&["create", "--raw", "/api/v1/namespaces/bad/configmaps", "-f", &f]);
    assert!(err.contains("BadRequest") || err.contains("the object provided is unrecognized"), "{err}");
    // A body over 3 MiB: 413.
    let big =
        format!("{{\"metadata\":{{\"name\":\"big\"}},\"data\":{{\"x\":\"{}\"}}}}", "a".repeat(3 * 1024 * 1024 + 10));
    let f = write("big.json", big.as_bytes());
    let err = k.fails(&["create", "--raw", "/api/v1/namespaces/bad/configmaps", "-f", &f]);
    assert!(err.contains("RequestEntityTooLarge") || err.contains("Request entity too large"), "{err}");
    // Unknown fields under strict validation (kubectl's default): 400 naming the field.
    let out = k.run_stdin(
        &["-n", "bad", "create", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: strict}\nbogus: 1\n",
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown field \"bogus\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A body whose apiVersion does not match the endpoint: 400.
    let f = write("gv.json", br#"{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"x"}}"#);
    let err = k.fails(&["create", "--raw", "/api/v1/namespaces/bad/configmaps", "-f", &f]);
    assert!(err.contains("does not match the expected API version"), "{err}");
    // A hostile protobuf body: 400, never a crash.
    let f = write("pb.bin", b"k8s\0\x0a\xff\xff\xff\xff\x0f");
    let out = k.run(&["create", "--raw", "/api/v1/namespaces/bad/configmaps", "-f", &f]);
    assert!(!out.status.success());
    // Unknown fields under fieldValidation=Warn: created, with the server's Warning header.
    let out = k.run_stdin(
        &["-n", "bad", "create", "--validate=warn", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: warned}\nbogus: 1\n",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown field \"bogus\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    k.ok(&["-n", "bad", "delete", "cm", "warned"]);
    // Duplicate fields (the JSON parser alone would keep the last silently): an error under
    // Strict, a Warning header by default (Warn).
    let f = write("dup.json", br#"{"metadata":{"name":"dup"},"data":{"a":"1","a":"2"}}"#);
    let err = k.fails(&["create", "--raw", "/api/v1/namespaces/bad/configmaps?fieldValidation=Strict", "-f", &f]);
    assert!(
        err.contains(r#"strict decoding error: duplicate field \"data.a\""#)
            || err.contains(r#"strict decoding error: duplicate field "data.a""#),
        "{err}"
    );
    let out = k.run(&["create", "--raw", "/api/v1/namespaces/bad/configmaps", "-f", &f]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(r#"duplicate field "data.a""#),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(k.ok(&["-n", "bad", "get", "cm", "dup", "-o", "jsonpath={.data.a}"]), "2");
    k.ok(&["-n", "bad", "delete", "cm", "dup"]);
    // Nothing changed, and the server still answers.
    assert_eq!(k.ok(&["-n", "bad", "get", "cm", "keep", "-o", "jsonpath={.metadata.resourceVersion}"]), before);
    assert_eq!(k.ok(&["-n", "bad", "get", "cm", "-o", "name"]).lines().count(), 1);
}
