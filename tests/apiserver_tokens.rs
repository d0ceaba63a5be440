//! ServiceAccount tokens with the real kubectl: `kubectl create token` (TokenRequest), the
//! token authenticating with exactly its ServiceAccount's rights, bound tokens dying with their
//! pod, tokens of a deleted ServiceAccount refused, TokenReview, the OIDC discovery documents,
//! legacy token Secrets, and another cluster's token refused.

use vt_testkit::{Kubectl, VtServer};

fn vt() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_vt"))
}

/// A kubectl that authenticates with a bearer token only.
fn token_kubectl(server: &VtServer, dir: &std::path::Path, name: &str, token: &str) -> Kubectl {
    let ca = dir.join(format!("{name}-ca.crt"));
    std::fs::copy(server.data_dir().join("ca.crt"), &ca).unwrap();
    let cfg = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
        server.url,
        ca.display()
    );
    let path = dir.join(format!("{name}.kubeconfig"));
    std::fs::write(&path, cfg).unwrap();
    Kubectl::new(&path, None)
}

fn eventually(k: &Kubectl, args: &[&str]) -> String {
    for _ in 0..50 {
        let out = k.run(args);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    k.ok(args)
}

#[test]
fn service_account_tokens() {
    let server = VtServer::start(vt(), &[]);
    let admin = server.kubectl();
    let dir = tempfile::tempdir().unwrap();
    admin.ok(&["create", "namespace", "apps"]);
    admin.ok(&["-n", "apps", "create", "serviceaccount", "robot"]);
    admin.ok(&["-n", "apps", "create", "configmap", "c1"]);
    admin.ok(&["-n", "apps", "create", "role", "cm-reader", "--verb=get,list", "--resource=configmaps"]);
    admin.ok(&["-n", "apps", "create", "rolebinding", "robot-cm", "--role=cm-reader", "--serviceaccount=apps:robot"]);

    // TokenRequest through kubectl; the token carries exactly the ServiceAccount's rights.
    let token = admin.ok(&["-n", "apps", "create", "token", "robot"]).trim().to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let robot = token_kubectl(&server, dir.path(), "robot", &token);
    assert!(eventually(&robot, &["-n", "apps", "get", "configmaps", "-o", "name"]).contains("configmap/c1"));
    let err = robot.fails(&["-n", "apps", "get", "secrets"]);
    assert!(err.contains(r#"User "system:serviceaccount:apps:robot" cannot list resource "secrets""#), "{err}");
    let me = robot.ok(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}"]);
    assert_eq!(
        me,
        r#"system:serviceaccount:apps:robot ["system:serviceaccounts","system:serviceaccounts:apps","system:authenticated"]"#
    );

    // TokenReview: valid for the API audience, not for another.
    let review = |audiences: &str| {
        admin.ok_stdin(
            &["create", "-f", "-", "-o", "jsonpath={.status.authenticated}/{.status.user.username}"],
            &format!(
                "apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nspec:\n  token: {token}\n  audiences: {audiences}\n"
            ),
        )
    };
    assert_eq!(review("[]"), "true/system:serviceaccount:apps:robot");
    assert_eq!(review("[vault]"), "false/");

    // OIDC discovery documents name the issuer and the key.
    let oidc = admin.ok(&["get", "--raw", "/.well-known/openid-configuration"]);
    assert!(oidc.contains(r#""issuer":"https://kubernetes.default.svc.cluster.local""#), "{oidc}");
    let jwks = admin.ok(&["get", "--raw", "/openid/v1/jwks"]);
    assert!(jwks.contains(r#""alg":"ES256""#) && jwks.contains(r#""kty":"EC""#), "{jwks}");

    // A token bound to a pod dies with the pod.
    admin.ok_stdin(
        &["-n", "apps", "apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  serviceAccountName: robot\n  containers: [{name: c, image: busybox:1.36}]\n",
    );
    let bound = admin
        .ok(&["-n", "apps", "create", "token", "robot", "--bound-object-kind=Pod", "--bound-object-name=p"])
        .trim()
        .to_string();
    let robot_pod = token_kubectl(&server, dir.path(), "robot-pod", &bound);
    robot_pod.ok(&["-n", "apps", "get", "configmaps"]);
    let err =
        admin.fails(&["-n", "apps", "create", "token", "robot", "--bound-object-kind=Pod", "--bound-object-name=nope"]);
    assert!(err.contains("NotFound") || err.contains("not found"), "{err}");
    admin.ok(&["-n", "apps", "delete", "pod", "p", "--grace-period=0", "--force"]);
    let err = robot_pod.fails(&["-n", "apps", "get", "configmaps"]);
    assert!(err.contains("Unauthorized") || err.contains("must be logged in"), "{err}");

    // Legacy token Secrets are filled in and authenticate as their ServiceAccount.
    admin.ok_stdin(
        &["-n", "apps", "apply", "-f", "-"],
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: robot-token\n  annotations: {kubernetes.io/service-account.name: robot}\ntype: kubernetes.io/service-account-token\n",
    );
    let legacy = admin.ok(&["-n", "apps", "get", "secret", "robot-token", "-o", "jsonpath={.data.token}"]);
    use base64::Engine;
    let legacy = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(legacy.trim()).unwrap()).unwrap();
    let robot_legacy = token_kubectl(&server, dir.path(), "robot-legacy", &legacy);
    robot_legacy.ok(&["-n", "apps", "get", "configmaps"]);

    // Another cluster's token, even for a ServiceAccount of the same name, is refused.
    let other = VtServer::start(vt(), &[]);
    let other_admin = other.kubectl();
    other_admin.ok(&["create", "namespace", "apps"]);
    other_admin.ok(&["-n", "apps", "create", "serviceaccount", "robot"]);
    let foreign = other_admin.ok(&["-n", "apps", "create", "token", "robot"]).trim().to_string();
    let err = token_kubectl(&server, dir.path(), "foreign", &foreign).fails(&["-n", "apps", "get", "configmaps"]);
    assert!(err.contains("Unauthorized") || err.contains("must be logged in"), "{err}");

    // Deleting the ServiceAccount revokes its tokens, even once it is recreated.
    admin.ok(&["-n", "apps", "delete", "serviceaccount", "robot"]);
    admin.ok(&["-n", "apps", "create", "serviceaccount", "robot"]);
    let err = robot.fails(&["-n", "apps", "get", "configmaps"]);
    assert!(err.contains("Unauthorized") || err.contains("must be logged in"), "{err}");
}
