//! The Helm chart `charts/vt`, with Helm 4's library: it lints strictly, renders for the
//! ClusterIP/NodePort/LoadBalancer and persistence choices, installs and uninstalls on a vt API
//! server, and its Tenant CRD is exactly the one the binary serves.

use vt_testkit::VtServer;

fn vt() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_vt"))
}

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_charts_crd_is_the_binarys() {
    let out = std::process::Command::new(vt()).arg("crd").output().unwrap();
    assert!(out.status.success());
    let chart = std::fs::read_to_string(root().join("charts/vt/crds/tenants.vt.dev.yaml")).unwrap();
    let body: String = chart.lines().filter(|l| !l.starts_with('#')).map(|l| format!("{l}\n")).collect();
    assert_eq!(body, String::from_utf8_lossy(&out.stdout), "regenerate charts/vt/crds with `vt crd`");
}

#[test]
fn helm_lints_renders_and_installs_the_chart() {
    let server = VtServer::start(vt(), &[]);
    server.kubectl().ok(&["create", "namespace", "vt-system"]);
    let out = std::process::Command::new("python3")
        .arg(root().join("tests/helm/chart_vt.py"))
        .arg(root().join("charts/vt"))
        .arg(&server.kubeconfig)
        .arg("vt-system")
        .env("HOME", tempfile::tempdir().unwrap().path())
        .output()
        .expect("python3 with helm-python-sdk (pip install helm-python-sdk)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "helm failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap();
    assert_eq!(report["lint_errors"], serde_json::json!([]), "{report}");
    assert_eq!(report["lint_messages"], serde_json::json!([]), "{report}");
    let docs = |case: &str| -> String {
        report["rendered"][case].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_string()).collect()
    };
    let default = docs("default");
    for kind in
        ["kind: StatefulSet", "kind: Service", "kind: ServiceAccount", "kind: ClusterRole", "kind: ClusterRoleBinding"]
    {
        assert!(default.contains(kind), "{kind} missing");
    }
    assert!(default.contains("volumeClaimTemplates") && default.contains("--host-in-cluster"));
    assert!(
        default.contains("--advertise=vt-vt.vt-system.svc:443") || default.contains("--advertise=vt.vt-system.svc:443"),
        "{default}"
    );
    let nodeport = docs("nodeport");
    assert!(nodeport.contains("type: NodePort") && nodeport.contains("nodePort: 30443"));
    assert!(!nodeport.contains("volumeClaimTemplates") && nodeport.contains("emptyDir"));
    let lb = docs("loadbalancer");
    assert!(
        lb.contains("type: LoadBalancer")
            && lb.contains("--advertise=vt.example.com:443")
            && lb.contains("kind: ServiceMonitor")
            && lb.contains("grafana_dashboard: \"1\"")
            && lb.contains("vt-tenants")
    );
    // The tenants' DNS: a Service in front of the manager's DNS port.
    assert!(default.contains("--dns-service=") && default.contains("protocol: UDP"), "{default}");
    // The manager logs JSON in a cluster (for log collectors).
    assert!(default.contains("--log-format=json"), "{default}");
    // Installed for real (objects accepted by the API server's validation), then uninstalled.
    assert_eq!(report["install"], serde_json::json!([1, "deployed"]), "{report}");
    assert_eq!(report["uninstalled"], true);
    let left = server.kubectl().ok(&["-n", "vt-system", "get", "statefulsets,services,serviceaccounts", "-o", "name"]);
    assert!(!left.contains("statefulset") && !left.contains("service/vt"), "{left}");
}
