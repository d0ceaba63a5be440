//! A minimal DER reader for the one thing vt needs from a client certificate: its subject's
//! common name and organizations. Anything malformed is an error, never a panic.

/// The parts of a certificate subject Kubernetes uses for authentication.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subject {
    /// The common name (CN): the user name.
    pub common_name: String,
    /// The organizations (O), in order: the groups.
    pub organizations: Vec<String>,
}

const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const OID_ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];

/// One TLV: tag, contents, and what follows it.
pub(crate) fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let (&tag, rest) = input.split_first().ok_or("truncated DER: missing tag")?;
    let (&first, rest) = rest.split_first().ok_or("truncated DER: missing length")?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return Err("unsupported DER length".into());
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err("truncated DER: content shorter than its length".into());
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// One TLV with tag `want`: its contents and what follows it.
pub(crate) fn expect(input: &[u8], want: u8) -> Result<(&[u8], &[u8]), String> {
    let (tag, content, rest) = tlv(input)?;
    if tag != want {
        return Err(format!("unexpected DER tag {tag:#04x}, expected {want:#04x}"));
    }
    Ok((content, rest))
}

/// Reads the subject of a DER-encoded X.509 certificate.
pub fn subject_of(cert: &[u8]) -> Result<Subject, String> {
    let (certificate, _) = expect(cert, 0x30)?;
    let (tbs, _) = expect(certificate, 0x30)?;
    let mut rest = tbs;
    // Optional explicit version [0].
    if rest.first() == Some(&0xa0) {
        rest = tlv(rest)?.2;
    }
    // serialNumber, signature, issuer, validity, then subject.
    for _ in 0..4 {
        rest = tlv(rest)?.2;
    }
    let (rdns, _) = expect(rest, 0x30)?;
    read_name(rdns)
}

/// Reads the common name and organizations of an X.501 Name's contents (its RDN sequence).
pub(crate) fn read_name(mut rdns: &[u8]) -> Result<Subject, String> {
    let mut subject = Subject::default();
    while !rdns.is_empty() {
        let (set, next) = expect(rdns, 0x31)?;
        rdns = next;
        let mut atvs = set;
        while !atvs.is_empty() {
            let (atv, next) = expect(atvs, 0x30)?;
            atvs = next;
            let (oid, value) = expect(atv, 0x06)?;
            let (tag, text, _) = tlv(value)?;
            // UTF8String, PrintableString, IA5String, T61String.
            if !matches!(tag, 0x0c | 0x13 | 0x16 | 0x14) {
                continue;
            }
            let text = String::from_utf8(text.to_vec()).map_err(|_| "subject attribute is not UTF-8")?;
            if oid == OID_COMMON_NAME {
                subject.common_name = text;
            } else if oid == OID_ORGANIZATION {
                subject.organizations.push(text);
            }
        }
    }
    Ok(subject)
}

#[cfg(test)]
mod tests {
    use super::subject_of;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for input in [&[][..], &[0x30], &[0x30, 0x85, 1, 2, 3, 4, 5], &[0x30, 0x05, 0x30, 0x10], &[0xff; 64]] {
            assert!(subject_of(input).is_err());
        }
    }
}
