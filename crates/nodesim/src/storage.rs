//! Simulated storage: every claim without a volume gets one at once — a PersistentVolume
//! `pvc-<claim uid>` of the requested size and access modes, labelled as simulated and bound to
//! the claim — as a dynamic provisioner and the volume binder would. Nothing is stored.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::{NodeSim, SIMULATED_LABEL};

async fn bind(sim: &NodeSim, claim: &PersistentVolumeClaim) -> Result<(), kube::Error> {
    let ns = claim.namespace().unwrap_or_default();
    let uid = claim.uid().unwrap_or_default();
    let spec = claim.spec.clone().unwrap_or_default();
    let size = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_else(|| "1Gi".into());
    let modes = spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]);
    let name = format!("pvc-{uid}");
    let pv: PersistentVolume = vt_apiserver::object::from_value(json!({
        "metadata": {"name": name, "labels": {SIMULATED_LABEL: "true"}},
        "spec": {"capacity": {"storage": size}, "accessModes": modes, "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": spec.storage_class_name,
            "hostPath": {"path": format!("/vt-simulated/{uid}")},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns,
                "name": claim.name_any(), "uid": uid}}
    }))
    .unwrap_or_default();
    let pvs: Api<PersistentVolume> = Api::all(sim.client());
    match pvs.create(&PostParams::default(), &pv).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e),
    }
    let _ =
        pvs.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Bound"}}))).await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(sim.client(), &ns);
    claims
        .patch(&claim.name_any(), &PatchParams::default(), &Patch::Merge(json!({"spec": {"volumeName": name}})))
        .await?;
    let status = json!({"status": {"phase": "Bound", "accessModes": modes, "capacity": {"storage": size}}});
    claims.patch_status(&claim.name_any(), &PatchParams::default(), &Patch::Merge(status)).await?;
    Ok(())
}

/// Binds claims until the process ends.
pub(crate) async fn run(sim: Arc<NodeSim>) {
    let claims: Api<PersistentVolumeClaim> = Api::all(sim.client());
    let mut events = Box::pin(watcher(claims, watcher::Config::default()).default_backoff().applied_objects());
    while let Some(ev) = events.next().await {
        let Ok(claim) = ev else { continue };
        let unbound = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()).unwrap_or("").is_empty();
        if unbound
            && claim.metadata.deletion_timestamp.is_none()
            && let Err(e) = bind(&sim, &claim).await
        {
            tracing::debug!(claim = %claim.name_any(), error = %e, "simulated storage: binding failed");
        }
    }
}
