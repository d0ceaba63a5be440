//! Where a cluster's outbound calls may go. Admission webhooks (and, as they come, conversion
//! webhooks and aggregated APIs) make the server dial addresses its users chose; in a shared
//! manager that is a tenant making the manager dial for it. An [`Egress`] decides, before any
//! connection is made, which address a call goes to — or refuses it with [`REFUSED`], the same
//! words whatever the reason, so refusals tell nothing about what lies behind an address.

use std::net::SocketAddr;

use futures::future::BoxFuture;

/// The one message of every refusal.
pub const REFUSED: &str = "the address is not one this cluster may call";

/// Decides the address of a cluster's outbound calls.
pub trait Egress: Send + Sync {
    /// The address to dial for a URL's `host` (a name or an address literal) and `port`, or
    /// [`REFUSED`].
    fn url<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, Result<SocketAddr, String>>;

    /// The address to dial for port `port` of the cluster's Service `namespace/name`, or an
    /// error saying why there is none.
    fn service<'a>(&'a self, namespace: &'a str, name: &'a str, port: u16)
    -> BoxFuture<'a, Result<SocketAddr, String>>;
}
