//! Authentication and authorization of the standalone API server: client certificates of the
//! server's CA, anonymous requests, and a certificate from another CA.

use vt_pki::{Ca, CertKey};
use vt_testkit::{Kubectl, VtServer};

fn vt() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_vt"))
}

/// A kubeconfig for `server` with the given client certificate (or none).
fn kubeconfig(server: &VtServer, dir: &std::path::Path, name: &str, client: Option<&CertKey>) -> std::path::PathBuf {
    let ca = std::fs::read_to_string(server.data_dir().join("ca.crt")).unwrap();
    let write = |file: &str, s: &str| {
        let p = dir.join(format!("{name}-{file}"));
        std::fs::write(&p, s).unwrap();
        p.display().to_string()
    };
    let ca_path = write("ca.crt", &ca);
    let user = match client {
        Some(c) => format!(
            "    client-certificate: {}\n    client-key: {}\n",
            write("client.crt", &c.cert_pem),
            write("client.key", &c.key_pem)
        ),
        None => "    {}\n".into(),
    };
    let cfg = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {ca_path}\nusers:\n- name: u\n  user:\n{user}contexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
        server.url
    );
    let p = dir.join(format!("{name}.kubeconfig"));
    std::fs::write(&p, cfg).unwrap();
    p
}

fn server_ca(server: &VtServer) -> Ca {
    let dir = server.data_dir();
    Ca::load(CertKey {
        cert_pem: std::fs::read_to_string(dir.join("ca.crt")).unwrap(),
        key_pem: std::fs::read_to_string(dir.join("ca.key")).unwrap(),
    })
    .unwrap()
}

/// An anonymous client (no certificate, no token): kubectl would prompt for a password after
/// a 401, so this uses kube-rs directly.
#[tokio::test]
async fn anonymous_requests_get_401_except_public_endpoints() {
    let server = VtServer::start(vt(), &[]);
    let ca = CertKey {
        cert_pem: std::fs::read_to_string(server.data_dir().join("ca.crt")).unwrap(),
        key_pem: String::new(),
    };
    let mut config = kube::Config::new(server.url.parse().unwrap());
    config.root_cert = Some(ca.cert_der().unwrap().into_iter().map(|c| c.to_vec()).collect());
    let client = kube::Client::try_from(config).unwrap();
    let get = |path: &str| http::Request::get(path).body(Vec::new()).unwrap();
    match client.request_text(get("/api/v1/namespaces")).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str(), s.message.as_str()), (401, "Unauthorized", "Unauthorized"))
        }
        other => panic!("anonymous list: {other:?}"),
    }
    // system:public-info-viewer: health and version are public.
    assert_eq!(client.request_text(get("/healthz")).await.unwrap(), "ok");
    assert!(client.request_text(get("/version")).await.unwrap().contains(r#""minor":"33""#));
}

#[test]
fn users_outside_system_masters_are_forbidden() {
    let server = VtServer::start(vt(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let alice = server_ca(&server).issue_client("alice", Some("devs"), vt_pki::DEFAULT_VALIDITY).unwrap();
    let k = Kubectl::new(&kubeconfig(&server, dir.path(), "alice", Some(&alice)), None);
    // Discovery is open to authenticated users (system:discovery)...
    assert!(k.ok(&["get", "--raw", "/api"]).contains("APIVersions"));
    // ...objects are not, until RBAC grants them.
    let err = k.fails(&["-n", "default", "get", "pods"]);
    assert!(
        err.contains(
            r#"pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "default""#
        ),
        "{err}"
    );
    let err = k.fails(&["get", "nodes"]);
    assert!(err.contains(r#"User "alice" cannot list resource "nodes" in API group "" at the cluster scope"#), "{err}");
    // whoami reports the certificate's subject.
    let who = k.ok(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}"]);
    assert_eq!(who, r#"alice ["devs","system:authenticated"]"#);
    // can-i answers "no" and exits 1, as with kube-apiserver.
    let out = k.run(&["auth", "can-i", "list", "pods"]);
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).trim()), (Some(1), "no"));
}

#[test]
fn certificates_of_another_ca_are_refused() {
    let server = VtServer::start(vt(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let other = Ca::generate("some-other-ca").unwrap();
    let mallory = other.issue_client("mallory", Some("system:masters"), vt_pki::DEFAULT_VALIDITY).unwrap();
    let k = Kubectl::new(&kubeconfig(&server, dir.path(), "mallory", Some(&mallory)), None);
    let out = k.run(&["get", "ns"]);
    assert!(!out.status.success(), "a foreign CA's system:masters certificate was accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate") || err.contains("tls") || err.contains("Unauthorized"), "{err}");
}

/// Bearer tokens from a token file authenticate as their user; an unknown token is 401.
#[tokio::test]
async fn static_bearer_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.csv");
    std::fs::write(&file, "s3cret-admin,root,1,system:masters\ns3cret-dev,dev,2,devs\n").unwrap();
    let server = VtServer::start(vt(), &["--token-auth-file", file.to_str().unwrap()]);
    let ca = CertKey {
        cert_pem: std::fs::read_to_string(server.data_dir().join("ca.crt")).unwrap(),
        key_pem: String::new(),
    };
    let client_with = |token: &str| {
        let mut config = kube::Config::new(server.url.parse().unwrap());
        config.root_cert = Some(ca.cert_der().unwrap().into_iter().map(|c| c.to_vec()).collect());
        config.auth_info.token = Some(token.to_string().into());
        config.default_retry = false;
        kube::Client::try_from(config).unwrap()
    };
    let get = |path: &str| http::Request::get(path).body(Vec::new()).unwrap();
    assert!(
        client_with("s3cret-admin").request_text(get("/api/v1/namespaces")).await.unwrap().contains("NamespaceList")
    );
    match client_with("s3cret-dev").request_text(get("/api/v1/namespaces")).await {
        Err(kube::Error::Api(s)) => assert_eq!(
            (s.code, s.message.as_str()),
            (
                403,
                r#"namespaces is forbidden: User "dev" cannot list resource "namespaces" in API group "" at the cluster scope"#
            )
        ),
        other => panic!("{other:?}"),
    }
    match client_with("wrong").request_text(get("/healthz")).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 401, "an invalid token is refused even where anonymous would pass")
        }
        other => panic!("{other:?}"),
    }
}
