//! A kube-rs client that talks to an in-process API server: requests go straight to
//! `ApiServer::handle_as` (no TLS, no sockets), as `system:kube-controller-manager` in
//! `system:masters`, through exactly the REST API tenants use.

use std::convert::Infallible;

use http_body_util::BodyExt;
use vt_apiserver::ApiServer;
use vt_apiserver::auth::UserInfo;

/// The user in-process controllers act as.
pub fn controller_user() -> UserInfo {
    UserInfo::new("system:kube-controller-manager", ["system:masters"])
}

/// A kube-rs client for `api`.
pub fn in_process(api: ApiServer) -> kube::Client {
    // A weak reference: the client (and whatever holds it) never keeps a stopped cluster alive.
    let api = api.downgrade();
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let api = api.upgrade();
        async move {
            let Some(api) = api else {
                let status = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": "the cluster has stopped", "reason": "ServiceUnavailable", "code": 503});
                return Ok(vt_apiserver::json_response(http::StatusCode::SERVICE_UNAVAILABLE, &status));
            };
            let (parts, body) = req.into_parts();
            let bytes = match body.collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    let status = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "message": format!("unable to read the request body: {e}"), "reason": "BadRequest", "code": 400});
                    return Ok::<_, Infallible>(vt_apiserver::json_response(http::StatusCode::BAD_REQUEST, &status));
                }
            };
            Ok(api.handle_as(http::Request::from_parts(parts, bytes), controller_user()).await)
        }
    });
    kube::Client::new(service, "default")
}
