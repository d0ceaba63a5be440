//! The webhook client: one HTTPS POST (through [`crate::outbound`]), trusting only the
//! webhook's `caBundle`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use crate::outbound::{self, Target, Trust};
use crate::rest::Op;

/// Answers larger than this are refused.
const MAX_ANSWER: usize = 3 * 1024 * 1024;

/// POSTs an AdmissionReview to the webhook; returns the answer body.
pub(super) async fn post(
    op: &Op<'_>,
    target: &Target,
    ca_bundle: &[u8],
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let work = async {
        let trust = Trust { ca_bundle, insecure: false, client: None };
        let (mut sender, ep) = outbound::connect(op.api, target, &trust).await?;
        let req = http::Request::post(&ep.path)
            .header(http::header::HOST, ep.authority())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let bytes = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("the server responded with {status}"));
        }
        Ok(bytes.to_vec())
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("context deadline exceeded (timeout {}s)", timeout.as_secs())),
    }
}
