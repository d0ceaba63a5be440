//! The controllers inside a tenant, with the real kubectl: Deployments roll out, scale, roll
//! (never below availability) and roll back; deletes cascade or orphan; namespaces empty
//! themselves; Services list their ready pods; every namespace gets its ServiceAccount and root
//! CA. Pods run on simulated nodes added to the tenant by this test (a kubelet's part: the
//! syncer will bring real nodes).

use std::time::{Duration, Instant};

use vt_testkit::{Kubectl, VtManager};

fn vt() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_vt"))
}

/// A tenant with two simulated nodes, and a kubectl for it.
async fn tenant(name: &str) -> (VtManager, Kubectl, std::sync::Arc<vt_nodesim::NodeSim>) {
    let name = name.to_string();
    let (m, kc_yaml, k) = tokio::task::spawn_blocking(move || {
        let m = VtManager::start(vt(), &[]);
        m.vt_ok(&["create", &name]);
        let kc = m.vt_ok(&["connect", &name, "--print"]);
        let k = m.tenant_kubectl(&name);
        (m, kc, k)
    })
    .await
    .unwrap();
    let kc = kube::config::Kubeconfig::from_yaml(&kc_yaml).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    let sim = vt_nodesim::NodeSim::new(kube::Client::try_from(cfg).unwrap());
    sim.start().await.unwrap();
    for i in 0..2 {
        sim.add_node(&vt_nodesim::NodeSpec { name: format!("node-{i}"), ..Default::default() }).await.unwrap();
    }
    (m, k, sim)
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_services_and_namespaces() {
    let (_m, k, _sim) = tenant("apps").await;
    tokio::task::spawn_blocking(move || {
        // Every namespace gets its default ServiceAccount and the root CA.
        k.ok(&["create", "namespace", "shop"]);
        eventually("the default ServiceAccount", || k.run(&["-n", "shop", "get", "sa", "default"]).status.success());
        eventually("kube-root-ca.crt", || {
            k.run(&["-n", "shop", "get", "cm", "kube-root-ca.crt", "-o", "jsonpath={.data.ca\\.crt}"])
                .stdout
                .starts_with(b"-----BEGIN CERTIFICATE-----")
        });

        // create deployment → rollout status completes.
        k.ok(&["-n", "shop", "create", "deployment", "web", "--image=nginx:1.27", "--replicas=4", "--port=80"]);
        let out = k.ok(&["-n", "shop", "rollout", "status", "deploy/web", "--timeout=60s"]);
        assert!(out.contains("successfully rolled out"), "{out}");
        assert_eq!(k.ok(&["-n", "shop", "get", "deploy", "web", "-o", "jsonpath={.status.availableReplicas}"]), "4");

        // A Service lists the ready pods.
        k.ok(&["-n", "shop", "expose", "deploy", "web", "--port=80"]);
        eventually("4 endpoints", || {
            let ips = k.ok(&["-n", "shop", "get", "endpoints", "web", "-o", "jsonpath={.subsets[*].addresses[*].ip}"]);
            ips.split_whitespace().count() == 4
        });
        let slice = k.ok(&[
            "-n",
            "shop",
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "jsonpath={.items[0].endpoints[*].conditions.ready}",
        ]);
        assert_eq!(slice.split_whitespace().filter(|r| *r == "true").count(), 4, "{slice}");

        // set image: a rolling update that never drops below availability (4 - 25% = 3).
        k.ok(&["-n", "shop", "set", "image", "deploy/web", "nginx=nginx:1.28"]);
        let mut min_available = i64::MAX;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = k.ok(&[
                "-n",
                "shop",
                "get",
                "deploy",
                "web",
                "-o",
                "jsonpath={.status.availableReplicas}/{.status.updatedReplicas}/{.status.replicas}",
            ]);
            let parts: Vec<i64> = s.split('/').map(|x| x.parse().unwrap_or(0)).collect();
            min_available = min_available.min(parts[0]);
            if parts == [4, 4, 4] {
                break;
            }
            assert!(Instant::now() < deadline, "rollout did not finish: {s}");
        }
        assert!(min_available >= 3, "availability dropped to {min_available}");
        k.ok(&["-n", "shop", "rollout", "status", "deploy/web", "--timeout=60s"]);
        let history = k.ok(&["-n", "shop", "rollout", "history", "deploy/web"]);
        assert!(history.contains('1') && history.contains('2'), "{history}");

        // rollout undo brings the previous image back (and reuses its ReplicaSet).
        k.ok(&["-n", "shop", "rollout", "undo", "deploy/web"]);
        k.ok(&["-n", "shop", "rollout", "status", "deploy/web", "--timeout=60s"]);
        assert_eq!(
            k.ok(&["-n", "shop", "get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image}"]),
            "nginx:1.27"
        );
        assert_eq!(
            k.ok(&["-n", "shop", "get", "rs", "-o", "name"]).lines().count(),
            2,
            "undo reuses the old ReplicaSet"
        );

        // rollout restart makes a new revision.
        k.ok(&["-n", "shop", "rollout", "restart", "deploy/web"]);
        k.ok(&["-n", "shop", "rollout", "status", "deploy/web", "--timeout=60s"]);

        // Scale down and up.
        k.ok(&["-n", "shop", "scale", "deploy/web", "--replicas=1"]);
        eventually("1 pod", || {
            k.ok(&["-n", "shop", "get", "pods", "-l", "app=web", "-o", "name"]).lines().count() == 1
        });
        k.ok(&["-n", "shop", "scale", "deploy/web", "--replicas=3"]);
        k.ok(&["-n", "shop", "rollout", "status", "deploy/web", "--timeout=60s"]);

        // Deleting with --cascade=orphan keeps the ReplicaSets and pods, without an owner.
        k.ok(&["-n", "shop", "create", "deployment", "keep", "--image=busybox:1.36", "--replicas=2"]);
        k.ok(&["-n", "shop", "rollout", "status", "deploy/keep", "--timeout=60s"]);
        k.ok(&["-n", "shop", "delete", "deploy", "keep", "--cascade=orphan"]);
        let owners =
            k.ok(&["-n", "shop", "get", "rs", "-l", "app=keep", "-o", "jsonpath={.items[*].metadata.ownerReferences}"]);
        assert!(owners.is_empty(), "orphaned ReplicaSets lose their owner: {owners}");
        assert_eq!(k.ok(&["-n", "shop", "get", "pods", "-l", "app=keep", "-o", "name"]).lines().count(), 2);
        // A default (background) delete takes ReplicaSets and pods along.
        k.ok(&["-n", "shop", "delete", "deploy", "web"]);
        eventually("web's ReplicaSets and pods gone", || {
            k.ok(&["-n", "shop", "get", "rs,pods", "-l", "app=web", "-o", "name"]).trim().is_empty()
        });

        // Deleting the namespace empties it, then removes it.
        k.ok(&["delete", "namespace", "shop", "--timeout=60s"]);
        assert!(k.fails(&["get", "namespace", "shop"]).contains("NotFound"));
    })
    .await
    .unwrap();
}
