use std::collections::HashMap;

use rand::{Rng, RngExt, SeedableRng};

use super::*;

#[test]
fn readable_when_it_fits() {
    assert_eq!(host_name("web-7d9f-abcde", "default", "acme"), "web-7d9f-abcde-x-default-x-acme");
    assert!(is_label(&host_name("web", "default", "acme")));
}

#[test]
fn hashed_when_ambiguous_long_or_dotted() {
    // These two would both read "a-x-x-b-x-t".
    let (one, two) = (host_name("a-x", "b", "t"), host_name("a", "x-b", "t"));
    assert_ne!(one, two);
    assert!(one.len() <= MAX && two.len() <= MAX);
    let dotted = host_name("my.config", "default", "acme");
    assert!(is_label(&dotted), "{dotted}");
    assert!(dotted.starts_with("my-config-x-default-"), "{dotted}");
    assert_ne!(dotted, host_name("my-config", "default", "acme"));
    let long = host_name(&"a".repeat(253), &"n".repeat(63), &"t".repeat(40));
    assert!(is_label(&long) && long.len() == MAX, "{long}");
    assert!(is_label(&host_name("0", "0", "0")));
    assert!(is_label(&host_name("...", "-", "t")));
}

/// A random valid object name (a DNS-1123 subdomain: labels of `a-z0-9-` joined by dots) from
/// a small alphabet, so the separators and ambiguous shapes come up often.
fn random_name<R: Rng>(rng: &mut R, max: usize) -> String {
    const ALPHABET: &[u8] = b"ax1-";
    loop {
        let len = rng.random_range(1..=max);
        let mut s: String = (0..len).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
        if max > 63 && rng.random_bool(0.2) {
            let at = rng.random_range(0..s.len());
            s.insert(at, '.');
        }
        let valid = s.split('.').all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'));
        if valid && s.len() <= max {
            return s;
        }
    }
}

#[test]
fn valid_and_collision_free_over_random_inputs() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut seen: HashMap<String, (String, String)> = HashMap::new();
    for i in 0..200_000 {
        // Short names most of the time, so readable forms and near-collisions are common.
        let max_name = if i % 10 == 0 { 253 } else { 12 };
        let name = random_name(&mut rng, max_name);
        let ns = random_name(&mut rng, if i % 10 == 1 { 63 } else { 8 });
        let ns = ns.replace('.', "x");
        let host = host_name(&name, &ns, "tenant");
        assert!(is_label(&host), "{name:?} in {ns:?} → {host:?} is not a DNS label");
        if let Some(prev) = seen.insert(host.clone(), (name.clone(), ns.clone())) {
            assert_eq!(prev, (name.clone(), ns.clone()), "{host:?} names two objects");
        }
    }
    assert!(seen.len() > 50_000, "enough distinct inputs: {}", seen.len());
}

#[test]
fn deterministic() {
    assert_eq!(host_name("a.b", "c", "t"), host_name("a.b", "c", "t"));
    assert_ne!(host_name("a.b", "c", "t"), host_name("a.b", "c", "u"), "the tenant is part of the hash");
}
