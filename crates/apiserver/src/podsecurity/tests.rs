use serde_json::json;

use super::*;

fn spec(v: Value) -> Value {
    let mut s = json!({"containers": [{"name": "app", "image": "nginx"}]});
    if let (Some(m), Some(extra)) = (s.as_object_mut(), v.as_object()) {
        for (k, v) in extra {
            m.insert(k.clone(), v.clone());
        }
    }
    s
}

#[test]
fn baseline_allows_ordinary_pods() {
    assert_eq!(check(&spec(json!({})), Level::Baseline), Ok(()));
    let caps = spec(
        json!({"containers": [{"name": "app", "securityContext": {"capabilities": {"add": ["CHOWN", "NET_BIND_SERVICE"]}}}]}),
    );
    assert_eq!(check(&caps, Level::Baseline), Ok(()), "default capabilities may be added");
}

#[test]
fn baseline_refuses_host_escapes_with_kubes_words() {
    let cases = [
        (json!({"hostNetwork": true, "hostPID": true}), "host namespaces (hostNetwork=true, hostPID=true)"),
        (json!({"hostIPC": true}), "host namespaces (hostIPC=true)"),
        (
            json!({"containers": [{"name": "app", "securityContext": {"privileged": true}}]}),
            "privileged (container \"app\" must not set securityContext.privileged=true)",
        ),
        (
            json!({"containers": [{"name": "app", "securityContext": {"capabilities": {"add": ["SYS_ADMIN", "NET_ADMIN"]}}}]}),
            "non-default capabilities (container \"app\" must not include \"NET_ADMIN\", \"SYS_ADMIN\" in securityContext.capabilities.add)",
        ),
        (json!({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}), "hostPath volumes (volume \"root\")"),
        (
            json!({"containers": [{"name": "app", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}),
            "hostPort (container \"app\" uses hostPort 8080)",
        ),
        (
            json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}),
            "seccompProfile (pod must not set securityContext.seccompProfile.type to \"Unconfined\")",
        ),
        (
            json!({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}}),
            "forbidden sysctls (kernel.msgmax)",
        ),
    ];
    for (extra, want) in cases {
        let err = check(&spec(extra.clone()), Level::Baseline).expect_err(&extra.to_string());
        assert_eq!(err, format!("violates PodSecurity \"baseline:latest\": {want}"));
        assert_eq!(check(&spec(extra), Level::Privileged), Ok(()), "privileged allows it");
    }
}

#[test]
fn restricted_asks_for_hardening() {
    let err = check(&spec(json!({})), Level::Restricted).unwrap_err();
    for part in [
        "allowPrivilegeEscalation != false (container \"app\"",
        "runAsNonRoot != true (pod or container \"app\"",
        "seccompProfile (pod or container \"app\" must set",
        "unrestricted capabilities (container \"app\" must set securityContext.capabilities.drop=[\"ALL\"])",
    ] {
        assert!(err.contains(part), "{part} in {err}");
    }
    let hardened = spec(json!({
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "app", "securityContext": {"allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "d"}}]
    }));
    assert_eq!(check(&hardened, Level::Restricted), Ok(()));
    let mut nfs = hardened.clone();
    nfs["volumes"] = json!([{"name": "share", "nfs": {"server": "x", "path": "/"}}]);
    assert!(
        check(&nfs, Level::Restricted)
            .unwrap_err()
            .contains("restricted volume types (volume \"share\" uses restricted volume type \"nfs\")")
    );
}
