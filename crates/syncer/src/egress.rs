//! The egress policy of a tenant's outbound calls (its admission webhooks): the manager dials
//! for the tenant, so what it may dial is decided here, before any connection is made.
//!
//! * A Service reference goes to the tenant's own host Service: its Endpoints on the host —
//!   written by the host's endpoints controller from the tenant's own pods (the host Service's
//!   selector is scoped to the tenant), or by the syncer from a selector-less Service's
//!   Endpoints after they passed the address filter. The tenant's own Endpoints in its virtual
//!   cluster, which it may fill with any address, are never used.
//! * A URL goes only to an address the operator allows (`vt server --webhook-allow-cidrs`, the
//!   Tenant's `spec.network.webhookAllowCIDRs`), and never — whatever is allowed — to a
//!   loopback, link-local, unspecified or multicast address, the manager's own addresses, or
//!   the host's Service ranges. Names are resolved first and the checked address is the one
//!   dialed (no second lookup to rebind).
//!
//! Every refusal is the same [`vt_apiserver::egress::REFUSED`], whatever the reason.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::Api;
use vt_apiserver::egress::{Egress, REFUSED};
use vt_net::{CidrSet, Kind};

use crate::Host;
use crate::translate::Target;

/// A tenant's egress policy.
pub struct HostEgress {
    host: Option<Arc<Host>>,
    target: Target,
    allow: CidrSet,
    own: Vec<IpAddr>,
}

impl HostEgress {
    /// The policy of `target`'s tenant: URLs only into `allow`, never to `own` (the manager's
    /// addresses); Services through `host` (none without a host).
    pub fn new(host: Option<Arc<Host>>, target: Target, allow: CidrSet, own: Vec<IpAddr>) -> Arc<HostEgress> {
        let own = own.into_iter().map(vt_net::canonical).collect();
        Arc::new(HostEgress { host, target, allow, own })
    }

    /// Whether a URL may lead to `ip`.
    fn url_allowed(&self, ip: IpAddr) -> bool {
        let ip = vt_net::canonical(ip);
        vt_net::kind(ip) == Kind::Unicast
            && !self.own.contains(&ip)
            && !self.host.as_ref().is_some_and(|h| h.service_ranges().contains(ip))
            && self.allow.contains(ip)
    }
}

impl Egress for HostEgress {
    fn url<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, Result<SocketAddr, String>> {
        Box::pin(async move {
            let candidates: Vec<IpAddr> = match vt_net::parse(host) {
                Ok(ip) => vec![ip],
                // Nothing allowed, nothing to resolve: no lookup leaks the name either.
                Err(_) if self.allow.is_empty() => Vec::new(),
                Err(_) => match tokio::net::lookup_host((host, port)).await {
                    Ok(addrs) => addrs.map(|a| a.ip()).collect(),
                    Err(_) => Vec::new(),
                },
            };
            candidates
                .into_iter()
                .map(vt_net::canonical)
                .find(|ip| self.url_allowed(*ip))
                .map(|ip| SocketAddr::new(ip, port))
                .ok_or_else(|| REFUSED.to_string())
        })
    }

    fn service<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Result<SocketAddr, String>> {
        Box::pin(async move {
            let Some(host) = &self.host else { return Err(REFUSED.to_string()) };
            let host_name = self.target.name(name, namespace);
            let services: Api<Service> = Api::namespaced(host.client.clone(), &self.target.namespace);
            let endpoints: Api<Endpoints> = Api::namespaced(host.client.clone(), &self.target.namespace);
            let svc = services
                .get_opt(&host_name)
                .await
                .ok()
                .flatten()
                .ok_or_else(|| format!("service \"{name}\" not found"))?;
            let svc_port = svc
                .spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .and_then(|ps| ps.iter().find(|p| p.port == i32::from(port)))
                .cloned()
                .ok_or_else(|| format!("service \"{name}\" has no port {port}"))?;
            let port_name = svc_port.name.clone().unwrap_or_default();
            let ep = endpoints
                .get_opt(&host_name)
                .await
                .ok()
                .flatten()
                .ok_or_else(|| format!("service \"{name}\" has no endpoints"))?;
            for subset in ep.subsets.iter().flatten() {
                let target_port = subset
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.clone().unwrap_or_default() == port_name)
                    .map(|p| p.port)
                    .or(match &svc_port.target_port {
                        Some(IntOrString::Int(n)) => Some(*n),
                        _ => None,
                    });
                let Some(target_port) = target_port.and_then(|p| u16::try_from(p).ok()) else { continue };
                for addr in subset.addresses.iter().flatten() {
                    let Ok(ip) = vt_net::parse(&addr.ip) else { continue };
                    if self.own.contains(&ip) {
                        continue;
                    }
                    return Ok(SocketAddr::new(ip, target_port));
                }
            }
            Err(format!("service \"{name}\" has no ready endpoints"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &str, own: &[&str]) -> Arc<HostEgress> {
        let target = crate::translate::test_target();
        let own = own.iter().map(|s| s.parse().unwrap()).collect();
        HostEgress::new(None, target, CidrSet::parse_list(allow).unwrap(), own)
    }

    #[tokio::test]
    async fn urls_go_only_where_the_operator_allows() {
        let p = policy("0.0.0.0/0,::/0", &["10.0.0.1"]);
        for bad in [
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "::1",
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "0.0.0.0",
            "224.0.0.1",
            "10.0.0.1",
            "::ffff:10.0.0.1",
            "localhost",
        ] {
            assert_eq!(p.url(bad, 443).await, Err(REFUSED.to_string()), "{bad}");
        }
        assert_eq!(p.url("203.0.113.7", 8443).await, Ok("203.0.113.7:8443".parse().unwrap()));
        assert_eq!(p.url("::ffff:203.0.113.7", 8443).await, Ok("203.0.113.7:8443".parse().unwrap()));
        // Nothing allowed: nothing is dialed, and every refusal reads the same.
        let closed = policy("", &[]);
        for any in ["203.0.113.7", "example.com", "127.0.0.1", "10.96.0.1"] {
            assert_eq!(closed.url(any, 443).await, Err(REFUSED.to_string()), "{any}");
        }
        let narrow = policy("192.0.2.0/24", &[]);
        assert!(narrow.url("192.0.2.10", 443).await.is_ok());
        assert!(narrow.url("192.0.3.10", 443).await.is_err());
    }
}
