//! A protobuf wire-format writer: just enough to encode messages field by field.
//!
//! proto3 rules: scalar fields equal to their default (empty string, 0, false) are not
//! written; nested messages are length-delimited and written even when empty.

/// Wire type of varints.
const VARINT: u64 = 0;
/// Wire type of fixed 64-bit values (double).
const FIXED64: u64 = 1;
/// Wire type of length-delimited values (strings, bytes, messages).
const LEN: u64 = 2;

/// A message under construction.
#[derive(Default, Debug)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty message.
    pub fn new() -> Self {
        Self::default()
    }

    /// The encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn tag(&mut self, field: u32, wire: u64) {
        self.varint((u64::from(field) << 3) | wire);
    }

    /// A `bytes` field, written even when empty (for repeated and oneof members).
    pub fn bytes_always(&mut self, field: u32, b: &[u8]) {
        self.tag(field, LEN);
        self.varint(b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    /// A `string` field; skipped when empty.
    pub fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes_always(field, s.as_bytes());
        }
    }

    /// One element of a `repeated string` field (written even when empty).
    pub fn string_item(&mut self, field: u32, s: &str) {
        self.bytes_always(field, s.as_bytes());
    }

    /// An `int64`/`int32` field (two's complement varint); skipped when zero.
    pub fn int(&mut self, field: u32, v: i64) {
        if v != 0 {
            self.tag(field, VARINT);
            self.varint(v as u64);
        }
    }

    /// An integer field written even when zero (proto2 fields Go always marshals).
    pub fn int_always(&mut self, field: u32, v: i64) {
        self.tag(field, VARINT);
        self.varint(v as u64);
    }

    /// A `double` field written even when zero.
    pub fn double_always(&mut self, field: u32, v: f64) {
        self.tag(field, FIXED64);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A `bool` field; skipped when false.
    pub fn bool(&mut self, field: u32, v: bool) {
        if v {
            self.tag(field, VARINT);
            self.varint(1);
        }
    }

    /// A `double` field; skipped when zero.
    pub fn double(&mut self, field: u32, v: f64) {
        if v != 0.0 {
            self.tag(field, FIXED64);
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// A nested message built by `f`, written even when empty.
    pub fn message(&mut self, field: u32, f: impl FnOnce(&mut Writer)) {
        let mut inner = Writer::new();
        f(&mut inner);
        self.bytes_always(field, &inner.buf);
    }
}

#[cfg(test)]
mod tests {
    use super::Writer;

    #[test]
    fn encodes_the_protobuf_wire_format() {
        // Values from the protobuf encoding guide: field 1 = 150 is 08 96 01.
        let mut w = Writer::new();
        w.int(1, 150);
        assert_eq!(w.into_bytes(), [0x08, 0x96, 0x01]);
        // Field 2 = "testing" is 12 07 74 65 73 74 69 6e 67.
        let mut w = Writer::new();
        w.string(2, "testing");
        assert_eq!(w.into_bytes(), b"\x12\x07testing");
        // Field 3 = message { field 1 = 150 } is 1a 03 08 96 01.
        let mut w = Writer::new();
        w.message(3, |m| m.int(1, 150));
        assert_eq!(w.into_bytes(), [0x1a, 0x03, 0x08, 0x96, 0x01]);
        // Negative int64 takes ten bytes; defaults are not written.
        let mut w = Writer::new();
        w.int(1, -1);
        w.int(2, 0);
        w.string(3, "");
        w.bool(4, false);
        w.double(5, 0.0);
        assert_eq!(w.into_bytes().len(), 11);
        let mut w = Writer::new();
        w.double(1, 1.5);
        assert_eq!(w.into_bytes(), [0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f]);
    }
}
