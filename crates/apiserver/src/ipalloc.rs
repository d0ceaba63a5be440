//! Service cluster IP allocation, pluggable.
//!
//! The default [`IpAddressAllocator`] does what kube-apiserver 1.33 does with its
//! MultiCIDRServiceAllocator: every allocated IP is an `networking.k8s.io/v1` IPAddress object
//! named after the address, created only if absent, so allocation is atomic in the store and
//! visible through the API. A [`ServiceBackend`] replaces it when another cluster (the host of
//! a virtual cluster) chooses Services' addresses.

use std::net::Ipv4Addr;

use bytes::Bytes;
use futures::future::BoxFuture;
use rand::RngExt;
use serde_json::{Value, json};
use vt_store::{Store, StoreError};

/// Why an IP could not be allocated.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    /// The requested IP belongs to another Service.
    #[error("provided IP is already allocated")]
    Taken,
    /// The requested IP is outside the service range.
    #[error("the provided IP ({0}) is not in the valid range. The range of valid IPs is {1}")]
    OutOfRange(Ipv4Addr, String),
    /// The range has no free address.
    #[error("range is full")]
    Full,
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// The Service an IP is allocated to.
#[derive(Clone, Debug)]
pub struct ServiceRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// Allocates and releases Service cluster IPs.
pub trait ClusterIpAllocator: Send + Sync {
    /// Allocates `requested`, or any free IP, to `service`.
    fn allocate<'a>(
        &'a self,
        store: &'a dyn Store,
        service: &'a ServiceRef,
        requested: Option<Ipv4Addr>,
    ) -> BoxFuture<'a, Result<Ipv4Addr, AllocError>>;
    /// Releases `ip`.
    fn release<'a>(&'a self, store: &'a dyn Store, ip: Ipv4Addr) -> BoxFuture<'a, ()>;
    /// The address reserved for the `kubernetes` Service, if the allocator has one.
    fn first_ip(&self) -> Option<Ipv4Addr> {
        None
    }
    /// The service CIDR, if the allocator has one.
    fn cidr(&self) -> Option<String> {
        None
    }
}

/// Allocates from one IPv4 CIDR, recording each address as an IPAddress object.
pub struct IpAddressAllocator {
    base: u32,
    size: u32,
    cidr: String,
}

impl IpAddressAllocator {
    /// An allocator for `cidr` (e.g. `10.96.0.0/12`).
    pub fn new(cidr: &str) -> Result<IpAddressAllocator, String> {
        let (ip, bits) = cidr.split_once('/').ok_or_else(|| format!("invalid CIDR {cidr:?}"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| format!("invalid CIDR {cidr:?}"))?;
        let bits: u32 = bits
            .parse()
            .ok()
            .filter(|b| (8..=30).contains(b))
            .ok_or_else(|| format!("invalid CIDR prefix in {cidr:?} (8..30)"))?;
        let size = 1u32 << (32 - bits);
        let base = u32::from(ip) & !(size - 1);
        Ok(IpAddressAllocator { base, size, cidr: cidr.to_string() })
    }

    /// The CIDR.
    pub fn cidr(&self) -> &str {
        &self.cidr
    }

    /// The first usable address (the `kubernetes` Service's).
    pub fn first(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        let n = u32::from(ip);
        n > self.base && n < self.base + self.size - 1
    }

    async fn claim(&self, store: &dyn Store, service: &ServiceRef, ip: Ipv4Addr) -> Result<bool, StoreError> {
        let obj = json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IPAddress",
            "metadata": {
                "name": ip.to_string(),
                "uid": uuid::Uuid::new_v4().to_string(),
                "creationTimestamp": crate::object::now_rfc3339(),
                "labels": {"ipaddress.kubernetes.io/ip-family": "IPv4", "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io"},
            },
            "spec": {"parentRef": {"group": "", "resource": "services", "namespace": service.namespace, "name": service.name}},
        });
        let key = format!("/registry/networking.k8s.io/ipaddresses/{ip}");
        match store.create(key.as_bytes(), Bytes::from(obj.to_string()), None).await {
            Ok(_) => Ok(true),
            Err(StoreError::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl ClusterIpAllocator for IpAddressAllocator {
    fn first_ip(&self) -> Option<Ipv4Addr> {
        Some(self.first())
    }

    fn cidr(&self) -> Option<String> {
        Some(self.cidr.clone())
    }

    fn allocate<'a>(
        &'a self,
        store: &'a dyn Store,
        service: &'a ServiceRef,
        requested: Option<Ipv4Addr>,
    ) -> BoxFuture<'a, Result<Ipv4Addr, AllocError>> {
        Box::pin(async move {
            if let Some(ip) = requested {
                if !self.contains(ip) {
                    return Err(AllocError::OutOfRange(ip, self.cidr.clone()));
                }
                return if self.claim(store, service, ip).await? { Ok(ip) } else { Err(AllocError::Taken) };
            }
            // Random probes first (the range is large and sparse), then a scan. The first
            // address is left to the `kubernetes` Service.
            let usable = self.size.saturating_sub(3).max(1);
            let start = rand::rng().random_range(0..usable);
            for i in 0..usable.min(4096) {
                let offset = 2 + (start + i.wrapping_mul(2654435761) % usable) % usable;
                let ip = Ipv4Addr::from(self.base + offset);
                if self.claim(store, service, ip).await? {
                    return Ok(ip);
                }
            }
            for offset in 2..self.size - 1 {
                let ip = Ipv4Addr::from(self.base + offset);
                if self.claim(store, service, ip).await? {
                    return Ok(ip);
                }
            }
            Err(AllocError::Full)
        })
    }

    fn release<'a>(&'a self, store: &'a dyn Store, ip: Ipv4Addr) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let key = format!("/registry/networking.k8s.io/ipaddresses/{ip}");
            if let Err(e) = store.delete(key.as_bytes(), None).await
                && !matches!(e, StoreError::NotFound)
            {
                tracing::warn!(%ip, error = %e, "releasing a cluster IP failed");
            }
        })
    }
}

/// Why a [`ServiceBackend`] refused a Service.
#[derive(Clone, Debug)]
pub struct BackendError {
    /// The HTTP status to answer with (the other cluster's, e.g. 422 for a taken node port).
    pub code: u16,
    /// For humans.
    pub message: String,
}

/// Where Services really live when this cluster is virtual: a new Service is created there
/// first, and takes the addresses that side allocated (cluster IPs, node ports), so the
/// virtual Service and the real one agree. Deleting the virtual Service deletes the real one.
pub trait ServiceBackend: Send + Sync {
    /// Creates the real side of `service` (defaulted, with its uid) and returns that side's
    /// `spec` (`clusterIP`, `clusterIPs`, `ports` with `nodePort`, `healthCheckNodePort`).
    fn create<'a>(&'a self, service: &'a Value) -> BoxFuture<'a, Result<Value, BackendError>>;
    /// Deletes the real side of `service` (only if it is that Service's: same uid).
    fn delete<'a>(&'a self, service: &'a Value) -> BoxFuture<'a, ()>;
}
