//! One DNS server for every tenant of a manager: Kubernetes DNS-based service discovery
//! (kubernetes/dns `docs/specification.md`, schema 1.0.1) answered from each tenant's own
//! Services, Endpoints and pods, and every other name forwarded to the upstream resolvers.
//!
//! Which tenant a query belongs to never rests on anything the asking pod chooses (a port, a
//! name, an EDNS option): the source address is looked up by an [`Attribution`] (the syncer's
//! index of which host pod has which address in which tenant), and a query from an address no
//! tenant's pod has is `REFUSED`. A tenant's zone (`cluster.local`) is answered only from its
//! own [`Zone`], never forwarded, never answered for another tenant.
//!
//! ```text
//!  pod (host IP) ──UDP/TCP──► Server::handle ─ Attribution(source) ─► the tenant's Zone
//!                                  │  in cluster.local: Zone::lookup (services, endpoints, pods)
//!                                  └─ elsewhere: Forwarder (upstream resolvers, a per-tenant cache)
//! ```

mod forward;
mod server;
pub mod zone;

pub use forward::Forwarder;
pub use server::{Attribution, Server, serve_tcp, serve_udp};
pub use zone::{EndpointRecord, PortRecord, Protocol, ServiceRecord, Zone};
