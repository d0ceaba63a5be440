//! Pods: a virtual pod becomes a host pod (after what it uses), the host pod's node and status
//! come back, deletions go both ways, as a kubelet's would.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::{Value, json};

use crate::guard::{as_seen, pinned, unless_missing};
use crate::tenant::{Error, Result, Tenant, gone};
use crate::translate::{self, References};

/// Where a synced pod's token Secret records when its tokens must be minted again.
pub(crate) const REFRESH_ANNOTATION: &str = "vt.dev/refresh-after";

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    vt_apiserver::object::to_value(v).unwrap_or(Value::Null)
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// Whether the virtual pod has run on the host (so a missing host copy means it was lost).
fn has_run(v: &Pod) -> bool {
    let s = v.status.as_ref();
    v.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some_and(|n| !n.is_empty())
        && s.is_some_and(|s| s.host_ip.is_some() || s.start_time.is_some())
}

impl Tenant {
    /// The whole virtual pod (the cache holds only what the syncer compares; see
    /// `tenant::trim_pod`), if it is still the same pod.
    async fn full(&self, v: &Pod) -> Result<Option<Pod>> {
        let api: Api<Pod> = Api::namespaced(self.virt.clone(), &v.namespace().unwrap_or_default());
        Ok(api.get_opt(&v.name_any()).await?.filter(|p| p.uid() == v.uid()))
    }

    pub(crate) async fn sync_pod(self: &Arc<Self>, ns: &str, name: &str) -> Result<()> {
        let host_name = self.target.name(name, ns);
        let v = self.virtual_pod(ns, name);
        let h = self.host.pod(&self.target.namespace, &host_name);
        let key = (ns.to_string(), name.to_string());
        // A host pod standing for another virtual pod of the same name (deleted and created
        // again while the syncer was away) goes first.
        if let (Some(v), Some(h)) = (&v, &h) {
            let huid = h.annotations().get(crate::UID_ANNOTATION).cloned().unwrap_or_default();
            if Some(huid.as_str()) != v.metadata.uid.as_deref() {
                if h.metadata.deletion_timestamp.is_none() {
                    self.delete_host_pod(h, 0).await?;
                }
                return Ok(());
            }
        }
        match (v, h) {
            (None, None) => {
                self.release(&key).await;
                Ok(())
            }
            (None, Some(h)) => {
                if h.metadata.deletion_timestamp.is_none() {
                    self.delete_host_pod(&h, 0).await?;
                }
                Ok(())
            }
            (Some(v), h) if v.metadata.deletion_timestamp.is_some() => {
                match h {
                    Some(h) if h.metadata.deletion_timestamp.is_none() => {
                        let grace = v.metadata.deletion_grace_period_seconds.unwrap_or(30);
                        self.delete_host_pod(&h, grace).await?;
                    }
                    // Still stopping on the host: its deletion will bring us back.
                    Some(_) => {}
                    None => {
                        // Gone from the host: finalize the virtual pod, as a kubelet does.
                        let api: Api<Pod> = Api::namespaced(self.virt.clone(), ns);
                        let dp = DeleteParams {
                            grace_period_seconds: Some(0),
                            preconditions: Some(Preconditions { uid: v.uid(), resource_version: None }),
                            ..Default::default()
                        };
                        match api.delete(name, &dp).await {
                            Ok(_) => {}
                            Err(e) if gone(&e) => {}
                            Err(e) => return Err(e.into()),
                        }
                        self.release(&key).await;
                    }
                }
                Ok(())
            }
            (Some(v), None) => {
                if matches!(phase(&v), "Succeeded" | "Failed") {
                    self.release(&key).await;
                    return Ok(());
                }
                if has_run(&v) {
                    self.lost(&v).await?;
                    self.release(&key).await;
                    return Ok(());
                }
                self.create_host_pod(&v).await
            }
            (Some(v), Some(h)) => self.update_pod(&v, &h).await,
        }
    }

    async fn delete_host_pod(&self, h: &Pod, grace: i64) -> Result<()> {
        let api: Api<Pod> = Api::namespaced(self.host.client.clone(), &self.target.namespace);
        unless_missing(api.delete(&h.name_any(), &as_seen(h, Some(grace.max(0) as u32))).await)
    }

    /// Forgets what a pod used, deleting host copies nothing else uses.
    async fn release(&self, key: &(String, String)) {
        self.forget_written(&format!("pod/{}/{}", key.0, key.1));
        let unused = self.uses.lock().unwrap_or_else(|p| p.into_inner()).set(key.clone(), None);
        self.token_due.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
        for (secret, ns, name) in unused {
            let host = self.target.name(&name, &ns);
            let r = if secret {
                self.delete_host::<Secret>(&host, &DeleteParams::default()).await
            } else {
                self.delete_host::<k8s_openapi::api::core::v1::ConfigMap>(&host, &DeleteParams::default()).await
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, "could not delete an unused host copy");
            }
        }
    }

    /// The tenant is being paused: its host pods are about to be deleted, as if their nodes
    /// powered off. Its running pods go back to Pending (no IPs, containers waiting), so the
    /// syncer runs them again on resume — as a kubelet restarts its pods after a reboot —
    /// rather than counting them lost.
    pub async fn power_off(&self) {
        for v in self.pods.list(None) {
            if matches!(phase(&v), "Succeeded" | "Failed") || v.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Ok(Some(v)) = self.full(&v).await else { continue };
            let now = crate::now();
            let mut status = to_value(&v.status.clone().unwrap_or_default());
            if let Some(s) = status.as_object_mut() {
                for k in ["hostIP", "hostIPs", "podIP", "podIPs", "startTime", "reason", "message"] {
                    s.remove(k);
                }
                s.insert("phase".into(), json!("Pending"));
                let conds: Vec<Value> = s
                    .get("conditions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        let mut c = c.clone();
                        if c["type"] != "PodScheduled" {
                            c["status"] = json!("False");
                            c["reason"] = json!("TenantPaused");
                            c["lastTransitionTime"] = json!(now);
                        }
                        c
                    })
                    .collect();
                s.insert("conditions".into(), Value::Array(conds));
                for cs in s.get_mut("containerStatuses").and_then(Value::as_array_mut).into_iter().flatten() {
                    cs["ready"] = json!(false);
                    cs["started"] = json!(false);
                    cs["state"] = json!({"waiting": {"reason": "TenantPaused"}});
                }
            }
            if let Err(e) = self.write_status(&v, status).await {
                tracing::debug!(pod = %v.name_any(), error = %e, "could not mark a pod paused");
            }
        }
        self.written.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// A pod that ran but whose host copy is gone (deleted on the host, its node lost): it
    /// fails, as an evicted pod does, and its controller replaces it.
    async fn lost(&self, v: &Pod) -> Result<()> {
        let Some(v) = self.full(v).await? else { return Ok(()) };
        let v = &v;
        let now = crate::now();
        let mut status = to_value(&v.status.clone().unwrap_or_default());
        status["phase"] = json!("Failed");
        status["reason"] = json!("Evicted");
        status["message"] = json!("The pod's copy on the host cluster was deleted.");
        let mut conds: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
        for c in conds.iter_mut() {
            if matches!(c["type"].as_str(), Some("Ready" | "ContainersReady")) {
                c["status"] = json!("False");
                c["lastTransitionTime"] = json!(now);
            }
        }
        conds.push(json!({"type": "DisruptionTarget", "status": "True", "reason": "DeletionByHost",
            "message": "the host cluster deleted the pod", "lastTransitionTime": now}));
        status["conditions"] = Value::Array(conds);
        for cs in status["containerStatuses"].as_array_mut().into_iter().flatten() {
            cs["ready"] = json!(false);
            cs["started"] = json!(false);
            if cs["state"].get("running").is_some() {
                cs["state"] = json!({"terminated": {"exitCode": 137, "reason": "Error", "finishedAt": now}});
            }
        }
        self.write_status(v, status).await
    }

    /// Sets a virtual pod's status: a merge patch of the whole status, with the keys it no
    /// longer has set to null (lists such as conditions are replaced whole by a merge patch).
    async fn write_status(&self, v: &Pod, status: Value) -> Result<()> {
        let ns = v.namespace().unwrap_or_default();
        let patch = translate::replacing(&to_value(&v.status.clone().unwrap_or_default()), status);
        let api: Api<Pod> = Api::namespaced(self.virt.clone(), &ns);
        match api.patch_status(&v.name_any(), &PatchParams::default(), &Patch::Merge(json!({"status": patch}))).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Reports why a pod is not synced: a Warning event and the pod's PodScheduled condition.
    async fn refuse(&self, v: &Pod, refusal: &translate::Refusal) -> Result<()> {
        let uid = v.uid().unwrap_or_default();
        {
            let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
            if refused.get(&uid) == Some(&refusal.message) {
                return Ok(());
            }
            refused.insert(uid.clone(), refusal.message.clone());
        }
        tracing::info!(tenant = %self.target.tenant, pod = %v.name_any(), reason = refusal.reason, "pod not synced: {}", refusal.message);
        let involved =
            json!({"kind": "Pod", "apiVersion": "v1", "namespace": v.namespace(), "name": v.name_any(), "uid": uid});
        self.warn(involved, refusal.reason, &refusal.message).await;
        let mut status = to_value(&v.status.clone().unwrap_or_default());
        status["phase"] = json!("Pending");
        status["reason"] = json!(refusal.reason);
        status["message"] = json!(refusal.message);
        let mut conds: Vec<Value> = status["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["type"] != "PodScheduled")
            .collect();
        conds.push(json!({"type": "PodScheduled", "status": "False", "reason": refusal.reason,
            "message": refusal.message, "lastTransitionTime": crate::now()}));
        status["conditions"] = Value::Array(conds);
        self.write_status(v, status).await
    }

    async fn create_host_pod(self: &Arc<Self>, v: &Pod) -> Result<()> {
        let Some(v) = self.full(v).await? else { return Ok(()) };
        let v = &v;
        let ns = v.namespace().unwrap_or_default();
        let name = v.name_any();
        let vjson = to_value(v);
        let mut host_pod = match translate::host_pod(&vjson, &self.target, &self.services_in(&ns), &self.pool_nodes()) {
            Ok(p) => p,
            Err(refusal) => return self.refuse(v, &refusal).await,
        };
        for (k, val) in self.isolation_labels(&ns, v.labels()) {
            host_pod["metadata"]["labels"][k] = val;
        }
        let refs = translate::references(&vjson);
        // What it uses first, so it starts without waiting for them.
        self.uses.lock().unwrap_or_else(|p| p.into_inner()).set((ns.clone(), name.clone()), Some(refs.clone()));
        for cm in &refs.configmaps {
            self.copy_data(false, &ns, cm).await?;
        }
        for s in &refs.secrets {
            self.copy_data(true, &ns, s).await?;
        }
        for c in &refs.claims {
            self.sync_claim(&ns, c).await?;
        }
        let host_name = host_pod["metadata"]["name"].as_str().unwrap_or("").to_string();
        if !refs.tokens.is_empty() {
            self.mint_tokens(v, &refs, &host_name).await?;
        }
        let api: Api<Pod> = Api::namespaced(self.host.client.clone(), &self.target.namespace);
        let pod: Pod =
            vt_apiserver::object::from_value(host_pod).map_err(|e| Error::Other(format!("host pod: {e}")))?;
        match api.create(&PostParams::default(), &pod).await {
            Ok(created) => {
                tracing::debug!(tenant = %self.target.tenant, pod = %name, host = %host_name, "pod synced");
                // The token Secret goes with the host pod.
                if !refs.tokens.is_empty() {
                    let owner = json!({"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Pod",
                        "name": host_name, "uid": created.uid()}]}});
                    let secrets: Api<Secret> = Api::namespaced(self.host.client.clone(), &self.target.namespace);
                    let _ = secrets
                        .patch(&translate::token_secret_name(&host_name), &PatchParams::default(), &Patch::Merge(owner))
                        .await;
                }
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422 => {
                // The host refused it (its quota, its Pod Security, its admission): say so.
                let refusal = translate::Refusal { reason: "HostRefused", message: s.message.clone() };
                self.refuse(v, &refusal).await?;
                // Quotas free up: try again later.
                self.queue.add_after(crate::tenant::Key::Pod(ns, name), Duration::from_secs(10));
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Mints the pod's ServiceAccount tokens on the virtual API server (TokenRequest, bound to
    /// the pod) into its host token Secret, and schedules the next refresh at 80% of the
    /// shortest lifetime, as a kubelet refreshes projected tokens.
    async fn mint_tokens(self: &Arc<Self>, v: &Pod, refs: &References, host_name: &str) -> Result<()> {
        let ns = v.namespace().unwrap_or_default();
        let sa = v.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
        let mut data = serde_json::Map::new();
        let mut shortest = i64::MAX;
        for tok in &refs.tokens {
            let mut spec = json!({"expirationSeconds": tok.expiration_seconds.max(600),
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": v.name_any(), "uid": v.uid()}});
            if !tok.audience.is_empty() {
                spec["audiences"] = json!([tok.audience]);
            }
            let req = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
            let body = serde_json::to_vec(&req).map_err(|e| Error::Other(e.to_string()))?;
            let http = http::Request::post(format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token"))
                .header("content-type", "application/json")
                .body(body)
                .map_err(|e| Error::Other(e.to_string()))?;
            let answer: Value = self.virt.request(http).await?;
            let token = answer.pointer("/status/token").and_then(Value::as_str).unwrap_or("").to_string();
            let lifetime =
                answer.pointer("/spec/expirationSeconds").and_then(Value::as_i64).unwrap_or(tok.expiration_seconds);
            shortest = shortest.min(lifetime);
            use base64::Engine;
            data.insert(tok.key.clone(), json!(base64::engine::general_purpose::STANDARD.encode(token)));
        }
        let refresh = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(shortest.max(60) * 8 / 10);
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": translate::token_secret_name(host_name), "namespace": self.target.namespace,
                "labels": {crate::TENANT_LABEL: self.target.tenant, crate::NAMESPACE_LABEL: ns},
                "annotations": {crate::NAME_ANNOTATION: v.name_any(), crate::NAMESPACE_ANNOTATION: ns,
                    crate::UID_ANNOTATION: v.uid(), REFRESH_ANNOTATION: crate::timestamp(refresh)}},
            "type": "Opaque", "data": data});
        let api: Api<Secret> = Api::namespaced(self.host.client.clone(), &self.target.namespace);
        let pp = PatchParams::apply(crate::MANAGER).force();
        api.patch(&translate::token_secret_name(host_name), &pp, &Patch::Apply(secret)).await?;
        self.token_due.lock().unwrap_or_else(|p| p.into_inner()).insert((ns.clone(), v.name_any()), refresh);
        let wait = refresh.duration_since(jiff::Timestamp::now()).unsigned_abs();
        self.queue.add_after(crate::tenant::Key::Pod(ns, v.name_any()), wait + Duration::from_secs(1));
        Ok(())
    }

    /// Adds a virtual pod's ephemeral containers to its host pod, or says (once) why not.
    async fn sync_ephemeral(&self, v: &Pod, h: &Pod) -> Result<()> {
        let Some(full) = self.full(v).await? else { return Ok(()) };
        let ns = v.namespace().unwrap_or_default();
        let vjson = to_value(&full);
        let pool = self.pool_nodes();
        match translate::host_ephemeral_containers(&vjson, &self.target, &self.services_in(&ns), &pool) {
            Ok(list) => {
                let api: Api<Pod> = Api::namespaced(self.host.client.clone(), &self.target.namespace);
                let patch = Patch::Strategic(pinned(json!({"spec": {"ephemeralContainers": list}}), h));
                unless_missing(
                    api.patch_subresource("ephemeralcontainers", &h.name_any(), &PatchParams::default(), &patch).await,
                )
            }
            Err(refusal) => {
                let key = format!("{}/ephemeral", v.uid().unwrap_or_default());
                let message = format!("ephemeral container not started: {}", refusal.message);
                let new = self.refused.lock().unwrap_or_else(|p| p.into_inner()).insert(key, message.clone())
                    != Some(message.clone());
                if new {
                    let involved = json!({"kind": "Pod", "apiVersion": "v1", "namespace": ns, "name": v.name_any(),
                        "uid": v.uid()});
                    self.warn(involved, refusal.reason, &message).await;
                }
                Ok(())
            }
        }
    }

    /// A synced pod: the host's node and status come back; labels, annotations and images go.
    async fn update_pod(self: &Arc<Self>, v: &Pod, h: &Pod) -> Result<()> {
        let ns = v.namespace().unwrap_or_default();
        let name = v.name_any();
        let vjson = to_value(v);
        let key = (ns.clone(), name.clone());
        // What it uses was recorded when it was synced; after a restart, read it again.
        let known = self.uses.lock().unwrap_or_else(|p| p.into_inner()).by_pod.get(&key).cloned();
        let refs = match known {
            Some(r) => r,
            None => {
                let Some(full) = self.full(v).await? else { return Ok(()) };
                let refs = translate::references(&to_value(&full));
                self.uses.lock().unwrap_or_else(|p| p.into_inner()).set(key.clone(), Some(refs.clone()));
                refs
            }
        };
        // Tokens due for a refresh (after a restart, the Secret says when).
        if !refs.tokens.is_empty() && h.metadata.deletion_timestamp.is_none() {
            let due = self.token_due.lock().unwrap_or_else(|p| p.into_inner()).get(&key).copied();
            let due = match due {
                Some(d) => Some(d),
                None => {
                    let api: Api<Secret> = Api::namespaced(self.host.client.clone(), &self.target.namespace);
                    api.get_opt(&translate::token_secret_name(&h.name_any()))
                        .await?
                        .and_then(|s| s.annotations().get(REFRESH_ANNOTATION).and_then(|t| t.parse().ok()))
                }
            };
            match due {
                Some(d) if d > jiff::Timestamp::now() => {
                    self.token_due.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), d);
                }
                _ => self.mint_tokens(v, &refs, &h.name_any()).await?,
            }
        }
        // Metadata and images the tenant changed (and the isolation its policies give it).
        let mut want = translate::host_meta(&vjson, &self.target);
        for (k, val) in self.isolation_labels(&v.namespace().unwrap_or_default(), v.labels()) {
            want["labels"][k] = val;
        }
        let none = Default::default();
        let meta = translate::host_meta_patch(
            &want,
            h.metadata.labels.as_ref().unwrap_or(&none),
            h.metadata.annotations.as_ref().unwrap_or(&none),
        );
        let mut patch = json!({});
        if meta != json!({}) {
            patch["metadata"] = meta;
        }
        let images = |p: &Pod| -> Vec<(String, String)> {
            p.spec
                .as_ref()
                .map(|s| s.containers.iter().map(|c| (c.name.clone(), c.image.clone().unwrap_or_default())).collect())
                .unwrap_or_default()
        };
        if images(v) != images(h) && h.metadata.deletion_timestamp.is_none() {
            let containers: Vec<Value> = images(v).into_iter().map(|(n, i)| json!({"name": n, "image": i})).collect();
            patch["spec"] = json!({"containers": containers});
        }
        if patch != json!({}) {
            let api: Api<Pod> = Api::namespaced(self.host.client.clone(), &self.target.namespace);
            unless_missing(
                api.patch(&h.name_any(), &PatchParams::default(), &Patch::Strategic(pinned(patch, h))).await,
            )?;
        }
        // Debug containers the tenant added (`kubectl debug`): to the host pod, translated and
        // checked as its containers are.
        let names = |p: &Pod| -> Vec<String> {
            let list = p.spec.as_ref().and_then(|s| s.ephemeral_containers.as_ref());
            list.into_iter().flatten().map(|c| c.name.clone()).collect()
        };
        let have = names(h);
        if names(v).iter().any(|n| !have.contains(n)) && h.metadata.deletion_timestamp.is_none() {
            self.sync_ephemeral(v, h).await?;
        }
        // The node it runs on, then its status.
        let host_node = h.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty());
        let virtual_node = v.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty());
        if let (Some(node), None) = (&host_node, &virtual_node) {
            self.sync_node(node).await?;
            let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
            let api: Api<Pod> = Api::namespaced(self.virt.clone(), &ns);
            match api.create_subresource::<Value, Value>("binding", &name, &PostParams::default(), &binding).await {
                Ok(_) => {}
                Err(e) if gone(&e) => {}
                Err(e) => return Err(e.into()),
            }
            // The binding changed the pod: its next event brings the status.
            return Ok(());
        }
        let Some(host_status) = self.host.take_status(&self.target.namespace, &h.name_any()) else { return Ok(()) };
        let desired = translate::virtual_pod_status(&json!({"status": host_status}));
        let target = format!("pod/{ns}/{name}");
        if desired.as_object().is_some_and(|s| s.is_empty()) || !self.unwritten(&target, &desired) {
            return Ok(());
        }
        let full = match self.full(v).await {
            Ok(Some(full)) => full,
            Ok(None) => return Ok(()),
            Err(e) => {
                self.host.put_back_status(&self.target.namespace, &h.name_any(), host_status);
                return Err(e);
            }
        };
        let current = to_value(&full.status.clone().unwrap_or_default());
        let mut status = desired.clone();
        // The QoS class is the virtual API server's to compute (the host's may differ by the
        // host namespace's LimitRange defaults).
        match current.get("qosClass") {
            Some(q) => status["qosClass"] = q.clone(),
            None => _ = status.as_object_mut().map(|s| s.remove("qosClass")),
        }
        if status != current {
            self.refused.lock().unwrap_or_else(|p| p.into_inner()).remove(&v.uid().unwrap_or_default());
            if let Err(e) = self.write_status(&full, status).await {
                self.host.put_back_status(&self.target.namespace, &h.name_any(), host_status);
                return Err(e);
            }
        }
        self.wrote(&target, &desired);
        Ok(())
    }
}
