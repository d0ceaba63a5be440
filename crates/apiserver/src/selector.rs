//! Label and field selectors, with kube-apiserver's syntax and semantics.

use std::collections::BTreeMap;

use crate::status::ApiError;

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value`, `key==value`, `key in (a,b)`.
    In(String, Vec<String>),
    /// `key!=value`, `key notin (a,b)`: also matches objects without the key.
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
    /// `key>n`.
    Gt(String, i64),
    /// `key<n`.
    Lt(String, i64),
}

/// A parsed label selector; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// All requirements must hold.
    pub requirements: Vec<Requirement>,
}

fn invalid_selector(sel: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!("unable to parse requirement: {why} (selector {sel:?})"))
}

/// Checks a label key: an optional DNS subdomain prefix and a name of at most 63 characters.
fn valid_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && (p.is_empty() || crate::validation::dns1123_subdomain(p).is_some())
    {
        return false;
    }
    crate::validation::qualified_name_part(name)
}

fn valid_label_value(v: &str) -> bool {
    v.is_empty() || crate::validation::qualified_name_part(v)
}

/// Tokens of the label selector grammar.
#[derive(Debug, PartialEq, Eq, Clone)]
enum Tok {
    Ident(String),
    Comma,
    Open,
    Close,
    Eq,
    DoubleEq,
    NotEq,
    Not,
    Gt,
    Lt,
    In,
    NotInKw,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' => i += 1,
            ',' => {
                toks.push(Tok::Comma);
                i += 1
            }
            '(' => {
                toks.push(Tok::Open);
                i += 1
            }
            ')' => {
                toks.push(Tok::Close);
                i += 1
            }
            '=' if chars.get(i + 1) == Some(&'=') => {
                toks.push(Tok::DoubleEq);
                i += 2
            }
            '=' => {
                toks.push(Tok::Eq);
                i += 1
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                toks.push(Tok::NotEq);
                i += 2
            }
            '!' => {
                toks.push(Tok::Not);
                i += 1
            }
            '>' => {
                toks.push(Tok::Gt);
                i += 1
            }
            '<' => {
                toks.push(Tok::Lt);
                i += 1
            }
            _ => {
                let start = i;
                while i < chars.len()
                    && !matches!(chars[i], ' ' | '\t' | '\n' | ',' | '(' | ')' | '=' | '!' | '>' | '<')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                toks.push(match word.as_str() {
                    "in" => Tok::In,
                    "notin" => Tok::NotInKw,
                    _ => Tok::Ident(word),
                });
            }
        }
    }
    Ok(toks)
}

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (f,g),!h,i,j>3`.
    pub fn parse(sel: &str) -> Result<LabelSelector, ApiError> {
        let toks = lex(sel).map_err(|e| invalid_selector(sel, &e))?;
        let mut reqs = Vec::new();
        let mut i = 0;
        let ident = |t: Option<&Tok>| match t {
            // "in"/"notin" are also valid label values and keys in value position.
            Some(Tok::Ident(s)) => Some(s.clone()),
            Some(Tok::In) => Some("in".into()),
            Some(Tok::NotInKw) => Some("notin".into()),
            _ => None,
        };
        while i < toks.len() {
            let req = if toks[i] == Tok::Not {
                let key = ident(toks.get(i + 1)).ok_or_else(|| invalid_selector(sel, "expected a key after '!'"))?;
                i += 2;
                Requirement::DoesNotExist(key)
            } else {
                let key = ident(toks.get(i)).ok_or_else(|| invalid_selector(sel, "expected a key"))?;
                i += 1;
                match toks.get(i) {
                    None | Some(Tok::Comma) => Requirement::Exists(key),
                    Some(op @ (Tok::Eq | Tok::DoubleEq | Tok::NotEq)) => {
                        let op = op.clone();
                        i += 1;
                        let value = match toks.get(i) {
                            None | Some(Tok::Comma) => String::new(),
                            t => {
                                i += 1;
                                ident(t).ok_or_else(|| invalid_selector(sel, "expected a value"))?
                            }
                        };
                        if !valid_label_value(&value) {
                            return Err(invalid_selector(sel, &format!("invalid label value: {value:?}")));
                        }
                        if op == Tok::NotEq {
                            Requirement::NotIn(key, vec![value])
                        } else {
                            Requirement::In(key, vec![value])
                        }
                    }
                    Some(op @ (Tok::Gt | Tok::Lt)) => {
                        let op = op.clone();
                        i += 1;
                        let n: i64 = ident(toks.get(i)).and_then(|v| v.parse().ok()).ok_or_else(|| {
                            invalid_selector(sel, "for 'Gt', 'Lt' operators, the value must be an integer")
                        })?;
                        i += 1;
                        if op == Tok::Gt { Requirement::Gt(key, n) } else { Requirement::Lt(key, n) }
                    }
                    Some(op @ (Tok::In | Tok::NotInKw)) => {
                        let op = op.clone();
                        i += 1;
                        if toks.get(i) != Some(&Tok::Open) {
                            return Err(invalid_selector(sel, "found '', expected: '('"));
                        }
                        i += 1;
                        let mut values = Vec::new();
                        loop {
                            match toks.get(i) {
                                Some(Tok::Close) => {
                                    i += 1;
                                    break;
                                }
                                Some(Tok::Comma) => i += 1,
                                t => {
                                    let v = ident(t).ok_or_else(|| invalid_selector(sel, "expected ')' or a value"))?;
                                    if !valid_label_value(&v) {
                                        return Err(invalid_selector(sel, &format!("invalid label value: {v:?}")));
                                    }
                                    values.push(v);
                                    i += 1;
                                }
                            }
                        }
                        if op == Tok::In { Requirement::In(key, values) } else { Requirement::NotIn(key, values) }
                    }
                    Some(t) => {
                        return Err(invalid_selector(sel, &format!("unexpected token {t:?}")));
                    }
                }
            };
            let key = match &req {
                Requirement::In(k, _)
                | Requirement::NotIn(k, _)
                | Requirement::Exists(k)
                | Requirement::DoesNotExist(k)
                | Requirement::Gt(k, _)
                | Requirement::Lt(k, _) => k,
            };
            if !valid_label_key(key) {
                return Err(invalid_selector(sel, &format!("invalid label key {key:?}")));
            }
            reqs.push(req);
            match toks.get(i) {
                None => break,
                Some(Tok::Comma) => i += 1,
                Some(t) => {
                    return Err(invalid_selector(sel, &format!("found {t:?}, expected: ','")));
                }
            }
        }
        Ok(LabelSelector { requirements: reqs })
    }

    /// Whether the selector has no requirements.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
            Requirement::Gt(k, n) => labels.get(k).and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v > *n),
            Requirement::Lt(k, n) => labels.get(k).and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v < *n),
        })
    }

    /// Builds a selector from a `metav1.LabelSelector` object (matchLabels and
    /// matchExpressions). Returns `None` for a malformed one.
    pub fn from_api(sel: &serde_json::Value) -> Option<LabelSelector> {
        let mut requirements = Vec::new();
        if let Some(ml) = sel.get("matchLabels").and_then(|m| m.as_object()) {
            for (k, v) in ml {
                requirements.push(Requirement::In(k.clone(), vec![v.as_str()?.to_string()]));
            }
        }
        if let Some(exprs) = sel.get("matchExpressions").and_then(|m| m.as_array()) {
            for e in exprs {
                let key = e.get("key")?.as_str()?.to_string();
                let values: Vec<String> = e
                    .get("values")
                    .and_then(|v| v.as_array())
                    .map(|vs| vs.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                    .unwrap_or_default();
                requirements.push(match e.get("operator")?.as_str()? {
                    "In" => Requirement::In(key, values),
                    "NotIn" => Requirement::NotIn(key, values),
                    "Exists" => Requirement::Exists(key),
                    "DoesNotExist" => Requirement::DoesNotExist(key),
                    _ => return None,
                });
            }
        }
        Some(LabelSelector { requirements })
    }
}

/// A parsed field selector: `a=b,c!=d` over the fields a resource supports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// (field, value, equal?) terms; all must hold.
    pub terms: Vec<(String, String, bool)>,
}

impl FieldSelector {
    /// Parses a field selector, checking fields against `supported`.
    pub fn parse(
        sel: &str,
        supported: &[&str],
        kind_for_error: &str,
        version: &str,
    ) -> Result<FieldSelector, ApiError> {
        let mut terms = Vec::new();
        for part in sel.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, value, eq) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, v, true)
            } else {
                return Err(ApiError::bad_request(format!("invalid selector: '{sel}'; can't understand '{part}'")));
            };
            let field = field.trim();
            if !supported.contains(&field) {
                let _ = (kind_for_error, version);
                return Err(ApiError::bad_request(format!("field label not supported: {field}")));
            }
            terms.push((field.to_string(), value.trim().to_string(), eq));
        }
        Ok(FieldSelector { terms })
    }

    /// Whether the selector has no terms.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Whether the object's fields (as given by `get`) satisfy every term.
    pub fn matches(&self, get: impl Fn(&str) -> String) -> bool {
        self.terms.iter().all(|(f, v, eq)| (get(f) == *v) == *eq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn every_operator_matches_like_kubernetes() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("n", "5")]);
        for (sel, want) in [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("tier in (front, back)", true),
            ("tier notin (front)", false),
            ("missing notin (x)", true),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("n>4", true),
            ("n<5", false),
            ("app=web,tier=back", false),
            ("", true),
            ("app=", false),
        ] {
            assert_eq!(LabelSelector::parse(sel).unwrap().matches(&l), want, "{sel}");
        }
    }

    #[test]
    fn malformed_selectors_are_bad_requests() {
        for sel in ["app in front", "a=b=c", "Bad Key=x", "x>y", "=x", "app in (a"] {
            let e = LabelSelector::parse(sel).expect_err(sel);
            assert_eq!(e.code, 400, "{sel}");
        }
    }

    #[test]
    fn field_selectors_check_supported_fields() {
        let f = FieldSelector::parse(
            "metadata.name=a,status.phase!=Running",
            &["metadata.name", "status.phase"],
            "Pod",
            "v1",
        )
        .unwrap();
        assert!(f.matches(|k| if k == "metadata.name" { "a".into() } else { "Pending".into() }));
        assert_eq!(FieldSelector::parse("spec.foo=x", &["metadata.name"], "Pod", "v1").unwrap_err().code, 400);
    }
}
