//! What a new cluster starts with, as kube-apiserver creates it: the `default`, `kube-system`,
//! `kube-public` and `kube-node-lease` namespaces; the `kubernetes` Service with its Endpoints
//! and EndpointSlice pointing at this server; the system PriorityClasses; the default
//! ServiceCIDR; and the default RBAC roles and bindings (cluster-admin, admin, edit, view with
//! their aggregated rules, and the discovery and basic-user roles).
//!
//! Everything is written through the server's own API (so defaulting and validation apply)
//! and only if absent; the Endpoints are reconciled on every start since the server's address
//! may have changed.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use serde_json::{Value, json};

use crate::ApiServer;
use crate::auth::UserInfo;
use crate::status::ApiError;

/// The name of [`system_user`].
pub(crate) const SYSTEM_USER: &str = "system:apiserver";

/// The identity bootstrap and the in-process controllers act as.
pub(crate) fn system_user() -> UserInfo {
    UserInfo::new(SYSTEM_USER, ["system:masters"])
}

impl ApiServer {
    /// Sends a request to this server as the system user; returns the status and JSON body.
    pub(crate) async fn internal(&self, method: Method, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .header("user-agent", "vt-apiserver")
            .body(bytes)
            .expect("valid request");
        // Boxed: internal requests may come from inside a request (quota, eviction).
        let resp = Box::pin(self.handle_as(req, system_user())).await;
        let status = resp.status();
        let body = http_body_util::BodyExt::collect(resp.into_body()).await.map(|b| b.to_bytes()).unwrap_or_default();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn create_if_absent(&self, collection: &str, obj: Value) -> Result<(), ApiError> {
        let name = obj["metadata"]["name"].as_str().unwrap_or("");
        let (status, _) = self.internal(Method::GET, &format!("{collection}/{name}"), None).await;
        if status.is_success() {
            return Ok(());
        }
        let (status, body) = self.internal(Method::POST, collection, Some(&obj)).await;
        if status.is_success() || status == StatusCode::CONFLICT {
            return Ok(());
        }
        Err(ApiError::internal(format!(
            "bootstrap: creating {} in {collection} failed: {body}",
            obj["metadata"]["name"]
        )))
    }
}

const BOOTSTRAP_LABEL: &str = "rbac-defaults";

fn rbac_meta(name: &str, extra_labels: &[(&str, &str)]) -> Value {
    let mut labels = json!({"kubernetes.io/bootstrapping": BOOTSTRAP_LABEL});
    for (k, v) in extra_labels {
        labels[*k] = json!(v);
    }
    json!({"name": name, "labels": labels, "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}})
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn url_rule(urls: &[&str], verbs: &[&str]) -> Value {
    json!({"nonResourceURLs": urls, "verbs": verbs})
}

const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const READ: &[&str] = &["get", "list", "watch"];
const READ_WRITE: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

fn aggregate_to_view() -> Vec<Value> {
    vec![
        rule(
            &[""],
            &[
                "configmaps",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/status",
            ],
            READ,
        ),
        rule(
            &[""],
            &[
                "bindings",
                "events",
                "limitranges",
                "namespaces/status",
                "pods/log",
                "pods/status",
                "replicationcontrollers/status",
                "resourcequotas",
                "resourcequotas/status",
            ],
            READ,
        ),
        rule(&[""], &["namespaces"], READ),
        rule(&["discovery.k8s.io"], &["endpointslices"], READ),
        rule(
            &["apps"],
            &[
                "controllerrevisions",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "statefulsets",
                "statefulsets/scale",
                "statefulsets/status",
            ],
            READ,
        ),
        rule(&["autoscaling"], &["horizontalpodautoscalers", "horizontalpodautoscalers/status"], READ),
        rule(&["batch"], &["cronjobs", "cronjobs/status", "jobs", "jobs/status"], READ),
        rule(
            &["extensions"],
            &[
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "ingresses",
                "ingresses/status",
                "networkpolicies",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "replicationcontrollers/scale",
            ],
            READ,
        ),
        rule(&["policy"], &["poddisruptionbudgets", "poddisruptionbudgets/status"], READ),
        rule(&["networking.k8s.io"], &["ingresses", "ingresses/status", "networkpolicies"], READ),
    ]
}

fn aggregate_to_edit() -> Vec<Value> {
    vec![
        rule(&[""], &["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets", "services/proxy"], READ),
        rule(&[""], &["serviceaccounts"], &["impersonate"]),
        rule(&[""], &["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"], WRITE),
        rule(&[""], &["pods/eviction"], &["create"]),
        rule(
            &[""],
            &[
                "configmaps",
                "events",
                "persistentvolumeclaims",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "secrets",
                "serviceaccounts",
                "services",
                "services/proxy",
            ],
            WRITE,
        ),
        rule(&[""], &["serviceaccounts/token"], &["create"]),
        rule(
            &["apps"],
            &[
                "daemonsets",
                "deployments",
                "deployments/rollback",
                "deployments/scale",
                "replicasets",
                "replicasets/scale",
                "statefulsets",
                "statefulsets/scale",
            ],
            WRITE,
        ),
        rule(&["autoscaling"], &["horizontalpodautoscalers"], WRITE),
        rule(&["batch"], &["cronjobs", "jobs"], WRITE),
        rule(
            &["extensions"],
            &[
                "daemonsets",
                "deployments",
                "deployments/rollback",
                "deployments/scale",
                "ingresses",
                "networkpolicies",
                "replicasets",
                "replicasets/scale",
                "replicationcontrollers/scale",
            ],
            WRITE,
        ),
        rule(&["policy"], &["poddisruptionbudgets"], WRITE),
        rule(&["networking.k8s.io"], &["ingresses", "networkpolicies"], WRITE),
        rule(&["coordination.k8s.io"], &["leases"], READ_WRITE),
    ]
}

fn aggregate_to_admin() -> Vec<Value> {
    vec![
        rule(&["authorization.k8s.io"], &["localsubjectaccessreviews"], &["create"]),
        rule(&["rbac.authorization.k8s.io"], &["rolebindings", "roles"], READ_WRITE),
    ]
}

/// Appends the rules of `more` not already in `rules` (the aggregation controller's rule).
fn aggregate(mut rules: Vec<Value>, more: &[Value]) -> Vec<Value> {
    for r in more {
        if !rules.contains(r) {
            rules.push(r.clone());
        }
    }
    rules
}

fn cluster_roles() -> Vec<Value> {
    let view = aggregate_to_view();
    let edit = aggregate(aggregate_to_edit(), &view);
    let admin = aggregate(edit.clone(), &aggregate_to_admin());
    let sel = |l: &str| json!({"clusterRoleSelectors": [{"matchLabels": {l: "true"}}]});
    let role = |meta: Value, rules: Vec<Value>| json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta, "rules": rules});
    let aggregated = |meta: Value, rules: Vec<Value>, selector: Value| {
        let mut r = role(meta, rules);
        r["aggregationRule"] = selector;
        r
    };
    vec![
        role(rbac_meta("cluster-admin", &[]), vec![rule(&["*"], &["*"], &["*"]), url_rule(&["*"], &["*"])]),
        aggregated(rbac_meta("admin", &[]), admin, sel("rbac.authorization.k8s.io/aggregate-to-admin")),
        aggregated(
            rbac_meta("edit", &[("rbac.authorization.k8s.io/aggregate-to-admin", "true")]),
            edit,
            sel("rbac.authorization.k8s.io/aggregate-to-edit"),
        ),
        aggregated(
            rbac_meta("view", &[("rbac.authorization.k8s.io/aggregate-to-edit", "true")]),
            view.clone(),
            sel("rbac.authorization.k8s.io/aggregate-to-view"),
        ),
        role(
            rbac_meta("system:aggregate-to-admin", &[("rbac.authorization.k8s.io/aggregate-to-admin", "true")]),
            aggregate_to_admin(),
        ),
        role(
            rbac_meta("system:aggregate-to-edit", &[("rbac.authorization.k8s.io/aggregate-to-edit", "true")]),
            aggregate_to_edit(),
        ),
        role(rbac_meta("system:aggregate-to-view", &[("rbac.authorization.k8s.io/aggregate-to-view", "true")]), view),
        role(
            rbac_meta("system:discovery", &[]),
            vec![url_rule(
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
                &["get"],
            )],
        ),
        role(
            rbac_meta("system:basic-user", &[]),
            vec![
                rule(&["authorization.k8s.io"], &["selfsubjectaccessreviews", "selfsubjectrulesreviews"], &["create"]),
                rule(&["authentication.k8s.io"], &["selfsubjectreviews"], &["create"]),
            ],
        ),
        role(
            rbac_meta("system:public-info-viewer", &[]),
            vec![url_rule(&["/healthz", "/livez", "/readyz", "/version", "/version/"], &["get"])],
        ),
        role(
            rbac_meta("system:monitoring", &[]),
            vec![url_rule(
                &["/healthz", "/healthz/*", "/livez", "/livez/*", "/metrics", "/metrics/slis", "/readyz", "/readyz/*"],
                &["get"],
            )],
        ),
        // What an aggregated API server's ServiceAccount is bound to, to check tokens and ask
        // this server's authorizer (delegated authentication and authorization).
        role(
            rbac_meta("system:auth-delegator", &[]),
            vec![
                rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
                rule(&["authorization.k8s.io"], &["subjectaccessreviews"], &["create"]),
            ],
        ),
        role(
            rbac_meta("system:service-account-issuer-discovery", &[]),
            vec![url_rule(
                &[
                    "/.well-known/openid-configuration",
                    "/.well-known/openid-configuration/",
                    "/openid/v1/jwks",
                    "/openid/v1/jwks/",
                ],
                &["get"],
            )],
        ),
    ]
}

fn cluster_role_bindings() -> Vec<Value> {
    let group = |n: &str| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": n});
    let binding = |name: &str, subjects: Vec<Value>| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": rbac_meta(name, &[]),
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name}, "subjects": subjects})
    };
    vec![
        binding("cluster-admin", vec![group("system:masters")]),
        binding("system:discovery", vec![group("system:authenticated")]),
        binding("system:basic-user", vec![group("system:authenticated")]),
        binding("system:public-info-viewer", vec![group("system:authenticated"), group("system:unauthenticated")]),
        binding("system:monitoring", vec![group("system:monitoring")]),
        binding("system:service-account-issuer-discovery", vec![group("system:serviceaccounts")]),
    ]
}

/// Creates the cluster's initial objects (idempotent).
pub(crate) async fn run(api: &ApiServer) -> Result<(), ApiError> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        api.create_if_absent(
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await?;
    }
    let addr = api.config().advertise;
    let cluster_ip = api.config().cluster_ips.first_ip().map(|ip| ip.to_string()).unwrap_or_default();
    let mut svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "ipFamilyPolicy": "SingleStack", "sessionAffinity": "None",
                 "ports": [{"name": "https", "protocol": "TCP", "port": 443, "targetPort": addr.port()}]},
    });
    if !cluster_ip.is_empty() {
        svc["spec"]["clusterIP"] = json!(cluster_ip);
    }
    api.create_if_absent("/api/v1/namespaces/default/services", svc).await?;
    reconcile_endpoints(api).await?;
    for (name, value, description) in [
        (
            "system-node-critical",
            2_000_001_000i64,
            "Used for system critical pods that must not be moved from their current node.",
        ),
        (
            "system-cluster-critical",
            2_000_000_000,
            "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
        ),
    ] {
        api.create_if_absent(
            "/apis/scheduling.k8s.io/v1/priorityclasses",
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name}, "value": value, "description": description}),
        )
        .await?;
    }
    if let Some(cidr) = api.config().cluster_ips.cidr() {
        api.create_if_absent(
            "/apis/networking.k8s.io/v1/servicecidrs",
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR", "metadata": {"name": "kubernetes"}, "spec": {"cidrs": [cidr]}}),
        )
        .await?;
    }
    for role in cluster_roles() {
        api.create_if_absent("/apis/rbac.authorization.k8s.io/v1/clusterroles", role).await?;
    }
    for b in cluster_role_bindings() {
        api.create_if_absent("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", b).await?;
    }
    // Aggregated API servers read the front proxy's trust from this ConfigMap.
    let mut reader = rbac_meta("extension-apiserver-authentication-reader", &[]);
    reader["namespace"] = json!("kube-system");
    let mut rule = rule(&[""], &["configmaps"], &["get", "list", "watch"]);
    rule["resourceNames"] = json!(["extension-apiserver-authentication"]);
    api.create_if_absent(
        "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/roles",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": reader, "rules": [rule]}),
    )
    .await?;
    Ok(())
}

/// Points the `kubernetes` Endpoints and EndpointSlice at this server.
async fn reconcile_endpoints(api: &ApiServer) -> Result<(), ApiError> {
    let addr = api.config().advertise;
    let ip = addr.ip().to_string();
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "https", "port": addr.port(), "protocol": "TCP"}]}],
    });
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": if addr.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": addr.port(), "protocol": "TCP"}],
    });
    for (path, obj) in [
        ("/api/v1/namespaces/default/endpoints/kubernetes", endpoints),
        ("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes", slice),
    ] {
        let (status, current) = api.internal(Method::GET, path, None).await;
        let collection = path.rsplit_once('/').map(|(c, _)| c).unwrap_or(path);
        if status == StatusCode::NOT_FOUND {
            api.create_if_absent(collection, obj).await?;
            continue;
        }
        let differs =
            ["subsets", "endpoints", "ports"].iter().any(|k| obj.get(*k).is_some() && current.get(*k) != obj.get(*k));
        if differs {
            let mut updated = current.clone();
            for k in ["subsets", "endpoints", "ports", "addressType"] {
                if let Some(v) = obj.get(k) {
                    updated[k] = v.clone();
                }
            }
            let (status, body) = api.internal(Method::PUT, path, Some(&updated)).await;
            if !status.is_success() {
                return Err(ApiError::internal(format!("bootstrap: updating {path} failed: {body}")));
            }
        }
    }
    Ok(())
}
