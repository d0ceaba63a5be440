//! Every namespace gets a `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap with
//! the cluster's CA (what kube-controller-manager's serviceaccount and root-ca-cert-publisher
//! controllers do); both come back if deleted.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::util::{self, Result};

struct Ctx {
    client: Client,
    root_ca: String,
}

/// Runs the controller until the client's server goes away.
pub async fn run(client: Client, root_ca: String) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let sas: Api<ServiceAccount> = Api::all(client.clone());
    let cms: Api<ConfigMap> = Api::all(client.clone());
    let to_ns = |ns: Option<String>| ns.map(|n| ObjectRef::<Namespace>::new(&n));
    Controller::new(namespaces, watcher::Config::default())
        .watches(sas, watcher::Config::default().fields("metadata.name=default"), move |sa| to_ns(sa.namespace()))
        .watches(cms, watcher::Config::default().fields("metadata.name=kube-root-ca.crt"), move |cm| {
            to_ns(cm.namespace())
        })
        .run(reconcile, util::retry, Arc::new(Ctx { client, root_ca }))
        .for_each(|_| async {})
        .await;
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action> {
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let sas: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &name);
    if sas.get_opt("default").await?.is_none() {
        let sa: ServiceAccount =
            vt_apiserver::object::from_value(json!({"metadata": {"name": "default"}})).unwrap_or_default();
        match sas.create(&PostParams::default(), &sa).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 403 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &name);
    let current = cms.get_opt("kube-root-ca.crt").await?;
    let has = current.as_ref().and_then(|c| c.data.as_ref()).and_then(|d| d.get("ca.crt")) == Some(&ctx.root_ca);
    if !has {
        let cm: ConfigMap = vt_apiserver::object::from_value(json!({
            "metadata": {"name": "kube-root-ca.crt",
                "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
            "data": {"ca.crt": ctx.root_ca},
        }))
        .unwrap_or_default();
        let result = match current {
            Some(_) => cms.replace("kube-root-ca.crt", &PostParams::default(), &cm).await.map(|_| ()),
            None => cms.create(&PostParams::default(), &cm).await.map(|_| ()),
        };
        match result {
            Ok(()) => {}
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 403 || e.code == 422 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::await_change())
}
