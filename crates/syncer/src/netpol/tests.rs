use std::net::IpAddr;

use rand::RngExt;

use super::*;

fn target() -> Target {
    crate::translate::test_target()
}

fn namespaces() -> BTreeMap<String, BTreeMap<String, String>> {
    BTreeMap::from([
        ("front".to_string(), BTreeMap::from([("team".to_string(), "web".to_string())])),
        ("back".to_string(), BTreeMap::from([("team".to_string(), "api".to_string())])),
        ("db".to_string(), BTreeMap::new()),
    ])
}

fn cluster() -> CidrSet {
    CidrSet::parse_list("10.244.0.0/16,10.96.0.0/12,fd00:10:244::/48").unwrap()
}

#[test]
fn the_issues_example_selects_exactly_the_tenants_pods() {
    let (ns, cl) = (namespaces(), cluster());
    let cx = Context { namespaces: &ns, cluster: &cl };
    let v = json!({"metadata": {"name": "db-from-web", "namespace": "db", "uid": "u"},
        "spec": {"podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "front"}},
                "podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": 5432}]}]}});
    let h = host_policy(&v, &target(), &cx).unwrap();
    assert_eq!(h["metadata"]["namespace"], "vt-acme");
    assert_eq!(h["spec"]["podSelector"], json!({"matchLabels": {"app": "db", "vt.dev/namespace": "db"}}));
    assert_eq!(
        h["spec"]["ingress"],
        json!([{"from": [{"podSelector": {"matchLabels": {"app": "web", "vt.dev/namespace": "front"}}}],
            "ports": [{"port": 5432}]}])
    );
    assert_eq!(h["spec"]["policyTypes"], json!(["Ingress"]));
}

#[test]
fn hostile_policies_translate_to_nothing_beyond_the_tenant() {
    let (ns, cl) = (namespaces(), cluster());
    let cx = Context { namespaces: &ns, cluster: &cl };
    // 0.0.0.0/0 is the internet, not the cluster.
    let v = json!({"metadata": {"name": "p", "namespace": "front"},
        "spec": {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}});
    let h = host_policy(&v, &target(), &cx).unwrap();
    let blocks: Vec<Cidr> = h["spec"]["egress"][0]["to"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["ipBlock"]["cidr"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(!blocks.is_empty());
    assert!(blocks.iter().all(|b| !cl.overlaps(b)), "{blocks:?}");
    // Another tenant's pod range, and a namespace selector naming a host namespace: nothing.
    let v = json!({"metadata": {"name": "p", "namespace": "front"},
        "spec": {"podSelector": {}, "ingress": [{"from": [
            {"ipBlock": {"cidr": "10.244.7.0/24"}},
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}},
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "vt-other"}}}]}]}});
    let h = host_policy(&v, &target(), &cx).unwrap();
    assert_eq!(h["spec"]["ingress"], json!([]), "a rule whose peers are all outside the tenant allows nothing");
    // An empty namespace selector: every namespace of the tenant, none of the host's.
    let v = json!({"metadata": {"name": "p", "namespace": "front"},
        "spec": {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}});
    let h = host_policy(&v, &target(), &cx).unwrap();
    assert_eq!(
        h["spec"]["ingress"][0]["from"],
        json!([{"podSelector": {"matchExpressions": [{"key": "vt.dev/namespace", "operator": "In", "values": ["back", "db", "front"]}]}}])
    );
    // A selector requiring a label only the manager (or vt) sets selects no host pod.
    let v = json!({"metadata": {"name": "p", "namespace": "front"},
        "spec": {"podSelector": {"matchLabels": {"vt.dev/tenant": "other"}}}});
    assert!(host_policy(&v, &target(), &cx).is_none());
}

#[test]
fn isolation_follows_the_policy_types() {
    let p = json!({"spec": {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Egress"]}});
    let db = BTreeMap::from([("app".to_string(), "db".to_string())]);
    assert!(isolation(std::slice::from_ref(&p), &db, "Egress"));
    assert!(!isolation(std::slice::from_ref(&p), &db, "Ingress"));
    assert!(!isolation(&[p], &BTreeMap::new(), "Egress"));
}

/// A host pod as NetworkPolicy evaluation sees it.
struct Pod {
    ns: &'static str,
    labels: BTreeMap<String, String>,
    ip: IpAddr,
}

fn matches(peer: &Value, policy_ns: &str, pod: &Pod) -> bool {
    if let Some(b) = peer.get("ipBlock") {
        let cidr: Cidr = b["cidr"].as_str().unwrap().parse().unwrap();
        let except = b.get("except").and_then(Value::as_array).into_iter().flatten();
        return cidr.contains(pod.ip)
            && !except.map(|e| e.as_str().unwrap().parse::<Cidr>().unwrap()).any(|e| e.contains(pod.ip));
    }
    let ns_ok = match peer.get("namespaceSelector") {
        None => pod.ns == policy_ns,
        Some(_) => true,
    };
    let sel = LabelSelector::from_api(peer.get("podSelector").unwrap_or(&json!({}))).unwrap();
    ns_ok && sel.matches(&pod.labels)
}

/// Property: for random tenant policies, no translated peer ever admits a pod of another
/// tenant or of the host's system namespaces, and no translated ip block reaches into the
/// cluster's ranges; the translated policy only selects the tenant's own pods.
#[test]
fn no_translated_rule_crosses_the_tenant() {
    let mut rng = rand::rng();
    let (ns, cl) = (namespaces(), cluster());
    let cx = Context { namespaces: &ns, cluster: &cl };
    let apps = ["web", "api", "db"];
    let vns = ["front", "back", "db"];
    let mut pods = Vec::new();
    for (i, (host_ns, tenant)) in
        [("vt-acme", "acme"), ("vt-other", "other"), ("kube-system", "")].into_iter().enumerate()
    {
        for j in 0..30u8 {
            let mut labels = BTreeMap::from([("app".to_string(), apps[j as usize % 3].to_string())]);
            if !tenant.is_empty() {
                labels.insert("vt.dev/tenant".into(), tenant.into());
                labels.insert("vt.dev/namespace".into(), vns[(j as usize / 3) % 3].into());
            }
            pods.push(Pod { ns: host_ns, labels, ip: IpAddr::from([10, 244, i as u8, j + 1]) });
        }
    }
    let blocks = [
        "0.0.0.0/0",
        "10.0.0.0/8",
        "10.244.1.0/24",
        "10.244.0.0/16",
        "10.96.0.1/32",
        "192.0.2.0/24",
        "::/0",
        "nonsense",
    ];
    let random_selector = |rng: &mut rand::rngs::ThreadRng| -> Value {
        match rng.random_range(0..5) {
            0 => json!({}),
            1 => json!({"matchLabels": {"app": apps[rng.random_range(0..3)]}}),
            2 => {
                json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": [apps[rng.random_range(0..3)]]}]})
            }
            3 => json!({"matchLabels": {"vt.dev/tenant": "other"}}),
            _ => json!({"matchExpressions": [{"key": "vt.dev/namespace", "operator": "DoesNotExist"}]}),
        }
    };
    for _ in 0..3000 {
        let mut rules = Vec::new();
        for _ in 0..rng.random_range(0..4) {
            let mut peers = Vec::new();
            for _ in 0..rng.random_range(0..4) {
                peers.push(match rng.random_range(0..4) {
                    0 => json!({"podSelector": random_selector(&mut rng)}),
                    1 => json!({"namespaceSelector": random_selector(&mut rng), "podSelector": random_selector(&mut rng)}),
                    2 => {
                        let name = ["kube-system", "vt-other", "front"][rng.random_range(0..3)];
                        json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}})
                    }
                    _ => {
                        let mut b = json!({"cidr": blocks[rng.random_range(0..blocks.len())]});
                        if rng.random_bool(0.3) {
                            b["except"] = json!(["10.1.0.0/16"]);
                        }
                        json!({"ipBlock": b})
                    }
                });
            }
            rules.push(json!({"from": peers, "to": peers}));
        }
        let policy_ns = vns[rng.random_range(0..3)];
        let v = json!({"metadata": {"name": "p", "namespace": policy_ns},
            "spec": {"podSelector": random_selector(&mut rng), "ingress": rules, "egress": rules}});
        let Some(h) = host_policy(&v, &target(), &cx) else { continue };
        for (section, key) in [("ingress", "from"), ("egress", "to")] {
            for rule in h["spec"][section].as_array().into_iter().flatten() {
                let peers = rule[key].as_array().unwrap();
                assert!(!peers.is_empty(), "an empty peer list would admit everyone: {h}");
                for p in peers {
                    assert!(p.get("namespaceSelector").is_none(), "{p}");
                    if let Some(b) = p.get("ipBlock") {
                        let cidr: Cidr = b["cidr"].as_str().unwrap().parse().unwrap();
                        assert!(!cl.overlaps(&cidr), "{cidr} reaches into the cluster");
                    }
                    for pod in pods.iter().filter(|pod| pod.ns != "vt-acme") {
                        assert!(!matches(p, "vt-acme", pod), "{p} admits {} {:?} from {v}", pod.ns, pod.labels);
                    }
                }
            }
        }
    }
}
