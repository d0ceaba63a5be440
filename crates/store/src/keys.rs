//! Key-range helpers shared by the backends.

/// The exclusive end of the range of keys starting with `prefix`, or `None` when no such end
/// exists (the prefix is empty or made only of `0xff` bytes), meaning "to the end of the key
/// space".
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"/registry/pods/"), Some(b"/registry/pods0".to_vec()));
        assert_eq!(prefix_end(b"a"), Some(b"b".to_vec()));
    }

    #[test]
    fn prefix_end_carries_over_ff_bytes() {
        assert_eq!(prefix_end(&[0x61, 0xff, 0xff]), Some(vec![0x62]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }
}
