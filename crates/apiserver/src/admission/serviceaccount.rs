//! The `ServiceAccount` admission plugin, as kube-apiserver runs it on pod creation: the pod's
//! ServiceAccount defaults to `default` and must exist (403 otherwise, as kube answers; the
//! ReplicaSet and other controllers retry), and unless the pod or its ServiceAccount opts out
//! with `automountServiceAccountToken: false`, the pod gets kube's `kube-api-access-<suffix>`
//! projected volume (a bound token, the cluster CA, the namespace) mounted read-only at
//! `/var/run/secrets/kubernetes.io/serviceaccount` in every container and init container that
//! does not mount something there already.

use serde_json::{Value, json};

use crate::object;
use crate::rest::Op;
use crate::status::{ApiError, ApiResult, GroupResource};

/// Where service account credentials are mounted.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

pub(crate) async fn admit(op: &Op<'_>, pod: &mut Value, suffix: &str) -> ApiResult<()> {
    if !(op.rt.group.is_empty() && op.rt.plural == "pods" && op.sub.is_empty())
        || op.ns.is_empty()
        || !op.api.config().service_account_admission
    {
        return Ok(());
    }
    // Mirror pods (static pods of a kubelet) are left alone, as in kube.
    if object::at(pod, &["metadata", "annotations", "kubernetes.io/config.mirror"]).is_some() {
        return Ok(());
    }
    if !pod.get("spec").is_some_and(Value::is_object) {
        return Ok(());
    }
    let sa = object::str_at(pod, &["spec", "serviceAccountName"])
        .filter(|s| !s.is_empty())
        .or_else(|| object::str_at(pod, &["spec", "serviceAccount"]).filter(|s| !s.is_empty()))
        .unwrap_or("default")
        .to_string();
    pod["spec"]["serviceAccountName"] = json!(sa);
    pod["spec"]["serviceAccount"] = json!(sa);
    let key = format!("/registry/core/serviceaccounts/{}/{sa}", op.ns);
    let found = op
        .store()
        .get(key.as_bytes())
        .await
        .map_err(|e| crate::status::from_store(e, &op.gr(), ""))?
        .and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok());
    let name = object::str_at(pod, &["metadata", "name"])
        .filter(|n| !n.is_empty())
        .or_else(|| object::str_at(pod, &["metadata", "generateName"]))
        .unwrap_or("")
        .to_string();
    let Some(account) = found else {
        return Err(ApiError::forbidden(
            &GroupResource::new("", "pods"),
            &name,
            &format!("error looking up service account {}/{sa}: serviceaccount {sa:?} not found", op.ns),
        ));
    };
    let opt_out = match object::at(pod, &["spec", "automountServiceAccountToken"]).and_then(Value::as_bool) {
        Some(b) => !b,
        None => object::at(&account, &["automountServiceAccountToken"]).and_then(Value::as_bool) == Some(false),
    };
    if opt_out {
        return Ok(());
    }
    let mounted_already = |c: &Value| {
        c.get("volumeMounts")
            .and_then(Value::as_array)
            .is_some_and(|m| m.iter().any(|m| m.get("mountPath").and_then(Value::as_str) == Some(MOUNT_PATH)))
    };
    let volume = format!("kube-api-access-{suffix}");
    let spec = &mut pod["spec"];
    let mut used = false;
    for k in ["initContainers", "containers"] {
        for c in spec.get_mut(k).and_then(Value::as_array_mut).into_iter().flatten() {
            if mounted_already(c) {
                continue;
            }
            if !c.get("volumeMounts").is_some_and(Value::is_array) {
                c["volumeMounts"] = json!([]);
            }
            if let Some(m) = c["volumeMounts"].as_array_mut() {
                m.push(json!({"name": volume, "readOnly": true, "mountPath": MOUNT_PATH}));
                used = true;
            }
        }
    }
    if used {
        if !spec.get("volumes").is_some_and(Value::is_array) {
            spec["volumes"] = json!([]);
        }
        if let Some(v) = spec["volumes"].as_array_mut() {
            v.push(json!({"name": volume, "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ]}}));
        }
    }
    Ok(())
}
