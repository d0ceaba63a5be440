//! `kubectl logs`, `exec`, `attach` and `port-forward` in a tenant: the virtual API server has
//! authorized the request; here it is rewritten to the host pod and sent to the host API
//! server. Logs stream back as they come. Upgrades (WebSocket `v5.channel.k8s.io`, or SPDY)
//! are not reimplemented: the host's `101 Switching Protocols` goes back to the client and the
//! two upgraded connections are joined byte for byte, so whatever protocol the client and the
//! host's kubelet speak works unchanged.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use http::{HeaderName, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use vt_apiserver::PodConnector;
use vt_apiserver::body::Body;

use crate::host::Host;
use crate::translate::Target;

/// Headers an upgrade needs on its way to the host and back.
const UPGRADE_HEADERS: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-accept",
    "sec-websocket-extensions",
    "x-stream-protocol-version",
];

/// The tenant's pods, reached on the host.
pub struct HostPods {
    host: Arc<Host>,
    target: Target,
}

impl HostPods {
    /// A connector for `target`'s pods on `host`.
    pub fn new(host: Arc<Host>, target: Target) -> Arc<HostPods> {
        Arc::new(HostPods { host, target })
    }
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()});
    vt_apiserver::json_response(code, &body)
}

/// A host response body as the virtual API server's body type, relayed as it streams (a host
/// error ends the stream; a client that goes away stops the relay).
fn relay(body: kube::client::Body) -> Body {
    let (tx, out) = vt_apiserver::body::channel(64 << 10);
    tokio::spawn(async move {
        let mut chunks = body.into_data_stream();
        while let Some(Ok(chunk)) = chunks.next().await {
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    out
}

impl PodConnector for HostPods {
    fn connect<'a>(
        &'a self,
        pod: &'a Value,
        subresource: &'a str,
        req: Request<Bytes>,
    ) -> BoxFuture<'a, Response<Body>> {
        Box::pin(async move {
            let ns = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
            let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
            let host_name = self.target.name(name, ns);
            if self.host.pod(&self.target.namespace, &host_name).is_none() {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("pod {name} is not running on the host cluster yet"),
                );
            }
            let query = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
            let path = format!("/api/v1/namespaces/{}/pods/{host_name}/{subresource}{query}", self.target.namespace);
            let (parts, body) = req.into_parts();
            let upgrading = parts.headers.contains_key(header::UPGRADE);
            let mut out = Request::builder().method(parts.method.clone()).uri(&path);
            for (k, v) in &parts.headers {
                if UPGRADE_HEADERS.contains(&k.as_str()) || k == header::CONTENT_TYPE || k == header::ACCEPT {
                    out = out.header(k, v);
                }
            }
            let out = match out.body(kube::client::Body::from(body.to_vec())) {
                Ok(r) => r,
                Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
            };
            let res = match self.host.streams.send(out).await {
                Ok(r) => r,
                Err(e) => {
                    return status(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "ServiceUnavailable",
                        &format!("the host cluster: {e}"),
                    );
                }
            };
            if !res.status().is_success() && res.status() != StatusCode::SWITCHING_PROTOCOLS {
                // A host error (a Status): its host names are the tenant's names.
                let code = res.status();
                let bytes = res.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                let text = String::from_utf8_lossy(&bytes)
                    .replace(&format!("{}/{host_name}", self.target.namespace), &format!("{ns}/{name}"))
                    .replace(&host_name, name)
                    .replace(&self.target.namespace, ns);
                return Response::builder()
                    .status(code)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(vt_apiserver::body::full(text))
                    .unwrap_or_else(|e| status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &e.to_string()));
            }
            if !(upgrading && res.status() == StatusCode::SWITCHING_PROTOCOLS) {
                let (hparts, hbody) = res.into_parts();
                let mut back = Response::builder().status(hparts.status);
                for (k, v) in &hparts.headers {
                    if k == header::CONTENT_TYPE || k == header::TRANSFER_ENCODING || k.as_str() == "audit-id" {
                        back = back.header(k, v);
                    }
                }
                return back
                    .body(relay(hbody))
                    .unwrap_or_else(|e| status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &e.to_string()));
            }
            // The host switched protocols: answer the client likewise and join the two streams.
            let mut back = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
            for (k, v) in res.headers() {
                if UPGRADE_HEADERS.contains(&k.as_str()) {
                    back = back.header(HeaderName::from(k), v);
                }
            }
            let client_upgrade = hyper::upgrade::on(Request::from_parts(parts, ()));
            let tenant = self.target.tenant.clone();
            tokio::spawn(async move {
                let host_io = match hyper::upgrade::on(res).await {
                    Ok(io) => io,
                    Err(e) => return tracing::debug!(%tenant, error = %e, "host upgrade failed"),
                };
                let client_io = match client_upgrade.await {
                    Ok(io) => io,
                    Err(e) => return tracing::debug!(%tenant, error = %e, "client upgrade failed"),
                };
                let (mut a, mut b) = (TokioIo::new(client_io), TokioIo::new(host_io));
                if let Err(e) = tokio::io::copy_bidirectional(&mut a, &mut b).await {
                    tracing::debug!(%tenant, error = %e, "stream ended");
                }
            });
            back.body(vt_apiserver::body::empty())
                .unwrap_or_else(|e| status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &e.to_string()))
        })
    }
}
