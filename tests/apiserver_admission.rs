//! Admission in a virtual cluster, with the real kubectl: a tenant's mutating and validating
//! webhooks served by a real HTTPS server in this test (caBundle, namespaceSelector,
//! warnings, dry run, failurePolicy Fail and Ignore), then LimitRange defaults and bounds and
//! ResourceQuota limits with their `status.used`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use vt_testkit::{Kubectl, VtServer};

fn vt() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_vt"))
}

/// Answers an AdmissionReview: `/mutate` labels objects `mutated=yes`; `/validate` denies
/// ConfigMaps with a `forbidden` key and warns otherwise.
fn review(path: &str, body: &[u8]) -> Value {
    let rev: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let req = &rev["request"];
    let uid = req["uid"].clone();
    let obj = &req["object"];
    let response = match path {
        "/mutate" => {
            let patch = if obj.pointer("/metadata/labels").is_some_and(Value::is_object) {
                json!([{"op": "add", "path": "/metadata/labels/mutated", "value": "yes"}])
            } else {
                json!([{"op": "add", "path": "/metadata/labels", "value": {"mutated": "yes"}}])
            };
            let patch = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
            json!({"uid": uid, "allowed": true, "patchType": "JSONPatch", "patch": patch})
        }
        _ => {
            if obj.pointer("/data/forbidden").is_some() {
                json!({"uid": uid, "allowed": false, "status": {"code": 403, "message": "no forbidden keys"}})
            } else {
                json!({"uid": uid, "allowed": true, "warnings": ["validated by the test webhook"]})
            }
        }
    };
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

/// Set once `/fast` was called: `/slow` answers only after that (or after 3 s, past its
/// webhook's 2 s timeout), so both allow a request only when they are called in parallel.
static FAST_CALLED: AtomicBool = AtomicBool::new(false);

/// Starts the webhook server; returns its port, its CA (PEM) and its call counter.
async fn webhook_server() -> (u16, String, Arc<AtomicUsize>) {
    let server = vt_testkit::https::https(
        "127.0.0.1",
        &["localhost", "hook.webhooks.svc"],
        &["127.0.0.1".parse().unwrap()],
        None,
    )
    .await;
    let (listener, acceptor, port) = (server.listener, server.acceptor, server.port);
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let counter = counter.clone();
                    async move {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        match path.as_str() {
                            "/fast" => FAST_CALLED.store(true, Ordering::SeqCst),
                            "/slow" => {
                                for _ in 0..300 {
                                    if FAST_CALLED.load(Ordering::SeqCst) {
                                        break;
                                    }
                                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                                }
                            }
                            _ => {}
                        }
                        let answer = review(&path, &body);
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(answer.to_string())))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    (port, server.ca_pem, calls)
}

fn webhook_configs(port: u16, ca_pem: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {{name: label}}
webhooks:
- name: label.vt.test
  admissionReviewVersions: [v1]
  sideEffects: None
  clientConfig: {{url: "https://127.0.0.1:{port}/mutate", caBundle: "{ca}"}}
  namespaceSelector: {{matchLabels: {{webhooks: "on"}}}}
  rules: [{{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [configmaps]}}]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {{name: deny}}
webhooks:
- name: deny.vt.test
  admissionReviewVersions: [v1]
  sideEffects: None
  clientConfig: {{url: "https://127.0.0.1:{port}/validate", caBundle: "{ca}"}}
  namespaceSelector: {{matchLabels: {{webhooks: "on"}}}}
  rules: [{{operations: [CREATE, UPDATE], apiGroups: [""], apiVersions: [v1], resources: [configmaps]}}]
"#
    )
}

fn broken_webhook(policy: &str, ca_pem: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {{name: broken}}
webhooks:
- name: broken.vt.test
  admissionReviewVersions: [v1]
  sideEffects: None
  timeoutSeconds: 2
  failurePolicy: {policy}
  clientConfig: {{url: "https://127.0.0.1:1/nothing", caBundle: "{ca}"}}
  rules: [{{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [secrets]}}]
"#
    )
}

/// Retries `args` until it succeeds (configurations apply within moments).
fn eventually_ok(k: &Kubectl, args: &[&str]) -> String {
    for _ in 0..50 {
        let out = k.run(args);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    k.ok(args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_called_with_admission_review() {
    let (port, ca, calls) = webhook_server().await;
    let server = VtServer::start(vt(), &[]);
    let k = server.kubectl();
    tokio::task::spawn_blocking(move || {
        k.ok_stdin(
            &["create", "-f", "-"],
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: hooked, labels: {webhooks: \"on\"}}\n",
        );
        k.ok(&["create", "namespace", "plain"]);
        k.ok_stdin(&["apply", "-f", "-"], &webhook_configs(port, &ca));

        // Mutated on create, with the validating webhook's warning.
        let out = k.run(&["-n", "hooked", "create", "configmap", "a", "--from-literal=x=1"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains("Warning: validated by the test webhook"));
        assert_eq!(k.ok(&["-n", "hooked", "get", "cm", "a", "-o", "jsonpath={.metadata.labels.mutated}"]), "yes");
        // Denied, with the webhook's message; nothing stored.
        let err = k.fails(&["-n", "hooked", "create", "configmap", "b", "--from-literal=forbidden=1"]);
        assert!(err.contains(r#"admission webhook "deny.vt.test" denied the request: no forbidden keys"#), "{err}");
        assert!(k.fails(&["-n", "hooked", "get", "cm", "b"]).contains("NotFound"));
        // Updates go through the validating webhook too.
        let err = k.fails(&["-n", "hooked", "patch", "cm", "a", "--type=merge", "-p", r#"{"data":{"forbidden":"1"}}"#]);
        assert!(err.contains("no forbidden keys"), "{err}");
        // Server-side dry run calls side-effect-free webhooks and stores nothing.
        assert!(
            k.ok(&["-n", "hooked", "create", "configmap", "d", "--dry-run=server", "-o", "yaml"])
                .contains("mutated: \"yes\"")
        );
        assert!(k.fails(&["-n", "hooked", "get", "cm", "d"]).contains("NotFound"));
        // Outside the selected namespaces, webhooks are not called.
        let before = calls.load(Ordering::SeqCst);
        k.ok(&["-n", "plain", "create", "configmap", "c", "--from-literal=forbidden=1"]);
        assert_eq!(calls.load(Ordering::SeqCst), before);
        assert_eq!(k.ok(&["-n", "plain", "get", "cm", "c", "-o", "jsonpath={.metadata.labels}"]), "");

        // An unreachable webhook: Fail refuses the request, Ignore lets it through.
        k.ok_stdin(&["apply", "-f", "-"], &broken_webhook("Fail", &ca));
        let err = k.fails(&["-n", "plain", "create", "secret", "generic", "s1", "--from-literal=a=b"]);
        assert!(err.contains(r#"failed calling webhook "broken.vt.test""#), "{err}");
        k.ok_stdin(&["apply", "-f", "-"], &broken_webhook("Ignore", &ca));
        eventually_ok(&k, &["-n", "plain", "create", "secret", "generic", "s2", "--from-literal=a=b"]);
        // Webhook configurations are never admitted by webhooks: the broken one can go.
        k.ok(&["delete", "validatingwebhookconfiguration", "broken"]);

        // Validating webhooks are called in parallel, as kube-apiserver calls them: the first
        // ("/slow") allows only once the second ("/fast") was called, within its 2 s timeout.
        let ca64 = base64::engine::general_purpose::STANDARD.encode(&ca);
        let hook = |name: &str, path: &str| {
            format!(
                "- name: {name}.vt.test\n  admissionReviewVersions: [v1]\n  sideEffects: None\n  timeoutSeconds: 2\n  failurePolicy: Fail\n  clientConfig: {{url: \"https://127.0.0.1:{port}{path}\", caBundle: \"{ca64}\"}}\n  rules: [{{operations: [CREATE], apiGroups: [\"\"], apiVersions: [v1], resources: [serviceaccounts]}}]\n"
            )
        };
        k.ok_stdin(
            &["apply", "-f", "-"],
            &format!(
                "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {{name: parallel}}\nwebhooks:\n{}{}",
                hook("slow", "/slow"),
                hook("fast", "/fast")
            ),
        );
        // (A fresh name per try until the configuration reaches admission.)
        let admitted = (0..50).find_map(|i| {
            let out = k.run(&["-n", "plain", "create", "serviceaccount", &format!("both-{i}")]);
            if FAST_CALLED.load(Ordering::SeqCst) {
                return Some(out);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            None
        });
        let out = admitted.expect("the /fast webhook was never called: validating webhooks are not called in parallel");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        k.ok(&["delete", "validatingwebhookconfiguration", "parallel"]);

        // matchConditions (CEL): the denying webhook is skipped for objects labelled exempt.
        k.ok_stdin(
            &["apply", "-f", "-"],
            &format!(
                "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {{name: conditional}}\nwebhooks:\n- name: conditional.vt.test\n  admissionReviewVersions: [v1]\n  sideEffects: None\n  matchConditions:\n  - name: not-exempt\n    expression: \"!has(object.metadata.labels) || !('exempt' in object.metadata.labels)\"\n  clientConfig: {{url: \"https://127.0.0.1:{port}/validate\", caBundle: \"{ca64}\"}}\n  rules: [{{operations: [CREATE], apiGroups: [\"\"], apiVersions: [v1], resources: [configmaps]}}]\n"
            ),
        );
        let cm = |name: &str, labels: &str| {
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: plain{labels}}}\ndata: {{forbidden: \"1\"}}\n")
        };
        let denied = (0..50).any(|i| {
            let out = k.run_stdin(&["create", "-f", "-"], &cm(&format!("checked-{i}"), ""));
            !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no forbidden keys") || {
                std::thread::sleep(std::time::Duration::from_millis(100));
                false
            }
        });
        assert!(denied, "the conditional webhook never denied an unlabelled ConfigMap");
        k.ok_stdin(&["create", "-f", "-"], &cm("exempted", ", labels: {exempt: \"yes\"}"));
        k.ok(&["delete", "validatingwebhookconfiguration", "conditional"]);

        // A Service target: the webhook is reached through the Service's endpoints, its
        // certificate checked for <service>.<namespace>.svc.
        k.ok(&["create", "namespace", "webhooks"]);
        k.ok_stdin(
            &["-n", "webhooks", "apply", "-f", "-"],
            &format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: hook}}\nspec:\n  clusterIP: None\n  ports: [{{name: https, port: 443, targetPort: {port}}}]\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: hook}}\nsubsets:\n- addresses: [{{ip: 127.0.0.1}}]\n  ports: [{{name: https, port: {port}}}]\n"
            ),
        );
        let ca64 = base64::engine::general_purpose::STANDARD.encode(&ca);
        k.ok_stdin(
            &["apply", "-f", "-"],
            &format!(
                "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\nmetadata: {{name: via-service}}\nwebhooks:\n- name: svc.vt.test\n  admissionReviewVersions: [v1]\n  sideEffects: None\n  clientConfig:\n    service: {{namespace: webhooks, name: hook, path: /mutate}}\n    caBundle: \"{ca64}\"\n  rules: [{{operations: [CREATE], apiGroups: [\"\"], apiVersions: [v1], resources: [secrets]}}]\n"
            ),
        );
        // (A fresh name per try: the configuration reaches admission within moments.)
        let mutated = (0..50).any(|i| {
            let name = format!("s3-{i}");
            let label = k.ok(&["-n", "plain", "create", "secret", "generic", &name, "-o", "jsonpath={.metadata.labels.mutated}"]);
            label == "yes" || {
                std::thread::sleep(std::time::Duration::from_millis(100));
                false
            }
        });
        assert!(mutated, "the service-targeted webhook never mutated a secret");
    })
    .await
    .unwrap();
}

#[test]
fn limit_ranges_and_quotas() {
    let server = VtServer::start(vt(), &[]);
    let k = server.kubectl();
    k.ok(&["create", "namespace", "q"]);
    k.ok_stdin(
        &["-n", "q", "apply", "-f", "-"],
        "apiVersion: v1\nkind: LimitRange\nmetadata: {name: limits}\nspec:\n  limits:\n  - type: Container\n    default: {cpu: 500m, memory: 128Mi}\n    defaultRequest: {cpu: 250m, memory: 64Mi}\n    max: {cpu: \"1\"}\n",
    );
    k.ok_stdin(
        &["-n", "q", "apply", "-f", "-"],
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: quota}\nspec:\n  hard: {pods: \"2\", requests.cpu: \"1\", configmaps: \"3\"}\n",
    );
    let pod = |name: &str, resources: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers: [{{name: c, image: busybox:1.36{resources}}}]\n"
        )
    };
    // LimitRange defaults fill the container's resources.
    k.ok_stdin(&["-n", "q", "apply", "-f", "-"], &pod("p1", ""));
    assert_eq!(
        k.ok(&[
            "-n",
            "q",
            "get",
            "pod",
            "p1",
            "-o",
            "jsonpath={.spec.containers[0].resources.limits.cpu}/{.spec.containers[0].resources.requests.cpu}"
        ]),
        "500m/250m"
    );
    // Over the LimitRange's max: forbidden.
    let out = k.run_stdin(&["-n", "q", "apply", "-f", "-"], &pod("big", ", resources: {limits: {cpu: \"2\"}}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("maximum cpu usage per Container is 1, but limit is 2"), "{err}");
    // The quota counts pods and CPU requests.
    let out = k.run_stdin(
        &["-n", "q", "apply", "-f", "-"],
        &pod("p2", ", resources: {requests: {cpu: 800m}, limits: {cpu: 800m}}"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "exceeded quota: quota, requested: requests.cpu=800m, used: requests.cpu=250m, limited: requests.cpu=1"
        ),
        "{err}"
    );
    k.ok_stdin(&["-n", "q", "apply", "-f", "-"], &pod("p3", ""));
    let out = k.run_stdin(&["-n", "q", "apply", "-f", "-"], &pod("p4", ""));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exceeded quota: quota, requested: pods=1, used: pods=2, limited: pods=2"), "{err}");
    // status.used follows (kubectl describe shows it).
    let mut used = String::new();
    for _ in 0..50 {
        used = k.ok(&[
            "-n",
            "q",
            "get",
            "quota",
            "quota",
            "-o",
            "jsonpath={.status.used.pods}/{.status.used.requests\\.cpu}",
        ]);
        if used == "2/500m" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(used, "2/500m");
    // kubectl's columns for a quota (kube's printer: every status.hard key, sorted, `limits.*`
    // in LIMIT, the rest in REQUEST, as used/hard).
    let table = k.ok(&["-n", "q", "get", "quota"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "REQUEST", "LIMIT", "AGE"], "{table}");
    let row = lines.next().unwrap_or("");
    assert!(row.starts_with("quota") && row.contains("pods: 2/2, requests.cpu: 500m/1"), "{table}");
    // And for an autoscaler (REFERENCE kind/name, TARGETS against no metrics yet).
    k.ok_stdin(
        &["-n", "q", "apply", "-f", "-"],
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: web}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  minReplicas: 2\n  maxReplicas: 5\n  metrics:\n  - type: Resource\n    resource: {name: cpu, target: {type: Utilization, averageUtilization: 80}}\n",
    );
    let table = k.ok(&["-n", "q", "get", "hpa"]);
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"], "{table}");
    assert_eq!(rows[1][..7], ["web", "Deployment/web", "cpu:", "<unknown>/80%", "2", "5", "0"], "{table}");
    // Deleting frees the quota.
    k.ok(&["-n", "q", "delete", "pod", "p3", "--grace-period=0", "--force"]);
    k.ok_stdin(&["-n", "q", "apply", "-f", "-"], &pod("p4", ""));
}

/// ValidatingAdmissionPolicies, with kubectl: a policy with parameters (a ConfigMap, by name,
/// with `parameterNotFoundAction: Deny`) bound to the namespaces a selector picks, with a
/// `messageExpression` and reason `Forbidden`; one with `variables` bound with `Warn`; the
/// default reason (422 `Invalid`, kubectl's `is invalid: : ...`, as kube's documentation
/// shows it); a failing expression under `failurePolicy: Ignore`.
#[test]
fn validating_admission_policies_deny_warn_and_take_params() {
    let server = VtServer::start(vt(), &[]);
    let k = server.kubectl();
    k.ok(&["create", "namespace", "prod"]);
    k.ok(&["label", "namespace", "prod", "env=prod"]);
    k.ok(&["create", "namespace", "dev"]);
    k.ok_stdin(
        &["apply", "-f", "-"],
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: replica-limit.example.com}
spec:
  failurePolicy: Fail
  paramKind: {apiVersion: v1, kind: ConfigMap}
  matchConstraints:
    resourceRules:
    - {apiGroups: [apps], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [deployments]}
  validations:
  - expression: object.spec.replicas <= int(params.data.maxReplicas)
    messageExpression: "'replicas must be at most ' + params.data.maxReplicas"
    reason: Forbidden
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: replica-limit-binding}
spec:
  policyName: replica-limit.example.com
  validationActions: [Deny]
  paramRef: {name: limits, namespace: default, parameterNotFoundAction: Deny}
  matchResources:
    namespaceSelector: {matchLabels: {env: prod}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: team-label.example.com}
spec:
  matchConstraints:
    resourceRules:
    - {apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}
  variables:
  - {name: labels, expression: "has(object.metadata.labels) ? object.metadata.labels : {}"}
  - {name: team, expression: "'team' in variables.labels ? variables.labels['team'] : ''"}
  validations:
  - {expression: "variables.team != ''", message: every ConfigMap needs a team label}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: team-label-binding}
spec:
  policyName: team-label.example.com
  validationActions: [Warn]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: no-basic-auth.example.com}
spec:
  matchConstraints:
    resourceRules:
    - {apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [secrets]}
  validations:
  - expression: object.type != 'kubernetes.io/basic-auth'
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: no-basic-auth-binding}
spec:
  policyName: no-basic-auth.example.com
  validationActions: [Deny]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: broken.example.com}
spec:
  failurePolicy: Ignore
  matchConstraints:
    resourceRules:
    - {apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [services]}
  validations:
  - expression: object.spec.nosuchfield == 1
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: broken-binding}
spec:
  policyName: broken.example.com
  validationActions: [Deny]
"#,
    );
    // No parameter object yet: the binding denies (once the policies have reached the
    // admission plugin, which on kube takes a moment too).
    let err = vt_testkit::eventually("the policies in force", || {
        let out =
            k.run(&["-n", "prod", "create", "deployment", "web", "--image=nginx", "--replicas=2", "--dry-run=server"]);
        (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).to_string())
    });
    assert!(err.contains("no params found for policy binding with `Deny` parameterNotFoundAction"), "{err}");
    k.ok(&["-n", "default", "create", "configmap", "limits", "--from-literal=maxReplicas=3"]);
    // Over the limit in a selected namespace: 403 with the messageExpression's words.
    let err = k.fails(&["-n", "prod", "create", "deployment", "big", "--image=nginx", "--replicas=5"]);
    assert!(
        err.contains(r#"deployments.apps "big" is forbidden: ValidatingAdmissionPolicy 'replica-limit.example.com' with binding 'replica-limit-binding' denied request: replicas must be at most 3"#),
        "{err}"
    );
    k.fails(&["-n", "prod", "get", "deployment", "big"]);
    k.ok(&["-n", "prod", "create", "deployment", "web", "--image=nginx", "--replicas=2"]);
    // Updates too (the `scale` subresource is another resource, as on kube: a rule for
    // `deployments` does not cover `deployments/scale`); namespaces the binding does not
    // select are not checked.
    let err = k.fails(&["-n", "prod", "patch", "deployment", "web", "-p", r#"{"spec":{"replicas":4}}"#]);
    assert!(err.contains("replicas must be at most 3"), "{err}");
    k.ok(&["-n", "dev", "create", "deployment", "big", "--image=nginx", "--replicas=5"]);
    // Warn: the request passes, with kube's warning.
    let out = k.run(&["-n", "default", "create", "configmap", "loose"]);
    assert!(out.status.success());
    let warning = String::from_utf8_lossy(&out.stderr);
    assert!(
        warning.contains("Warning: Validation failed for ValidatingAdmissionPolicy 'team-label.example.com' with binding 'team-label-binding': every ConfigMap needs a team label"),
        "{warning}"
    );
    let out = k.run_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: owned, namespace: default, labels: {team: a}}\n",
    );
    assert!(out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("Warning"), "{out:?}");
    // The default reason: 422 Invalid, which kubectl prints as the documentation shows.
    let err = k.fails_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Secret\nmetadata: {name: basic, namespace: default}\ntype: kubernetes.io/basic-auth\nstringData: {username: a, password: b}\n",
    );
    assert!(
        err.contains(r#"The secrets "basic" is invalid: : ValidatingAdmissionPolicy 'no-basic-auth.example.com' with binding 'no-basic-auth-binding' denied request: failed expression: object.type != 'kubernetes.io/basic-auth'"#),
        "{err}"
    );
    k.ok(&["-n", "default", "create", "secret", "generic", "plain", "--from-literal=a=b"]);
    // An expression that fails to evaluate under failurePolicy Ignore lets the request through.
    k.ok(&["-n", "default", "create", "service", "clusterip", "svc", "--tcp=80:80"]);
    // kube's defaults, and expressions that do not compile refused at write time.
    let defaulted = k.ok(&["get", "validatingadmissionpolicy", "team-label.example.com", "-o", "jsonpath={.spec.failurePolicy} {.spec.matchConstraints.matchPolicy} {.spec.matchConstraints.resourceRules[0].scope}"]);
    assert_eq!(defaulted, "Fail Equivalent *");
    let err = k.fails_stdin(
        &["apply", "-f", "-"],
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata: {name: broken-syntax.example.com}\nspec:\n  matchConstraints: {resourceRules: [{apiGroups: [\"\"], apiVersions: [v1], operations: [CREATE], resources: [pods]}]}\n  validations: [{expression: \"object.spec.replicas <=\"}]\n",
    );
    assert!(
        err.contains("spec.validations[0].expression: Invalid value: \"object.spec.replicas <=\": compilation failed"),
        "{err}"
    );

    // A tenant's expressions run under kube's runtime cost limit: one that would take 10⁸
    // iterations (minutes of a core of the shared process) is cancelled with cel-go's error,
    // at once; label keys are read as written (map keys, not escaped field names).
    k.ok(&["create", "namespace", "cel"]);
    k.ok(&["label", "namespace", "cel", "cel=yes"]);
    let ten = "[0,1,2,3,4,5,6,7,8,9]";
    let runaway = format!(
        "{ten}.all(a, {ten}.all(b, {ten}.all(c, {ten}.all(d, {ten}.all(e, {ten}.all(f, {ten}.all(g, {ten}.all(h, a+b+c+d+e+f+g+h >= 0))))))))"
    );
    k.ok_stdin(
        &["apply", "-f", "-"],
        &format!(
            r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: runaway.example.com}}
spec:
  matchConstraints:
    resourceRules:
    - {{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}}
  validations:
  - expression: "object.metadata.labels['app.kubernetes.io/name'] == 'web'"
    message: needs the app label
  - expression: "!has(object.data) || !('loop' in object.data) || {runaway}"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: runaway-binding}}
spec:
  policyName: runaway.example.com
  validationActions: [Deny]
  matchResources:
    namespaceSelector: {{matchLabels: {{cel: "yes"}}}}
"#
        ),
    );
    let labelled = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: NAME, namespace: cel, labels: {app.kubernetes.io/name: web}}\ndata: DATA\n";
    let err = vt_testkit::eventually("the runaway policy in force", || {
        let out = k.run_stdin(&["apply", "-f", "-"], &labelled.replace("NAME", "spin").replace("DATA", "{loop: x}"));
        (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).to_string())
    });
    assert!(err.contains("resulted in error: operation cancelled: actual cost limit exceeded"), "{err}");
    let started = std::time::Instant::now();
    k.fails_stdin(&["apply", "-f", "-"], &labelled.replace("NAME", "spin").replace("DATA", "{loop: x}"));
    println!("a cancelled expression answered in {:?}", started.elapsed());
    k.ok_stdin(&["apply", "-f", "-"], &labelled.replace("NAME", "calm").replace("DATA", "{a: b}"));
    let other = labelled.replace("NAME", "other").replace("DATA", "{a: b}").replace(": web", ": api");
    let err = k.fails_stdin(&["apply", "-f", "-"], &other);
    assert!(err.contains("needs the app label"), "{err}");
    // No labels at all: the index fails to evaluate (kube's words), and failurePolicy Fail denies.
    let err = k.fails(&["-n", "cel", "create", "configmap", "unlabelled"]);
    assert!(err.contains("resulted in error: no such key: labels"), "{err}");
}
