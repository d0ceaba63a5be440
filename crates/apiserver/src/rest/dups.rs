//! Duplicate fields in JSON bodies (`{"a":1,"a":2}`): parsers keep the last value silently;
//! kube-apiserver reports them under `fieldValidation` (Strict: an error, Warn: a warning) as
//! `duplicate field "<path>"`, with paths like `metadata.name` or `spec.containers[0].image`.

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The paths of keys repeated within one object of a JSON document, in document order. A
/// document that does not parse yields none (the decoder reports it).
pub(crate) fn duplicate_fields(body: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    if (Walk { path: String::new(), out: &mut out }).deserialize(&mut de).is_err() {
        return Vec::new();
    }
    out
}

/// Parses YAML keeping the last of repeated keys (what kube-apiserver does when duplicates
/// are warned about or ignored).
pub(crate) fn yaml_last_wins(body: &[u8]) -> Result<serde_json::Value, serde_saphyr::Error> {
    let options = serde_saphyr::options! { duplicate_keys: serde_saphyr::DuplicateKeyPolicy::LastWins };
    serde_saphyr::from_slice_with_options(body, options)
}

/// A duplicate-key error of the YAML decoder, worded as kube's (`line 6: key "other" already
/// set in map`); `None` for other errors.
pub(crate) fn yaml_duplicate(e: &serde_saphyr::Error) -> Option<String> {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("");
    let (position, rest) = first.split_once(": duplicate mapping key: ")?;
    let line = position.trim_start_matches("error: ").strip_prefix("line ")?.split(' ').next()?;
    let key = rest.split(", set DuplicateKeyPolicy").next()?;
    Some(format!("line {line}: key {key:?} already set in map"))
}

struct Walk<'a> {
    path: String,
    out: &'a mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0usize;
        loop {
            let path = format!("{}[{i}]", self.path);
            if seq.next_element_seed(Walk { path, out: &mut *self.out })?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen: HashSet<String> = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() { key.clone() } else { format!("{}.{key}", self.path) };
            if !seen.insert(key) {
                self.out.push(path.clone());
            }
            map.next_value_seed(Walk { path, out: &mut *self.out })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::duplicate_fields;

    #[test]
    fn finds_repeated_keys_with_their_paths() {
        let body = br#"{"kind":"Pod","metadata":{"name":"a","name":"b"},"spec":{"containers":[{"name":"c","image":"x","image":"y"}]},"kind":"Pod"}"#;
        assert_eq!(duplicate_fields(body), ["metadata.name", "spec.containers[0].image", "kind"]);
        assert!(duplicate_fields(br#"{"a":{"b":1},"c":{"b":2}}"#).is_empty());
        assert!(duplicate_fields(b"{not json").is_empty());
    }

    /// The YAML decoder finds duplicate keys itself; vt reports the first as kube's YAML
    /// decoder words it.
    #[test]
    fn yaml_decoder_refuses_duplicate_keys() {
        let e = serde_saphyr::from_str::<serde_json::Value>("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert!(e.to_string().contains("duplicate"), "{e}");
        assert_eq!(super::yaml_duplicate(&e).as_deref(), Some(r#"line 3: key "a" already set in map"#));
        let v = super::yaml_last_wins(b"a: 1\nb: 2\na: 3\n").unwrap();
        assert_eq!(v, serde_json::json!({"a": 3, "b": 2}));
    }
}
