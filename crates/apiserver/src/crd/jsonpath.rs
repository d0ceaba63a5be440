//! The JSONPath dialect of `additionalPrinterColumns` (kubectl's): `.a.b`, `.a[0]`, `.a[*].b`,
//! `.a['x.y']`, and filters `.a[?(@.type=="Ready")].status`. Evaluation yields every match.

use serde_json::Value;

#[derive(Debug, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    All,
    /// `[?(@.path == "value")]` (`!=` too).
    Filter(Vec<String>, bool, Value),
}

fn parse(path: &str) -> Option<Vec<Step>> {
    let p = path.trim();
    let p = p.strip_prefix('{').and_then(|x| x.strip_suffix('}')).unwrap_or(p);
    let p = p.strip_prefix('$').unwrap_or(p);
    let b = p.as_bytes();
    let mut i = 0;
    let mut steps = Vec::new();
    while i < b.len() {
        match b[i] {
            b'.' => {
                i += 1;
                let start = i;
                while i < b.len() && b[i] != b'.' && b[i] != b'[' {
                    i += 1;
                }
                if i > start {
                    steps.push(Step::Field(p[start..i].to_string()));
                }
            }
            b'[' => {
                let end = p[i..].find(']').map(|e| i + e)?;
                let inner = p[i + 1..end].trim();
                // A filter may contain ']' inside quotes; find the closing ")]".
                if inner.starts_with("?(") {
                    let close = p[i..].find(")]").map(|e| i + e)?;
                    let expr = p[i + 3..close].trim();
                    let (lhs, eq, rhs) = if let Some((l, r)) = expr.split_once("==") {
                        (l, true, r)
                    } else {
                        let (l, r) = expr.split_once("!=")?;
                        (l, false, r)
                    };
                    let fields: Vec<String> =
                        lhs.trim().strip_prefix('@')?.split('.').filter(|x| !x.is_empty()).map(String::from).collect();
                    let rhs = rhs.trim();
                    let value = if let Some(q) = rhs.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
                        Value::String(q.into())
                    } else if let Some(q) = rhs.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')) {
                        Value::String(q.into())
                    } else {
                        serde_json::from_str(rhs).ok()?
                    };
                    steps.push(Step::Filter(fields, eq, value));
                    i = close + 2;
                    continue;
                }
                if inner == "*" {
                    steps.push(Step::All);
                } else if let Some(q) = inner
                    .strip_prefix('\'')
                    .and_then(|x| x.strip_suffix('\''))
                    .or_else(|| inner.strip_prefix('"').and_then(|x| x.strip_suffix('"')))
                {
                    steps.push(Step::Field(q.to_string()));
                } else {
                    steps.push(Step::Index(inner.parse().ok()?));
                }
                i = end + 1;
            }
            _ => {
                // A leading name without a dot.
                let start = i;
                while i < b.len() && b[i] != b'.' && b[i] != b'[' {
                    i += 1;
                }
                steps.push(Step::Field(p[start..i].to_string()));
            }
        }
    }
    Some(steps)
}

fn field<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k.as_str()))
}

/// Every value `path` selects in `obj` (none when the path is malformed).
pub(crate) fn find<'a>(obj: &'a Value, path: &str) -> Vec<&'a Value> {
    let Some(steps) = parse(path) else { return Vec::new() };
    let mut current = vec![obj];
    for step in &steps {
        let mut next = Vec::new();
        for v in current {
            match step {
                Step::Field(k) => next.extend(v.get(k.as_str())),
                Step::Index(i) => {
                    if let Some(a) = v.as_array() {
                        let idx = if *i < 0 { a.len() as i64 + i } else { *i };
                        if idx >= 0 {
                            next.extend(a.get(idx as usize));
                        }
                    }
                }
                Step::All => match v {
                    Value::Array(a) => next.extend(a.iter()),
                    Value::Object(m) => next.extend(m.values()),
                    _ => {}
                },
                Step::Filter(fields, eq, value) => {
                    for item in v.as_array().into_iter().flatten() {
                        let got = field(item, fields);
                        if (got == Some(value)) == *eq {
                            next.push(item);
                        }
                    }
                }
            }
        }
        current = next;
    }
    current
}

#[cfg(test)]
mod tests {
    use super::find;
    use serde_json::json;

    #[test]
    fn kubectl_jsonpath_subset() {
        let o = json!({"spec": {"replicas": 3, "items": [{"n": "a"}, {"n": "b"}], "labels": {"a.b/c": "x"}},
            "status": {"conditions": [{"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        assert_eq!(find(&o, ".spec.replicas"), [&json!(3)]);
        assert_eq!(find(&o, ".spec.items[1].n"), [&json!("b")]);
        assert_eq!(find(&o, ".spec.items[*].n"), [&json!("a"), &json!("b")]);
        assert_eq!(find(&o, ".spec.labels['a.b/c']"), [&json!("x")]);
        assert_eq!(find(&o, r#".status.conditions[?(@.type=="Ready")].status"#), [&json!("True")]);
        assert_eq!(find(&o, "{.spec.replicas}"), [&json!(3)]);
        assert!(find(&o, ".spec.missing").is_empty());
        assert!(find(&o, ".spec[").is_empty());
    }
}
