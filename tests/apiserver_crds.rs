//! CustomResourceDefinitions end to end, with the real kubectl against the real binary: the
//! CRD lifecycle (served at once, Established, printer columns, schema validation with field
//! causes, pruning, defaults, CEL rules, status and scale subresources, several versions,
//! name conflicts, deletion taking the objects along, surviving a restart), and a kube-rs
//! `#[derive(CustomResource)]` controller reconciling in the virtual cluster.

use vt_testkit::{Kubectl, VtServer};

fn vt() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_vt"))
}

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd], categories: [all]}
  versions:
  - name: v1beta1
    served: true
    storage: false
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            x-kubernetes-validations:
            - rule: "self.size <= self.maxSize"
              message: "size must not exceed maxSize"
            properties:
              size: {type: integer, minimum: 1, maximum: 10}
              maxSize: {type: integer, default: 5}
              color: {type: string, enum: [red, blue], default: red}
              replicas: {type: integer}
          status:
            type: object
            properties:
              replicas: {type: integer}
              conditions:
                type: array
                items:
                  type: object
                  properties:
                    type: {type: string}
                    status: {type: string}
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Color, type: string, jsonPath: .spec.color}
    - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
"#;

fn jsonpath(k: &Kubectl, what: &str, path: &str) -> String {
    k.ok(&["-n", "crd", "get", what, "-o", &format!("jsonpath={path}")])
}

#[test]
fn crd_lifecycle_with_kubectl() {
    let mut server = VtServer::start(vt(), &[]);
    let k = server.kubectl();
    k.ok(&["create", "namespace", "crd"]);
    k.ok_stdin(&["apply", "-f", "-"], CRD);
    k.ok(&["wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=10s"]);
    assert!(k.ok(&["api-resources", "--api-group=example.com"]).contains("widgets"));
    let explain = k.ok(&["explain", "widget.spec"]);
    assert!(explain.contains("size") && explain.contains("maxSize"), "{explain}");

    // Create: defaults filled, printer columns shown.
    k.ok_stdin(
        &["-n", "crd", "apply", "-f", "-"],
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 3}\n",
    );
    assert_eq!(jsonpath(&k, "widget/w1", "{.spec.color}/{.spec.maxSize}"), "red/5");
    let table = k.ok(&["-n", "crd", "get", "widgets"]);
    let mut lines = table.lines();
    assert_eq!(lines.next().unwrap().split_whitespace().collect::<Vec<_>>(), ["NAME", "SIZE", "COLOR", "READY", "AGE"]);
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&row[..3], ["w1", "3", "red"], "{table}");
    assert!(k.ok(&["-n", "crd", "get", "wd", "-o", "name"]).contains("widget.example.com/w1"), "short name");
    assert!(k.ok(&["-n", "crd", "get", "all", "-o", "name"]).contains("widget.example.com/w1"), "category");

    // Invalid objects: refused with one cause per field, nothing stored.
    let out = k.run_stdin(
        &["-n", "crd", "apply", "-f", "-"],
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: bad}\nspec: {size: 20, color: green}\n",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // kubectl renders the 422's causes as a list under the details' kind and name.
    assert!(err.contains(r#"The Widget "bad" is invalid"#), "{err}");
    assert!(
        err.contains("spec.size: Invalid value: 20: spec.size in body should be less than or equal to 10"),
        "{err}"
    );
    assert!(err.contains(r#"spec.color: Unsupported value: "green": supported values: "red", "blue""#), "{err}");
    let out = k.run_stdin(
        &["-n", "crd", "apply", "-f", "-"],
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: bad}\nspec: {size: 8}\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("size must not exceed maxSize"), "CEL rule: {err}");
    let out = k.run_stdin(
        &["-n", "crd", "apply", "-f", "-"],
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: bad}\nspec: {size: 2, bogus: 1}\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(r#"unknown field "spec.bogus""#), "strict validation: {err}");
    assert!(k.fails(&["-n", "crd", "get", "widget", "bad"]).contains("NotFound"));
    // Without strict validation, unknown fields are pruned.
    k.ok_stdin(
        &["-n", "crd", "apply", "--validate=false", "-f", "-"],
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: pruned}\nspec: {size: 2, bogus: 1}\n",
    );
    assert_eq!(jsonpath(&k, "widget/pruned", "{.spec}"), r#"{"color":"red","maxSize":5,"size":2}"#);

    // Status subresource: the main resource ignores status; /status only takes status.
    k.ok(&[
        "-n",
        "crd",
        "patch",
        "widget",
        "w1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":2,"conditions":[{"type":"Ready","status":"True"}]}}"#,
    ]);
    k.ok(&["-n", "crd", "patch", "widget", "w1", "--type=merge", "-p", r#"{"status":{"replicas":9}}"#]);
    assert_eq!(jsonpath(&k, "widget/w1", "{.status.replicas}"), "2");
    assert!(k.ok(&["-n", "crd", "get", "widget", "w1"]).contains("True"), "Ready column");
    // Scale subresource.
    k.ok(&["-n", "crd", "scale", "widget", "w1", "--replicas=4"]);
    assert_eq!(jsonpath(&k, "widget/w1", "{.spec.replicas}"), "4");
    // Generation follows spec changes only.
    assert_eq!(jsonpath(&k, "widget/w1", "{.metadata.generation}"), "2");

    // Every served version reads the same object; strategic merge patch is 415 for CRs.
    assert_eq!(
        k.ok(&["-n", "crd", "get", "widgets.v1beta1.example.com", "w1", "-o", "jsonpath={.apiVersion}"]),
        "example.com/v1beta1"
    );
    let err = k.fails(&["-n", "crd", "patch", "widget", "w1", "--type=strategic", "-p", r#"{"spec":{"size":4}}"#]);
    // kube-apiserver's 415 wording, which kubectl prints as is.
    assert!(
        err.contains("application/strategic-merge-patch+json is not supported by example.com/v1, Kind=Widget"),
        "{err}"
    );

    // A second CRD of the group claiming a taken short name is not accepted, nor served.
    let rival = CRD
        .replace("widgets.example.com", "gadgets.example.com")
        .replace("plural: widgets, singular: widget, kind: Widget", "plural: gadgets, singular: gadget, kind: Gadget");
    k.ok_stdin(&["apply", "-f", "-"], &rival);
    let mut accepted = String::new();
    for _ in 0..50 {
        accepted = k.ok(&[
            "get", "crd", "gadgets.example.com", "-o",
            r#"jsonpath={.status.conditions[?(@.type=="NamesAccepted")].status}/{.status.conditions[?(@.type=="NamesAccepted")].reason}"#,
        ]);
        if !accepted.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(accepted, "False/ShortNamesConflict");
    assert!(!k.ok(&["api-resources", "--api-group=example.com"]).contains("gadgets"));
    k.ok(&["delete", "crd", "gadgets.example.com"]);

    // A restart serves the CRD and its objects from the first request.
    server.restart();
    let k = server.kubectl();
    assert_eq!(jsonpath(&k, "widget/w1", "{.spec.size}"), "3");

    // Deleting the CRD deletes its objects, then the CRD.
    k.ok(&["delete", "crd", "widgets.example.com", "--timeout=30s"]);
    let err = k.fails(&["-n", "crd", "get", "widgets"]);
    // (kubectl's discovery cache may still name the type; the server no longer serves it.)
    assert!(
        err.contains("the server doesn't have a resource type")
            || err.contains("the server could not find the requested resource"),
        "{err}"
    );
    k.ok_stdin(&["apply", "-f", "-"], CRD);
    k.ok(&["wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=10s"]);
    assert_eq!(k.ok(&["-n", "crd", "get", "widgets", "-o", "name"]), "", "old objects are gone");
}

mod controller {
    //! A kube-rs operator, exactly as tenants write them, against a virtual cluster: the CRD
    //! from `#[derive(CustomResource)]`, a `Controller` reconciling status.

    use std::sync::Arc;
    use std::time::Duration;

    use futures::StreamExt;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, Patch, PatchParams, PostParams};
    use kube::runtime::controller::{Action, Controller};
    use kube::runtime::wait::{await_condition, conditions};
    use kube::{Client, CustomResource, CustomResourceExt, ResourceExt};
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    /// A counter whose status follows its spec.
    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
    #[kube(group = "vt.example.com", version = "v1", kind = "Counter", namespaced, status = "CounterStatus")]
    pub struct CounterSpec {
        target: i64,
    }

    /// What the controller observed.
    #[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
    pub struct CounterStatus {
        seen: i64,
    }

    async fn reconcile(c: Arc<Counter>, client: Arc<Client>) -> Result<Action, kube::Error> {
        let api: Api<Counter> = Api::namespaced((*client).clone(), &c.namespace().unwrap_or_default());
        let status = json!({"status": {"seen": c.spec.target}});
        api.patch_status(&c.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await?;
        Ok(Action::await_change())
    }

    fn on_error(_: Arc<Counter>, _: &kube::Error, _: Arc<Client>) -> Action {
        Action::requeue(Duration::from_millis(200))
    }

    #[tokio::test]
    async fn kube_rs_derived_controller_reconciles() {
        let server = vt_testkit::VtServer::start(super::vt(), &[]);
        let kc = kube::config::Kubeconfig::read_from(&server.kubeconfig).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
        let client = Client::try_from(cfg).unwrap();
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        crds.create(&PostParams::default(), &Counter::crd()).await.unwrap();
        let established = await_condition(crds, "counters.vt.example.com", conditions::is_crd_established());
        tokio::time::timeout(Duration::from_secs(10), established).await.unwrap().unwrap();

        let counters: Api<Counter> = Api::namespaced(client.clone(), "default");
        let controller = Controller::new(counters.clone(), Default::default())
            .run(reconcile, on_error, Arc::new(client.clone()))
            .for_each(|_| async {});
        let handle = tokio::spawn(controller);
        for (name, target) in [("a", 1), ("b", 2), ("c", 3)] {
            let c = Counter::new(name, CounterSpec { target });
            counters.create(&PostParams::default(), &c).await.unwrap();
        }
        let settled = |want: [(&'static str, i64); 3]| {
            let counters = counters.clone();
            async move {
                for _ in 0..100 {
                    let list = counters.list(&Default::default()).await.unwrap();
                    let seen: Vec<(String, i64)> = list
                        .items
                        .iter()
                        .map(|c| (c.name_any(), c.status.as_ref().map(|s| s.seen).unwrap_or(-1)))
                        .collect();
                    if seen == want.map(|(n, v)| (n.to_string(), v)) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                panic!("the controller did not converge to {want:?}");
            }
        };
        settled([("a", 1), ("b", 2), ("c", 3)]).await;
        // A spec change is reconciled again (watch-driven).
        counters.patch("b", &PatchParams::default(), &Patch::Merge(json!({"spec": {"target": 7}}))).await.unwrap();
        settled([("a", 1), ("b", 7), ("c", 3)]).await;
        // Strategic merge patch has no meaning for custom resources: 415, as in kube-apiserver.
        let err = counters
            .patch("a", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"target": 2}})))
            .await
            .unwrap_err();
        assert!(matches!(err, kube::Error::Api(ref s) if s.code == 415), "{err}");
        handle.abort();
    }
}

/// Server-side apply on a custom resource follows its schema's list and map types
/// (`x-kubernetes-list-type: map` merges by key, `set` by value, an atomic map is owned
/// whole), so two managers can each own their items; and a default added to the schema
/// later is applied when older objects are read, as kube's storage codec does.
#[test]
fn custom_resources_apply_by_schema_and_default_on_read() {
    let server = VtServer::start(vt(), &[]);
    let k = server.kubectl();
    let crd = |extra: &str| {
        format!(
            r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: gateways.example.com}}
spec:
  group: example.com
  scope: Namespaced
  names: {{plural: gateways, singular: gateway, kind: Gateway}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              listeners:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name]
                items:
                  type: object
                  required: [name]
                  properties:
                    name: {{type: string}}
                    port: {{type: integer}}
              tags:
                type: array
                x-kubernetes-list-type: set
                items: {{type: string}}
              selector:
                type: object
                x-kubernetes-map-type: atomic
                additionalProperties: {{type: string}}
{extra}"#
        )
    };
    k.ok(&["create", "namespace", "crd"]);
    k.ok_stdin(&["apply", "-f", "-"], &crd(""));
    k.ok(&["wait", "--for=condition=Established", "crd/gateways.example.com", "--timeout=30s"]);
    let gw = |listener: &str, port: u16, tag: &str, selector: &str| {
        format!(
            "apiVersion: example.com/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: crd}}\nspec:\n  listeners: [{{name: {listener}, port: {port}}}]\n  tags: [{tag}]\n  selector: {{{selector}}}\n"
        )
    };
    k.ok_stdin(&["apply", "--server-side", "--field-manager=team-a", "-f", "-"], &gw("http", 80, "a", "app: web"));
    // Another manager's items join (map list by key, set by value)...
    k.ok_stdin(&["apply", "--server-side", "--field-manager=team-b", "-f", "-"], &gw("https", 443, "b", "app: web"));
    let listeners = jsonpath(&k, "gateway/gw", "{.spec.listeners[*].name}");
    assert_eq!(listeners, "http https");
    assert_eq!(jsonpath(&k, "gateway/gw", "{.spec.tags[*]}"), "a b");
    // ...each owns its own: team-a dropping its listener removes only that one.
    k.ok_stdin(
        &["apply", "--server-side", "--field-manager=team-a", "-f", "-"],
        "apiVersion: example.com/v1\nkind: Gateway\nmetadata: {name: gw, namespace: crd}\nspec:\n  tags: [a]\n  selector: {app: web}\n",
    );
    assert_eq!(jsonpath(&k, "gateway/gw", "{.spec.listeners[*].name}"), "https");
    // A changed value of an item another manager owns conflicts, by its key.
    let err = k.fails_stdin(
        &["apply", "--server-side", "--field-manager=team-c", "-f", "-"],
        &gw("https", 8443, "c", "app: web"),
    );
    assert!(err.contains(r#".spec.listeners[name="https"].port"#), "{err}");
    // The atomic map is owned whole: a different value conflicts as one field.
    let err = k.fails_stdin(
        &["apply", "--server-side", "--field-manager=team-c", "-f", "-"],
        &gw("grpc", 9000, "c", "app: api"),
    );
    assert!(err.contains(".spec.selector") && !err.contains(".spec.selector.app"), "{err}");

    // A default added later shows on reads of the object stored before it.
    let later = "              region: {type: string, default: eu-west}\n";
    let with_default = crd("").replace("              tags:\n", &format!("{later}              tags:\n"));
    k.ok_stdin(&["apply", "-f", "-"], &with_default);
    let region = vt_testkit::eventually("the default on read", || {
        let r = jsonpath(&k, "gateway/gw", "{.spec.region}");
        (!r.is_empty()).then_some(r)
    });
    assert_eq!(region, "eu-west");
    let listed = k.ok(&["-n", "crd", "get", "gateways", "-o", "jsonpath={.items[0].spec.region}"]);
    assert_eq!(listed, "eu-west");

    // The CRD's group version has its local APIService (kube's crd registration controller),
    // which goes with the CRD.
    let row = vt_testkit::eventually("the CRD's APIService", || {
        let out = k.run(&["get", "apiservice", "v1.example.com", "--no-headers"]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).to_string())
    });
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[..3], ["v1.example.com", "Local", "True"], "{row}");
    let label = k.ok(&["get", "apiservice", "v1.example.com", "-o", "jsonpath={.metadata.labels}"]);
    assert!(label.contains(r#""kube-aggregator.kubernetes.io/automanaged":"true""#), "{label}");
    k.ok(&["delete", "crd", "gateways.example.com"]);
    vt_testkit::eventually("the CRD's APIService gone", || {
        (!k.run(&["get", "apiservice", "v1.example.com"]).status.success()).then_some(())
    });

    // Rules that would hurt the shared process are refused when the CRD is written, as
    // apiextensions-apiserver refuses them (the rules themselves run without a meter):
    // a pass per item over an unbounded list (kube's static cost limit, same words), a
    // `1 + 1 + ...` chain deep enough to overflow a request thread's stack when parsed
    // (cel-go's depth limit; before, it aborted the process), and message construction
    // (the interpreter panics on it).
    let guarded = |rule: &str, max_items: &str| {
        let spec = format!(
            "{{type: object, x-kubernetes-validations: [{{rule: \"{rule}\"}}], properties: {{items: {{type: array, items: {{type: integer}}{max_items}}}}}}}"
        );
        format!(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{name: costs.example.com}}\nspec: {{group: example.com, scope: Namespaced, names: {{plural: costs, singular: cost, kind: Cost}}, versions: [{{name: v1, served: true, storage: true, schema: {{openAPIV3Schema: {{type: object, properties: {{spec: {spec}}}}}}}}}]}}\n"
        )
    };
    let nested = "self.items.all(x, self.items.exists(y, y == x))";
    let err = k.fails_stdin(&["apply", "-f", "-"], &guarded(nested, ""));
    assert!(
        err.contains("spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule: Forbidden: estimated rule cost exceeds budget by factor of"),
        "{err}"
    );
    let deep_rule = format!("1{} > 0", " + 1".repeat(20_000));
    let err = k.fails_stdin(&["apply", "-f", "-"], &guarded(&deep_rule, ""));
    assert!(err.contains("max recursion depth exceeded"), "{}", &err[..err.len().min(400)]);
    let err = k.fails_stdin(&["apply", "-f", "-"], &guarded("Foo{a: 1} == Foo{a: 1}", ""));
    assert!(err.contains("undeclared reference to 'Foo'"), "{err}");
    // Bounded, the same rule is fine, and it runs.
    k.ok_stdin(&["apply", "-f", "-"], &guarded(nested, ", maxItems: 50"));
    vt_testkit::eventually("the Cost kind served", || k.run(&["get", "costs", "-A"]).status.success().then_some(()));
    k.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: example.com/v1\nkind: Cost\nmetadata: {name: c, namespace: default}\nspec: {items: [1, 2, 3]}\n",
    );
    k.ok(&["version"]);
}

mod conversion {
    //! A CRD whose versions a conversion webhook converts (`strategy: Webhook`): `v1` keeps
    //! `spec.color`, `v2` keeps it under `spec.paint.color`; the webhook is a real HTTPS
    //! server in this test, answering ConversionReviews.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use base64::Engine;
    use http_body_util::{BodyExt, Full};
    use serde_json::{Value, json};
    use vt_testkit::VtServer;

    /// Converts one object to `desired`; objects named `bad` cannot be converted.
    fn convert(mut o: Value, desired: &str) -> Result<Value, String> {
        if o.pointer("/metadata/name") == Some(&json!("bad")) {
            return Err("cannot convert bad".into());
        }
        let spec = o.get("spec").cloned().unwrap_or(json!({}));
        let color = spec.get("color").or_else(|| spec.pointer("/paint/color")).cloned().unwrap_or(Value::Null);
        o["spec"] = if desired.ends_with("/v2") { json!({"paint": {"color": color}}) } else { json!({"color": color}) };
        o["apiVersion"] = json!(desired);
        Ok(o)
    }

    async fn webhook() -> (u16, String, Arc<AtomicUsize>) {
        let server = vt_testkit::https::https("127.0.0.1", &["localhost"], &["127.0.0.1".parse().unwrap()], None).await;
        let (listener, acceptor, port) = (server.listener, server.acceptor, server.port);
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, counter) = (acceptor.clone(), counter.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let counter = counter.clone();
                        async move {
                            counter.fetch_add(1, Ordering::SeqCst);
                            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let review: Value = serde_json::from_slice(&body).unwrap_or_default();
                            let request = &review["request"];
                            let desired = request["desiredAPIVersion"].as_str().unwrap_or("");
                            let converted: Result<Vec<Value>, String> = request["objects"]
                                .as_array()
                                .cloned()
                                .unwrap_or_default()
                                .into_iter()
                                .map(|o| convert(o, desired))
                                .collect();
                            let response = match converted {
                                Ok(objects) => {
                                    json!({"uid": request["uid"], "convertedObjects": objects, "result": {"status": "Success"}})
                                }
                                Err(e) => json!({"uid": request["uid"], "result": {"status": "Failure", "message": e}}),
                            };
                            let answer = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview", "response": response});
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(bytes::Bytes::from(
                                answer.to_string(),
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        (port, server.ca_pem, calls)
    }

    fn crd(port: u16, ca: &str) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(ca);
        let schema = "      openAPIV3Schema: {type: object, properties: {spec: {type: object, x-kubernetes-preserve-unknown-fields: true}}}";
        format!(
            r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: paints.example.com}}
spec:
  group: example.com
  scope: Namespaced
  names: {{plural: paints, singular: paint, kind: Paint}}
  conversion:
    strategy: Webhook
    webhook:
      conversionReviewVersions: [v1]
      clientConfig: {{url: "https://127.0.0.1:{port}/convert", caBundle: "{ca}"}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
{schema}
  - name: v2
    served: true
    storage: false
    schema:
{schema}
"#
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_conversion_webhook_converts_reads_writes_lists_and_watches() {
        let (port, ca, calls) = webhook().await;
        let calls2 = calls.clone();
        tokio::task::spawn_blocking(move || {
            let server = VtServer::start(super::vt(), &[]);
            let k = server.kubectl();
            k.ok(&["create", "namespace", "crd"]);
            k.ok_stdin(&["apply", "-f", "-"], &crd(port, &ca));
            k.ok(&["wait", "--for=condition=Established", "crd/paints.example.com", "--timeout=30s"]);
            // Written in v2, stored in v1 (the storage version), read in both.
            k.ok_stdin(
                &["apply", "-f", "-"],
                "apiVersion: example.com/v2\nkind: Paint\nmetadata: {name: sky, namespace: crd, labels: {tone: cool}}\nspec: {paint: {color: blue}}\n",
            );
            let get = |version: &str, path: &str| {
                k.ok(&["-n", "crd", "get", &format!("paints.{version}.example.com"), "sky", "-o", &format!("jsonpath={path}")])
            };
            assert_eq!(get("v1", "{.spec.color}"), "blue");
            assert_eq!(get("v2", "{.spec.paint.color}"), "blue");
            assert_eq!(get("v2", "{.apiVersion} {.metadata.labels.tone}"), "example.com/v2 cool");
            // Written in v1; a v2 list converts both in one review.
            k.ok_stdin(
                &["apply", "-f", "-"],
                "apiVersion: example.com/v1\nkind: Paint\nmetadata: {name: grass, namespace: crd}\nspec: {color: green}\n",
            );
            let before = calls2.load(Ordering::SeqCst);
            let listed = k.ok(&["get", "--raw", "/apis/example.com/v2/namespaces/crd/paints"]);
            assert_eq!(calls2.load(Ordering::SeqCst), before + 1, "one review per list");
            let listed: Value = serde_json::from_str(&listed).unwrap();
            let colors: Vec<&str> =
                listed["items"].as_array().unwrap().iter().map(|i| i["spec"]["paint"]["color"].as_str().unwrap()).collect();
            assert_eq!(colors, ["green", "blue"]);
            // A patch in v2 applies to the converted object and is stored converted back.
            k.ok(&["-n", "crd", "patch", "paints.v2.example.com", "grass", "--type=merge", "-p", r#"{"spec":{"paint":{"color":"olive"}}}"#]);
            assert_eq!(
                k.ok(&["-n", "crd", "get", "paints.v1.example.com", "grass", "-o", "jsonpath={.spec.color}"]),
                "olive"
            );
            // Watches convert each event.
            let events = k.ok(&["get", "--raw", "/apis/example.com/v2/namespaces/crd/paints?watch=true&timeoutSeconds=1"]);
            assert!(events.contains(r#""paint":{"color":"olive"}"#), "{events}");
            // A failed conversion fails the request with kube's words.
            k.ok_stdin(
                &["apply", "-f", "-"],
                "apiVersion: example.com/v1\nkind: Paint\nmetadata: {name: bad, namespace: crd}\nspec: {color: red}\n",
            );
            let err = k.fails(&["-n", "crd", "get", "paints.v2.example.com", "bad"]);
            assert!(err.contains("conversion webhook for example.com/v2, Kind=Paint failed: cannot convert bad"), "{err}");
        })
        .await
        .unwrap();
        assert!(calls.load(Ordering::SeqCst) > 0);
    }
}
