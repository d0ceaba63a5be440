//! The streaming subresources of pods — `log`, `exec`, `attach`, `portforward` — handed to the
//! configured [`crate::PodConnector`] once kube-apiserver's checks pass: the pod exists and is
//! bound to a node, the container is one of its own, and WebSocket upgrades (which arrive as
//! `GET`) are also allowed to `create` (kube ≥ 1.31 checks both verbs).

use bytes::Bytes;
use http::{Request, Response};
use serde_json::Value;

use crate::auth::{Attributes, Decision, UserInfo};
use crate::body::Body;
use crate::request::RequestInfo;
use crate::status::{ApiError, ApiResult, GroupResource};
use crate::{ApiServer, object};

/// Whether `sub` of pods is served here.
pub(crate) fn is_streaming(sub: &str) -> bool {
    matches!(sub, "log" | "exec" | "attach" | "portforward")
}

pub(crate) async fn serve(
    api: &ApiServer,
    req: Request<Bytes>,
    info: &RequestInfo,
    query: &std::collections::HashMap<String, String>,
    user: &UserInfo,
) -> ApiResult<Response<Body>> {
    let gr = GroupResource::new("", "pods");
    if info.subresource != "log" && info.verb == "get" {
        let attrs = Attributes {
            user: user.clone(),
            verb: "create".into(),
            is_resource: true,
            namespace: info.namespace.clone(),
            api_group: String::new(),
            resource: "pods".into(),
            subresource: info.subresource.clone(),
            name: info.name.clone(),
            path: info.path.clone(),
        };
        if let Decision::Deny(_) = api.inner.config.authorizer.authorize(&attrs).await {
            return Err(ApiError::forbidden(&gr, &info.name, &crate::auth::forbidden_message(&attrs)));
        }
    }
    let key = format!("/registry/core/pods/{}/{}", info.namespace, info.name);
    let kv = api
        .store()
        .get(key.as_bytes())
        .await
        .map_err(|e| crate::status::from_store(e, &gr, &info.name))?
        .ok_or_else(|| ApiError::not_found(&gr, &info.name))?;
    let pod: Value = serde_json::from_slice(&kv.value).map_err(|e| ApiError::internal(e.to_string()))?;
    if info.subresource != "portforward" {
        let names: Vec<&str> = ["containers", "initContainers", "ephemeralContainers"]
            .iter()
            .flat_map(|k| object::at(&pod, &["spec", k]).and_then(Value::as_array).into_iter().flatten())
            .filter_map(|c| c.get("name").and_then(Value::as_str))
            .collect();
        match query.get("container").filter(|c| !c.is_empty()) {
            Some(c) if !names.contains(&c.as_str()) => {
                return Err(ApiError::bad_request(format!("container {c} is not valid for pod {}", info.name)));
            }
            None if names.len() > 1 && info.subresource != "log" => {
                return Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {}, choose one of: [{}]",
                    info.name,
                    names.join(" ")
                )));
            }
            _ => {}
        }
    }
    if object::str_at(&pod, &["spec", "nodeName"]).unwrap_or("").is_empty() {
        return Err(ApiError::bad_request(format!("pod {} does not have a host assigned", info.name)));
    }
    let Some(connector) = api.inner.config.pods.clone() else {
        return Err(ApiError::new(
            503,
            "ServiceUnavailable",
            format!("no connection to the node of pod {} is available from this server", info.name),
        ));
    };
    Ok(connector.connect(&pod, &info.subresource, req).await)
}
