use super::*;
use rand::RngExt;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn ipv4_in_ipv6_is_ipv4() {
    for (spelled, want) in [
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("::ffff:169.254.169.254", "169.254.169.254"),
        ("::ffff:a9fe:a9fe", "169.254.169.254"),
        ("::127.0.0.1", "127.0.0.1"),
        ("64:ff9b::10.0.0.1", "10.0.0.1"),
        ("::1", "::1"),
        ("::", "::"),
        ("2001:db8::1", "2001:db8::1"),
        ("10.1.2.3", "10.1.2.3"),
    ] {
        assert_eq!(canonical(ip(spelled)), ip(want), "{spelled}");
        assert_eq!(parse(&format!("[{spelled}]")).unwrap(), ip(want));
    }
    assert_eq!(kind(ip("::ffff:127.0.0.2")), Kind::Loopback);
    assert_eq!(kind(ip("::ffff:169.254.1.1")), Kind::LinkLocal);
    assert_eq!(kind(ip("fe80::1")), Kind::LinkLocal);
    assert_eq!(kind(ip("::ffff:0.0.0.0")), Kind::Unspecified);
    assert_eq!(kind(ip("ff02::1")), Kind::Multicast);
    assert_eq!(kind(ip("255.255.255.255")), Kind::Multicast);
    assert_eq!(kind(ip("10.0.0.1")), Kind::Unicast);
    assert!(parse("010.0.0.1").is_err(), "leading zeros are ambiguous (octal) and refused");
    assert!(parse("1.2.3").is_err());
}

#[test]
fn cidrs_parse_canonically() {
    let c: Cidr = "10.244.0.0/16".parse().unwrap();
    assert!(c.contains(ip("10.244.3.7")) && c.contains(ip("::ffff:10.244.3.7")));
    assert!(!c.contains(ip("10.245.0.1")));
    let mapped: Cidr = "::ffff:10.244.0.0/112".parse().unwrap();
    assert_eq!(mapped, c, "an IPv4-mapped block is the IPv4 block");
    assert!("10.244.0.1/16".parse::<Cidr>().is_err(), "host bits set");
    assert!("10.0.0.0/33".parse::<Cidr>().is_err());
    assert!("nonsense/8".parse::<Cidr>().is_err());
    assert_eq!("0.0.0.0/0".parse::<Cidr>().unwrap().to_string(), "0.0.0.0/0");
    assert_eq!("10.1.2.3".parse::<Cidr>().unwrap().to_string(), "10.1.2.3/32");
}

#[test]
fn minus_leaves_exactly_the_rest() {
    let all: Cidr = "0.0.0.0/0".parse().unwrap();
    let hole: Cidr = "10.0.0.0/8".parse().unwrap();
    let rest = all.minus(&hole);
    assert_eq!(rest.len(), 8);
    assert!(rest.iter().all(|r| !r.overlaps(&hole)));
    assert!(rest.iter().any(|r| r.contains(ip("11.0.0.0"))) && rest.iter().any(|r| r.contains(ip("9.255.255.255"))));
    assert!(hole.minus(&all).is_empty());
    let other: Cidr = "192.168.0.0/16".parse().unwrap();
    assert_eq!(hole.minus(&other), vec![hole]);
}

/// Property: for random blocks and holes, an address is in `c.minus(hole)` exactly when it is
/// in `c` and not in `hole`, and canonicalization never lets a spelled-out IPv4 address escape.
#[test]
fn minus_and_canonical_hold_for_random_inputs() {
    let mut rng = rand::rng();
    for _ in 0..2000 {
        let base = Ipv4Addr::from(rng.random::<u32>());
        let c = Cidr::new(IpAddr::V4(base), rng.random_range(0..=32)).unwrap();
        let hole_addr =
            if rng.random_bool(0.5) { IpAddr::V4(base) } else { IpAddr::V4(Ipv4Addr::from(rng.random::<u32>())) };
        let hole = Cidr::new(hole_addr, rng.random_range(0..=32)).unwrap();
        let rest = c.minus(&hole);
        for _ in 0..20 {
            // Half the probes near the block (low bits flipped), half anywhere.
            let near = u32::from(base) ^ (rng.random::<u32>() >> rng.random_range(0..32));
            let probe = IpAddr::V4(Ipv4Addr::from(if rng.random_bool(0.5) { near } else { rng.random() }));
            let want = c.contains(probe) && !hole.contains(probe);
            assert_eq!(rest.iter().any(|r| r.contains(probe)), want, "{c} - {hole} at {probe}");
            let IpAddr::V4(v4) = probe else { unreachable!() };
            for spelled in [IpAddr::V6(v4.to_ipv6_mapped()), IpAddr::V6(v4.to_ipv6_compatible())] {
                if u32::from(v4) > 1 {
                    assert_eq!(c.contains(spelled), c.contains(probe), "{spelled} vs {probe}");
                    assert_eq!(kind(spelled), kind(probe));
                }
            }
        }
    }
}

#[test]
fn sets_merge_and_subtract() {
    let set = CidrSet::parse_list("10.0.0.0/8, 10.1.0.0/16,192.168.1.0/24").unwrap();
    assert_eq!(set.blocks().len(), 2, "a covered block is merged");
    assert!(set.contains(ip("::ffff:10.9.9.9")));
    let internet: Cidr = "0.0.0.0/0".parse().unwrap();
    let rest = set.subtract_from(&internet);
    assert!(rest.iter().all(|r| !set.overlaps(r)));
    assert!(rest.iter().any(|r| r.contains(ip("8.8.8.8"))));
    assert!(CidrSet::parse_list("10.0.0.0/8,bad").is_err());
}
