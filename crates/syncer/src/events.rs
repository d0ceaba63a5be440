//! Host events about a tenant's pods (scheduling, image pulls, probes, evictions) appear in the
//! tenant as events about its virtual pods, host names replaced by virtual ones.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::Value;

use crate::tenant::Tenant;
use crate::translate;

impl Tenant {
    /// Mirrors one host event (in the background: events never hold up syncing).
    pub(crate) fn mirror_event(self: Arc<Self>, ev: Arc<Event>) {
        let Some(pod_name) = ev.involved_object.name.clone() else { return };
        let Some(host_pod) = self.host.pod(&self.target.namespace, &pod_name) else { return };
        let Some((ns, name)) = crate::tenant::identity(host_pod.as_ref()) else { return };
        let uid = host_pod.annotations().get(crate::UID_ANNOTATION).cloned().unwrap_or_default();
        tokio::spawn(async move {
            let h = vt_apiserver::object::to_value(ev.as_ref()).unwrap_or(Value::Null);
            let v = translate::virtual_event(&h, &self.target, &ns, &name, &uid);
            let Ok(event) = vt_apiserver::object::from_value::<Event>(v) else { return };
            let api: Api<Event> = Api::namespaced(self.virt.clone(), &ns);
            let ev_name = event.name_any();
            match api.create(&PostParams::default(), &event).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    // The host event was counted again: so is ours.
                    if let Ok(mut current) = api.get(&ev_name).await
                        && (current.count != event.count || current.last_timestamp != event.last_timestamp)
                    {
                        current.count = event.count;
                        current.last_timestamp = event.last_timestamp.clone();
                        current.message = event.message.clone();
                        let _ = api.replace(&ev_name, &PostParams::default(), &current).await;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "could not mirror a host event"),
            }
        });
    }
}
