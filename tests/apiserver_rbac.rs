//! RBAC in a virtual cluster, with the real kubectl: a user bound to `view` reads but cannot
//! write; group bindings; ClusterRole aggregation; escalation prevention (no granting what you
//! do not hold, unless `escalate`/`bind`); `auth can-i` and `auth can-i --list` through the
//! review APIs; impersonation only for those allowed to impersonate.

use vt_pki::{Ca, CertKey};
use vt_testkit::{Kubectl, VtServer};

fn vt() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_vt"))
}

/// A kubectl for a user of the server's CA (common name `user`, organization `group`).
fn user_kubectl(server: &VtServer, dir: &std::path::Path, user: &str, group: Option<&str>) -> Kubectl {
    let data = server.data_dir();
    let ca = Ca::load(CertKey {
        cert_pem: std::fs::read_to_string(data.join("ca.crt")).unwrap(),
        key_pem: std::fs::read_to_string(data.join("ca.key")).unwrap(),
    })
    .unwrap();
    let cert = ca.issue_client(user, group, vt_pki::DEFAULT_VALIDITY).unwrap();
    let write = |file: &str, s: &str| {
        let p = dir.join(format!("{user}-{file}"));
        std::fs::write(&p, s).unwrap();
        p.display().to_string()
    };
    let cfg = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
        server.url,
        write("ca.crt", ca.cert_pem()),
        write("client.crt", &cert.cert_pem),
        write("client.key", &cert.key_pem),
    );
    let path = dir.join(format!("{user}.kubeconfig"));
    std::fs::write(&path, cfg).unwrap();
    Kubectl::new(&path, None)
}

/// Waits for `kubectl auth can-i` (as `k`) to answer `want` (bindings apply within moments).
fn eventually_can(k: &Kubectl, args: &[&str], want: &str) {
    let mut last = String::new();
    for _ in 0..50 {
        let mut full = vec!["auth", "can-i"];
        full.extend_from_slice(args);
        let out = k.run(&full);
        last = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if last == want {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("auth can-i {args:?}: wanted {want}, got {last:?}");
}

#[test]
fn rbac_matrix_escalation_and_impersonation() {
    let server = VtServer::start(vt(), &[]);
    let admin = server.kubectl();
    let dir = tempfile::tempdir().unwrap();
    let bob = user_kubectl(&server, dir.path(), "bob", Some("devs"));
    admin.ok(&["create", "namespace", "team"]);
    admin.ok(&["-n", "team", "create", "configmap", "c1", "--from-literal=a=b"]);
    admin.ok(&["-n", "team", "create", "secret", "generic", "s1", "--from-literal=a=b"]);

    // Who am I (SelfSubjectReview): the certificate's name and organization.
    let me = bob.ok(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}"]);
    assert_eq!(me, r#"bob ["devs","system:authenticated"]"#);
    // Nothing bound yet: forbidden, with kube's message.
    let err = bob.fails(&["-n", "team", "get", "configmaps"]);
    assert!(
        err.contains(r#"User "bob" cannot list resource "configmaps" in API group "" in the namespace "team""#),
        "{err}"
    );

    // Bound to `view` in the namespace: reads, no writes, no secrets.
    admin.ok(&["-n", "team", "create", "rolebinding", "bob-view", "--clusterrole=view", "--user=bob"]);
    eventually_can(&bob, &["-n", "team", "list", "configmaps"], "yes");
    assert!(bob.ok(&["-n", "team", "get", "configmaps", "-o", "name"]).contains("configmap/c1"));
    let err = bob.fails(&["-n", "team", "create", "configmap", "c2"]);
    assert!(err.contains(r#"User "bob" cannot create resource "configmaps""#), "{err}");
    assert!(bob.fails(&["-n", "team", "get", "secret", "s1"]).contains("forbidden"));
    assert!(bob.fails(&["-n", "default", "get", "configmaps"]).contains("forbidden"), "only in its namespace");
    assert_eq!(bob.ok(&["auth", "can-i", "-n", "team", "watch", "pods"]).trim(), "yes");
    let out = bob.run(&["auth", "can-i", "-n", "team", "delete", "pods"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");

    // The admin sees bob's rules by impersonating him (SelfSubjectRulesReview as bob).
    let list = admin.ok(&["auth", "can-i", "--list", "-n", "team", "--as=bob"]);
    let pods = list.lines().find(|l| l.starts_with("pods ")).unwrap_or_else(|| panic!("{list}"));
    assert!(pods.contains("[get list watch]"), "{pods}");
    assert!(!list.lines().any(|l| l.starts_with("secrets ")), "view excludes secrets: {list}");
    // bob may not impersonate anyone.
    let err = bob.fails(&["-n", "team", "get", "configmaps", "--as=alice"]);
    assert!(err.contains(r#"cannot impersonate resource "users" in API group """#), "{err}");

    // Group bindings.
    admin.ok(&["create", "clusterrole", "node-reader", "--verb=get,list", "--resource=nodes"]);
    admin.ok(&["create", "clusterrolebinding", "devs-nodes", "--clusterrole=node-reader", "--group=devs"]);
    eventually_can(&bob, &["list", "nodes"], "yes");

    // Aggregation: a ClusterRole labelled for `view` extends it.
    let out = admin.run(&["auth", "can-i", "-n", "team", "list", "leases.coordination.k8s.io", "--as=bob"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
    admin.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: lease-viewer\n  labels: {rbac.authorization.k8s.io/aggregate-to-view: \"true\"}\nrules:\n- apiGroups: [coordination.k8s.io]\n  resources: [leases]\n  verbs: [get, list, watch]\n",
    );
    eventually_can(&admin, &["-n", "team", "list", "leases.coordination.k8s.io", "--as=bob"], "yes");

    // Escalation: bob may manage roles and bindings in the namespace, but only grant what he
    // holds.
    admin.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: role-admin, namespace: team}\nrules:\n- apiGroups: [rbac.authorization.k8s.io]\n  resources: [roles, rolebindings]\n  verbs: [create, get, list, update, delete]\n",
    );
    admin.ok(&["-n", "team", "create", "rolebinding", "bob-role-admin", "--role=role-admin", "--user=bob"]);
    eventually_can(&bob, &["-n", "team", "create", "roles"], "yes");
    let err = bob.fails(&["-n", "team", "create", "role", "secret-reader", "--verb=get", "--resource=secrets"]);
    assert!(err.contains("is attempting to grant RBAC permissions not currently held"), "{err}");
    assert!(err.contains(r#"Resources:["secrets"]"#), "{err}");
    bob.ok(&["-n", "team", "create", "role", "cm-reader", "--verb=get", "--resource=configmaps"]);
    let err = bob.fails(&["-n", "team", "create", "rolebinding", "bob-admin", "--clusterrole=admin", "--user=bob"]);
    assert!(err.contains("is attempting to grant RBAC permissions not currently held"), "{err}");
    // With `bind` on that role, the binding is allowed.
    admin.ok(&[
        "-n",
        "team",
        "create",
        "role",
        "bind-admin",
        "--verb=bind",
        "--resource=clusterroles.rbac.authorization.k8s.io",
        "--resource-name=admin",
    ]);
    admin.ok(&["-n", "team", "create", "rolebinding", "bob-bind", "--role=bind-admin", "--user=bob"]);
    eventually_can(&bob, &["-n", "team", "bind", "clusterroles.rbac.authorization.k8s.io/admin"], "yes");
    bob.ok(&["-n", "team", "create", "rolebinding", "bob-admin", "--clusterrole=admin", "--user=bob"]);
    eventually_can(&bob, &["-n", "team", "get", "secrets"], "yes");

    // Removing the binding takes the rights away again.
    admin.ok(&["-n", "team", "delete", "rolebinding", "bob-admin", "bob-view"]);
    eventually_can(&bob, &["-n", "team", "get", "secrets"], "no");
}
