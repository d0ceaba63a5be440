//! What an operator sees of `vt server`: its data in the per-user directory whatever the
//! working directory, logs without colour codes in files and as JSON on request, and metrics in
//! kube-apiserver's vocabulary (checked after known requests), which the chart's Grafana
//! dashboard uses.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use vt_testkit::{ManagerOptions, VtManager};

fn vt() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_vt"))
}

/// `GET /metrics` on the admin endpoint, as text.
fn scrape(admin: &str) -> String {
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// One sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let mut map = BTreeMap::new();
            for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once("=\"")?;
                map.insert(k.to_string(), v.trim_end_matches('"').to_string());
            }
            Some((name.to_string(), map, value.parse().ok()?))
        })
        .collect()
}

/// The sum of `name`'s samples whose labels include all of `want`.
fn sum(all: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    all.iter()
        .filter(|(n, l, _)| n == name && want.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, _, v)| v)
        .sum()
}

#[test]
fn default_data_dir_json_logs_and_kube_metrics() {
    let opts =
        ManagerOptions { default_data_dir: true, split_stderr: true, log_level: "info".into(), ..Default::default() };
    let m = VtManager::start_with(vt(), &["--log-format", "json"], opts);
    // The server ran in one directory with no --data-dir; the CLI runs from another and finds
    // it through the same per-user directory.
    assert!(m.home().join(".local/share/vt/host/admin.kubeconfig").exists());
    m.vt_ok(&["create", "alpha"]);
    assert!(m.vt_ok(&["list"]).lines().any(|l| l.starts_with("alpha ") && l.contains("Ready")));
    assert!(!m.home().join("server-cwd/vt-data").exists() && !m.home().join("cli-cwd/vt-data").exists());

    let k = m.tenant_kubectl("alpha");
    k.ok(&["-n", "default", "get", "configmaps"]);
    k.ok(&["-n", "default", "get", "configmaps"]);
    k.fails(&["-n", "default", "get", "secret", "no-such-secret"]);
    k.ok(&["-n", "default", "create", "configmap", "metrics-probe", "--from-literal=a=1"]);
    k.ok_stdin(
        &["apply", "--server-side", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: applied, namespace: default}\ndata: {a: '1'}\n",
    );
    k.ok(&["-n", "default", "delete", "configmap", "metrics-probe"]);
    let mut watch = k.spawn(&["-n", "default", "get", "configmaps", "-w"]);

    let tenant = [("tenant", "alpha"), ("component", "apiserver")];
    let cm = [("resource", "configmaps"), ("group", ""), ("version", "v1")];
    let labels = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
        tenant.iter().chain(cm.iter()).chain(extra.iter()).copied().collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let all = loop {
        let all = samples(&scrape(&m.admin));
        let open = sum(&all, "apiserver_longrunning_requests", &labels(&[("verb", "WATCH"), ("scope", "namespace")]));
        if open >= 1.0 || Instant::now() > deadline {
            break all;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let count = |extra: &[(&'static str, &'static str)]| sum(&all, "apiserver_request_total", &labels(extra));
    assert!(count(&[("verb", "LIST"), ("scope", "namespace"), ("code", "200")]) >= 2.0);
    assert_eq!(count(&[("verb", "POST"), ("scope", "namespace"), ("code", "201")]), 1.0);
    assert!(count(&[("verb", "APPLY"), ("scope", "resource")]) >= 1.0);
    assert_eq!(count(&[("verb", "DELETE"), ("scope", "resource"), ("code", "200")]), 1.0);
    let secrets = [("tenant", "alpha"), ("resource", "secrets"), ("verb", "GET"), ("code", "404")];
    assert!(sum(&all, "apiserver_request_total", &secrets) >= 1.0);
    // Kubernetes verbs, never HTTP methods or lower case; latency by verb and resource.
    assert!(all.iter().filter(|(n, ..)| n == "apiserver_request_total").all(|(_, l, _)| {
        ["GET", "LIST", "WATCH", "POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION", "CONNECT", "other"]
            .contains(&l["verb"].as_str())
    }));
    let dur = [("verb", "LIST"), ("resource", "configmaps"), ("scope", "namespace")];
    assert!(sum(&all, "apiserver_request_duration_seconds_count", &dur) >= 2.0);
    // The open watch, then its end (counted as a finished WATCH, as kube-apiserver counts it).
    let watching = labels(&[("verb", "WATCH"), ("scope", "namespace")]);
    assert_eq!(sum(&all, "apiserver_longrunning_requests", &watching), 1.0);
    watch.kill().unwrap();
    watch.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = samples(&scrape(&m.admin));
        if sum(&all, "apiserver_longrunning_requests", &watching) == 0.0 {
            assert!(sum(&all, "apiserver_request_total", &watching) >= 1.0);
            break;
        }
        assert!(Instant::now() < deadline, "the watch's end was not counted");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(sum(&all, "vt_tenants", &[("phase", "Ready")]), 1.0);
    assert!(sum(&all, "vt_tenant_objects", &[("tenant", "alpha")]) > 10.0);
    assert!(sum(&all, "vt_tenant_store_bytes", &[("tenant", "alpha")]) > 1000.0);
    assert!(all.iter().any(|(n, ..)| n == "vt_syncer_sync_duration_seconds_count"));

    // Every metric the chart's Grafana dashboard queries is one the manager serves.
    let text = scrape(&m.admin);
    let dashboard = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../charts/vt/dashboards/vt.json"))
        .expect("charts/vt/dashboards/vt.json");
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let names = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("apiserver_") || w.starts_with("vt_"));
            for name in names {
                let base = name.trim_end_matches("_bucket").trim_end_matches("_total");
                // Families without a series yet are not printed: sync errors appear on the first.
                let served = text.contains(&format!("# TYPE {base} ")) || base == "vt_syncer_sync_errors";
                assert!(served, "the dashboard queries {name}, which is not served");
                queried += 1;
            }
        }
    }
    assert!(queried >= 10);

    // Logs: JSON, one object a line, and no terminal escape codes.
    let stderr = std::fs::read_to_string(m.stderr_log()).unwrap();
    assert!(stderr.lines().count() >= 1, "no log lines at info level");
    for line in stderr.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{line}");
    }
    assert!(!stderr.contains('\u{1b}'));
}

#[test]
fn text_logs_to_a_file_carry_no_colour_codes() {
    let opts = ManagerOptions { split_stderr: true, log_level: "info".into(), ..Default::default() };
    let m = VtManager::start_with(vt(), &[], opts);
    m.vt_ok(&["create", "bravo"]);
    let stderr = std::fs::read_to_string(m.stderr_log()).unwrap();
    assert!(stderr.contains("INFO"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "escape codes in a log file:\n{stderr}");
    // Garbage in the format flag is a clear error, not a panic.
    let out = std::process::Command::new(vt()).args(["--log-format", "xml", "list"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'xml'"));
}
