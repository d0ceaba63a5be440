//! The syncer end to end, on the embedded host with simulated nodes and the real kubectl:
//! a tenant's Deployment runs as host pods named by the rule, isolated to the tenant's pool
//! with Kata; status, nodes, IPs, events and logs come back; hostile pods are refused with an
//! event; one tenant's Service never selects another's pods; a wrongly tainted pool shows the
//! host's reason; deletions go both ways; a SIGKILLed manager converges with no orphans and no
//! duplicates.

use std::time::{Duration, Instant};

use vt_testkit::{Kubectl, VtManager};

fn vt() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_vt"))
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(45);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    panic!("timed out waiting for {what}");
}

fn lines(s: String) -> Vec<String> {
    let mut v: Vec<String> = s.split_whitespace().map(String::from).collect();
    v.sort();
    v
}

/// Host pods of a tenant: (name, node, runtime class, pool selector, pool toleration).
fn host_pods(host: &Kubectl, tenant: &str, selector: &str) -> Vec<String> {
    lines(host.ok(&[
        "-n",
        &format!("vt-{tenant}"),
        "get",
        "pods",
        "-l",
        selector,
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]))
}

#[test]
fn pods_run_on_the_host_isolated() {
    let mut m = VtManager::start(vt(), &[]);
    m.vt_ok(&["create", "acme"]);
    m.vt_ok(&["create", "bolt"]);
    let host = m.host_kubectl();
    let acme = m.tenant_kubectl("acme");
    let bolt = m.tenant_kubectl("bolt");

    // A Deployment of 3 replicas: 3 host pods named <pod>-x-<namespace>-x-<tenant>, in the
    // tenant's pool, with Kata, Running; the tenant sees them Running with IPs and nodes.
    acme.ok(&["create", "deployment", "web", "--image=nginx:1.27", "--replicas=3", "--port=80"]);
    acme.ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    let virt = lines(acme.ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].metadata.name}"]));
    assert_eq!(virt.len(), 3);
    let expected: Vec<String> = virt.iter().map(|p| format!("{p}-x-default-x-acme")).collect();
    assert_eq!(host_pods(&host, "acme", "app=web"), expected);
    for p in &expected {
        let spec = host.ok(&[
            "-n",
            "vt-acme",
            "get",
            "pod",
            p,
            "-o",
            "jsonpath={.spec.runtimeClassName}|{.spec.nodeSelector.vt\\.dev/pool}|{.spec.tolerations[?(@.key=='vt.dev/pool')].value}|{.spec.automountServiceAccountToken}|{.spec.enableServiceLinks}|{.status.phase}|{.spec.nodeName}",
        ]);
        let f: Vec<&str> = spec.split('|').collect();
        assert_eq!(&f[..6], ["kata", "acme", "acme", "false", "false", "Running"], "{p}: {spec}");
        assert!(f[6].starts_with("sim-acme-"), "on the tenant's pool: {spec}");
        // In-cluster clients reach the tenant's API server by its TLS name (the listener
        // routes by SNI), resolved by a host alias.
        let api = host.ok(&[
            "-n",
            "vt-acme",
            "get",
            "pod",
            p,
            "-o",
            "jsonpath={.spec.containers[0].env[?(@.name=='KUBERNETES_SERVICE_HOST')].value}|{.spec.hostAliases[0].hostnames[0]}",
        ]);
        assert_eq!(api, "acme.vt.local|acme.vt.local");
    }
    let wide = acme.ok(&["get", "pods", "-l", "app=web", "-o", "wide"]);
    assert_eq!(
        wide.lines().filter(|l| l.contains("Running") && l.contains("sim-acme-") && l.contains("10.")).count(),
        3,
        "{wide}"
    );
    // The pool's nodes appear in the tenant, without host-only details.
    let nodes = lines(acme.ok(&["get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"]));
    assert!(!nodes.is_empty() && nodes.iter().all(|n| n.starts_with("sim-acme-")), "{nodes:?}");
    assert_eq!(acme.ok(&["get", "node", &nodes[0], "-o", "jsonpath={.status.images}"]), "");
    assert!(bolt.ok(&["get", "nodes", "-o", "name"]).lines().all(|n| n.contains("sim-bolt-")), "no other pool's nodes");
    // Host events come back about the virtual pod, with virtual names.
    let pod = &virt[0];
    eventually("the Scheduled event", || {
        acme.ok(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={pod},reason=Scheduled"),
            "-o",
            "jsonpath={.items[*].message}",
        ])
        .contains(&format!("Successfully assigned default/{pod} to sim-acme-"))
    });
    // Logs come from the host (the simulated kubelet's record); exec says why it cannot work.
    let logs = acme.ok(&["logs", pod]);
    assert!(logs.contains("started container nginx"), "{logs}");
    let exec = acme.fails(&["exec", pod, "--", "ls"]);
    assert!(
        exec.contains("vt simulated node") && exec.contains(pod.as_str()) && !exec.contains("-x-default-x-"),
        "{exec}"
    );

    // What pods use follows them, renamed; the ServiceAccount token is minted by the tenant.
    acme.ok(&["create", "configmap", "settings", "--from-literal=mode=fast"]);
    acme.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: reader}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    env: [{name: MODE, valueFrom: {configMapKeyRef: {name: settings, key: mode}}}]\n",
    );
    eventually("reader on the host", || {
        host.run(&["-n", "vt-acme", "get", "pod", "reader-x-default-x-acme"]).status.success()
    });
    assert_eq!(
        host.ok(&["-n", "vt-acme", "get", "cm", "settings-x-default-x-acme", "-o", "jsonpath={.data.mode}"]),
        "fast"
    );
    assert_eq!(
        host.ok(&[
            "-n",
            "vt-acme",
            "get",
            "pod",
            "reader-x-default-x-acme",
            "-o",
            "jsonpath={.spec.containers[0].env[?(@.name=='MODE')].valueFrom.configMapKeyRef.name}"
        ]),
        "settings-x-default-x-acme"
    );
    acme.ok(&["patch", "configmap", "settings", "-p", r#"{"data":{"mode":"safe"}}"#]);
    eventually("the host copy follows", || {
        host.ok(&["-n", "vt-acme", "get", "cm", "settings-x-default-x-acme", "-o", "jsonpath={.data.mode}"]) == "safe"
    });
    let token = host.ok(&[
        "-n",
        "vt-acme",
        "get",
        "secret",
        "reader-x-default-x-acme-token",
        "-o",
        "jsonpath={.data.token-0-0}",
    ]);
    use base64::Engine;
    let token = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(token.trim()).unwrap()).unwrap();
    let review =
        format!(r#"{{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{{"token":"{token}"}}}}"#);
    let answer = acme
        .ok_stdin(&["create", "-f", "-", "-o", "jsonpath={.status.authenticated}/{.status.user.username}"], &review);
    assert_eq!(answer, "true/system:serviceaccount:default:default", "the pod's token is the tenant's");

    // Pods breaking the tenant's Pod Security level are refused at admission, as kube's
    // PodSecurity plugin refuses them (403, its words); nothing is stored or synced.
    let insecure = [
        ("priv", "containers: [{name: c, image: busybox, securityContext: {privileged: true}}]", "privileged"),
        ("hostnet", "hostNetwork: true\n  containers: [{name: c, image: busybox}]", "hostNetwork=true"),
        ("hostpid", "hostPID: true\n  containers: [{name: c, image: busybox}]", "hostPID=true"),
        ("hostipc", "hostIPC: true\n  containers: [{name: c, image: busybox}]", "hostIPC=true"),
        (
            "hostpath",
            "containers: [{name: c, image: busybox}]\n  volumes: [{name: root, hostPath: {path: /}}]",
            "hostPath volumes",
        ),
        (
            "caps",
            "containers: [{name: c, image: busybox, securityContext: {capabilities: {add: [SYS_ADMIN]}}}]",
            "SYS_ADMIN",
        ),
        ("hostport", "containers: [{name: c, image: busybox, ports: [{containerPort: 80, hostPort: 80}]}]", "hostPort"),
    ];
    for (name, spec, why) in &insecure {
        let err = acme.fails_stdin(
            &["apply", "-f", "-"],
            &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  {spec}\n"),
        );
        assert!(
            err.contains(&format!("pods \"{name}\" is forbidden: violates PodSecurity \"baseline:latest\""))
                && err.contains(why),
            "{name}: {err}"
        );
        assert!(acme.fails(&["get", "pod", name]).contains("NotFound"));
    }
    // A namespace's label may tighten the level, never loosen it below the tenant's.
    acme.ok(&["create", "namespace", "strict"]);
    acme.ok(&["label", "namespace", "strict", "pod-security.kubernetes.io/enforce=restricted"]);
    let err = acme.fails(&["-n", "strict", "run", "plain", "--image=busybox"]);
    assert!(err.contains("violates PodSecurity \"restricted:latest\""), "{err}");
    acme.ok(&["create", "namespace", "loose"]);
    acme.ok(&["label", "namespace", "loose", "pod-security.kubernetes.io/enforce=privileged"]);
    let err = acme.fails_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: priv, namespace: loose}\nspec:\n  containers: [{name: c, image: busybox, securityContext: {privileged: true}}]\n",
    );
    assert!(err.contains("violates PodSecurity \"baseline:latest\""), "{err}");
    // A workload with an insecure template is admitted with kube's warning; its ReplicaSet
    // reports the refusal as FailedCreate.
    let out = acme.run_stdin(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: privdep}\nspec:\n  selector: {matchLabels: {app: privdep}}\n  template:\n    metadata: {labels: {app: privdep}}\n    spec: {containers: [{name: c, image: busybox, securityContext: {privileged: true}}]}\n",
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("would violate PodSecurity \"baseline:latest\""));
    eventually("FailedCreate", || {
        acme.ok(&["get", "events", "--field-selector", "reason=FailedCreate", "-o", "jsonpath={.items[*].message}"])
            .contains("violates PodSecurity")
    });

    // What would reach past the tenant on a shared host is refused by the syncer: a Warning
    // event and the pod's status say why, and nothing reaches the host.
    let hostile = [
        (
            "pinned",
            "nodeName: host-control-plane\n  containers: [{name: c, image: busybox}]",
            "not a node of this tenant's pool",
        ),
        (
            "runc",
            "runtimeClassName: runc\n  containers: [{name: c, image: busybox}]",
            "runtimeClassName \"runc\" is not allowed",
        ),
        // Storage the node would mount itself, and probes the node would send elsewhere.
        (
            "nfs",
            "containers: [{name: c, image: busybox}]\n  volumes: [{name: share, nfs: {server: 10.0.0.5, path: /}}]",
            "uses nfs",
        ),
        (
            "probe",
            "containers: [{name: c, image: busybox, readinessProbe: {httpGet: {host: 169.254.169.254, port: 80}}}]",
            "readinessProbe.httpGet.host",
        ),
    ];
    for (name, spec, _) in &hostile {
        acme.ok_stdin(
            &["apply", "-f", "-"],
            &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  {spec}\n"),
        );
    }
    for (name, _, why) in &hostile {
        eventually(&format!("{name} refused"), || {
            acme.ok(&[
                "get",
                "events",
                "--field-selector",
                &format!("involvedObject.name={name},type=Warning"),
                "-o",
                "jsonpath={.items[*].message}",
            ])
            .contains(why)
        });
        let cond =
            acme.ok(&["get", "pod", name, "-o", "jsonpath={.status.conditions[?(@.type=='PodScheduled')].message}"]);
        assert!(cond.contains(why), "{name}: {cond}");
        assert!(
            !host.run(&["-n", "vt-acme", "get", "pod", &format!("{name}-x-default-x-acme")]).status.success(),
            "{name} reached the host"
        );
    }
    assert!(acme.ok(&["get", "pod", "runc"]).contains("RuntimeClass"), "kubectl shows why");

    // One tenant's Service never selects another tenant's pods (same labels in both).
    bolt.ok(&["create", "deployment", "web", "--image=nginx:1.27", "--replicas=2"]);
    bolt.ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    acme.ok(&["expose", "deploy", "web", "--port=80"]);
    let acme_ips = lines(acme.ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].status.podIP}"]));
    let bolt_ips = lines(bolt.ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].status.podIP}"]));
    eventually("the host Service's endpoints", || {
        lines(host.ok(&[
            "-n",
            "vt-acme",
            "get",
            "endpoints",
            "web-x-default-x-acme",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}",
        ])) == acme_ips
    });
    assert!(bolt_ips.iter().all(|ip| !acme_ips.contains(ip)));
    // The virtual Service has the host's cluster IP.
    assert_eq!(
        acme.ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]),
        host.ok(&["-n", "vt-acme", "get", "svc", "web-x-default-x-acme", "-o", "jsonpath={.spec.clusterIP}"])
    );

    // A selector-less Service's Endpoints reach the host only for addresses outside the host:
    // not a node's own address, not another pool's pod range (here: bolt's pod).
    let node_ip = host.ok(&[
        "get",
        "nodes",
        "-l",
        "vt.dev/pool=bolt",
        "-o",
        "jsonpath={.items[0].status.addresses[?(@.type=='InternalIP')].address}",
    ]);
    acme.ok_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: ext}}\nspec: {{ports: [{{port: 80}}]}}\n---\n\
             apiVersion: v1\nkind: Endpoints\nmetadata: {{name: ext}}\nsubsets: [{{addresses: [{{ip: {}}}, {{ip: {node_ip}}}, \
             {{ip: \"::ffff:{}\"}}, {{ip: \"::ffff:{node_ip}\"}}, {{ip: \"::ffff:169.254.169.254\"}}, \
             {{ip: \"::ffff:127.0.0.1\"}}, {{ip: 192.0.2.10}}], ports: [{{port: 80}}]}}]\n",
            bolt_ips[0], bolt_ips[0]
        ),
    );
    eventually("the selector-less Service's host endpoints", || {
        host.run(&["-n", "vt-acme", "get", "endpoints", "ext-x-default-x-acme"]).status.success()
    });
    assert_eq!(
        host.ok(&[
            "-n",
            "vt-acme",
            "get",
            "endpoints",
            "ext-x-default-x-acme",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}"
        ]),
        "192.0.2.10"
    );
    eventually("the refusal reported", || {
        let msg = acme.ok(&[
            "get",
            "events",
            "--field-selector",
            "reason=EndpointsRefused",
            "-o",
            "jsonpath={.items[*].message}",
        ]);
        msg.contains(&bolt_ips[0]) && msg.contains(&node_ip)
    });

    // A host pod deleted out of band: the tenant sees it evicted, its ReplicaSet replaces it.
    let victim = expected[0].clone();
    host.ok(&["-n", "vt-acme", "delete", "pod", &victim, "--grace-period=0", "--force"]);
    eventually("evicted in the tenant", || {
        acme.ok(&["get", "pod", &virt[0], "-o", "jsonpath={.status.phase}/{.status.reason}"]) == "Failed/Evicted"
    });
    acme.ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    eventually("3 running host pods again", || {
        host.ok(&[
            "-n",
            "vt-acme",
            "get",
            "pods",
            "-l",
            "app=web",
            "--field-selector=status.phase=Running",
            "-o",
            "name",
        ])
        .lines()
        .count()
            == 3
    });

    // A wrongly tainted pool: new pods stay Pending, with the host scheduler's reason.
    for n in lines(host.ok(&["get", "nodes", "-l", "vt.dev/pool=acme", "-o", "jsonpath={.items[*].metadata.name}"])) {
        host.ok(&["taint", "node", &n, "maintenance=true:NoSchedule"]);
    }
    acme.ok(&["run", "late", "--image=busybox", "--restart=Never"]);
    eventually("the host's reason in the tenant", || {
        acme.ok(&["get", "pod", "late", "-o", "jsonpath={.status.conditions[?(@.type=='PodScheduled')].message}"])
            .contains("untolerated taint")
    });
    assert_eq!(acme.ok(&["get", "pod", "late", "-o", "jsonpath={.status.phase}"]), "Pending");
    eventually("the FailedScheduling event", || {
        acme.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=late,reason=FailedScheduling",
            "-o",
            "name",
        ])
        .lines()
        .count()
            > 0
    });
    for n in lines(host.ok(&["get", "nodes", "-l", "vt.dev/pool=acme", "-o", "jsonpath={.items[*].metadata.name}"])) {
        host.ok(&["taint", "node", &n, "maintenance-"]);
    }
    eventually("late runs once the taint goes", || {
        acme.ok(&["get", "pod", "late", "-o", "jsonpath={.status.phase}"]) == "Succeeded"
            || acme.ok(&["get", "pod", "late", "-o", "jsonpath={.status.phase}"]) == "Running"
    });

    // A graceful delete in the tenant removes the host pod, then the virtual pod.
    acme.ok(&["delete", "pod", "reader", "--timeout=60s"]);
    assert!(!host.run(&["-n", "vt-acme", "get", "pod", "reader-x-default-x-acme"]).status.success());
    eventually("the unused ConfigMap copy goes", || {
        !host.run(&["-n", "vt-acme", "get", "cm", "settings-x-default-x-acme"]).status.success()
    });

    // A host pod that stands for no virtual pod (an orphan) is removed.
    host.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: ghost-x-default-x-acme\n  namespace: vt-acme\n  labels: {vt.dev/tenant: acme}\n  annotations: {vt.dev/name: ghost, vt.dev/namespace: default, vt.dev/uid: gone}\nspec:\n  runtimeClassName: kata\n  nodeSelector: {vt.dev/pool: acme}\n  tolerations: [{key: vt.dev/pool, value: acme, effect: NoSchedule}]\n  containers: [{name: c, image: busybox}]\n",
    );
    eventually("the orphan is gone", || {
        !host.run(&["-n", "vt-acme", "get", "pod", "ghost-x-default-x-acme"]).status.success()
    });

    // SIGKILL the manager in the middle of a scale-up: after the restart the syncer converges,
    // every virtual pod with exactly one host pod and no host pod without a virtual one.
    acme.ok(&["scale", "deploy/web", "--replicas=5"]);
    m.kill();
    m.restart();
    acme.ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    eventually("host pods match virtual pods one to one", || {
        let virt: Vec<String> = lines(acme.ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "--field-selector=status.phase=Running",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ]))
        .into_iter()
        .map(|p| format!("{p}-x-default-x-acme"))
        .collect();
        virt.len() == 5 && host_pods(&host, "acme", "app=web") == virt
    });
    // Pausing removes the host pods; resuming runs the same pods again (as after a node
    // reboot), none of them counted lost.
    m.vt_ok(&["pause", "acme"]);
    eventually("no host pods while paused", || host_pods(&host, "acme", "app=web").is_empty());
    m.vt_ok(&["resume", "acme"]);
    let acme = m.tenant_kubectl("acme");
    eventually("the same pods running again", || {
        let running = lines(acme.ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "--field-selector=status.phase=Running",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ]));
        running.len() == 5 && host_pods(&host, "acme", "app=web").len() == 5
    });
    // Deleting the Deployment empties the host namespace of its pods.
    acme.ok(&["delete", "deploy", "web"]);
    eventually("no host pods of web", || host_pods(&host, "acme", "app=web").is_empty());
    // A node moved to another pool leaves this tenant and joins that pool's tenant (node changes
    // reach the tenants of the pool a node is in and of the pool it was in, no others). Last:
    // the tenant's pods on a node that leaves it go, as on a deleted node.
    let moved = nodes[0].as_str();
    host.ok(&["label", "node", moved, "vt.dev/pool=bolt", "--overwrite"]);
    eventually("the moved node gone from acme", || !acme.run(&["get", "node", moved]).status.success());
    eventually("the moved node in bolt", || bolt.run(&["get", "node", moved]).status.success());
    host.ok(&["label", "node", moved, "vt.dev/pool=acme", "--overwrite"]);
    eventually("the node back in acme", || acme.run(&["get", "node", moved]).status.success());
    eventually("the node gone from bolt", || !bolt.run(&["get", "node", moved]).status.success());
}

/// `kubectl debug` in a tenant: the ephemeral container is added through
/// `pods/ephemeralcontainers`, reaches the host pod (translated, through the host's own
/// subresource) and runs there; the tenant sees its status. As kube-apiserver answers: an
/// existing ephemeral container can be neither removed nor changed, an ephemeral container may
/// not set ports, and one breaking the tenant's Pod Security level is refused at admission.
#[test]
fn debug_containers_reach_the_host_pod() {
    let m = VtManager::start(vt(), &[]);
    m.vt_ok(&["create", "dbg"]);
    let host = m.host_kubectl();
    let t = m.tenant_kubectl("dbg");
    t.ok(&["run", "web", "--image=nginx:1.27"]);
    eventually("web running", || t.ok(&["get", "pod", "web", "-o", "jsonpath={.status.phase}"]) == "Running");
    t.ok(&["debug", "web", "--image=busybox:1.36", "--container=dbg", "--", "sleep", "3600"]);
    let on_host = |path: &str| {
        host.ok(&["-n", "vt-dbg", "get", "pod", "web-x-default-x-dbg", "-o", &format!("jsonpath={{{path}}}")])
    };
    eventually("the debug container on the host pod", || {
        on_host(".spec.ephemeralContainers[*].image") == "busybox:1.36"
    });
    eventually("its status in the tenant", || {
        !t.ok(&[
            "get",
            "pod",
            "web",
            "-o",
            "jsonpath={.status.ephemeralContainerStatuses[?(@.name=='dbg')].state.running.startedAt}",
        ])
        .is_empty()
    });
    let sub = ["patch", "pod", "web", "--subresource=ephemeralcontainers"];
    let removed =
        [&sub[..], &["--type=json", "-p", r#"[{"op":"remove","path":"/spec/ephemeralContainers/0"}]"#]].concat();
    let err = t.fails(&removed);
    assert!(err.contains(r#"existing ephemeral containers "dbg" may not be removed"#), "{err}");
    let ports = r#"{"spec":{"ephemeralContainers":[{"name":"p","image":"busybox","ports":[{"containerPort":80}]}]}}"#;
    let err = t.fails(&[&sub[..], &["--type=strategic", "-p", ports]].concat());
    assert!(
        err.contains("spec.ephemeralContainers[1].ports: Forbidden: cannot be set for an Ephemeral Container"),
        "{err}"
    );
    let err =
        t.fails(&["debug", "web", "--image=busybox:1.36", "--container=root", "--profile=sysadmin", "--", "true"]);
    assert!(err.contains("violates PodSecurity"), "{err}");
    // Through the pod itself they cannot be changed at all (kept, as kube keeps them).
    t.ok(&["patch", "pod", "web", "--type=json", "-p", r#"[{"op":"remove","path":"/spec/ephemeralContainers"}]"#]);
    assert_eq!(t.ok(&["get", "pod", "web", "-o", "jsonpath={.spec.ephemeralContainers[*].name}"]), "dbg");
    assert_eq!(on_host(".spec.ephemeralContainers[*].name"), "dbg");
}
