//! Network addresses as vt decides on them: one canonical form per address, CIDR blocks and
//! sets of them, and the classification every allow/deny decision starts from.
//!
//! Every place that decides on an address — the syncer's Endpoints filter, the egress policy of
//! tenants' webhooks, the DNS server's source attribution, NetworkPolicy ipBlocks — first
//! passes it through [`canonical`], so an address cannot be spelled around a rule: an
//! IPv4-mapped (`::ffff:127.0.0.1`), IPv4-compatible (`::127.0.0.1`) or NAT64 (`64:ff9b::/96`,
//! RFC 6052) IPv6 address is the IPv4 address it carries.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Errors parsing addresses and blocks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not an IP address.
    #[error("invalid IP address {0:?}")]
    Address(String),
    /// Not a CIDR block.
    #[error("invalid CIDR block {0:?}: {1}")]
    Cidr(String, &'static str),
}

/// The canonical form of `ip`: IPv6 addresses that carry an IPv4 address (IPv4-mapped
/// `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d` other than `::` and `::1`, and the NAT64
/// well-known prefix `64:ff9b::a.b.c.d`) become that IPv4 address; everything else is itself.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match embedded_v4(&v6) {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
    }
}

fn embedded_v4(v6: &Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // IPv4-mapped.
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        // IPv4-compatible (deprecated, but still routed by some stacks); `::` and `::1` are
        // themselves.
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 || lo > 1 => Some(low),
        // NAT64 well-known prefix: the gateway would reach this IPv4 address.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        _ => None,
    }
}

/// Parses an address (IPv4, IPv6, or IPv6 in brackets) into its canonical form.
pub fn parse(s: &str) -> Result<IpAddr, Error> {
    let t = s.trim().trim_start_matches('[').trim_end_matches(']');
    // Go's parser (and so Kubernetes') rejects IPv4 with leading zeros; so does Rust's.
    t.parse::<IpAddr>().map(canonical).map_err(|_| Error::Address(s.to_string()))
}

/// What kind of address an address is, for rules that must never admit some kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `0.0.0.0`, `::`.
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `169.254.0.0/16` (cloud metadata services), `fe80::/10`.
    LinkLocal,
    /// `224.0.0.0/4`, `ff00::/8`, `255.255.255.255`.
    Multicast,
    /// Anything else.
    Unicast,
}

/// The kind of `ip` (canonicalized first).
pub fn kind(ip: IpAddr) -> Kind {
    match canonical(ip) {
        IpAddr::V4(v4) if v4.is_unspecified() => Kind::Unspecified,
        IpAddr::V4(v4) if v4.is_loopback() => Kind::Loopback,
        IpAddr::V4(v4) if v4.is_link_local() => Kind::LinkLocal,
        IpAddr::V4(v4) if v4.is_multicast() || v4.is_broadcast() => Kind::Multicast,
        IpAddr::V6(v6) if v6.is_unspecified() => Kind::Unspecified,
        IpAddr::V6(v6) if v6.is_loopback() => Kind::Loopback,
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => Kind::LinkLocal,
        IpAddr::V6(v6) if v6.is_multicast() => Kind::Multicast,
        _ => Kind::Unicast,
    }
}

/// A CIDR block in canonical form: the address is the network (host bits zero) and an
/// IPv4-carrying IPv6 block (`::ffff:0:0/96` and longer) is the IPv4 block it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The block `addr/prefix`, canonicalized; `prefix` beyond the address width is an error.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, Error> {
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if prefix >= 96 && embedded_v4(&v6).is_some() => (canonical(addr), prefix - 96),
            _ => (addr, prefix),
        };
        let width = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > width {
            return Err(Error::Cidr(format!("{addr}/{prefix}"), "prefix length too long"));
        }
        Ok(Cidr { addr: mask(addr, prefix), prefix })
    }

    /// The block of exactly `ip`.
    pub fn host(ip: IpAddr) -> Cidr {
        let ip = canonical(ip);
        Cidr { addr: ip, prefix: if ip.is_ipv4() { 32 } else { 128 } }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` (canonicalized) lies in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }

    /// Whether `other` lies wholly in this block.
    pub fn covers(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }

    /// Whether the two blocks share any address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.covers(other) || other.covers(self)
    }

    /// The block minus `hole`: the smallest list of blocks covering exactly the addresses of
    /// `self` not in `hole` (empty if `hole` covers it all).
    pub fn minus(&self, hole: &Cidr) -> Vec<Cidr> {
        if hole.covers(self) {
            return Vec::new();
        }
        if !self.covers(hole) {
            return vec![*self];
        }
        // Split self in halves down to the hole's prefix, keeping the halves the hole misses.
        let mut out = Vec::new();
        let mut current = *self;
        while current.prefix < hole.prefix {
            let (a, b) = current.halves();
            if a.covers(hole) {
                out.push(b);
                current = a;
            } else {
                out.push(a);
                current = b;
            }
        }
        out.sort();
        out
    }

    fn halves(&self) -> (Cidr, Cidr) {
        let p = self.prefix + 1;
        let low = Cidr { addr: self.addr, prefix: p };
        let high_addr = match self.addr {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) | (1u32 << (32 - p)))),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) | (1u128 << (128 - p)))),
        };
        (low, Cidr { addr: high_addr, prefix: p })
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let m = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & m))
        }
        IpAddr::V6(v6) => {
            let m = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix.min(128))) };
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & m))
        }
    }
}

impl FromStr for Cidr {
    type Err = Error;

    /// Parses `a.b.c.d/n` or `x::y/n` (a bare address is its host block). Host bits must be
    /// zero, as Kubernetes validates CIDRs (`10.0.0.1/8` is an error, not `10.0.0.0/8`).
    fn from_str(s: &str) -> Result<Cidr, Error> {
        let t = s.trim();
        let (addr, prefix) = match t.split_once('/') {
            Some((a, p)) => {
                let p: u8 = p.parse().map_err(|_| Error::Cidr(s.to_string(), "invalid prefix length"))?;
                (a, Some(p))
            }
            None => (t, None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| Error::Cidr(s.to_string(), "invalid address"))?;
        let prefix = prefix.unwrap_or(if ip.is_ipv4() { 32 } else { 128 });
        let cidr = Cidr::new(ip, prefix).map_err(|_| Error::Cidr(s.to_string(), "prefix length too long"))?;
        let raw_prefix = if matches!(ip, IpAddr::V6(_)) && cidr.addr.is_ipv4() { prefix - 96 } else { prefix };
        if mask(canonical(ip), raw_prefix) != canonical(ip) {
            return Err(Error::Cidr(s.to_string(), "host bits set (not a network address)"));
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A set of CIDR blocks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CidrSet {
    blocks: Vec<Cidr>,
}

impl CidrSet {
    /// The empty set.
    pub fn new() -> CidrSet {
        CidrSet::default()
    }

    /// Parses comma-separated blocks (empty: the empty set).
    pub fn parse_list(s: &str) -> Result<CidrSet, Error> {
        let mut set = CidrSet::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            set.insert(part.parse()?);
        }
        Ok(set)
    }

    /// Adds a block.
    pub fn insert(&mut self, c: Cidr) {
        if !self.blocks.iter().any(|b| b.covers(&c)) {
            self.blocks.retain(|b| !c.covers(b));
            self.blocks.push(c);
            self.blocks.sort();
        }
    }

    /// Whether `ip` (canonicalized) lies in any block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|b| b.contains(ip))
    }

    /// Whether `c` overlaps any block.
    pub fn overlaps(&self, c: &Cidr) -> bool {
        self.blocks.iter().any(|b| b.overlaps(c))
    }

    /// The blocks.
    pub fn blocks(&self) -> &[Cidr] {
        &self.blocks
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// `c` minus every block of this set.
    pub fn subtract_from(&self, c: &Cidr) -> Vec<Cidr> {
        let mut parts = vec![*c];
        for hole in &self.blocks {
            parts = parts.iter().flat_map(|p| p.minus(hole)).collect();
        }
        parts
    }
}

impl FromIterator<Cidr> for CidrSet {
    fn from_iter<T: IntoIterator<Item = Cidr>>(iter: T) -> Self {
        let mut s = CidrSet::new();
        for c in iter {
            s.insert(c);
        }
        s
    }
}

#[cfg(test)]
mod tests;
