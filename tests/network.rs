//! A tenant's network rules and entry points on the host, end to end on the embedded host:
//! NetworkPolicies translated so that every peer stays inside the tenant (the property test in
//! `syncer::netpol` covers random policies; this inspects the host objects the real manager
//! writes), the isolation labels of the pods they select.

use serde_json::{Value, json};
use vt_testkit::{Kubectl, VtManager, eventually};

fn vt() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_vt"))
}

fn json_of(k: &Kubectl, args: &[&str]) -> Option<Value> {
    let out = k.run(args);
    out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
}

#[test]
fn network_policies_stay_inside_the_tenant() {
    let m = VtManager::start(vt(), &[]);
    m.vt_ok(&["create", "acme"]);
    m.vt_ok(&["create", "other"]);
    let acme = m.tenant_kubectl("acme");
    let host = m.host_kubectl();
    acme.ok_stdin(
        &["apply", "-f", "-"],
        r#"apiVersion: v1
kind: Namespace
metadata: {name: front, labels: {team: web}}
---
apiVersion: v1
kind: Namespace
metadata: {name: db}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: front, labels: {app: web}}
spec: {containers: [{name: c, image: registry.example/web:1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: pg, namespace: db, labels: {app: db}}
spec: {containers: [{name: c, image: registry.example/pg:16}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: db}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: web}}, podSelector: {matchLabels: {app: web}}}]
    ports: [{port: 5432}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: hostile, namespace: front}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: vt-other}}}, {ipBlock: {cidr: 10.244.0.0/16}}]
  egress:
  - to: [{ipBlock: {cidr: 0.0.0.0/0}}]
"#,
    );
    // The tenant's policy on the host: exactly the tenant's pods of namespace front with
    // app=web, towards its app=db pods of namespace db.
    let p = eventually("the host policy", || {
        json_of(&host, &["-n", "vt-acme", "get", "networkpolicy", "db-from-web-x-db-x-acme", "-o", "json"])
    });
    assert_eq!(p["spec"]["podSelector"], json!({"matchLabels": {"app": "db", "vt.dev/namespace": "db"}}));
    assert_eq!(
        p["spec"]["ingress"],
        json!([{"from": [{"podSelector": {"matchLabels": {"app": "web", "vt.dev/namespace": "front"}}}],
            "ports": [{"port": 5432, "protocol": "TCP"}]}])
    );
    // The hostile one: nothing from the host's namespaces or the pod range; "the internet" is
    // the internet minus the cluster's pod and Service ranges.
    let h = eventually("the hostile policy", || {
        json_of(&host, &["-n", "vt-acme", "get", "networkpolicy", "hostile-x-front-x-acme", "-o", "json"])
    });
    assert!(h["spec"]["ingress"].as_array().is_none_or(|a| a.is_empty()), "{h}");
    let to: Vec<String> = h["spec"]["egress"][0]["to"]
        .as_array()
        .unwrap()
        .iter()
        .map(|peer| peer["ipBlock"]["cidr"].as_str().unwrap().to_string())
        .collect();
    let cluster = vt_net::CidrSet::parse_list("10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10").unwrap();
    assert!(!to.is_empty() && to.iter().all(|c| !cluster.overlaps(&c.parse().unwrap())), "{to:?}");
    // The pods the policies isolate carry the label the manager's open policies exclude.
    let label = |ns: &str, name: &str, key: &str| -> String {
        host.ok(&[
            "-n",
            "vt-acme",
            "get",
            "pod",
            &format!("{name}-x-{ns}-x-acme"),
            "-o",
            &format!("jsonpath={{.metadata.labels.{}}}", key.replace('.', "\\.").replace('/', "\\/")),
        ])
    };
    eventually("pg isolated for ingress", || (label("db", "pg", "vt.dev/isolated-ingress") == "true").then_some(()));
    eventually("web isolated both ways", || (label("front", "web", "vt.dev/isolated-egress") == "true").then_some(()));
    let open = host.ok(&["-n", "vt-acme", "get", "networkpolicy", "-o", "name"]);
    assert!(
        open.contains("vt-open-ingress") && open.contains("vt-open-egress") && open.contains("vt-isolation"),
        "{open}"
    );
    // A namespace's labels decide what a namespace selector matches: relabelled, the rule
    // selects nothing, and the rule goes.
    acme.ok(&["label", "namespace", "front", "team=elsewhere", "--overwrite"]);
    eventually("the rule re-translated", || {
        let p = json_of(&host, &["-n", "vt-acme", "get", "networkpolicy", "db-from-web-x-db-x-acme", "-o", "json"])?;
        p["spec"]["ingress"].as_array().is_none_or(|a| a.is_empty()).then_some(())
    });
    // Deleted, the host policy and the isolation go.
    acme.ok(&["-n", "db", "delete", "networkpolicy", "db-from-web"]);
    eventually("the host policy deleted", || {
        (!host.run(&["-n", "vt-acme", "get", "networkpolicy", "db-from-web-x-db-x-acme"]).status.success())
            .then_some(())
    });
    eventually("pg no longer isolated", || label("db", "pg", "vt.dev/isolated-ingress").is_empty().then_some(()));
    // Nothing of the other tenant was touched.
    assert!(!host.ok(&["-n", "vt-other", "get", "networkpolicy", "-o", "name"]).contains("acme"));
}

/// Ingresses land on the host only for names the tenant owns, through classes it may use, to
/// its own Services; the host's classes appear read-only in the tenant.
#[test]
fn ingresses_and_the_hosts_classes() {
    let m = VtManager::start(vt(), &[]);
    let host = m.host_kubectl();
    host.ok_stdin(
        &["apply", "-f", "-"],
        r#"apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: fast, annotations: {storageclass.kubernetes.io/is-default-class: "true"}}
provisioner: csi.example.com
parameters: {csi.storage.k8s.io/provisioner-secret-name: host-secret}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: slow}
provisioner: csi.example.com
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nginx}
spec: {controller: k8s.io/ingress-nginx}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: internal}
spec: {controller: k8s.io/ingress-nginx}
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: high}
value: 100000
"#,
    );
    m.vt_ok(&["create", "acme", "--ingress-class", "nginx", "--ingress-host", "shop.acme.io"]);
    // A name granted to acme is not granted again: beta's overlapping grant is withheld.
    m.vt_ok(&["create", "beta", "--ingress-host", "*.acme.io"]);
    let beta = m.vt_ok(&["describe", "beta"]);
    assert!(beta.contains("withheld") && beta.contains("\"acme\""), "{beta}");
    let acme = m.tenant_kubectl("acme");
    // The host's classes the tenant may use, read-only, defaults carried over.
    let sc = eventually("storage classes", || {
        let out = acme.ok(&["get", "storageclass", "-o", "jsonpath={.items[*].metadata.name}"]);
        (out.contains("fast") && out.contains("slow")).then_some(out)
    });
    assert!(!sc.contains("host-secret"));
    let fast = acme.ok(&["get", "storageclass", "fast", "-o", "json"]);
    assert!(
        fast.contains(r#""storageclass.kubernetes.io/is-default-class": "true""#) && !fast.contains("parameters"),
        "{fast}"
    );
    let ic = eventually("ingress classes", || {
        let out = acme.ok(&["get", "ingressclass", "-o", "jsonpath={.items[*].metadata.name}"]);
        (!out.is_empty()).then_some(out)
    });
    assert_eq!(ic, "nginx", "only the granted class");
    assert_eq!(acme.ok(&["get", "runtimeclass", "-o", "jsonpath={.items[*].metadata.name}"]), "kata");
    assert!(!acme.ok(&["get", "priorityclass", "-o", "name"]).contains("high"), "not granted");
    let err = acme.fails(&["delete", "storageclass", "fast"]);
    assert!(err.contains("read-only"), "{err}");
    let err = acme.fails_stdin(
        &["apply", "-f", "-"],
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: mine}\nprovisioner: x\n",
    );
    assert!(err.contains("read-only"), "{err}");

    // An Ingress for a name acme owns lands on the host with its Service renamed; one for
    // another tenant's name is refused, never created.
    acme.ok_stdin(
        &["apply", "-f", "-"],
        r#"apiVersion: v1
kind: Secret
metadata: {name: shop-tls, namespace: default}
type: kubernetes.io/tls
data: {tls.crt: Y2VydA==, tls.key: a2V5}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop, namespace: default}
spec:
  tls: [{hosts: [shop.acme.vt.local], secretName: shop-tls}]
  rules:
  - host: shop.acme.vt.local
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
  - host: shop.acme.io
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: squat, namespace: default}
spec:
  rules:
  - host: shop.beta.vt.local
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
"#,
    );
    let h = eventually("the host ingress", || {
        json_of(&host, &["-n", "vt-acme", "get", "ingress", "shop-x-default-x-acme", "-o", "json"])
    });
    assert_eq!(h["spec"]["ingressClassName"], "nginx");
    assert_eq!(h["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"], "web-x-default-x-acme");
    assert_eq!(h["spec"]["tls"][0]["secretName"], "shop-tls-x-default-x-acme");
    eventually("the TLS secret copied", || {
        host.run(&["-n", "vt-acme", "get", "secret", "shop-tls-x-default-x-acme"]).status.success().then_some(())
    });
    eventually("the squat refused", || {
        acme.ok(&["get", "events", "--field-selector", "reason=IngressRefused", "-o", "jsonpath={.items[*].message}"])
            .contains("shop.beta.vt.local")
            .then_some(())
    });
    assert!(!host.run(&["-n", "vt-acme", "get", "ingress", "squat-x-default-x-acme"]).status.success());
    // The host controller's address comes back.
    host.ok(&[
        "-n",
        "vt-acme",
        "patch",
        "ingress",
        "shop-x-default-x-acme",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"loadBalancer":{"ingress":[{"ip":"203.0.113.5"}]}}}"#,
    ]);
    eventually("the address in the tenant", || {
        (acme.ok(&["-n", "default", "get", "ingress", "shop", "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}"])
            == "203.0.113.5")
            .then_some(())
    });
    // A chart's claim without a class binds (the host's default class).
    acme.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data, namespace: default}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: user, namespace: default}\nspec:\n  containers: [{name: c, image: registry.example/c:1}]\n  volumes: [{name: d, persistentVolumeClaim: {claimName: data}}]\n",
    );
    eventually("the claim bound", || {
        (acme.ok(&["-n", "default", "get", "pvc", "data", "-o", "jsonpath={.status.phase}"]) == "Bound").then_some(())
    });
}
