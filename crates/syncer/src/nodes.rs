//! Nodes: every node of the tenant's pool appears in the tenant (so its scheduler-aware
//! tools and DaemonSets see where pods can run), stripped of host-only details; nodes that
//! leave the pool or the host leave the tenant.

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

use crate::tenant::{Error, Result, Tenant, gone};
use crate::translate;

/// Marks the virtual nodes the syncer keeps (other nodes of the tenant are left alone).
pub const SYNCED_ANNOTATION: &str = "vt.dev/host-node";

/// Heartbeat times change constantly and mean nothing in the tenant: left out of comparisons
/// and copies, so an idle node costs no writes.
fn without_heartbeats(mut v: Value) -> Value {
    if let Some(conds) = v.pointer_mut("/status/conditions").and_then(Value::as_array_mut) {
        for c in conds {
            if let Some(c) = c.as_object_mut() {
                c.remove("lastHeartbeatTime");
            }
        }
    }
    v
}

impl Tenant {
    pub(crate) async fn sync_node(&self, name: &str) -> Result<()> {
        let api: Api<Node> = Api::all(self.virt.clone());
        let host = self.host.node(name).map(|n| vt_apiserver::object::to_value(n.as_ref()).unwrap_or(Value::Null));
        let wanted = host.filter(|h| self.target.owns_node(h)).map(|h| without_heartbeats(translate::virtual_node(&h)));
        let current = api.get_opt(name).await?;
        let ours = current.as_ref().is_some_and(|c| c.annotations().contains_key(SYNCED_ANNOTATION));
        match (wanted, current) {
            (None, Some(_)) if ours => match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(e) if gone(&e) => Ok(()),
                Err(e) => Err(e.into()),
            },
            (None, _) => Ok(()),
            (Some(mut want), None) => {
                want["metadata"]["annotations"] = json!({SYNCED_ANNOTATION: "true"});
                let node: Node =
                    vt_apiserver::object::from_value(want.clone()).map_err(|e| Error::Other(e.to_string()))?;
                let created = match api.create(&PostParams::default(), &node).await {
                    Ok(n) => n,
                    Err(e) if gone(&e) => return Ok(()),
                    Err(e) => return Err(e.into()),
                };
                let mut obj = vt_apiserver::object::to_value(&created).unwrap_or(Value::Null);
                obj["status"] = want["status"].clone();
                let node: Node = vt_apiserver::object::from_value(obj).map_err(|e| Error::Other(e.to_string()))?;
                api.replace_status(name, &PostParams::default(), &node).await?;
                Ok(())
            }
            (Some(want), Some(cur)) => {
                if !ours {
                    // A node the tenant made itself with the same name: not ours to change.
                    return Ok(());
                }
                let cur_v = without_heartbeats(vt_apiserver::object::to_value(&cur).unwrap_or(Value::Null));
                let labels_differ =
                    cur_v.pointer("/metadata/labels").unwrap_or(&json!({})) != &want["metadata"]["labels"];
                let spec_differs = cur_v.get("spec").unwrap_or(&json!({})) != &want["spec"];
                if labels_differ || spec_differs {
                    let mut obj = cur_v.clone();
                    obj["metadata"]["labels"] = want["metadata"]["labels"].clone();
                    obj["spec"] = want["spec"].clone();
                    let node: Node = vt_apiserver::object::from_value(obj).map_err(|e| Error::Other(e.to_string()))?;
                    api.replace(name, &PostParams::default(), &node).await?;
                    return Ok(());
                }
                if cur_v.get("status") != want.get("status") && self.unwritten(&format!("node/{name}"), &want["status"])
                {
                    let mut obj = vt_apiserver::object::to_value(&cur).unwrap_or(Value::Null);
                    obj["status"] = want["status"].clone();
                    let node: Node = vt_apiserver::object::from_value(obj).map_err(|e| Error::Other(e.to_string()))?;
                    api.replace_status(name, &PostParams::default(), &node).await?;
                    self.wrote(&format!("node/{name}"), &want["status"]);
                }
                Ok(())
            }
        }
    }
}
