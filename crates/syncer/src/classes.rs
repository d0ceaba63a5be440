//! The host's classes, seen from inside: StorageClasses, IngressClasses, RuntimeClasses,
//! PriorityClasses and CSIDrivers the tenant may use appear in its cluster read-only (the API
//! server refuses the tenant's writes to these kinds, [`MIRRORED`]), kept in step with the
//! host by one shared host watch per kind. What a chart names, or asks for by default
//! (`storageclass.kubernetes.io/is-default-class`), is there; the `kata` RuntimeClass vt forces
//! on every pod is shown, so `kubectl get runtimeclass` tells the truth.

use std::collections::BTreeSet;

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};

use crate::tenant::{Result, Tenant, unless_gone};

/// The kinds mirrored from the host (group, plural): read-only in tenants.
pub const MIRRORED: &[(&str, &str)] = &[
    ("storage.k8s.io", "storageclasses"),
    ("networking.k8s.io", "ingressclasses"),
    ("node.k8s.io", "runtimeclasses"),
    ("scheduling.k8s.io", "priorityclasses"),
    ("storage.k8s.io", "csidrivers"),
];

/// The label marking a tenant's copy of a host class.
pub const HOST_CLASS_LABEL: &str = "vt.dev/host-class";

/// The API resource of a mirrored kind (all are `v1`).
pub(crate) fn resource(group: &str, plural: &str) -> ApiResource {
    let (kind, version) = match plural {
        "storageclasses" => ("StorageClass", "v1"),
        "ingressclasses" => ("IngressClass", "v1"),
        "runtimeclasses" => ("RuntimeClass", "v1"),
        "priorityclasses" => ("PriorityClass", "v1"),
        _ => ("CSIDriver", "v1"),
    };
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// The tenant's copy of a host class: its identity and what describes it, not the host's
/// parameters (a StorageClass's may name the host's Secrets).
fn mirror(plural: &str, h: &Value, default: Option<bool>) -> Value {
    let name = h.pointer("/metadata/name").cloned().unwrap_or(Value::Null);
    let mut annotations = serde_json::Map::new();
    let host_annotations = h.pointer("/metadata/annotations").and_then(Value::as_object);
    for key in ["storageclass.kubernetes.io/is-default-class", "ingressclass.kubernetes.io/is-default-class"] {
        if let Some(v) = host_annotations.and_then(|a| a.get(key)) {
            annotations.insert(key.into(), v.clone());
        }
    }
    if let Some(d) = default {
        annotations.insert("ingressclass.kubernetes.io/is-default-class".into(), json!(d.to_string()));
    }
    let mut out = json!({"metadata": {"name": name, "labels": {HOST_CLASS_LABEL: "true"}, "annotations": annotations}});
    let keep: &[&str] = match plural {
        "storageclasses" => &["provisioner", "reclaimPolicy", "volumeBindingMode", "allowVolumeExpansion"],
        "ingressclasses" => &["spec"],
        "runtimeclasses" => &["handler", "overhead"],
        "priorityclasses" => &["value", "preemptionPolicy", "description"],
        _ => &["spec"],
    };
    for k in keep {
        if let Some(v) = h.get(*k) {
            out[*k] = v.clone();
        }
    }
    if plural == "ingressclasses" {
        // The controller's parameters are the host's business.
        if let Some(spec) = out.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("parameters");
        }
    }
    out
}

impl Tenant {
    /// Which host objects of kind `plural` the tenant sees, and the default flag to show.
    fn wanted(&self, plural: &str, name: &str) -> Option<Option<bool>> {
        let t = &self.target;
        match plural {
            "storageclasses" => {
                (t.storage_classes.is_empty() || t.storage_classes.iter().any(|c| c == name)).then_some(None)
            }
            "ingressclasses" => t
                .ingress
                .classes
                .iter()
                .any(|c| c == name)
                .then(|| Some(t.ingress.default_class.as_deref() == Some(name))),
            "runtimeclasses" => (name == t.runtime_class).then_some(None),
            // The tenant's own system classes stay its own.
            "priorityclasses" => {
                (!name.starts_with("system-") && t.priority_classes.iter().any(|c| c == name)).then_some(None)
            }
            _ => Some(None),
        }
    }

    /// Brings the tenant's copies of the host's classes in step with the host.
    pub(crate) async fn sync_classes(&self) -> Result<()> {
        for (group, plural) in MIRRORED {
            let ar = resource(group, plural);
            // Until the host's list is read, the tenant's copies stay as they are.
            let Some(host_objects) = self.host.classes(plural) else { continue };
            let mut want = BTreeSet::new();
            let api: Api<DynamicObject> = Api::all_with(self.virt.clone(), &ar);
            let pp = PatchParams::apply(crate::MANAGER).force();
            for h in host_objects {
                let name = h.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
                let Some(default) = self.wanted(plural, &name) else { continue };
                let mut obj = mirror(plural, &h, default);
                obj["apiVersion"] = json!(ar.api_version);
                obj["kind"] = json!(ar.kind);
                api.patch(&name, &pp, &Patch::Apply(obj)).await?;
                want.insert(name);
            }
            let lp = ListParams::default().labels(&format!("{HOST_CLASS_LABEL}=true"));
            for have in api.list_metadata(&lp).await?.items {
                if !want.contains(&have.name_any()) {
                    unless_gone(api.delete(&have.name_any(), &DeleteParams::default()).await)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_show_what_describes_a_class_not_its_parameters() {
        let sc = json!({"metadata": {"name": "fast", "annotations": {"storageclass.kubernetes.io/is-default-class": "true",
            "internal": "x"}}, "provisioner": "csi.example.com", "parameters": {"csi.storage.k8s.io/provisioner-secret-name": "host-secret"},
            "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer"});
        let m = mirror("storageclasses", &sc, None);
        assert_eq!(m["provisioner"], "csi.example.com");
        assert!(m.get("parameters").is_none());
        assert_eq!(m["metadata"]["annotations"], json!({"storageclass.kubernetes.io/is-default-class": "true"}));
        assert_eq!(m["metadata"]["labels"][HOST_CLASS_LABEL], "true");
        let ic = json!({"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx",
            "parameters": {"kind": "ConfigMap", "name": "host-config", "namespace": "ingress-nginx"}}});
        let m = mirror("ingressclasses", &ic, Some(true));
        assert_eq!(m["spec"], json!({"controller": "k8s.io/ingress-nginx"}));
        assert_eq!(m["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"], "true");
    }
}
