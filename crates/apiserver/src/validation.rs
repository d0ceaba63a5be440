//! Name and value validation with apimachinery's rules and messages.

use serde_json::Value;

use crate::status::FieldError;

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";

fn label_ok(s: &str, first_alpha: bool) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && if first_alpha { b[0].is_ascii_lowercase() } else { b[0] != b'-' }
        && b[b.len() - 1] != b'-'
}

/// Checks an RFC 1123 label; returns the error detail if invalid.
pub fn dns1123_label(s: &str) -> Option<String> {
    if s.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    (!label_ok(s, false)).then(|| {
        format!(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '{DNS1123_LABEL_FMT}')"
        )
    })
}

/// Checks an RFC 1123 subdomain; returns the error detail if invalid.
pub fn dns1123_subdomain(s: &str) -> Option<String> {
    if s.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    (s.is_empty() || !s.split('.').all(|l| label_ok(l, false))).then(|| {
        format!(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '{DNS1123_SUBDOMAIN_FMT}')"
        )
    })
}

/// Checks an RFC 1035 label (service names); returns the error detail if invalid.
pub fn dns1035_label(s: &str) -> Option<String> {
    if s.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    (!label_ok(s, true)).then(|| {
        format!(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '{DNS1035_LABEL_FMT}')"
        )
    })
}

/// Checks a name usable as one URL path segment (RBAC objects and a few others).
pub fn path_segment_name(s: &str) -> Option<String> {
    if s == "." || s == ".." {
        return Some(format!("may not be '{s}'"));
    }
    for bad in ["/", "%"] {
        if s.contains(bad) {
            return Some(format!("may not contain '{bad}'"));
        }
    }
    None
}

/// Whether `s` is the name part of a qualified name (label keys' name part and label values):
/// at most 63 characters, alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
pub fn qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// The rule an object name must follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain (most kinds).
    Subdomain,
    /// RFC 1123 label (namespaces, ...).
    Label,
    /// RFC 1035 label (services).
    Dns1035,
    /// Anything usable as a path segment (RBAC kinds, ...).
    PathSegment,
}

impl NameRule {
    /// The error detail for `name`, if invalid.
    pub fn check(self, name: &str) -> Option<String> {
        match self {
            NameRule::Subdomain => dns1123_subdomain(name),
            NameRule::Label => dns1123_label(name),
            NameRule::Dns1035 => dns1035_label(name),
            NameRule::PathSegment => path_segment_name(name),
        }
    }
}

const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

/// Validates a qualified name (label and annotation keys): `[prefix/]name`.
pub fn qualified_name(field: &str, key: &str, errs: &mut Vec<FieldError>) {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if key.matches('/').count() > 1 {
        errs.push(FieldError::invalid(
            field,
            &Value::String(key.into()),
            "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
        ));
        return;
    }
    if let Some(p) = prefix {
        if p.is_empty() {
            errs.push(FieldError::invalid(field, &Value::String(key.into()), "prefix part must be non-empty"));
        } else if let Some(d) = dns1123_subdomain(p) {
            errs.push(FieldError::invalid(field, &Value::String(key.into()), &format!("prefix part {d}")));
        }
    }
    if name.is_empty() {
        errs.push(FieldError::invalid(field, &Value::String(key.into()), "name part must be non-empty"));
    } else if name.len() > 63 {
        errs.push(FieldError::invalid(
            field,
            &Value::String(key.into()),
            "name part must be no more than 63 characters",
        ));
    } else if !qualified_name_part(name) {
        errs.push(FieldError::invalid(field, &Value::String(key.into()), QUALIFIED_NAME_MSG));
    }
}

/// Validates `metadata.labels`.
pub fn labels(field: &str, labels: &Value, errs: &mut Vec<FieldError>) {
    let Some(map) = labels.as_object() else {
        return;
    };
    for (k, v) in map {
        qualified_name(field, k, errs);
        let Some(v) = v.as_str() else {
            errs.push(FieldError::invalid(field, v, "label values must be strings"));
            continue;
        };
        if !v.is_empty() && !qualified_name_part(v) {
            let detail = if v.len() > 63 {
                "must be no more than 63 characters".to_string()
            } else {
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".to_string()
            };
            errs.push(FieldError::invalid(field, &Value::String(v.into()), &detail));
        }
    }
}

/// Validates `metadata.annotations` (keys, and a 256 KiB total size).
pub fn annotations(field: &str, annotations: &Value, errs: &mut Vec<FieldError>) {
    let Some(map) = annotations.as_object() else {
        return;
    };
    let mut total = 0;
    for (k, v) in map {
        qualified_name(field, &k.to_lowercase(), errs);
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > 256 * 1024 {
        errs.push(FieldError::too_long(field, 256 * 1024));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_rules() {
        assert!(dns1123_subdomain("my-app.example.com").is_none());
        assert!(dns1123_subdomain("My_App").is_some());
        assert!(dns1123_subdomain(&"a".repeat(254)).unwrap().contains("253"));
        assert!(dns1123_label("a.b").is_some());
        assert!(dns1035_label("1abc").is_some());
        assert!(dns1035_label("abc-1").is_none());
        assert!(path_segment_name("system:controller:x").is_none());
        assert_eq!(path_segment_name("a/b").unwrap(), "may not contain '/'");
    }

    #[test]
    fn label_keys_and_values() {
        let mut errs = Vec::new();
        labels(
            "metadata.labels",
            &serde_json::json!({"app.kubernetes.io/name": "web", "ok": "", "bad key": "x", "k": "-bad"}),
            &mut errs,
        );
        assert_eq!(errs.len(), 2, "{errs:?}");
    }
}
