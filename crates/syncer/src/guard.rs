//! Host writes guarded by what the syncer saw. When replicas share the tenants, a write a
//! deposed owner sent just before its fence closed may reach the host after the new owner
//! acted; a write that acts on a host object the syncer read carries that object's uid and
//! resourceVersion as preconditions, so it cannot undo what happened since — the host answers
//! 409 Conflict, and the sync runs again on what it finds.

use kube::ResourceExt;
use kube::api::{DeleteParams, Preconditions};
use serde_json::{Value, json};

use crate::tenant::Result;

/// Delete options that hold only for host object `h` as it was seen (its uid and
/// resourceVersion), with `grace` if given.
pub(crate) fn as_seen<K: kube::Resource>(h: &K, grace: Option<u32>) -> DeleteParams {
    DeleteParams {
        grace_period_seconds: grace,
        preconditions: Some(Preconditions { uid: h.uid(), resource_version: h.resource_version() }),
        ..Default::default()
    }
}

/// A merge or strategic patch of host object `h`, made to hold only for `h` as it was seen:
/// kube-apiserver takes a resourceVersion a patch sets as a precondition.
pub(crate) fn pinned<K: kube::Resource>(mut patch: Value, h: &K) -> Value {
    if let (Some(rv), Some(m)) = (h.resource_version(), patch.as_object_mut()) {
        let meta = m.entry("metadata").or_insert_with(|| json!({}));
        meta["resourceVersion"] = json!(rv);
    }
    patch
}

/// The result of a guarded write: done if the object is gone; a 409 (it changed, or was made
/// again, since it was seen) is an error, so the sync runs again.
pub(crate) fn unless_missing<T>(r: kube::Result<T>) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    //! Against vt's API server in process (which behaves as kube-apiserver does here): a write
    //! guarded by a stale view is refused and changes nothing; one guarded by the current view
    //! goes through.

    use std::sync::Arc;

    use http_body_util::BodyExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, Patch, PatchParams, PostParams};

    use super::*;

    async fn host() -> (kube::Client, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = vt_store::sqlite::SqliteStore::open(dir.path().join("db"), Default::default()).await.unwrap();
        let config = vt_apiserver::Config::basic(Arc::new(store), "host");
        let api = vt_apiserver::ApiServer::new(config).await.unwrap();
        let admin = vt_apiserver::auth::UserInfo::new("admin", ["system:masters", "system:authenticated"]);
        let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let (api, admin) = (api.clone(), admin.clone());
            async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await?.to_bytes();
                let resp = api.handle_as(http::Request::from_parts(parts, body), admin).await;
                let (parts, body) = resp.into_parts();
                let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                Ok::<_, kube::Error>(http::Response::from_parts(parts, kube::client::Body::from(body)))
            }
        });
        (kube::Client::new(service, "default"), dir)
    }

    #[tokio::test]
    async fn a_write_guarded_by_a_stale_view_is_refused_and_changes_nothing() {
        let (client, _dir) = host().await;
        let api: Api<ConfigMap> = Api::namespaced(client, "default");
        let cm = vt_apiserver::object::from_value(json!({"metadata": {"name": "c"}, "data": {"by": "old"}})).unwrap();
        let seen = api.create(&PostParams::default(), &cm).await.unwrap();
        // The new owner changes it.
        let patch = json!({"data": {"by": "new"}});
        api.patch("c", &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
        // The deposed owner's patch and delete, guarded by what it saw: 409, nothing changed.
        let stale = pinned(json!({"data": {"by": "deposed"}}), &seen);
        let err = api.patch("c", &PatchParams::default(), &Patch::Merge(stale)).await.unwrap_err();
        assert!(matches!(&err, kube::Error::Api(s) if s.code == 409), "{err:?}");
        let err = unless_missing(api.delete("c", &as_seen(&seen, None)).await).unwrap_err();
        assert!(matches!(&err, crate::tenant::Error::Kube(kube::Error::Api(s)) if s.code == 409), "{err:?}");
        let now = api.get("c").await.unwrap();
        assert_eq!(now.data.as_ref().unwrap()["by"], "new");
        // Guarded by the current view, both go through; a guarded delete of what is gone is done.
        let patch = pinned(json!({"data": {"by": "owner"}}), &now);
        let now = api.patch("c", &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
        assert_eq!(now.data.as_ref().unwrap()["by"], "owner");
        unless_missing(api.delete("c", &as_seen(&now, Some(0))).await).unwrap();
        assert!(api.get_opt("c").await.unwrap().is_none());
        unless_missing(api.delete("c", &as_seen(&now, None)).await).unwrap();
    }
}
