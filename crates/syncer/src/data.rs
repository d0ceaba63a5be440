//! What pods use: ConfigMaps and Secrets are copied to the host while a synced pod uses them
//! (and follow their virtual originals), claims are created on the host for the pods that
//! mount them and report the host's binding back; the sweep removes what nothing uses any
//! more (after a restart, say), and host pods whose virtual pod is gone.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::tenant::{Error, Key, Result, Tenant, gone, identity};
use crate::translate;

impl Tenant {
    /// A ConfigMap or Secret changed in the tenant: its host copy follows, if a pod uses it.
    pub(crate) async fn sync_data(&self, secret: bool, ns: &str, name: &str) -> Result<()> {
        let used =
            self.uses.lock().unwrap_or_else(|p| p.into_inner()).used(&(secret, ns.to_string(), name.to_string()));
        if used {
            self.copy_data(secret, ns, name).await?;
        }
        Ok(())
    }

    /// Copies one ConfigMap or Secret to the host (deleting the copy if the original is gone).
    pub(crate) async fn copy_data(&self, secret: bool, ns: &str, name: &str) -> Result<()> {
        let host_name = self.target.name(name, ns);
        let original = if secret {
            Api::<Secret>::namespaced(self.virt.clone(), ns)
                .get_opt(name)
                .await?
                .map(|s| vt_apiserver::object::to_value(s).unwrap_or(Value::Null))
        } else {
            Api::<ConfigMap>::namespaced(self.virt.clone(), ns)
                .get_opt(name)
                .await?
                .map(|c| vt_apiserver::object::to_value(c).unwrap_or(Value::Null))
        };
        let Some(mut original) = original else {
            // Pods that use a missing object wait for it on the host, as they would in kube.
            if secret {
                self.delete_host::<Secret>(&host_name, &DeleteParams::default()).await?;
            } else {
                self.delete_host::<ConfigMap>(&host_name, &DeleteParams::default()).await?;
            }
            return Ok(());
        };
        original["kind"] = json!(if secret { "Secret" } else { "ConfigMap" });
        let copy = translate::host_data_object(&original, &self.target);
        let pp = PatchParams::apply(crate::MANAGER).force();
        let r = if secret {
            Api::<Secret>::namespaced(self.host.client.clone(), &self.target.namespace)
                .patch(&host_name, &pp, &Patch::Apply(copy))
                .await
                .map(|_| ())
        } else {
            Api::<ConfigMap>::namespaced(self.host.client.clone(), &self.target.namespace)
                .patch(&host_name, &pp, &Patch::Apply(copy))
                .await
                .map(|_| ())
        };
        match r {
            Ok(()) => Ok(()),
            // An immutable object that changed: replace it.
            Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains("immutable") => {
                if secret {
                    self.delete_host::<Secret>(&host_name, &DeleteParams::default()).await?;
                } else {
                    self.delete_host::<ConfigMap>(&host_name, &DeleteParams::default()).await?;
                }
                Err(Error::Other("replacing an immutable host copy".into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A claim: created on the host when a synced pod uses it, deleted with its virtual
    /// original; the host's binding (phase, capacity, access modes) shows in the tenant.
    pub(crate) async fn sync_claim(&self, ns: &str, name: &str) -> Result<()> {
        let host_name = self.target.name(name, ns);
        let vapi: Api<PersistentVolumeClaim> = Api::namespaced(self.virt.clone(), ns);
        let hapi: Api<PersistentVolumeClaim> = Api::namespaced(self.host.client.clone(), &self.target.namespace);
        let virt = vapi.get_opt(name).await?;
        let host = self.host.claim(&self.target.namespace, &host_name);
        match (virt, host) {
            (None, Some(h)) => {
                if h.metadata.deletion_timestamp.is_none() {
                    self.delete_host::<PersistentVolumeClaim>(&host_name, &DeleteParams::default()).await?;
                }
                Ok(())
            }
            (None, None) => Ok(()),
            (Some(v), None) => {
                let used = self.uses.lock().unwrap_or_else(|p| p.into_inner()).claim_used(ns, name);
                if !used || v.metadata.deletion_timestamp.is_some() {
                    return Ok(());
                }
                let vjson = vt_apiserver::object::to_value(&v).unwrap_or(Value::Null);
                let claim: PersistentVolumeClaim =
                    vt_apiserver::object::from_value(translate::host_claim(&vjson, &self.target))
                        .map_err(|e| Error::Other(e.to_string()))?;
                match hapi.create(&PostParams::default(), &claim).await {
                    Ok(_) => Ok(()),
                    Err(e) if gone(&e) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            (Some(v), Some(h)) => {
                if v.metadata.deletion_timestamp.is_some() {
                    // The tenant deletes it (its pods are gone, or the protection finalizer
                    // would hold it): the host copy goes too.
                    if h.metadata.deletion_timestamp.is_none() {
                        self.delete_host::<PersistentVolumeClaim>(&host_name, &DeleteParams::default()).await?;
                    }
                    return Ok(());
                }
                let want = vt_apiserver::object::to_value(h.status.clone().unwrap_or_default()).unwrap_or(Value::Null);
                let have = vt_apiserver::object::to_value(v.status.clone().unwrap_or_default()).unwrap_or(Value::Null);
                if want != have && !want.as_object().is_some_and(|m| m.is_empty()) {
                    let patch = json!({"status": want});
                    match vapi.patch_status(name, &PatchParams::default(), &Patch::Merge(patch)).await {
                        Ok(_) => {}
                        Err(e) if gone(&e) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(())
            }
        }
    }

    /// Host objects of the tenant that nothing stands for any more: pods whose virtual pod is
    /// gone (they go through their own key), copies no synced pod uses.
    pub(crate) async fn sweep(self: &Arc<Self>) -> Result<()> {
        for h in self.host.pods_in(&self.target.namespace) {
            // Pods the syncer did not make (no virtual identity) are left alone.
            if let Some((ns, name)) = identity(h.as_ref())
                && self.virtual_pod(&ns, &name).is_none()
            {
                self.queue.add(Key::Pod(ns, name));
            }
        }
        // Copies are only judged once every virtual pod has been looked at (after a restart
        // the uses are rebuilt as pods are reconciled).
        if self.pods.list(None).iter().any(|p| {
            let key = (p.namespace().unwrap_or_default(), p.name_any());
            !self.uses.lock().unwrap_or_else(|e| e.into_inner()).by_pod.contains_key(&key)
                && !matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
                && p.metadata.deletion_timestamp.is_none()
        }) {
            self.queue.add_after(Key::Sweep, std::time::Duration::from_secs(5));
            return Ok(());
        }
        let lp = ListParams::default().labels(&format!("{}={}", crate::TENANT_LABEL, self.target.tenant));
        let cms =
            Api::<ConfigMap>::namespaced(self.host.client.clone(), &self.target.namespace).list_metadata(&lp).await?;
        for cm in cms.items {
            if let Some((ns, name)) = identity(&cm)
                && !self.uses.lock().unwrap_or_else(|e| e.into_inner()).used(&(false, ns, name))
            {
                self.delete_host::<ConfigMap>(&cm.name_any(), &DeleteParams::default()).await?;
            }
        }
        let secrets =
            Api::<Secret>::namespaced(self.host.client.clone(), &self.target.namespace).list_metadata(&lp).await?;
        for s in secrets.items {
            // Token Secrets belong to their host pod (the host's garbage collector takes them).
            if s.owner_references().iter().any(|o| o.kind == "Pod")
                || s.annotations().contains_key(crate::pods::REFRESH_ANNOTATION)
            {
                continue;
            }
            if let Some((ns, name)) = identity(&s)
                && !self.uses.lock().unwrap_or_else(|e| e.into_inner()).used(&(true, ns, name))
            {
                self.delete_host::<Secret>(&s.name_any(), &DeleteParams::default()).await?;
            }
        }
        Ok(())
    }
}
