//! Kubernetes resource quantities (`100m`, `1Gi`, `2.5`, `1e3`) as numbers.

/// Parses a quantity into its value (cores, bytes, ...); `None` if malformed.
pub fn parse(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0f64.powi(3),
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        e if e.starts_with('e') || e.starts_with('E') => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * mult)
}

/// The canonical form Kubernetes serializes a quantity in (`resource.Quantity.String()`):
/// binary suffixes stay binary when the value is a whole number of at least 1024, the largest
/// suffix that keeps the mantissa whole is chosen, and precision stops at nano units (rounded
/// up). `None` if malformed or beyond what vt computes exactly (|value| ≥ 10^29).
pub fn canonical(s: &str) -> Option<String> {
    let s = s.trim();
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let split = body.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(body.len());
    let (num, suffix) = body.split_at(split);
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
        return None;
    }
    let digits: String = format!("{int_part}{frac_part}");
    let mantissa: i128 = if digits.is_empty() { 0 } else { digits.parse().ok()? };
    // value = mantissa × 10^exp10 × 2^exp2
    let mut exp10: i32 = -(frac_part.len() as i32);
    let mut exp2: u32 = 0;
    #[derive(PartialEq)]
    enum Format {
        Binary,
        Decimal,
        Exponent,
    }
    let format = match suffix {
        "" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" => {
            exp10 += match suffix {
                "n" => -9,
                "u" => -6,
                "m" => -3,
                "k" => 3,
                "M" => 6,
                "G" => 9,
                "T" => 12,
                "P" => 15,
                "E" => 18,
                _ => 0,
            };
            Format::Decimal
        }
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
            exp2 = 10 * (1 + ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"].iter().position(|x| *x == suffix)? as u32);
            Format::Binary
        }
        e if e.starts_with(['e', 'E']) => {
            exp10 += e[1..].parse::<i32>().ok()?;
            Format::Exponent
        }
        _ => return None,
    };
    // Nano units, rounded up (away from zero) like Kubernetes' inf.Dec rounding.
    let shift = exp10 + 9;
    let mut nanos: i128 = if shift >= 0 {
        mantissa.checked_mul(10i128.checked_pow(shift as u32)?)?
    } else {
        let d = 10i128.checked_pow((-shift) as u32).unwrap_or(i128::MAX);
        mantissa / d + i128::from(mantissa % d != 0)
    };
    nanos = nanos.checked_mul(1i128.checked_shl(exp2)?)?;
    if nanos >= 10i128.pow(38) / 10 {
        return None;
    }
    let sign = if neg && nanos != 0 { "-" } else { "" };
    const NANO: i128 = 1_000_000_000;
    if format == Format::Binary && nanos % NANO == 0 && nanos / NANO >= 1024 {
        let mut v = nanos / NANO;
        let mut k = 0;
        while k < 6 && v % 1024 == 0 {
            v /= 1024;
            k += 1;
        }
        return Some(format!("{sign}{v}{}", ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][k]));
    }
    if nanos == 0 {
        return Some("0".into());
    }
    // The largest power of 1000 (from nano up to exa) that keeps the mantissa whole.
    let mut e: i32 = -9;
    let mut v = nanos;
    while e < 18 && v % 1000 == 0 {
        v /= 1000;
        e += 3;
    }
    let suffix = if format == Format::Exponent {
        if e == 0 { String::new() } else { format!("e{e}") }
    } else {
        match e {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            _ => "E",
        }
        .to_string()
    };
    Some(format!("{sign}{v}{suffix}"))
}

#[cfg(test)]
mod tests {
    /// Pins `resource.Quantity.String()` canonical forms (apimachinery's quantity tests).
    #[test]
    fn canonical_forms() {
        for (input, want) in [
            ("1Gi", "1Gi"),
            ("1024Mi", "1Gi"),
            ("1536Mi", "1536Mi"),
            ("0.5Gi", "512Mi"),
            ("512", "512"),
            ("1Ki", "1Ki"),
            ("0.5Ki", "512"),
            ("1000M", "1G"),
            ("1500", "1500"),
            ("1000", "1k"),
            ("0.5", "500m"),
            ("100m", "100m"),
            ("0.0001", "100u"),
            ("1.5n", "2n"),
            ("1e3", "1e3"),
            ("1E6", "1e6"),
            ("10Gi", "10Gi"),
            ("4Gi", "4Gi"),
            ("500M", "500M"),
            ("0", "0"),
            ("-1Gi", "-1Gi"),
            ("+2k", "2k"),
        ] {
            assert_eq!(super::canonical(input).as_deref(), Some(want), "{input}");
        }
        assert_eq!(super::canonical("1Q"), None);
        assert_eq!(super::canonical("."), None);
        assert_eq!(super::canonical("abc"), None);
    }

    #[test]
    fn quantities() {
        assert_eq!(super::parse("100m"), Some(0.1));
        assert_eq!(super::parse("1Gi"), Some(1073741824.0));
        assert_eq!(super::parse("2"), Some(2.0));
        assert_eq!(super::parse("1e3"), Some(1000.0));
        assert_eq!(super::parse("abc"), None);
        assert_eq!(super::parse("1Q"), None);
    }
}
