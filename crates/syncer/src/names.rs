//! Host names of virtual objects. Every virtual object of a tenant lands in the tenant's one
//! host namespace, so `(virtual namespace, name)` must map to a distinct host name, valid for
//! every kind (a DNS-1123 label: at most 63 characters of `a-z0-9-`, which also fits Services'
//! DNS-1035 rule because virtual Service names start with a letter).
//!
//! The readable form is `<name>-x-<namespace>-x-<tenant>`. It is used only when it is a valid
//! label and cannot be split another way (neither part contains `-x-`, the name does not end
//! in `-x`, the namespace neither starts with `x-` nor ends in `-x`), so it is injective.
//! Everything else — names with dots, long names — becomes a readable prefix and a 10-character
//! hash of the tenant, namespace and name (50 bits of SHA-256). Host objects also carry the
//! virtual identity in annotations, and the syncer refuses to adopt a host object whose
//! annotations name another virtual object, so even a hash collision cannot mix two objects.

/// The longest host name (a DNS label).
pub const MAX: usize = 63;
const HASH_LEN: usize = 10;

/// Whether `s` is a DNS-1123 label.
pub fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn unambiguous(name: &str, namespace: &str) -> bool {
    !name.contains("-x-")
        && !namespace.contains("-x-")
        && !name.ends_with("-x")
        && !namespace.starts_with("x-")
        && !namespace.ends_with("-x")
}

/// A short hash of the parts (lowercase base32hex, so it is label-safe).
pub fn hash(parts: &[&str]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p.as_bytes());
        ctx.update(&[0]);
    }
    let digest = ctx.finish();
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let mut bits: u64 = 0;
    for b in &digest.as_ref()[..8] {
        bits = (bits << 8) | u64::from(*b);
    }
    (0..HASH_LEN).map(|i| ALPHABET[((bits >> (59 - 5 * i)) & 31) as usize] as char).collect()
}

/// The host name of the virtual object `namespace/name` of `tenant`.
pub fn host_name(name: &str, namespace: &str, tenant: &str) -> String {
    let plain = format!("{name}-x-{namespace}-x-{tenant}");
    if is_label(&plain) && unambiguous(name, namespace) {
        return plain;
    }
    let hash = hash(&[tenant, namespace, name]);
    // A readable prefix: the name and namespace with anything a label cannot hold turned into
    // '-', runs of '-' collapsed, cut to fit.
    let mut prefix = String::new();
    for c in format!("{name}-x-{namespace}").chars() {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' };
        if c == '-' && (prefix.is_empty() || prefix.ends_with('-')) {
            continue;
        }
        prefix.push(c);
        if prefix.len() >= MAX - HASH_LEN - 1 {
            break;
        }
    }
    let prefix = prefix.trim_end_matches('-');
    if prefix.is_empty() { format!("x-{hash}") } else { format!("{prefix}-{hash}") }
}

/// The host name of a cluster-scoped virtual object (a PersistentVolume, say) of `tenant`.
pub fn host_cluster_name(name: &str, tenant: &str) -> String {
    host_name(name, "", tenant)
}

#[cfg(test)]
mod tests;
