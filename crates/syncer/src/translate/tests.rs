use serde_json::json;

use super::*;

fn target() -> Target {
    Target {
        tenant: "acme".into(),
        namespace: "vt-acme".into(),
        pool: "acme".into(),
        node_selector: BTreeMap::from([("zone".into(), "a".into())]),
        tolerations: vec![json!({"key": "dedicated", "operator": "Exists"})],
        runtime_class: "kata".into(),
        level: Level::Baseline,
        api_host: "10.0.0.10".into(),
        api_port: 6443,
        api_server_name: "acme.vt.local".into(),
        load_balancer_classes: Vec::new(),
        dns_server: None,
        ingress: Default::default(),
        storage_classes: Vec::new(),
        priority_classes: Vec::new(),
    }
}

fn pod(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-0", "namespace": "shop", "uid": "u-1",
            "labels": {"app": "web", "vt.dev/tenant": "other"}, "annotations": {"note": "x"}},
        "spec": spec})
}

fn nodes() -> BTreeSet<String> {
    BTreeSet::from(["n1".to_string()])
}

#[test]
fn pods_get_names_isolation_and_kata() {
    let t = target();
    let v = pod(
        json!({"containers": [{"name": "app", "image": "nginx"}], "nodeSelector": {"disk": "ssd", "vt.dev/pool": "other"},
        "priorityClassName": "system-node-critical", "schedulerName": "mine", "serviceAccountName": "builder"}),
    );
    let h = host_pod(&v, &t, &[], &nodes()).unwrap();
    assert_eq!(h["metadata"]["name"], "web-0-x-shop-x-acme");
    assert_eq!(h["metadata"]["namespace"], "vt-acme");
    assert_eq!(
        h["metadata"]["labels"],
        json!({"app": "web", "vt.dev/tenant": "acme", "vt.dev/namespace": "shop"}),
        "a tenant cannot claim another tenant's label"
    );
    assert_eq!(h["metadata"]["annotations"]["vt.dev/name"], "web-0");
    assert_eq!(h["metadata"]["annotations"]["vt.dev/uid"], "u-1");
    let s = &h["spec"];
    assert_eq!(s["runtimeClassName"], "kata");
    assert_eq!(s["nodeSelector"], json!({"disk": "ssd", "vt.dev/pool": "acme", "zone": "a"}));
    let tolerations = s["tolerations"].as_array().unwrap();
    assert!(
        tolerations
            .contains(&json!({"key": "vt.dev/pool", "operator": "Equal", "value": "acme", "effect": "NoSchedule"}))
    );
    assert!(tolerations.contains(&json!({"key": "dedicated", "operator": "Exists"})));
    assert_eq!(s["automountServiceAccountToken"], false);
    assert_eq!(s["enableServiceLinks"], false);
    assert_eq!(s["serviceAccountName"], "default");
    assert_eq!(s["hostname"], "web-0");
    for gone in ["priorityClassName", "schedulerName", "nodeName"] {
        assert!(s.get(gone).is_none(), "{gone}");
    }
}

/// `kubectl debug`'s containers go to the host pod's `ephemeralcontainers` subresource only:
/// translated as containers are (their ConfigMap references renamed), refused by the same
/// rules (a privileged debug container breaks the host's level), never part of a created pod.
#[test]
fn ephemeral_containers_are_translated_and_checked_like_containers() {
    let t = target();
    let debug = |ctx: Value| {
        pod(json!({"containers": [{"name": "app", "image": "nginx"}],
            "ephemeralContainers": [{"name": "dbg", "image": "busybox", "securityContext": ctx,
                "envFrom": [{"configMapRef": {"name": "settings"}}]}]}))
    };
    let list = host_ephemeral_containers(&debug(json!({})), &t, &[], &nodes()).unwrap();
    assert_eq!(list[0]["name"], "dbg");
    assert_eq!(list[0]["envFrom"][0]["configMapRef"]["name"], t.name("settings", "shop"));
    assert!(host_pod(&debug(json!({})), &t, &[], &nodes()).unwrap()["spec"].get("ephemeralContainers").is_none());
    let refused = host_ephemeral_containers(&debug(json!({"privileged": true})), &t, &[], &nodes()).unwrap_err();
    assert_eq!(refused.reason, "PodSecurity");
}

#[test]
fn hostile_pods_are_refused() {
    let t = target();
    let base = |extra: Value| {
        let mut s = json!({"containers": [{"name": "app", "image": "nginx"}]});
        for (k, v) in extra.as_object().unwrap() {
            s[k] = v.clone();
        }
        pod(s)
    };
    let refused = |extra: Value| host_pod(&base(extra), &t, &[], &nodes()).unwrap_err();
    assert_eq!(refused(json!({"hostNetwork": true})).reason, "PodSecurity");
    assert_eq!(refused(json!({"volumes": [{"name": "r", "hostPath": {"path": "/"}}]})).reason, "PodSecurity");
    let rc = refused(json!({"runtimeClassName": "runc"}));
    assert_eq!(rc.reason, "RuntimeClass");
    assert!(rc.message.contains("\"runc\"") && rc.message.contains("\"kata\""), "{}", rc.message);
    let pinned = refused(json!({"nodeName": "host-control-plane"}));
    assert_eq!(pinned.reason, "NodeIsolation");
    assert!(host_pod(&base(json!({"nodeName": "n1"})), &t, &[], &nodes()).is_ok(), "a node of the pool may be named");
    assert!(host_pod(&base(json!({"runtimeClassName": "kata"})), &t, &[], &nodes()).is_ok());
    let mut privileged = t.clone();
    privileged.level = Level::Privileged;
    assert!(host_pod(&base(json!({"hostNetwork": true})), &privileged, &[], &nodes()).is_ok());
    assert_eq!(
        host_pod(&base(json!({"runtimeClassName": "runc"})), &privileged, &[], &nodes()).unwrap_err().reason,
        "RuntimeClass"
    );
}

#[test]
fn references_are_rewritten() {
    let t = target();
    let v = pod(json!({
        "containers": [{"name": "app", "image": "nginx",
            "env": [
                {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "a"}}},
                {"name": "B", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "b"}}},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
            "envFrom": [{"configMapRef": {"name": "all"}}]}],
        "imagePullSecrets": [{"name": "registry"}],
        "serviceAccountName": "builder",
        "volumes": [
            {"name": "c", "configMap": {"name": "cfg"}},
            {"name": "s", "secret": {"secretName": "creds"}},
            {"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
            {"name": "kube-api-access-abcde", "projected": {"sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}]
    }));
    let r = references(&v);
    assert_eq!(r.configmaps, BTreeSet::from(["all".into(), "cfg".into(), "kube-root-ca.crt".into()]));
    assert_eq!(r.secrets, BTreeSet::from(["creds".into(), "registry".into()]));
    assert_eq!(r.claims, BTreeSet::from(["data".into()]));
    assert_eq!(
        r.tokens,
        vec![TokenSource { key: "token-3-0".into(), audience: String::new(), expiration_seconds: 3607 }]
    );
    let h = host_pod(&v, &t, &[], &nodes()).unwrap();
    let s = &h["spec"];
    let env = s["containers"][0]["env"].as_array().unwrap();
    let find = |n: &str| env.iter().find(|e| e["name"] == n).cloned().unwrap();
    assert_eq!(find("A")["valueFrom"]["configMapKeyRef"]["name"], "cfg-x-shop-x-acme");
    assert_eq!(find("B")["valueFrom"]["secretKeyRef"]["name"], "creds-x-shop-x-acme");
    assert_eq!(find("POD")["valueFrom"]["fieldRef"]["fieldPath"], "metadata.annotations['vt.dev/name']");
    assert_eq!(find("SA"), json!({"name": "SA", "value": "builder"}));
    assert_eq!(find("IP")["valueFrom"]["fieldRef"]["fieldPath"], "status.podIP");
    assert_eq!(find("KUBERNETES_SERVICE_HOST")["value"], "acme.vt.local", "in-cluster clients send the tenant's SNI");
    assert_eq!(s["hostAliases"], json!([{"ip": "10.0.0.10", "hostnames": ["acme.vt.local"]}]));
    assert_eq!(find("KUBERNETES_SERVICE_PORT")["value"], "6443");
    assert_eq!(s["containers"][0]["envFrom"][0]["configMapRef"]["name"], "all-x-shop-x-acme");
    assert_eq!(s["imagePullSecrets"][0]["name"], "registry-x-shop-x-acme");
    assert_eq!(s["volumes"][0]["configMap"]["name"], "cfg-x-shop-x-acme");
    assert_eq!(s["volumes"][1]["secret"]["secretName"], "creds-x-shop-x-acme");
    assert_eq!(s["volumes"][2]["persistentVolumeClaim"]["claimName"], "data-x-shop-x-acme");
    let sources = s["volumes"][3]["projected"]["sources"].as_array().unwrap();
    assert_eq!(
        sources[0],
        json!({"secret": {"name": "web-0-x-shop-x-acme-token", "items": [{"key": "token-3-0", "path": "token"}]}})
    );
    assert_eq!(
        sources[1]["configMap"]["name"],
        "kube-root-ca-crt-x-shop-6eqka8t9bu"
            .replace("6eqka8t9bu", &crate::names::hash(&["acme", "shop", "kube-root-ca.crt"]))
    );
    assert_eq!(
        sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
        "metadata.annotations['vt.dev/namespace']"
    );
}

#[test]
fn service_variables_follow_the_kubelet() {
    let t = target();
    let svc = json!({"metadata": {"name": "redis-primary", "namespace": "shop"},
        "spec": {"clusterIP": "10.96.0.11", "ports": [{"name": "redis", "port": 6379, "protocol": "TCP"}, {"port": 9121}]}});
    let headless = json!({"metadata": {"name": "peers"}, "spec": {"clusterIP": "None", "ports": [{"port": 1}]}});
    let env = service_env(&[svc.clone(), headless], &t);
    let get = |n: &str| env.iter().find(|e| e["name"] == n).map(|e| e["value"].as_str().unwrap().to_string());
    assert_eq!(get("REDIS_PRIMARY_SERVICE_HOST").as_deref(), Some("10.96.0.11"));
    assert_eq!(get("REDIS_PRIMARY_SERVICE_PORT").as_deref(), Some("6379"));
    assert_eq!(get("REDIS_PRIMARY_SERVICE_PORT_REDIS").as_deref(), Some("6379"));
    assert_eq!(get("REDIS_PRIMARY_PORT").as_deref(), Some("tcp://10.96.0.11:6379"));
    assert_eq!(get("REDIS_PRIMARY_PORT_9121_TCP_ADDR").as_deref(), Some("10.96.0.11"));
    assert_eq!(get("REDIS_PRIMARY_PORT_9121_TCP_PROTO").as_deref(), Some("tcp"));
    assert!(get("PEERS_SERVICE_HOST").is_none(), "headless Services have no variables");
    // enableServiceLinks: false keeps only the API server's.
    let v = pod(
        json!({"enableServiceLinks": false, "containers": [{"name": "app", "image": "nginx", "env": [{"name": "REDIS_PRIMARY_SERVICE_HOST", "value": "mine"}]}]}),
    );
    let h = host_pod(&v, &t, std::slice::from_ref(&svc), &nodes()).unwrap();
    let names: Vec<&str> =
        h["spec"]["containers"][0]["env"].as_array().unwrap().iter().filter_map(|e| e["name"].as_str()).collect();
    assert!(names.contains(&"KUBERNETES_SERVICE_HOST") && !names.contains(&"REDIS_PRIMARY_PORT"));
    let v = pod(
        json!({"containers": [{"name": "app", "image": "nginx", "env": [{"name": "REDIS_PRIMARY_SERVICE_HOST", "value": "mine"}]}]}),
    );
    let h = host_pod(&v, &t, &[svc], &nodes()).unwrap();
    let env = h["spec"]["containers"][0]["env"].as_array().unwrap();
    assert_eq!(
        env.iter().filter(|e| e["name"] == "REDIS_PRIMARY_SERVICE_HOST").count(),
        1,
        "the container's own value wins"
    );
    assert!(env.iter().any(|e| e["name"] == "REDIS_PRIMARY_SERVICE_HOST" && e["value"] == "mine"));
}

#[test]
fn selectors_never_reach_other_tenants() {
    let t = target();
    let svc = json!({"metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}], "externalIPs": ["1.2.3.4"], "clusterIP": "10.1.1.1"}});
    let h = host_service(&svc, &t);
    assert_eq!(h["spec"]["selector"], json!({"app": "web", "vt.dev/tenant": "acme", "vt.dev/namespace": "shop"}));
    assert!(h["spec"].get("externalIPs").is_none(), "external IPs are dropped");
    assert!(h["spec"].get("clusterIP").is_none(), "the host allocates");
    let v = pod(json!({"containers": [{"name": "app", "image": "nginx"}],
        "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname", "namespaceSelector": {}}]}},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]}));
    let h = host_pod(&v, &t, &[], &nodes()).unwrap();
    let term = &h["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0];
    assert!(term.get("namespaceSelector").is_none(), "no selecting across host namespaces");
    assert_eq!(term["labelSelector"]["matchExpressions"][0]["key"], "vt.dev/namespace");
    assert_eq!(h["spec"]["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]["vt.dev/namespace"], "shop");
}

#[test]
fn nodes_lose_host_only_details() {
    let h = json!({"metadata": {"name": "n1", "labels": {"vt.dev/pool": "acme"}, "annotations": {"cloud": "secret"}},
        "spec": {"providerID": "aws://x", "taints": [{"key": "vt.dev/pool", "value": "acme", "effect": "NoSchedule"}, {"key": "gpu", "effect": "NoSchedule"}]},
        "status": {"capacity": {"cpu": "4"}, "images": [{"names": ["other-tenant/secret:1"]}],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "ExternalIP", "address": "1.2.3.4"}]}});
    let v = virtual_node(&h);
    assert!(v["metadata"].get("annotations").is_none());
    assert!(v["spec"].get("providerID").is_none());
    assert_eq!(v["spec"]["taints"], json!([{"key": "gpu", "effect": "NoSchedule"}]));
    assert!(v["status"].get("images").is_none(), "other tenants' images stay hidden");
    assert_eq!(v["status"]["addresses"], json!([{"type": "InternalIP", "address": "10.0.0.1"}]));
    assert_eq!(v["status"]["capacity"]["cpu"], "4");
}

#[test]
fn events_name_the_virtual_pod() {
    let t = target();
    let h = json!({"metadata": {"name": "web-0-x-shop-x-acme.17a", "uid": "e1"}, "reason": "Scheduled", "type": "Normal",
        "message": "Successfully assigned vt-acme/web-0-x-shop-x-acme to n1",
        "involvedObject": {"kind": "Pod", "name": "web-0-x-shop-x-acme", "namespace": "vt-acme"},
        "source": {"component": "default-scheduler"}, "count": 1});
    let v = virtual_event(&h, &t, "shop", "web-0", "u-1");
    assert_eq!(v["message"], "Successfully assigned shop/web-0 to n1");
    assert_eq!(
        v["involvedObject"],
        json!({"kind": "Pod", "apiVersion": "v1", "namespace": "shop", "name": "web-0", "uid": "u-1"})
    );
    assert_eq!(v["metadata"]["namespace"], "shop");
    assert!(v["metadata"]["name"].as_str().unwrap().starts_with("web-0."));
}

#[test]
fn claims_cannot_pin_volumes() {
    let t = target();
    let v = json!({"metadata": {"name": "data", "namespace": "shop"}, "spec": {"volumeName": "pv-of-someone",
        "selector": {"matchLabels": {"owner": "other"}}, "dataSource": {"kind": "PersistentVolumeClaim", "name": "seed"},
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
    let h = host_claim(&v, &t);
    assert!(h["spec"].get("volumeName").is_none() && h["spec"].get("selector").is_none());
    assert_eq!(h["spec"]["dataSource"]["name"], "seed-x-shop-x-acme");
    let secret = json!({"kind": "Secret", "metadata": {"name": "tok", "namespace": "shop"}, "type": "kubernetes.io/service-account-token", "data": {"token": "eA=="}});
    assert_eq!(host_data_object(&secret, &t)["type"], "Opaque");
}

#[test]
fn storage_the_node_mounts_itself_is_refused() {
    // Network and inline storage is mounted by the host node outside the sandbox, with the
    // host's network and credentials (and names Secrets of the host namespace).
    let t = target();
    for (name, source) in [
        ("nfs", json!({"server": "10.0.0.5", "path": "/"})),
        ("iscsi", json!({"targetPortal": "10.0.0.5:3260", "iqn": "iqn.x", "lun": 0})),
        ("csi", json!({"driver": "secrets-store.csi.k8s.io", "nodePublishSecretRef": {"name": "vt-pki"}})),
        ("flexVolume", json!({"driver": "x/y", "secretRef": {"name": "vt-admin-kubeconfig"}})),
        ("awsElasticBlockStore", json!({"volumeID": "vol-0123"})),
    ] {
        let v = pod(json!({"containers": [{"name": "c", "image": "x"}], "volumes": [{"name": "d", name: source}]}));
        let r = host_pod(&v, &t, &[], &nodes()).unwrap_err();
        assert_eq!(r.reason, "HostIsolation", "{name}");
        assert!(r.message.contains(&format!("uses {name}")), "{}", r.message);
    }
    // The tenant's own kinds of volume are fine.
    let v = pod(json!({"containers": [{"name": "c", "image": "x"}], "volumes": [
        {"name": "a", "emptyDir": {}}, {"name": "b", "configMap": {"name": "cfg"}},
        {"name": "c", "persistentVolumeClaim": {"claimName": "data"}}]}));
    assert!(host_pod(&v, &t, &[], &nodes()).is_ok());
    // A privileged tenant is trusted by the host.
    let trusted = Target { level: Level::Privileged, ..target() };
    let v = pod(
        json!({"containers": [{"name": "c", "image": "x"}], "volumes": [{"name": "d", "nfs": {"server": "s", "path": "/"}}]}),
    );
    assert!(host_pod(&v, &trusted, &[], &nodes()).is_ok());
}

#[test]
fn probes_and_hooks_cannot_aim_the_node_elsewhere() {
    // Pinned as in Kubernetes 1.34's baseline ("Probe or Lifecycle Host"): the node would send
    // these from its own network (metadata services, other tenants' pods).
    let t = target();
    for c in [
        json!({"name": "c", "image": "x", "readinessProbe": {"httpGet": {"host": "169.254.169.254", "port": 80}}}),
        json!({"name": "c", "image": "x", "livenessProbe": {"tcpSocket": {"host": "10.0.0.1", "port": 2379}}}),
        json!({"name": "c", "image": "x", "lifecycle": {"postStart": {"httpGet": {"host": "kube-apiserver", "port": 443}}}}),
    ] {
        let r = host_pod(&pod(json!({"containers": [c]})), &t, &[], &nodes()).unwrap_err();
        assert_eq!(r.reason, "HostIsolation");
        assert!(r.message.contains(".host"), "{}", r.message);
    }
    let init = json!({"initContainers": [{"name": "i", "image": "x", "startupProbe": {"httpGet": {"host": "1.2.3.4", "port": 1}}}],
        "containers": [{"name": "c", "image": "x"}]});
    assert!(host_pod(&pod(init), &t, &[], &nodes()).is_err());
    // No host (or an empty one): the pod's own IP.
    let ok = json!({"containers": [{"name": "c", "image": "x", "readinessProbe": {"httpGet": {"host": "", "port": 80}},
        "livenessProbe": {"tcpSocket": {"port": 80}}}]});
    assert!(host_pod(&pod(ok), &t, &[], &nodes()).is_ok());
    let dra = json!({"containers": [{"name": "c", "image": "x"}], "resourceClaims": [{"name": "gpu", "resourceClaimName": "other"}]});
    assert_eq!(host_pod(&pod(dra), &t, &[], &nodes()).unwrap_err().reason, "HostIsolation");
}

#[test]
fn ephemeral_volume_templates_reach_only_the_tenants_storage() {
    let t = target();
    let v = pod(json!({"containers": [{"name": "c", "image": "x"}], "volumes": [{"name": "scratch", "ephemeral": {
        "volumeClaimTemplate": {
            "metadata": {"labels": {"app": "web", "vt.dev/tenant": "other"},
                "annotations": {"note": "x", "vt.dev/refresh-after": "2999-01-01T00:00:00Z"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                "volumeName": "pv-of-tenant-b", "selector": {"matchLabels": {"owner": "b"}},
                "dataSource": {"kind": "PersistentVolumeClaim", "name": "db"},
                "dataSourceRef": {"kind": "VolumeSnapshot", "apiGroup": "snapshot.storage.k8s.io", "name": "s", "namespace": "other"}}}}}]}));
    let h = host_pod(&v, &t, &[], &nodes()).unwrap();
    let tpl = &h["spec"]["volumes"][0]["ephemeral"]["volumeClaimTemplate"];
    assert_eq!(
        tpl["spec"],
        json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
            "dataSource": {"kind": "PersistentVolumeClaim", "name": "db-x-shop-x-acme"}})
    );
    assert_eq!(tpl["metadata"]["labels"], json!({"app": "web", "vt.dev/tenant": "acme", "vt.dev/namespace": "shop"}));
    assert_eq!(tpl["metadata"]["annotations"], json!({"note": "x"}));
}

#[test]
fn only_the_tenants_own_metadata_reaches_the_host() {
    let t = target();
    let mut v = pod(json!({"containers": [{"name": "c", "image": "x"}]}));
    v["metadata"]["labels"] = json!({"app": "web", "vt.dev/pool": "other", "x.vt.dev/owner": "me"});
    v["metadata"]["annotations"] = json!({
        "prometheus.io/scrape": "true",
        "vt.dev/refresh-after": "2999-01-01T00:00:00Z",
        "io.katacontainers.config.hypervisor.default_memory": "262144",
        "k8s.v1.cni.cncf.io/networks": "kube-system/host-macvlan",
        "cni.projectcalico.org/ipAddrs": "[\"10.244.3.17\"]",
        "metallb.universe.tf/address-pool": "infra",
        "container.apparmor.security.beta.kubernetes.io/c": "unconfined",
        "sidecar.istio.io/inject": "true",
        "vt.dev/sim-runtime": "0.2"});
    let h = host_pod(&v, &t, &[], &nodes()).unwrap();
    assert_eq!(h["metadata"]["labels"], json!({"app": "web", "vt.dev/tenant": "acme", "vt.dev/namespace": "shop"}));
    let annotations = h["metadata"]["annotations"].as_object().unwrap();
    let mut keys: Vec<&str> = annotations.keys().map(String::as_str).collect();
    keys.sort();
    // (Simulated kubelets' directives pass: they only shape a simulated pod's life.)
    assert_eq!(keys, ["prometheus.io/scrape", "vt.dev/name", "vt.dev/namespace", "vt.dev/sim-runtime", "vt.dev/uid"]);
    assert!(host_owned_annotation("cni.projectcalico.org/podIP"));
    assert!(!host_owned_annotation("prometheus.io/scrape"));
}

#[test]
fn metadata_updates_leave_the_host_machinerys_annotations() {
    let t = target();
    let mut v = pod(json!({"containers": [{"name": "c", "image": "x"}]}));
    let want = host_meta(&v, &t);
    let labels = |m: &Value| -> BTreeMap<String, String> { vt_apiserver::object::from_value(m.clone()).unwrap() };
    // The host copy as the host's CNI annotated it: nothing to patch.
    let mut have_annotations = labels(&want["annotations"]);
    have_annotations.insert("cni.projectcalico.org/podIP".into(), "10.244.3.17/32".into());
    assert_eq!(host_meta_patch(&want, &labels(&want["labels"]), &have_annotations), json!({}));
    // The tenant drops its annotation and changes a label: removals are nulls, the CNI's stays.
    v["metadata"]["annotations"] = json!({});
    v["metadata"]["labels"]["app"] = json!("api");
    let want = host_meta(&v, &t);
    let mut have_labels = labels(&want["labels"]);
    have_labels.insert("app".into(), "web".into());
    let patch = host_meta_patch(&want, &have_labels, &have_annotations);
    assert_eq!(patch["labels"]["app"], "api");
    assert_eq!(patch["annotations"]["note"], Value::Null);
    assert!(patch["annotations"].get("cni.projectcalico.org/podIP").is_none(), "{patch}");
}

#[test]
fn external_names_and_load_balancer_classes_stay_outside_the_cluster() {
    let svc = |spec: Value| json!({"metadata": {"name": "s", "namespace": "shop", "uid": "u"}, "spec": spec});
    let t = target();
    for bad in [
        "kubernetes.default.svc.cluster.local",
        "kubernetes.default.svc",
        "secret-store.vt-other.svc.cluster.local.",
        "db.svc",
        "KUBERNETES.DEFAULT.SVC.CLUSTER.LOCAL",
        "cluster.local",
        "anything.cluster.local",
        "printer.local",
        "localhost",
        "10.96.0.1",
        "::1",
        "db",
    ] {
        let r = check_service(&svc(json!({"type": "ExternalName", "externalName": bad})), &t);
        assert_eq!(r.map_err(|e| e.reason), Err("HostIsolation"), "{bad}");
    }
    for good in ["api.example.com", "db.example.org.", "s3.eu-west-1.amazonaws.com"] {
        assert!(check_service(&svc(json!({"type": "ExternalName", "externalName": good})), &t).is_ok(), "{good}");
    }
    let lb = svc(json!({"type": "LoadBalancer", "loadBalancerClass": "example.com/internal"}));
    assert!(check_service(&lb, &t).is_err(), "no class is granted by default");
    let granted = Target { load_balancer_classes: vec!["example.com/internal".into()], ..target() };
    assert!(check_service(&lb, &granted).is_ok());
    assert!(check_service(&svc(json!({"type": "LoadBalancer"})), &t).is_ok(), "the host's default class");
}

#[test]
fn the_managers_labels_never_reach_the_host() {
    let t = target();
    let p = pod(json!({"containers": [{"name": "c", "image": "x"}]}));
    let mut p = p;
    p["metadata"]["labels"]["app.kubernetes.io/name"] = json!("vt");
    p["metadata"]["labels"]["app.kubernetes.io/part-of"] = json!("vt");
    let meta = host_meta(&p, &t);
    assert!(meta["labels"].get("app.kubernetes.io/name").is_none(), "{meta}");
    assert_eq!(meta["labels"]["app.kubernetes.io/part-of"], "vt", "only the manager's own pair is reserved");
    let sel = host_selector(Some(&json!({"app.kubernetes.io/name": "vt", "app": "web"})), "shop", &t).unwrap();
    assert!(sel.get("app.kubernetes.io/name").is_none() && sel["app"] == "web", "{sel}");
    // Other values of the key are the tenant's own.
    let mut q = pod(json!({"containers": [{"name": "c", "image": "x"}]}));
    q["metadata"]["labels"]["app.kubernetes.io/name"] = json!("nginx");
    assert_eq!(host_meta(&q, &t)["labels"]["app.kubernetes.io/name"], "nginx");
}
