//! The server name of a TLS ClientHello, read from the raw bytes before any TLS library sees
//! them: a listener shared by several manager replicas decides from it whether to serve the
//! connection or pass it, untouched (client certificates and all), to the replica that owns
//! the tenant (RFC 8446 §4.1.2, RFC 6066 §3).

/// What the first bytes of a connection say.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// More bytes are needed (at least this many in all).
    Incomplete(usize),
    /// A complete ClientHello, and its server name if it has one.
    Complete(Option<String>),
    /// Not a TLS ClientHello.
    NotTls,
}

/// The largest ClientHello record read: one TLS record.
pub const MAX_HELLO: usize = 5 + (1 << 14);

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Some(h)
    }

    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| b[0] as usize)
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3).map(|b| (b[0] as usize) << 16 | (b[1] as usize) << 8 | b[2] as usize)
    }

    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// Reads the ClientHello at the start of `buf` (the bytes received so far).
pub fn parse(buf: &[u8]) -> Hello {
    // The record: handshake (22), a TLS 1.x version, a length.
    if buf.is_empty() {
        return Hello::Incomplete(5);
    }
    if buf[0] != 22 || buf.get(1).is_some_and(|&v| v != 3) {
        return Hello::NotTls;
    }
    if buf.len() < 5 {
        return Hello::Incomplete(5);
    }
    let len = u16::from_be_bytes([buf[3], buf[4]]) as usize;
    if len == 0 || len > 1 << 14 {
        return Hello::NotTls;
    }
    if buf.len() < 5 + len {
        return Hello::Incomplete(5 + len);
    }
    // A ClientHello split over several records is legal but unseen in practice: treated as
    // having no server name (the connection is served here).
    match client_hello(&buf[5..5 + len]) {
        Some(name) => Hello::Complete(name),
        None => Hello::NotTls,
    }
}

/// The server name of a ClientHello handshake message (`None`: malformed).
fn client_hello(b: &[u8]) -> Option<Option<String>> {
    let mut r = Reader { b };
    if r.u8()? != 1 {
        return None;
    }
    let len = r.u24()?;
    let Some(body) = r.take(len) else {
        // Fragmented across records: no name to route by.
        return Some(None);
    };
    let mut r = Reader { b: body };
    r.take(2 + 32)?; // legacy version, random
    r.vec8()?; // session id
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    if r.b.is_empty() {
        return Some(None);
    }
    let mut ext = Reader { b: r.vec16()? };
    while !ext.b.is_empty() {
        let kind = ext.u16()?;
        let data = ext.vec16()?;
        if kind != 0 {
            continue;
        }
        let mut list = Reader { b: Reader { b: data }.vec16()? };
        while !list.b.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec16()?;
            if name_type == 0 {
                let name = std::str::from_utf8(name).ok()?;
                return Some(Some(name.to_ascii_lowercase()));
            }
        }
        return Some(None);
    }
    Some(None)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// The bytes rustls, as a client, opens a connection to `name` with.
    fn hello(name: &str) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let server = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), server).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn reads_the_server_name_a_real_client_sends() {
        let bytes = hello("Acme.vt.local");
        assert_eq!(parse(&bytes), Hello::Complete(Some("acme.vt.local".into())));
        // Every shorter prefix asks for more, never misreads.
        for n in 0..bytes.len() {
            assert!(matches!(parse(&bytes[..n]), Hello::Incomplete(m) if m > n), "prefix {n}");
        }
        // An IP address is not sent as a server name.
        assert_eq!(parse(&hello("127.0.0.1")), Hello::Complete(None));
    }

    #[test]
    fn anything_else_is_not_tls_and_never_panics() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
        assert_eq!(parse(&[22, 3, 1, 0, 0]), Hello::NotTls);
        let mut bytes = hello("acme.vt.local");
        // Corrupt lengths inside the hello: malformed, not a panic.
        for i in 5..bytes.len() {
            let saved = bytes[i];
            bytes[i] = 0xff;
            let _ = parse(&bytes);
            bytes[i] = saved;
        }
        for seed in 0u32..2000 {
            let junk: Vec<u8> = (0..(seed % 300))
                .map(|i| (seed.wrapping_mul(2_654_435_761).wrapping_add(i * 40_503) >> 7) as u8)
                .collect();
            let mut framed = vec![22, 3, 1, 0, junk.len() as u8];
            framed.extend(&junk);
            let _ = parse(&framed);
        }
    }
}
