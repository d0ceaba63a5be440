//! The controllers inside a tenant, with the real kubectl: Deployments roll out, scale, roll
//! (never below availability) and roll back; deletes cascade or orphan; namespaces empty
//! themselves; Services list their ready pods; every namespace gets its ServiceAccount and root
//! CA. Pods run through the syncer on the embedded host's simulated nodes of the tenant's
//! pool, as they would on a real host.

use std::time::{Duration, Instant};

use vt_testkit::{Kubectl, VtManager};

fn vt() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_vt"))
}

/// A tenant of a `vt server` whose embedded host gives its pool two simulated nodes; a
/// kubectl for the tenant and one for the host.
fn tenant(name: &str) -> (VtManager, Kubectl, Kubectl) {
    let m = VtManager::start(vt(), &["--nodes-per-pool", "2"]);
    m.vt_ok(&["create", name]);
    let k = m.tenant_kubectl(name);
    let host = m.host_kubectl();
    (m, k, host)
}

fn lines(s: String) -> Vec<String> {
    let mut v: Vec<String> = s.split_whitespace().map(String::from).collect();
    v.sort();
    v
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

#[test]
fn deployments_services_and_namespaces() {
    let (_m, k, _host) = tenant("apps");
    {
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
    }
}

/// The `(name, creation revision)` of pods matching `selector`.
fn pod_names(k: &Kubectl, ns: &str, selector: &str) -> Vec<String> {
    let out = k.ok(&["-n", ns, "get", "pods", "-l", selector, "-o", "jsonpath={.items[*].metadata.name}"]);
    let mut names: Vec<String> = out.split_whitespace().map(String::from).collect();
    names.sort();
    names
}

#[test]
fn statefulsets_daemonsets_jobs_cronjobs_and_budgets() {
    let (_m, k, host) = tenant("batch");
    {
        k.ok(&["create", "namespace", "work"]);

        // StatefulSet, OrderedReady: web-1 is not created while web-0 cannot run (no host node
        // fits it yet); once a node fits, pods come up in ordinal order with their claims.
        k.ok_stdin(
            &["apply", "-f", "-"],
            r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web, namespace: work}
spec:
  serviceName: web
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      nodeSelector: {disk: ssd}
      containers: [{name: nginx, image: "nginx:1.27"}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"#,
        );
        eventually("web-0", || pod_names(&k, "work", "app=web") == ["web-0"]);
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(pod_names(&k, "work", "app=web"), ["web-0"], "OrderedReady waits for web-0 before web-1");
        assert_eq!(
            k.ok(&["-n", "work", "get", "pod", "web-0", "-o", "jsonpath={.spec.hostname}/{.spec.subdomain}/{.spec.volumes[?(@.name=='data')].persistentVolumeClaim.claimName}"]),
            "web-0/web/data-web-0"
        );
        host.ok(&["label", "node", "sim-batch-0", "disk=ssd"]);
        let out = k.ok(&["-n", "work", "rollout", "status", "sts/web", "--timeout=60s"]);
        assert!(out.contains("roll out complete") || out.contains("rolling update complete"), "{out}");
        assert_eq!(pod_names(&k, "work", "app=web"), ["web-0", "web-1", "web-2"]);
        let created: Vec<String> = ["web-0", "web-1", "web-2"]
            .iter()
            .map(|p| k.ok(&["-n", "work", "get", "pod", p, "-o", "jsonpath={.metadata.creationTimestamp}"]))
            .collect();
        let ready0 = k.ok(&[
            "-n",
            "work",
            "get",
            "pod",
            "web-0",
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].lastTransitionTime}",
        ]);
        assert!(
            created[1] >= ready0 && created[2] >= created[1],
            "created in order: {created:?}, web-0 ready {ready0}"
        );
        let claims = k.ok(&["-n", "work", "get", "pvc", "-o", "jsonpath={.items[*].metadata.name}"]);
        assert_eq!(claims, "data-web-0 data-web-1 data-web-2");
        // The host binds them (simulated storage there); the binding shows in the tenant.
        eventually("claims bound", || {
            k.ok(&["-n", "work", "get", "pvc", "-o", "jsonpath={.items[*].status.phase}"]) == "Bound Bound Bound"
        });

        // RollingUpdate with a partition: only ordinals at or above it move to the new template.
        k.ok(&[
            "-n",
            "work",
            "patch",
            "sts",
            "web",
            "-p",
            r#"{"spec":{"updateStrategy":{"type":"RollingUpdate","rollingUpdate":{"partition":2}}}}"#,
        ]);
        k.ok(&["-n", "work", "set", "image", "sts/web", "nginx=nginx:1.28"]);
        let image = |p: &str| k.ok(&["-n", "work", "get", "pod", p, "-o", "jsonpath={.spec.containers[0].image}"]);
        eventually("web-2 updated", || {
            k.run(&["-n", "work", "get", "pod", "web-2"]).status.success() && image("web-2") == "nginx:1.28"
        });
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!((image("web-0"), image("web-1")), ("nginx:1.27".to_string(), "nginx:1.27".to_string()));
        let history = k.ok(&["-n", "work", "rollout", "history", "sts/web"]);
        assert!(history.contains('1') && history.contains('2'), "{history}");
        // kubectl's columns for the revisions (kube's printer: the controller as kind.group/name).
        let revisions = k.ok(&["-n", "work", "get", "controllerrevisions"]);
        let rows: Vec<Vec<&str>> = revisions.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(rows[0], ["NAME", "CONTROLLER", "REVISION", "AGE"], "{revisions}");
        assert!(rows[1..].iter().all(|r| r[1] == "statefulset.apps/web"), "{revisions}");
        let mut numbers: Vec<&str> = rows[1..].iter().map(|r| r[2]).collect();
        numbers.sort();
        assert_eq!(numbers, ["1", "2"], "{revisions}");
        // Scaling down removes the highest ordinals; the claims stay (the default retention).
        k.ok(&["-n", "work", "scale", "sts/web", "--replicas=1"]);
        eventually("web-0 alone", || pod_names(&k, "work", "app=web") == ["web-0"]);
        assert_eq!(k.ok(&["-n", "work", "get", "pvc", "-o", "name"]).lines().count(), 3);

        // DaemonSet: one pod on each of the tenant's nodes the template fits; a node tainted
        // on the host gets none.
        host.ok(&["taint", "node", "sim-batch-1", "dedicated=gpu:NoSchedule"]);
        eventually("the taint in the tenant", || {
            k.ok(&["get", "node", "sim-batch-1", "-o", "jsonpath={.spec.taints[*].key}"]).contains("dedicated")
        });
        k.ok_stdin(
            &["apply", "-f", "-"],
            r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: work}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: agent, image: "busybox:1.36"}]}
"#,
        );
        k.ok(&["-n", "work", "rollout", "status", "ds/agent", "--timeout=60s"]);
        eventually("one daemon on sim-batch-0", || {
            k.ok(&["-n", "work", "get", "pods", "-l", "app=agent", "-o", "jsonpath={.items[*].spec.nodeName}"])
                == "sim-batch-0"
        });
        // Tolerating the taint brings a pod to sim-batch-1 as well.
        k.ok(&[
            "-n",
            "work",
            "patch",
            "ds",
            "agent",
            "-p",
            r#"{"spec":{"template":{"spec":{"tolerations":[{"key":"dedicated","operator":"Exists"}]}}}}"#,
        ]);
        k.ok(&["-n", "work", "rollout", "status", "ds/agent", "--timeout=60s"]);
        eventually("daemons on both nodes", || {
            let nodes =
                k.ok(&["-n", "work", "get", "pods", "-l", "app=agent", "-o", "jsonpath={.items[*].spec.nodeName}"]);
            let mut nodes: Vec<&str> = nodes.split_whitespace().collect();
            nodes.sort();
            nodes == ["sim-batch-0", "sim-batch-1"]
        });
        host.ok(&["taint", "node", "sim-batch-1", "dedicated-"]);

        // A Job with completions and parallelism completes; its pods carry the Job's labels.
        k.ok_stdin(
            &["apply", "-f", "-"],
            r#"
apiVersion: batch/v1
kind: Job
metadata: {name: crunch, namespace: work}
spec:
  completions: 3
  parallelism: 2
  template:
    metadata: {annotations: {vt.dev/sim-runtime: "0.3"}}
    spec:
      restartPolicy: Never
      containers: [{name: c, image: "busybox:1.36"}]
"#,
        );
        k.ok(&["-n", "work", "wait", "--for=condition=complete", "job/crunch", "--timeout=60s"]);
        assert_eq!(k.ok(&["-n", "work", "get", "job", "crunch", "-o", "jsonpath={.status.succeeded}"]), "3");
        let uid = k.ok(&["-n", "work", "get", "job", "crunch", "-o", "jsonpath={.metadata.uid}"]);
        let labels =
            k.ok(&["-n", "work", "get", "pods", "-l", "job-name=crunch", "-o", "jsonpath={.items[0].metadata.labels}"]);
        for want in [
            format!("\"batch.kubernetes.io/controller-uid\":\"{uid}\""),
            "\"batch.kubernetes.io/job-name\":\"crunch\"".to_string(),
            format!("\"controller-uid\":\"{uid}\""),
            "\"job-name\":\"crunch\"".to_string(),
        ] {
            assert!(labels.contains(&want), "{want} in {labels}");
        }
        assert_eq!(pod_names(&k, "work", "job-name=crunch").len(), 3);
        // An Indexed Job reports its completed indexes.
        k.ok_stdin(
            &["apply", "-f", "-"],
            r#"
apiVersion: batch/v1
kind: Job
metadata: {name: shards, namespace: work}
spec:
  completions: 3
  parallelism: 3
  completionMode: Indexed
  template:
    metadata: {annotations: {vt.dev/sim-runtime: "0.2"}}
    spec:
      restartPolicy: Never
      containers: [{name: c, image: "busybox:1.36"}]
"#,
        );
        k.ok(&["-n", "work", "wait", "--for=condition=complete", "job/shards", "--timeout=60s"]);
        assert_eq!(k.ok(&["-n", "work", "get", "job", "shards", "-o", "jsonpath={.status.completedIndexes}"]), "0-2");
        let indexes = k.ok(&[
            "-n",
            "work",
            "get",
            "pods",
            "-l",
            "job-name=shards",
            "-o",
            "jsonpath={.items[*].metadata.annotations.batch\\.kubernetes\\.io/job-completion-index}",
        ]);
        let mut indexes: Vec<&str> = indexes.split_whitespace().collect();
        indexes.sort();
        assert_eq!(indexes, ["0", "1", "2"]);
        // A Job whose pod fails with backoffLimit 0 fails at once.
        k.ok_stdin(
            &["apply", "-f", "-"],
            r#"
apiVersion: batch/v1
kind: Job
metadata: {name: doomed, namespace: work}
spec:
  backoffLimit: 0
  template:
    metadata: {annotations: {vt.dev/sim-runtime: "0.2", vt.dev/sim-exit-code: "1"}}
    spec:
      restartPolicy: Never
      containers: [{name: c, image: "busybox:1.36"}]
"#,
        );
        k.ok(&["-n", "work", "wait", "--for=condition=failed", "job/doomed", "--timeout=60s"]);
        assert_eq!(
            k.ok(&[
                "-n",
                "work",
                "get",
                "job",
                "doomed",
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Failed')].reason}"
            ]),
            "BackoffLimitExceeded"
        );

        // A CronJob whose last schedule was an hour ago runs its missed schedule once, at once
        // (kube's behaviour when its controller comes back), named after the scheduled minute.
        k.ok_stdin(
            &["apply", "-f", "-"],
            r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly, namespace: work}
spec:
  schedule: "*/10 * * * *"
  timeZone: Europe/Berlin
  jobTemplate:
    spec:
      template:
        metadata: {annotations: {vt.dev/sim-runtime: "0.2"}}
        spec:
          restartPolicy: Never
          containers: [{name: c, image: "busybox:1.36"}]
"#,
        );
        let bad = k.run_stdin(
            &["apply", "-f", "-"],
            "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: bad, namespace: work}\nspec:\n  schedule: '@daily'\n  timeZone: Mars/Olympus\n  jobTemplate: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}}}}\n",
        );
        let err = String::from_utf8_lossy(&bad.stderr);
        assert!(
            err.contains("spec.timeZone: Invalid value: \"Mars/Olympus\": unknown time zone Mars/Olympus"),
            "{err}"
        );
        let hour_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(3600);
        let patch = format!(r#"{{"status":{{"lastScheduleTime":"{}"}}}}"#, hour_ago.strftime("%Y-%m-%dT%H:%M:%SZ"));
        k.ok(&["-n", "work", "patch", "cronjob", "nightly", "--subresource=status", "--type=merge", "-p", &patch]);
        eventually("a Job from the CronJob", || {
            !k.ok(&[
                "-n",
                "work",
                "get",
                "jobs",
                "-o",
                "jsonpath={.items[?(@.metadata.ownerReferences[0].name=='nightly')].metadata.name}",
            ])
            .is_empty()
        });
        let job = k.ok(&[
            "-n",
            "work",
            "get",
            "jobs",
            "-o",
            "jsonpath={.items[?(@.metadata.ownerReferences[0].name=='nightly')].metadata.name}",
        ]);
        let minutes: i64 =
            job.strip_prefix("nightly-").expect("named after its CronJob").parse().expect("scheduled minute");
        assert_eq!(minutes % 10, 0, "*/10 schedules on the tenth minute: {job}");
        let scheduled = jiff::Timestamp::from_second(minutes * 60).unwrap();
        assert!(scheduled > hour_ago && scheduled <= jiff::Timestamp::now(), "{scheduled}");
        k.ok(&["-n", "work", "wait", "--for=condition=complete", &format!("job/{job}"), "--timeout=60s"]);
        eventually("lastSuccessfulTime", || {
            !k.ok(&["-n", "work", "get", "cronjob", "nightly", "-o", "jsonpath={.status.lastSuccessfulTime}"])
                .is_empty()
        });

        // PodDisruptionBudgets: healthy pods against what must stay up.
        k.ok(&["-n", "work", "create", "deployment", "api", "--image=nginx:1.27", "--replicas=4"]);
        k.ok(&["-n", "work", "rollout", "status", "deploy/api", "--timeout=60s"]);
        k.ok(&["-n", "work", "create", "pdb", "api-min", "--selector=app=api", "--min-available=3"]);
        k.ok(&["-n", "work", "create", "pdb", "api-max", "--selector=app=api", "--max-unavailable=25%"]);
        let status = |pdb: &str| {
            k.ok(&[
                "-n",
                "work",
                "get",
                "pdb",
                pdb,
                "-o",
                "jsonpath={.status.expectedPods}/{.status.currentHealthy}/{.status.desiredHealthy}/{.status.disruptionsAllowed}",
            ])
        };
        eventually("api-min status", || status("api-min") == "4/4/3/1");
        eventually("api-max status", || status("api-max") == "4/4/3/1");
        assert_eq!(
            k.ok(&[
                "-n",
                "work",
                "get",
                "pdb",
                "api-min",
                "-o",
                "jsonpath={.status.conditions[?(@.type=='DisruptionAllowed')].reason}"
            ]),
            "SufficientPods"
        );
        // Evictions (what `kubectl drain` posts) honour the budgets: two budgets over one pod
        // are an error, a budget with room lets one pod go, an exhausted one answers 429.
        let evict = |pod: &str| {
            let body = format!(
                r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{pod}","namespace":"work"}}}}"#
            );
            k.run_stdin(&["create", "--raw", &format!("/api/v1/namespaces/work/pods/{pod}/eviction"), "-f", "-"], &body)
        };
        let api_pods = || {
            lines(k.ok(&[
                "-n",
                "work",
                "get",
                "pods",
                "-l",
                "app=api",
                "--field-selector=status.phase=Running",
                "-o",
                "jsonpath={.items[*].metadata.name}",
            ]))
        };
        let first = api_pods()[0].clone();
        let two = evict(&first);
        assert!(String::from_utf8_lossy(&two.stderr).contains("more than one PodDisruptionBudget"), "{two:?}");
        k.ok(&["-n", "work", "delete", "pdb", "api-max"]);
        let ok = evict(&first);
        assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
        eventually("the evicted pod goes", || !api_pods().contains(&first));
        k.ok(&["-n", "work", "scale", "deploy/api", "--replicas=3"]);
        eventually("api-min exhausted", || status("api-min") == "3/3/3/0");
        let refused = evict(&api_pods()[0]);
        let err = String::from_utf8_lossy(&refused.stderr);
        assert!(err.contains("Cannot evict pod as it would violate the pod's disruption budget"), "{err}");
        assert_eq!(
            k.ok(&[
                "-n",
                "work",
                "get",
                "pdb",
                "api-min",
                "-o",
                "jsonpath={.status.conditions[?(@.type=='DisruptionAllowed')].reason}"
            ]),
            "InsufficientPods"
        );

        // A host node that goes away: its pods go (host pod GC, then the tenant's node and pod
        // GC), and their ReplicaSet replaces them on the other node.
        let on_node1 = || {
            k.ok(&[
                "-n",
                "work",
                "get",
                "pods",
                "-l",
                "app=api",
                "--field-selector=spec.nodeName=sim-batch-1,status.phase=Running",
                "-o",
                "name",
            ])
            .lines()
            .count()
        };
        assert!(on_node1() > 0, "the scheduler spread api's pods over both nodes");
        host.ok(&["delete", "node", "sim-batch-1"]);
        eventually("the node gone from the tenant", || !k.run(&["get", "node", "sim-batch-1"]).status.success());
        eventually("no pods left on sim-batch-1", || on_node1() == 0);
        k.ok(&["-n", "work", "rollout", "status", "deploy/api", "--timeout=60s"]);

        // Namespace deletion reports what holds it, then completes once the finalizer goes.
        k.ok_stdin(
            &["apply", "-f", "-"],
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: held, namespace: work, finalizers: [example.com/hold]}\n",
        );
        k.ok(&["delete", "namespace", "work", "--wait=false"]);
        let condition = |ty: &str| {
            k.ok(&["get", "ns", "work", "-o", &format!("jsonpath={{.status.conditions[?(@.type=='{ty}')].message}}")])
        };
        eventually("finalizers reported", || {
            condition("NamespaceFinalizersRemaining")
                == "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
        });
        assert!(condition("NamespaceContentRemaining").contains("configmaps has 1 resource instances"));
        assert_eq!(condition("NamespaceDeletionDiscoveryFailure"), "All resources successfully discovered");
        k.ok(&["-n", "work", "patch", "cm", "held", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
        eventually("namespace gone", || k.run(&["get", "ns", "work"]).status.code() == Some(1));
    }
}
