//! Signs approved CertificateSigningRequests for `kubernetes.io/kube-apiserver-client` with the
//! cluster's CA, as kube-controller-manager's csrsigning controller does for that signer: a
//! cluster admin mints a user the standard way (a CSR, `kubectl certificate approve`, the
//! certificate from `status.certificate`). The certificate names the request's subject (CN:
//! the user, O: the groups) and is valid for `spec.expirationSeconds` (at most a year, kube's
//! default signing duration). A request the signer cannot honour (usages beyond client auth,
//! an unreadable request) gets kube's `Failed` condition with reason `SignerValidationFailure`.
//! Other signers' requests are left to their signers.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::util::{self, Result};

/// The signer this controller serves.
pub const SIGNER: &str = "kubernetes.io/kube-apiserver-client";
/// kube-controller-manager's default `--cluster-signing-duration`.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

struct Ctx {
    client: Client,
    ca: vt_pki::Ca,
}

/// Runs the controller until the client's server goes away; `ca` is the cluster's CA (the one
/// its API server trusts for client certificates).
pub async fn run(client: Client, ca: vt_pki::Ca) {
    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    Controller::new(csrs, watcher::Config::default().fields(&format!("spec.signerName={SIGNER}")))
        .run(reconcile, util::retry, Arc::new(Ctx { client, ca }))
        .for_each(|_| async {})
        .await;
}

fn has(csr: &CertificateSigningRequest, t: &str) -> bool {
    csr.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == t))
}

/// The key usages to sign, or why the request is not a client certificate request.
fn usages(csr: &CertificateSigningRequest) -> std::result::Result<Vec<vt_pki::KeyUsage>, String> {
    let mut out = Vec::new();
    let mut client_auth = false;
    for u in &csr.spec.usages.clone().unwrap_or_default() {
        match u.as_str() {
            "client auth" => client_auth = true,
            "digital signature" => out.push(vt_pki::KeyUsage::DigitalSignature),
            "key encipherment" => out.push(vt_pki::KeyUsage::KeyEncipherment),
            other => return Err(format!("invalid usage for client certificate: {other}")),
        }
    }
    if !client_auth {
        return Err("missing required usage for client certificate: client auth".into());
    }
    Ok(out)
}

async fn reconcile(csr: Arc<CertificateSigningRequest>, ctx: Arc<Ctx>) -> Result<Action> {
    let issued = csr.status.as_ref().and_then(|s| s.certificate.as_ref()).is_some_and(|c| !c.0.is_empty());
    if csr.spec.signer_name != SIGNER || !has(&csr, "Approved") || has(&csr, "Denied") || has(&csr, "Failed") || issued
    {
        return Ok(Action::await_change());
    }
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    let mut updated = (*csr).clone();
    let status = updated.status.get_or_insert_with(Default::default);
    let signed = usages(&csr).and_then(|usages| {
        let request = vt_pki::Csr::from_pem(&csr.spec.request.0)?;
        let asked = csr.spec.expiration_seconds.map(|s| Duration::from_secs(s.max(600) as u64));
        let valid_for = asked.map_or(MAX_DURATION, |d| d.min(MAX_DURATION));
        ctx.ca.sign_client(&request, &usages, valid_for).map_err(|e| e.to_string())
    });
    match signed {
        Ok(pem) => status.certificate = Some(ByteString(pem.into_bytes())),
        Err(why) => {
            let now = Time(jiff::Timestamp::now());
            status.conditions.get_or_insert_with(Vec::new).push(CertificateSigningRequestCondition {
                type_: "Failed".into(),
                status: "True".into(),
                reason: Some("SignerValidationFailure".into()),
                message: Some(why),
                last_update_time: Some(now.clone()),
                last_transition_time: Some(now),
            });
        }
    }
    match api.replace_status(&csr.name_any(), &PostParams::default(), &updated).await {
        Ok(_) => Ok(Action::await_change()),
        // Changed meanwhile (or gone): the watch brings it back.
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}
