//! Host events about a tenant's pods (scheduling, image pulls, probes, evictions) appear in the
//! tenant as events about its virtual pods, host names replaced by virtual ones.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::Value;

use crate::tenant::Tenant;
use crate::translate;

impl Tenant {
    /// Mirrors one host event (in the background: events never hold up syncing).
    pub(crate) fn mirror_event(self: Arc<Self>, ev: Arc<Event>) {
        let Some(pod_name) = ev.involved_object.name.clone() else { return };
        tokio::spawn(async move {
            let Some(host_pod) = self.host_pod_of(&ev, &pod_name).await else { return };
            let Some((ns, name)) = crate::tenant::identity(host_pod.as_ref()) else { return };
            let uid = host_pod.annotations().get(crate::UID_ANNOTATION).cloned().unwrap_or_default();
            let h = vt_apiserver::object::to_value(ev.as_ref()).unwrap_or(Value::Null);
            let v = translate::virtual_event(&h, &self.target, &ns, &name, &uid);
            let Ok(event) = vt_apiserver::object::from_value::<Event>(v) else { return };
            let api: Api<Event> = Api::namespaced(self.virt.clone(), &ns);
            let ev_name = event.name_any();
            match create_retrying(&api, &event).await {
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

    /// The host pod an event is about. The host's scheduler and kubelet write events the
    /// moment they see a pod, so an event can arrive before the host pod's watch has delivered
    /// the pod itself: for a fresh event, the pod is waited for a little (an old one, replayed
    /// by a relist, about a pod that is gone, is dropped at once).
    async fn host_pod_of(&self, ev: &Event, pod_name: &str) -> Option<Arc<Pod>> {
        let fresh =
            ev.metadata.creation_timestamp.as_ref().is_none_or(|t| {
                jiff::Timestamp::now().duration_since(t.0) < jiff::SignedDuration::from_secs(FRESH_SECS)
            });
        let tries = if fresh { POD_WAIT.as_millis() / POD_POLL.as_millis() } else { 0 };
        for _ in 0..tries {
            if let Some(pod) = self.host.pod(&self.target.namespace, pod_name) {
                return Some(pod);
            }
            tokio::time::sleep(POD_POLL).await;
        }
        self.host.pod(&self.target.namespace, pod_name)
    }
}

/// Creates the tenant's event, trying again a few times when the tenant's API server is busy
/// or unreachable for a moment (a 429 from its fairness limits, a 5xx, a broken connection):
/// an event lost here would never be sent again.
async fn create_retrying(api: &Api<Event>, event: &Event) -> kube::Result<Event> {
    let mut delay = Duration::from_millis(200);
    let mut tries = 1;
    loop {
        match api.create(&PostParams::default(), event).await {
            Err(kube::Error::Api(s)) if tries < CREATE_TRIES && (s.code == 429 || s.code >= 500) => {}
            Err(kube::Error::Api(s)) => return Err(kube::Error::Api(s)),
            Err(_) if tries < CREATE_TRIES => {}
            done => return done,
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
        tries += 1;
    }
}

/// How often a mirrored event's create is tried.
const CREATE_TRIES: u32 = 4;
/// An event this young may be about a pod the host's pod watch has not delivered yet.
const FRESH_SECS: i64 = 30;
/// How long a fresh event waits for its pod, and how often it looks.
const POD_WAIT: Duration = Duration::from_secs(5);
const POD_POLL: Duration = Duration::from_millis(100);
