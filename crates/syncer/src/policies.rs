//! The NetworkPolicy sync loop: each virtual policy's host copy ([`crate::netpol`]), kept as
//! the policy, the tenant's namespaces (their labels) and the host's ranges change; and the
//! isolation labels of the host pods the policies select.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::{Value, json};

use crate::guard::{as_seen, unless_missing};
use crate::netpol::{self, Context, ISOLATED_EGRESS, ISOLATED_INGRESS};
use crate::tenant::{Key, Result, Tenant};

impl Tenant {
    /// The tenant's virtual namespaces and their labels.
    fn virtual_namespaces(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        self.namespaces
            .state()
            .iter()
            .map(|n| (n.name_any(), n.labels().iter().map(|(k, v)| (k.clone(), v.clone())).collect()))
            .collect()
    }

    /// The virtual policies of namespace `ns`, as JSON.
    fn policies_in(&self, ns: &str) -> Vec<Value> {
        self.policies
            .state()
            .iter()
            .filter(|p| p.namespace().as_deref() == Some(ns))
            .filter_map(|p| vt_apiserver::object::to_value(p.as_ref()).ok())
            .collect()
    }

    /// The isolation labels a host pod of virtual namespace `ns` with `labels` gets.
    pub(crate) fn isolation_labels(&self, ns: &str, labels: &BTreeMap<String, String>) -> Vec<(&'static str, Value)> {
        let policies = self.policies_in(ns);
        let mut out = Vec::new();
        if netpol::isolation(&policies, labels, "Ingress") {
            out.push((ISOLATED_INGRESS, json!("true")));
        }
        if netpol::isolation(&policies, labels, "Egress") {
            out.push((ISOLATED_EGRESS, json!("true")));
        }
        out
    }

    /// Syncs one virtual NetworkPolicy to the host.
    pub(crate) async fn sync_policy(&self, ns: &str, name: &str) -> Result<()> {
        let v = self.policies.get(&ObjectRef::new(name).within(ns));
        let host_name = self.target.name(name, ns);
        let api: Api<NetworkPolicy> = Api::namespaced(self.host.client.clone(), &self.target.namespace);
        let want = match &v {
            Some(v) => {
                let vjson = vt_apiserver::object::to_value(v.as_ref()).unwrap_or(Value::Null);
                let (namespaces, cluster) = (self.virtual_namespaces(), self.host.cluster_ranges());
                netpol::host_policy(&vjson, &self.target, &Context { namespaces: &namespaces, cluster: &cluster })
            }
            None => None,
        };
        match want {
            Some(h) => {
                let pp = PatchParams::apply(crate::MANAGER).force();
                api.patch(&host_name, &pp, &Patch::Apply(h)).await?;
            }
            None => match api.get_opt(&host_name).await? {
                Some(h) if h.labels().get(crate::TENANT_LABEL).is_some() => {
                    unless_missing(api.delete(&host_name, &as_seen(&h, None)).await)?
                }
                _ => {}
            },
        }
        // Which pods the namespace's policies isolate may have changed.
        for p in self.pods.list(Some(ns)) {
            self.queue.add(Key::Pod(ns.to_string(), p.name_any()));
        }
        Ok(())
    }

    /// Queues every policy again (a namespace's labels, or the set of namespaces, changed).
    pub(crate) fn requeue_policies(&self) {
        for p in self.policies.state() {
            self.queue.add(Key::Policy(p.namespace().unwrap_or_default(), p.name_any()));
        }
    }
}
