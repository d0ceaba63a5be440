//! REST semantics of the API server against kube-apiserver's, through kube-rs and the real
//! binary. Each test names the behaviour it pins.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{
    Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy,
};
use kube::{Client, Error};
use serde_json::json;
use vt_testkit::VtServer;

fn vt() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_vt"))
}

async fn setup(ns: &str) -> (VtServer, Client) {
    let server = VtServer::start(vt(), &[]);
    let kc = kube::config::Kubeconfig::read_from(&server.kubeconfig).unwrap();
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    // kube-rs retries 429/503/504 by default; these tests look at the server's first answer.
    cfg.default_retry = false;
    let client = Client::try_from(cfg).unwrap();
    let n = Namespace { metadata: ObjectMeta { name: Some(ns.into()), ..Default::default() }, ..Default::default() };
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &n).await.unwrap();
    (server, client)
}

fn code(e: Error) -> (u16, String, String) {
    match e {
        Error::Api(s) => (s.code, s.reason, s.message),
        other => panic!("not an API error: {other}"),
    }
}

fn cm(name: &str) -> ConfigMap {
    ConfigMap { metadata: ObjectMeta { name: Some(name.into()), ..Default::default() }, ..Default::default() }
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}
    }))
    .unwrap()
}

/// deletecollection deletes what the selector lists and answers with that list.
#[tokio::test]
async fn delete_collection_by_selector() {
    let (_s, c) = setup("dc").await;
    let api: Api<ConfigMap> = Api::namespaced(c, "dc");
    for (name, tier) in [("a", "web"), ("b", "web"), ("c", "db")] {
        let mut o = cm(name);
        o.metadata.labels = Some(BTreeMap::from([("tier".into(), tier.into())]));
        api.create(&PostParams::default(), &o).await.unwrap();
    }
    let deleted =
        api.delete_collection(&DeleteParams::default(), &ListParams::default().labels("tier=web")).await.unwrap();
    let names: Vec<String> = deleted.left().unwrap().items.into_iter().filter_map(|o| o.metadata.name).collect();
    assert_eq!(names, vec!["a".to_string(), "b".to_string()]);
    let left: Vec<String> =
        api.list(&ListParams::default()).await.unwrap().items.into_iter().filter_map(|o| o.metadata.name).collect();
    assert_eq!(left, vec!["c".to_string()]);
}

/// A bound pod is deleted gracefully (deletionTimestamp + grace period, the pod remains); an
/// unbound pod, or grace 0, deletes at once.
#[tokio::test]
async fn pods_are_deleted_gracefully_once_bound() {
    let (_s, c) = setup("gp").await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "gp");
    pods.create(&PostParams::default(), &pod("unbound")).await.unwrap();
    pods.delete("unbound", &DeleteParams::default()).await.unwrap();
    assert_eq!(code(pods.get("unbound").await.unwrap_err()).0, 404, "never-scheduled pods go at once");

    pods.create(&PostParams::default(), &pod("bound")).await.unwrap();
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "bound"}, "target": {"kind": "Node", "name": "node-1"}});
    let req = http::Request::post("/api/v1/namespaces/gp/pods/bound/binding")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&binding).unwrap())
        .unwrap();
    c.request_text(req).await.expect("bind");
    assert_eq!(pods.get("bound").await.unwrap().spec.unwrap().node_name.as_deref(), Some("node-1"));
    // A second binding is a conflict.
    let req = http::Request::post("/api/v1/namespaces/gp/pods/bound/binding")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&binding).unwrap())
        .unwrap();
    assert_eq!(code(c.request_text(req).await.unwrap_err()).0, 409);
    let pending = pods.delete("bound", &DeleteParams::default()).await.unwrap().left().unwrap();
    assert_eq!(pending.metadata.deletion_grace_period_seconds, Some(30));
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert_eq!(pending.metadata.generation, Some(2), "generation moves when deletion starts");
    assert!(pods.get("bound").await.is_ok(), "the kubelet (syncer) finishes a graceful delete");
    pods.delete("bound", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    assert_eq!(code(pods.get("bound").await.unwrap_err()).0, 404, "grace 0 forces the delete");
}

/// The propagation policy is recorded as a finalizer for the garbage collector.
#[tokio::test]
async fn propagation_policy_is_recorded_for_the_garbage_collector() {
    let (_s, c) = setup("gc").await;
    let api: Api<ConfigMap> = Api::namespaced(c, "gc");
    for (name, policy, finalizer) in
        [("fg", PropagationPolicy::Foreground, "foregroundDeletion"), ("or", PropagationPolicy::Orphan, "orphan")]
    {
        api.create(&PostParams::default(), &cm(name)).await.unwrap();
        let dp = DeleteParams { propagation_policy: Some(policy), ..Default::default() };
        let left = api.delete(name, &dp).await.unwrap().left().expect("kept for the garbage collector");
        assert_eq!(left.metadata.finalizers, Some(vec![finalizer.to_string()]));
        assert!(left.metadata.deletion_timestamp.is_some());
    }
    api.create(&PostParams::default(), &cm("bg")).await.unwrap();
    let dp = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
    assert!(api.delete("bg", &dp).await.unwrap().is_right(), "background deletes at once (Status Success)");
}

/// generateName gets kube's five-character suffix; preconditions guard deletes.
#[tokio::test]
async fn generate_name_and_delete_preconditions() {
    let (_s, c) = setup("gn").await;
    let api: Api<ConfigMap> = Api::namespaced(c, "gn");
    let mut o = cm("");
    o.metadata.name = None;
    o.metadata.generate_name = Some("job-".into());
    let a = api.create(&PostParams::default(), &o).await.unwrap();
    let b = api.create(&PostParams::default(), &o).await.unwrap();
    let (na, nb) = (a.metadata.name.clone().unwrap(), b.metadata.name.clone().unwrap());
    assert!(na.starts_with("job-") && na.len() == 9 && na != nb, "{na} {nb}");
    assert!(na[4..].chars().all(|ch| "bcdfghjklmnpqrstvwxz2456789".contains(ch)), "{na}");
    let wrong_uid = DeleteParams {
        preconditions: Some(Preconditions { uid: Some("nope".into()), resource_version: None }),
        ..Default::default()
    };
    let (status, reason, message) = code(api.delete(&na, &wrong_uid).await.unwrap_err());
    assert_eq!((status, reason.as_str()), (409, "Conflict"));
    assert!(message.contains("the UID in the precondition (nope) does not match the UID in record"), "{message}");
    let stale_rv = DeleteParams {
        preconditions: Some(Preconditions { uid: None, resource_version: Some("1".into()) }),
        ..Default::default()
    };
    assert_eq!(code(api.delete(&na, &stale_rv).await.unwrap_err()).0, 409);
    let right = DeleteParams {
        preconditions: Some(Preconditions {
            uid: a.metadata.uid.clone(),
            resource_version: a.metadata.resource_version.clone(),
        }),
        ..Default::default()
    };
    api.delete(&na, &right).await.expect("matching preconditions");
}

/// Writes to the main resource leave status alone, and writes to /status leave the rest.
#[tokio::test]
async fn status_subresource_is_split() {
    let (_s, c) = setup("st").await;
    let api: Api<Deployment> = Api::namespaced(c, "st");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}},
                 "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
        "status": {"replicas": 99}
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &d).await.unwrap();
    assert!(
        created.status.is_none() || created.status.as_ref().unwrap().replicas.is_none(),
        "status is dropped on create"
    );
    let patched = api
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 3}, "spec": {"replicas": 7}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.status.unwrap().replicas, Some(3));
    assert_eq!(patched.spec.unwrap().replicas, Some(1), "a status write does not change the spec");
    let after = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}, "status": {"replicas": 0}})),
        )
        .await
        .unwrap();
    assert_eq!(after.spec.unwrap().replicas, Some(2));
    assert_eq!(after.status.unwrap().replicas, Some(3), "a main-resource write does not change status");
    assert_eq!(after.metadata.generation, Some(2), "generation follows the spec, not status");
}

/// A namespace being deleted refuses new content (403) until it is gone.
#[tokio::test]
async fn terminating_namespaces_refuse_new_content() {
    let (_s, c) = setup("term").await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "term");
    let mut held = cm("held");
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &held).await.unwrap();
    Api::<Namespace>::all(c.clone()).delete("term", &DeleteParams::default()).await.unwrap();
    let ns = Api::<Namespace>::all(c.clone()).get("term").await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (status, reason, message) = loop {
        match api.create(&PostParams::default(), &cm("late")).await {
            Err(e) => break code(e),
            Ok(_) if std::time::Instant::now() < deadline => {
                let _ = api.delete("late", &DeleteParams::default()).await;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Ok(_) => panic!("creates keep succeeding in a terminating namespace"),
        }
    };
    assert_eq!((status, reason.as_str()), (403, "Forbidden"));
    assert!(
        message.contains("unable to create new content in namespace term because it is being terminated"),
        "{message}"
    );
    // Releasing the finalizer lets the namespace go.
    api.patch("held", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while Api::<Namespace>::all(c.clone()).get("term").await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "the namespace was never finalized");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// resourceVersion + resourceVersionMatch=Exact reads the past; a future resourceVersion
/// times out with 504 after kube's three-second wait.
#[tokio::test]
async fn list_at_exact_and_future_resource_versions() {
    let (_s, c) = setup("rv").await;
    let api: Api<ConfigMap> = Api::namespaced(c, "rv");
    let a = api.create(&PostParams::default(), &cm("a")).await.unwrap();
    let rv_a = a.metadata.resource_version.unwrap();
    api.create(&PostParams::default(), &cm("b")).await.unwrap();
    let then = api.list(&ListParams::default().at(&rv_a).matching(kube::api::VersionMatch::Exact)).await.unwrap();
    assert_eq!(then.items.len(), 1, "the list as of a's creation");
    assert_eq!(then.metadata.resource_version.as_deref(), Some(rv_a.as_str()));
    let now = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(now.items.len(), 2);
    let future = (now.metadata.resource_version.unwrap().parse::<i64>().unwrap() + 1000).to_string();
    let (status, reason, message) = code(
        api.list(&ListParams::default().at(&future).matching(kube::api::VersionMatch::NotOlderThan)).await.unwrap_err(),
    );
    assert_eq!((status, reason.as_str()), (504, "Timeout"));
    assert!(message.contains("Too large resource version"), "{message}");
    // kube-rs refuses this client-side; the server's own check answers a raw request.
    let req =
        http::Request::get("/api/v1/namespaces/rv/configmaps?resourceVersionMatch=Exact").body(Vec::new()).unwrap();
    let (status, reason, message) = code(api.into_client().request_text(req).await.unwrap_err());
    assert_eq!((status, reason.as_str()), (422, "Invalid"), "resourceVersionMatch without resourceVersion");
    assert!(message.contains("resourceVersionMatch is forbidden unless resourceVersion is provided"), "{message}");
}

/// Per-kind field selectors: secrets by type, pods by phase and node.
#[tokio::test]
async fn per_kind_field_selectors() {
    let (_s, c) = setup("fs").await;
    let secrets: Api<Secret> = Api::namespaced(c.clone(), "fs");
    for (name, ty) in [("opaque", "Opaque"), ("tls", "kubernetes.io/dockerconfigjson")] {
        let s: Secret = serde_json::from_value(
            json!({"metadata": {"name": name}, "type": ty, "data": {".dockerconfigjson": "e30="}}),
        )
        .unwrap();
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    let opaque = secrets.list(&ListParams::default().fields("type=Opaque")).await.unwrap();
    assert_eq!(
        opaque.items.iter().filter_map(|s| s.metadata.name.clone()).collect::<Vec<_>>(),
        vec!["opaque".to_string()]
    );
    let pods: Api<Pod> = Api::namespaced(c, "fs");
    pods.create(&PostParams::default(), &pod("p")).await.unwrap();
    assert_eq!(pods.list(&ListParams::default().fields("status.phase=Pending")).await.unwrap().items.len(), 1);
    assert_eq!(pods.list(&ListParams::default().fields("spec.nodeName=")).await.unwrap().items.len(), 1);
    assert_eq!(pods.list(&ListParams::default().fields("spec.nodeName!=")).await.unwrap().items.len(), 0);
    let (status, _, message) = code(pods.list(&ListParams::default().fields("spec.bogus=x")).await.unwrap_err());
    assert_eq!(status, 400);
    assert!(message.contains("field label not supported: spec.bogus"), "{message}");
}

/// The default roles exist, with admin/edit/view aggregated.
#[tokio::test]
async fn bootstrap_roles() {
    let (_s, c) = setup("rbac").await;
    let roles: Api<ClusterRole> = Api::all(c);
    for name in ["cluster-admin", "admin", "edit", "view", "system:discovery", "system:basic-user"] {
        roles.get(name).await.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let view = roles.get("view").await.unwrap();
    assert!(view.aggregation_rule.is_some());
    let rules = view.rules.unwrap_or_default();
    assert!(rules.iter().any(|r| {
        r.resources.as_ref().is_some_and(|x| x.iter().any(|x| x == "pods")) && r.verbs.contains(&"list".to_string())
    }));
    assert!(!rules.iter().any(|r| r.verbs.contains(&"create".to_string())), "view cannot write");
}

/// Media types and methods: 415 for an unknown body type, 406 for an unacceptable
/// representation, 405 for a method the path does not take; YAML both ways.
#[tokio::test]
async fn negotiation_and_methods() {
    let (_s, c) = setup("neg").await;
    let send = |req: http::Request<Vec<u8>>| {
        let c = c.clone();
        async move { c.request_text(req).await }
    };
    let (status, reason, message) = code(
        send(
            http::Request::post("/api/v1/namespaces/neg/configmaps")
                .header("content-type", "text/plain")
                .body(b"x".to_vec())
                .unwrap(),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((status, reason.as_str()), (415, "UnsupportedMediaType"));
    assert!(
        message.contains(
            "accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf"
        ),
        "{message}"
    );
    let (status, reason, _) = code(
        send(http::Request::get("/api/v1/namespaces").header("accept", "text/html").body(Vec::new()).unwrap())
            .await
            .unwrap_err(),
    );
    assert_eq!((status, reason.as_str()), (406, "NotAcceptable"));
    let (status, reason, message) = code(
        send(
            http::Request::put("/api/v1/namespaces/neg/configmaps")
                .header("content-type", "application/json")
                .body(b"{}".to_vec())
                .unwrap(),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((status, reason.as_str()), (405, "MethodNotAllowed"));
    assert_eq!(message, "the server does not allow this method on the requested resource");
    // A YAML body in, a YAML representation out.
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  k: v\n";
    send(
        http::Request::post("/api/v1/namespaces/neg/configmaps")
            .header("content-type", "application/yaml")
            .body(yaml.as_bytes().to_vec())
            .unwrap(),
    )
    .await
    .unwrap();
    let out = send(
        http::Request::get("/api/v1/namespaces/neg/configmaps/from-yaml")
            .header("accept", "application/yaml")
            .body(Vec::new())
            .unwrap(),
    )
    .await
    .unwrap();
    assert!(out.contains("name: from-yaml") && out.contains("k: v"), "{out}");
    // Unknown resources: kube's generic 404.
    let (status, _, message) =
        code(send(http::Request::get("/api/v1/nothings").body(Vec::new()).unwrap()).await.unwrap_err());
    assert_eq!((status, message.as_str()), (404, "the server could not find the requested resource"));
}

/// Server-side printing as kube-apiserver does it: `as=Table` (v1 and v1beta1) for list, get
/// and watch, every column sent (priority 1 is what `-o wide` shows), `includeObject`
/// Metadata (default) / Object / None and 400 otherwise, the default convertor's
/// `Name`/`Created At` (rows null when empty), column definitions only in a watch's first
/// event, watch-list falling back to the next acceptable type, and PartialObjectMetadata.
#[tokio::test]
async fn tables_and_partial_metadata() {
    let (_s, c) = setup("tbl").await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "tbl");
    pods.create(&PostParams::default(), &pod("web")).await.unwrap();
    pods.create(&PostParams::default(), &pod("db")).await.unwrap();
    let get = |path: String, accept: &'static str| {
        let c = c.clone();
        async move {
            let text =
                c.request_text(http::Request::get(path).header("accept", accept).body(Vec::new()).unwrap()).await?;
            Ok::<_, Error>(text)
        }
    };
    const V1: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";
    const V1BETA1: &str = "application/json;as=Table;v=v1beta1;g=meta.k8s.io";
    let t: serde_json::Value =
        serde_json::from_str(&get("/api/v1/namespaces/tbl/pods".into(), V1).await.unwrap()).unwrap();
    assert_eq!((t["kind"].as_str(), t["apiVersion"].as_str()), (Some("Table"), Some("meta.k8s.io/v1")));
    let columns: Vec<(&str, u64)> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["priority"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        columns,
        [
            ("Name", 0),
            ("Ready", 0),
            ("Status", 0),
            ("Restarts", 0),
            ("Age", 0),
            ("IP", 1),
            ("Node", 1),
            ("Nominated Node", 1),
            ("Readiness Gates", 1)
        ]
    );
    assert!(t["metadata"]["resourceVersion"].as_str().is_some_and(|rv| !rv.is_empty()));
    let rows = t["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0]["cells"],
        json!(["db", "0/1", "Pending", "0", rows[0]["cells"][4], "<none>", "<none>", "<none>", "<none>"])
    );
    assert_eq!(rows[0]["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(rows[0]["object"]["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(rows[0]["object"]["metadata"]["name"], "db");

    // One object, v1beta1, with the whole object; or with none.
    let t: serde_json::Value = serde_json::from_str(
        &get("/api/v1/namespaces/tbl/pods/web?includeObject=Object".into(), V1BETA1).await.unwrap(),
    )
    .unwrap();
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1beta1");
    assert_eq!(t["rows"].as_array().unwrap().len(), 1);
    assert_eq!(
        (t["rows"][0]["object"]["kind"].as_str(), t["rows"][0]["object"]["spec"]["containers"][0]["name"].as_str()),
        (Some("Pod"), Some("c"))
    );
    // Row objects of a list carry their type (kube converts each to the request's version).
    let t: serde_json::Value =
        serde_json::from_str(&get("/api/v1/namespaces/tbl/pods?includeObject=Object".into(), V1).await.unwrap())
            .unwrap();
    assert_eq!(
        (t["rows"][0]["object"]["kind"].as_str(), t["rows"][0]["object"]["apiVersion"].as_str()),
        (Some("Pod"), Some("v1"))
    );
    let t: serde_json::Value =
        serde_json::from_str(&get("/api/v1/namespaces/tbl/pods/web?includeObject=None".into(), V1).await.unwrap())
            .unwrap();
    assert!(t["rows"][0]["object"].is_null());
    let (status, reason, message) =
        code(get("/api/v1/namespaces/tbl/pods?includeObject=All".into(), V1).await.unwrap_err());
    assert_eq!((status, reason.as_str()), (400, "BadRequest"));
    assert!(message.contains("must be 'Metadata', 'Object', 'None', or empty"), "{message}");

    // The default convertor (Roles): Name and Created At; an empty list has null rows.
    let t: serde_json::Value =
        serde_json::from_str(&get("/apis/rbac.authorization.k8s.io/v1/namespaces/tbl/roles".into(), V1).await.unwrap())
            .unwrap();
    let names: Vec<&str> =
        t["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Name", "Created At"]);
    assert!(t["rows"].is_null());

    // Watch: one one-row Table per event, column definitions only in the first.
    let text = get("/api/v1/namespaces/tbl/pods?watch=true&timeoutSeconds=1".into(), V1).await.unwrap();
    let events: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 2, "{text}");
    assert!(events.iter().all(|e| e["type"] == "ADDED" && e["object"]["kind"] == "Table"));
    assert!(events[0]["object"]["columnDefinitions"].as_array().is_some_and(|c| c.len() == 9));
    assert!(events[1]["object"]["columnDefinitions"].is_null());
    assert_eq!(events[1]["object"]["rows"][0]["cells"][0], "web");
    // A watch-list request cannot have Tables: negotiation moves on to plain JSON.
    let text = get(
        "/api/v1/namespaces/tbl/pods?watch=true&timeoutSeconds=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan".into(),
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
    )
    .await
    .unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["object"]["kind"], "Pod");

    // PartialObjectMetadata for lists and watch events (what metadata-only informers use).
    const PARTIAL: &str = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io";
    let l: serde_json::Value =
        serde_json::from_str(&get("/api/v1/namespaces/tbl/pods".into(), PARTIAL).await.unwrap()).unwrap();
    assert_eq!(l["kind"], "PartialObjectMetadataList");
    assert_eq!(l["items"][1]["metadata"]["name"], "web");
    assert!(l["items"][1].get("spec").is_none());
    let text = get(
        "/api/v1/namespaces/tbl/pods?watch=true&timeoutSeconds=1".into(),
        "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io",
    )
    .await
    .unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["object"]["kind"], "PartialObjectMetadata");
    assert!(first["object"].get("spec").is_none());
}

/// fieldValidation on patches and YAML bodies, as kube-apiserver's handler tests pin it: a
/// strict error in a merge or strategic patch is a 422 on the field `patch`; a YAML body with a
/// repeated key is refused under Strict (`line N: key "k" already set in map`) and otherwise
/// taken with the last value.
#[tokio::test]
async fn field_validation_of_patches_and_yaml() {
    use kube::api::ValidationDirective;
    let (_s, c) = setup("fv").await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "fv");
    cms.create(&PostParams::default(), &cm("a")).await.unwrap();
    let strict = PatchParams { field_validation: Some(ValidationDirective::Strict), ..Default::default() };
    for patch in [
        Patch::Merge(json!({"bogus": 1, "data": {"k": "v"}})),
        Patch::Strategic(json!({"bogus": 1, "data": {"k": "v"}})),
    ] {
        let (status, reason, message) = code(cms.patch("a", &strict, &patch).await.unwrap_err());
        assert_eq!((status, reason.as_str()), (422, "Invalid"));
        assert!(
            message.contains("patch: Invalid value:")
                && message.contains(r#"strict decoding error: unknown field "bogus""#),
            "{message}"
        );
    }
    assert!(cms.get("a").await.unwrap().data.is_none(), "a refused patch changes nothing");
    // Under Warn (the default) the same patch applies, without the unknown field.
    let warn = PatchParams::default();
    let patched = cms.patch("a", &warn, &Patch::Merge(json!({"bogus": 1, "data": {"k": "v"}}))).await.unwrap();
    assert_eq!(patched.data.unwrap()["k"], "v");

    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: yml\ndata:\n  k: one\n  k: two\n";
    let post = |query: &str| {
        http::Request::post(format!("/api/v1/namespaces/fv/configmaps{query}"))
            .header("content-type", "application/yaml")
            .body(yaml.as_bytes().to_vec())
            .unwrap()
    };
    let (status, _, message) = code(c.request_text(post("?fieldValidation=Strict")).await.unwrap_err());
    assert_eq!(status, 400);
    assert!(
        message.contains(r#"strict decoding error: yaml: unmarshal errors:"#)
            && message.contains(r#"line 7: key "k" already set in map"#),
        "{message}"
    );
    c.request_text(post("?fieldValidation=Ignore")).await.unwrap();
    assert_eq!(cms.get("yml").await.unwrap().data.unwrap()["k"], "two");
}

/// Protobuf answers for clients that prefer them (client-go with `ContentType: protobuf`, as
/// kube-controller-manager and many operators run): `k8s\0` + `runtime.Unknown` for objects
/// and lists, length-prefixed `WatchEvent` envelopes with `;stream=watch` for watches. Decoded
/// here with k8s-pb, whose types are generated from Kubernetes' own .proto files.
#[tokio::test]
async fn protobuf_answers_decode_with_kubernetes_protos() {
    use futures::AsyncReadExt;
    use k8s_pb::apimachinery::pkg::apis::meta::v1::WatchEvent;
    use k8s_pb::apimachinery::pkg::runtime::Unknown;
    use prost::Message;

    let (_s, c) = setup("pb").await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "pb");
    pods.create(&PostParams::default(), &pod("web")).await.unwrap();
    const PB: &str = "application/vnd.kubernetes.protobuf, application/json";
    let fetch = |path: &str| {
        let c = c.clone();
        let req = http::Request::get(path).header("accept", PB).body(Vec::new()).unwrap();
        async move {
            let mut out = Vec::new();
            c.request_stream(req).await.unwrap().read_to_end(&mut out).await.unwrap();
            out
        }
    };
    let unwrap = |bytes: &[u8]| -> (String, String, Vec<u8>) {
        let body = bytes.strip_prefix(b"k8s\0").expect("the protobuf magic");
        let u = Unknown::decode(body).unwrap();
        let tm = u.type_meta.unwrap();
        (tm.api_version.unwrap(), tm.kind.unwrap(), u.raw.unwrap())
    };

    let (av, kind, raw) = unwrap(&fetch("/api/v1/namespaces/pb/pods/web").await);
    assert_eq!((av.as_str(), kind.as_str()), ("v1", "Pod"));
    let p = k8s_pb::api::core::v1::Pod::decode(raw.as_slice()).unwrap();
    let meta = p.metadata.unwrap();
    assert_eq!(meta.name.as_deref(), Some("web"));
    assert!(meta.resource_version.is_some_and(|rv| !rv.is_empty()));
    assert!(meta.creation_timestamp.and_then(|t| t.seconds).is_some_and(|s| s > 1_700_000_000));
    let spec = p.spec.unwrap();
    assert_eq!(spec.containers[0].image.as_deref(), Some("busybox:1.36"));
    assert_eq!(spec.termination_grace_period_seconds, Some(30), "defaults travel too");

    let (_, kind, raw) = unwrap(&fetch("/api/v1/namespaces/pb/pods").await);
    assert_eq!(kind, "PodList");
    let list = k8s_pb::api::core::v1::PodList::decode(raw.as_slice()).unwrap();
    assert_eq!(list.items.len(), 1);
    assert!(list.metadata.unwrap().resource_version.is_some());

    // Watch: a 4-byte big-endian length, then a bare WatchEvent (kube's raw stream serializer)
    // whose object carries the object's own envelope.
    let stream = fetch("/api/v1/namespaces/pb/pods?watch=true&timeoutSeconds=1").await;
    let mut rest = stream.as_slice();
    let mut events = Vec::new();
    while rest.len() >= 4 {
        let n = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        let ev = WatchEvent::decode(&rest[4..4 + n]).unwrap();
        let (_, obj_kind, obj_raw) = unwrap(&ev.object.unwrap().raw.unwrap());
        let name = k8s_pb::api::core::v1::Pod::decode(obj_raw.as_slice()).unwrap().metadata.unwrap().name.unwrap();
        events.push((ev.r#type.unwrap(), obj_kind, name));
        rest = &rest[4 + n..];
    }
    assert!(rest.is_empty(), "whole frames only");
    assert_eq!(events, [("ADDED".to_string(), "Pod".to_string(), "web".to_string())]);
}

/// Response bodies are byte for byte what kube-apiserver writes: Go's `encoding/json` over the
/// API structs (field order of `metav1.Status`, `ObjectMeta`, `ManagedFieldsEntry`, lists and
/// watch events from apimachinery's `types.go`/`watch.go`; HTML-safe string escapes; empty
/// `omitempty` fields left out) and the newline `json.Encoder.Encode` ends each body with
/// (apimachinery `runtime/serializer/json`'s `doEncode`). The Status bodies are the ones
/// `kubectl get cm missing -v=8` prints from a 1.33 cluster.
#[tokio::test]
async fn responses_are_byte_compatible_with_kube_apiserver() {
    use http_body_util::BodyExt;
    let (_s, c) = setup("gold").await;
    let raw = |method: &str, path: &str, body: &str| {
        let c = c.clone();
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(kube::client::Body::from(body.as_bytes().to_vec()))
            .unwrap();
        async move {
            let resp = c.send(req).await.unwrap();
            let code = resp.status().as_u16();
            (code, String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap())
        }
    };
    let (code, body) = raw("GET", "/api/v1/namespaces/gold/configmaps/missing", "").await;
    assert_eq!(code, 404);
    assert_eq!(
        body,
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"configmaps \\\"missing\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"missing\",\"kind\":\"configmaps\"},\"code\":404}\n"
    );
    let create = r#"{"apiVersion":"v1","kind":"ConfigMap","data":{"a":"<b&c>"},"metadata":{"generateName":"","labels":{"z":"1","gold":"yes"},"name":"golden"}}"#;
    let (code, created) = raw("POST", "/api/v1/namespaces/gold/configmaps?fieldManager=golden", create).await;
    assert_eq!(code, 201, "{created}");
    let v: serde_json::Value = serde_json::from_str(&created).unwrap();
    let (uid, rv, ts) = (
        v["metadata"]["uid"].as_str().unwrap(),
        v["metadata"]["resourceVersion"].as_str().unwrap(),
        v["metadata"]["creationTimestamp"].as_str().unwrap(),
    );
    let item = format!(
        concat!(
            r#"{{"metadata":{{"name":"golden","namespace":"gold","uid":"{uid}","resourceVersion":"{rv}","creationTimestamp":"{ts}","labels":{{"gold":"yes","z":"1"}},"#,
            r#""managedFields":[{{"manager":"golden","operation":"Update","apiVersion":"v1","time":"{ts}","fieldsType":"FieldsV1","fieldsV1":{{"f:data":{{".":{{}},"f:a":{{}}}},"f:metadata":{{"f:labels":{{".":{{}},"f:gold":{{}},"f:z":{{}}}}}}}}}}]}},"#,
            r#""data":{{"a":"\u003cb\u0026c\u003e"}}}}"#
        ),
        uid = uid,
        rv = rv,
        ts = ts
    );
    let object = format!(r#"{{"kind":"ConfigMap","apiVersion":"v1",{}"#, &item[1..]);
    assert_eq!(created, format!("{object}\n"), "the create's answer");
    let (code, got) = raw("GET", "/api/v1/namespaces/gold/configmaps/golden", "").await;
    assert_eq!((code, got), (200, format!("{object}\n")), "a get (stored bytes, resourceVersion spliced in)");
    let (code, body) = raw("POST", "/api/v1/namespaces/gold/configmaps", create).await;
    assert_eq!(code, 409);
    assert_eq!(
        body,
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"configmaps \\\"golden\\\" already exists\",\"reason\":\"AlreadyExists\",\"details\":{\"name\":\"golden\",\"kind\":\"configmaps\"},\"code\":409}\n"
    );
    // A list decoded and encoded (a selector), and one copied from stored bytes.
    let (code, list) = raw("GET", "/api/v1/namespaces/gold/configmaps?labelSelector=gold%3Dyes", "").await;
    let list_rv = serde_json::from_str::<serde_json::Value>(&list).unwrap()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        (code, list),
        (
            200,
            format!(
                r#"{{"kind":"ConfigMapList","apiVersion":"v1","metadata":{{"resourceVersion":"{list_rv}"}},"items":[{item}]}}"#
            ) + "\n"
        )
    );
    let (code, all) = raw("GET", "/api/v1/namespaces/gold/configmaps?limit=500", "").await;
    assert_eq!(code, 200);
    assert!(all.starts_with(r#"{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":""#), "{all}");
    assert!(all.contains(&item) && all.ends_with("]}\n"), "{all}");
    // A watch event: `{"type":...,"object":...}` and a newline (watch.Event's order).
    let (code, events) = raw(
        "GET",
        "/api/v1/namespaces/gold/configmaps?watch=1&fieldSelector=metadata.name%3Dgolden&timeoutSeconds=1",
        "",
    )
    .await;
    assert_eq!((code, events), (200, format!(r#"{{"type":"ADDED","object":{object}}}"#) + "\n"));
}
