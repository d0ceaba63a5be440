//! The static cost of a CRD's `x-kubernetes-validations` rules, checked when the CRD is
//! written, as apiextensions-apiserver checks it: a rule whose worst case exceeds
//! `StaticEstimatedCostLimit` (10⁷), or rules whose worst cases together — each times the
//! most values it can run on — exceed `StaticEstimatedCRDCostLimit` (10⁸), make the CRD
//! invalid. The rules are then evaluated by kube-cel, which has no runtime meter: this bound
//! is what keeps one tenant's custom resources from spinning a core of the shared process.
//!
//! The estimate follows kube's idea, simplified: a comprehension costs its range's largest
//! size times its body; a size comes from the schema (`maxItems`, `maxProperties`,
//! `maxLength`) or, unbounded, from the largest request (3 MiB) over the smallest element
//! (kube derives it per type; vt takes 2 bytes, a one-digit number and its comma).

use kube_core::cel::cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue, operators};
use serde_json::Value;

use crate::cel;

/// kube's per-rule limit.
pub(crate) const RULE_LIMIT: u64 = 10_000_000;
/// kube's limit for all the rules of a CRD version, each times its cardinality.
pub(crate) const CRD_LIMIT: u64 = 100_000_000;
/// The key of a synthetic schema that only carries a size.
const SIZE: &str = "x-vt-size";

/// The most elements a value without a bound can have.
const UNBOUNDED: u64 = 3 * 1024 * 1024 / 2;

/// The element a comprehension's step appends (`accu + [x]`, possibly under a condition).
fn appended_element(step: &IdedExpr) -> Option<&IdedExpr> {
    match &step.expr {
        Expr::Call(c) if c.func_name == operators::ADD && c.args.len() == 2 => match &c.args[1].expr {
            Expr::List(l) if l.elements.len() == 1 => Some(&l.elements[0]),
            _ => None,
        },
        Expr::Call(c) if c.func_name == operators::CONDITIONAL && c.args.len() == 3 => {
            appended_element(&c.args[1]).or_else(|| appended_element(&c.args[2]))
        }
        _ => None,
    }
}

/// A rule's worst-case cost, `self` having `schema`.
pub(crate) fn rule_cost(e: &IdedExpr, schema: &Value) -> u64 {
    // `oldSelf` (transition rules) has the same schema as `self`.
    let scope = vec![("self".into(), Some(schema.clone())), ("oldSelf".into(), Some(schema.clone()))];
    Estimator { scope, sizes: Default::default() }.cost(e)
}

/// The most elements (or bytes, for strings) a value of `schema` holds; a scalar holds one.
pub(crate) fn bound(schema: Option<&Value>) -> u64 {
    let Some(s) = schema else { return UNBOUNDED };
    // A size the estimate knows without a schema (a comprehension variable over a literal).
    if let Some(n) = s.get(SIZE).and_then(Value::as_u64) {
        return n;
    }
    let limit = match s.get("type").and_then(Value::as_str) {
        Some("integer" | "number" | "boolean") => return 1,
        Some("string") => "maxLength",
        Some("array") => "maxItems",
        Some("object") => "maxProperties",
        _ => return UNBOUNDED,
    };
    s.get(limit).and_then(Value::as_u64).unwrap_or(UNBOUNDED).min(UNBOUNDED)
}

struct Estimator {
    /// Names in scope (`self`, comprehension variables) and their schemas, if known.
    scope: Vec<(String, Option<Value>)>,
    /// Sizes already worked out, by node id (and whether of an element).
    sizes: std::collections::HashMap<(u64, bool), u64>,
}

impl Estimator {
    /// The schema of what `e` evaluates to, when it is a path from a name in scope.
    fn schema_of(&self, e: &IdedExpr) -> Option<Value> {
        match &e.expr {
            Expr::Ident(name) => self.scope.iter().rev().find(|(n, _)| n == name).and_then(|(_, s)| s.clone()),
            Expr::Select(s) if s.test => Some(serde_json::json!({"type": "boolean"})),
            Expr::Select(s) => {
                let parent = self.schema_of(&s.operand)?;
                parent
                    .pointer(&format!("/properties/{}", s.field.replace('~', "~0").replace('/', "~1")))
                    .or_else(|| parent.get("additionalProperties").filter(|a| a.is_object()))
                    .cloned()
            }
            Expr::Call(c) if c.func_name == operators::INDEX && c.args.len() == 2 => {
                let parent = self.schema_of(&c.args[0])?;
                parent.get("items").or_else(|| parent.get("additionalProperties").filter(|a| a.is_object())).cloned()
            }
            _ => None,
        }
    }

    /// The most elements (or bytes) `e` can have, including what calls build: a chain of
    /// `replace`s multiplies a string, `+` and `join` add theirs up. Each node is sized once
    /// (its id is unique in the rule): nested comprehensions would otherwise be re-sized at
    /// every level, exponentially.
    fn size(&mut self, e: &IdedExpr) -> u64 {
        self.memo(e, false, Self::size_of)
    }

    /// `work(e)`, worked out once per node (`element`: of the node's elements).
    fn memo(&mut self, e: &IdedExpr, element: bool, work: fn(&mut Self, &IdedExpr) -> u64) -> u64 {
        if let Some(n) = self.sizes.get(&(e.id, element)) {
            return *n;
        }
        let n = work(self, e);
        self.sizes.insert((e.id, element), n);
        n
    }

    fn size_of(&mut self, e: &IdedExpr) -> u64 {
        match &e.expr {
            Expr::Literal(LiteralValue::String(s)) => s.inner().len() as u64,
            Expr::Literal(LiteralValue::Bytes(b)) => b.inner().len() as u64,
            Expr::Literal(_) => 1,
            Expr::List(l) => l.elements.len() as u64,
            Expr::Map(m) => m.entries.len() as u64,
            // `map` and `filter` keep at most their range's size.
            Expr::Comprehension(c) => self.size(&c.iter_range),
            Expr::Call(c) => match (c.func_name.as_str(), c.target.as_deref(), c.args.as_slice()) {
                ("replace", Some(t), [_, new, ..]) => {
                    let s = self.size(t);
                    s.saturating_add(s.saturating_add(1).saturating_mul(self.size(new)))
                }
                (operators::ADD, None, [a, b]) => self.size(a).saturating_add(self.size(b)),
                ("join", Some(t), rest) => {
                    let sep = rest.first().map_or(0, |x| self.size(x));
                    self.size(t).saturating_mul(self.element_size(t).saturating_add(sep))
                }
                ("format", Some(f), [args]) => {
                    let n = self.size(args);
                    self.size(f).saturating_add(n.saturating_mul(self.element_size(args)))
                }
                ("quote", _, [x]) => self.size(x).saturating_mul(6).saturating_add(2),
                ("range", _, [n]) => match &n.expr {
                    Expr::Literal(LiteralValue::Int(i)) => u64::try_from(*i.inner()).unwrap_or(0),
                    _ => UNBOUNDED,
                },
                // An item of a list: as large as its largest element.
                (operators::INDEX, None, [list, _]) => match self.schema_of(e) {
                    Some(sc) => bound(Some(&sc)),
                    None => self.element_size(list),
                },
                ("split" | "lowerAscii" | "upperAscii" | "trim" | "substring" | "reverse" | "charAt", Some(t), _) => {
                    self.size(t)
                }
                _ => bound(self.schema_of(e).as_ref()),
            },
            _ => bound(self.schema_of(e).as_ref()),
        }
    }

    /// The most bytes or elements one element of the list `e` can have.
    fn element_size(&mut self, e: &IdedExpr) -> u64 {
        self.memo(e, true, Self::element_size_of)
    }

    fn element_size_of(&mut self, e: &IdedExpr) -> u64 {
        match &e.expr {
            Expr::List(l) => l.elements.iter().map(|x| self.size(x)).max().unwrap_or(0),
            Expr::Comprehension(c) => {
                // `map`'s step appends `[f(x)]`; `filter`'s appends `[x]` (an element of the range).
                let items = self.schema_of(&c.iter_range).and_then(|s| s.get("items").cloned());
                self.scope.push((c.iter_var.clone(), items));
                let appended = appended_element(&c.loop_step).map(|x| self.size(x));
                self.scope.pop();
                appended.unwrap_or_else(|| self.element_size(&c.iter_range))
            }
            _ => bound(self.schema_of(e).and_then(|s| s.get("items").cloned()).as_ref()),
        }
    }

    fn cost(&mut self, e: &IdedExpr) -> u64 {
        match &e.expr {
            Expr::Comprehension(c) => {
                let range = self.cost(&c.iter_range);
                let n = self.size(&c.iter_range);
                // The variable is a list's item, or a map's key (a string), or — over a
                // computed list — as large as its largest element.
                let items = match self.schema_of(&c.iter_range) {
                    Some(s) if s.get("items").is_some() => s.get("items").cloned(),
                    Some(s) if s.get("additionalProperties").is_some() || s.get("properties").is_some() => {
                        Some(serde_json::json!({"type": "string"}))
                    }
                    _ => Some(serde_json::json!({SIZE: self.element_size(&c.iter_range)})),
                };
                self.scope.push((c.iter_var.clone(), items));
                // The accumulator (of `map` and `filter`) holds at most the range's size.
                self.scope.push((c.accu_var.clone(), Some(serde_json::json!({"type": "array", "maxItems": n}))));
                let body = self.cost(&c.loop_cond).saturating_add(self.cost(&c.loop_step));
                let rest = self.cost(&c.accu_init).saturating_add(self.cost(&c.result));
                self.scope.truncate(self.scope.len() - 2);
                range.saturating_add(n.saturating_mul(body.max(1))).saturating_add(rest)
            }
            Expr::Call(c) => {
                // Logical operators cost only their operands (as in cel-go's cost model).
                let own = matches!(
                    c.func_name.as_str(),
                    operators::LOGICAL_AND
                        | operators::LOGICAL_OR
                        | operators::NOT_STRICTLY_FALSE
                        | operators::CONDITIONAL
                );
                let mut total = u64::from(!own);
                if let Some(t) = &c.target {
                    total = total.saturating_add(self.cost(t));
                }
                for a in &c.args {
                    total = total.saturating_add(self.cost(a));
                }
                // Functions that read a whole string or list of the object: a tenth per byte
                // or item (kube's traversal cost).
                // (Not `+`: a list append — a comprehension's step — reads nothing; strings
                // joined by `+` are charged as built, below.)
                if !matches!(
                    c.func_name.as_str(),
                    operators::LOGICAL_AND
                        | operators::LOGICAL_OR
                        | operators::LOGICAL_NOT
                        | operators::CONDITIONAL
                        | operators::NOT_STRICTLY_FALSE
                        | operators::INDEX
                        | operators::ADD
                        | "size"
                ) {
                    let operands = c.target.iter().map(|t| &**t).chain(c.args.iter());
                    let read = operands.filter_map(|x| self.schema_of(x)).map(|sc| bound(Some(&sc)) / 10);
                    total = total.saturating_add(read.fold(0u64, u64::saturating_add));
                }
                // Calls that build text or lists: a tenth per byte or element built.
                let appends = c.func_name == operators::ADD && c.args.iter().any(|a| matches!(a.expr, Expr::List(_)));
                let builds =
                    matches!(c.func_name.as_str(), "replace" | "join" | "format" | "split" | "quote" | operators::ADD);
                if builds && !appends {
                    total = total.saturating_add(self.size(e) / 10);
                }
                // Calls whose work is not linear in what they read, or that build a list.
                let extra = match (c.func_name.as_str(), c.target.as_deref(), c.args.as_slice()) {
                    ("distinct", Some(t), _) => {
                        let n = self.size(t);
                        n.saturating_mul(n)
                    }
                    (f, Some(IdedExpr { expr: Expr::Ident(ns), .. }), [a, b])
                        if ns == "sets" && cel::SET_FUNCTIONS.contains(&f) =>
                    {
                        self.size(a).saturating_mul(self.size(b))
                    }
                    ("range", _, _) => self.size(e),
                    (f, _, _) if cel::REGEX_FUNCTIONS.contains(&f) => cel::REGEX_COMPILE,
                    _ => 0,
                };
                total.saturating_add(extra)
            }
            Expr::List(l) => l.elements.iter().fold(1u64, |acc, x| acc.saturating_add(self.cost(x))),
            Expr::Map(m) => {
                let mut total = 1u64;
                for entry in &m.entries {
                    if let EntryExpr::MapEntry(me) = &entry.expr {
                        total = total.saturating_add(self.cost(&me.key)).saturating_add(self.cost(&me.value));
                    }
                }
                total
            }
            Expr::Select(s) => 1u64.saturating_add(self.cost(&s.operand)),
            Expr::Literal(_) => 0,
            _ => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cost(rule: &str, schema: &Value) -> u64 {
        crate::cel::deep(|| {
            let p = crate::cel::parse(rule).unwrap();
            rule_cost(p.expression(), schema)
        })
        .unwrap()
    }

    #[test]
    fn bounded_rules_are_cheap_and_nested_unbounded_ones_are_not() {
        let unbounded =
            json!({"type": "object", "properties": {"items": {"type": "array", "items": {"type": "integer"}}}});
        let bounded = json!({"type": "object", "properties": {"items": {"type": "array", "maxItems": 100, "items": {"type": "integer"}}}});
        // One pass over an unbounded list fits (kube allows it too).
        assert!(cost("self.items.all(x, x > 0)", &unbounded) < RULE_LIMIT);
        // A pass per item over it does not; with maxItems it does.
        let nested = "self.items.all(x, self.items.exists(y, y == x))";
        assert!(cost(nested, &unbounded) > RULE_LIMIT);
        assert!(cost(nested, &bounded) < RULE_LIMIT);
        // Literal ranges count their elements: 10⁸ iterations.
        let ten = "[0,1,2,3,4,5,6,7,8,9]";
        let literal = format!(
            "{ten}.all(a, {ten}.all(b, {ten}.all(c, {ten}.all(d, {ten}.all(e, {ten}.all(f, {ten}.all(g, {ten}.all(h, true))))))))"
        );
        assert!(cost(&literal, &bounded) > RULE_LIMIT);
        assert!(cost("self.items.size() < 5", &unbounded) < 10);
        // Text that grows: six replaces multiplying a 10-byte string by 64 each (68 GB).
        let short = json!({"type": "object", "properties": {"s": {"type": "string", "maxLength": 10},
            "names": {"type": "array", "maxItems": 20, "items": {"type": "string", "maxLength": 63}}}});
        let big = "x".repeat(64);
        let chain = format!("self.s{}.size() > 0", format!(".replace('x', '{big}')").repeat(6));
        assert!(cost(&chain, &short) > RULE_LIMIT);
        assert!(cost("self.s.replace('x', 'yy').size() > 0", &short) < 100);
        // One pass of `map` over an unbounded list fits, as `all` does.
        assert!(cost("self.items.map(x, x * 2).size() > 0", &unbounded) < RULE_LIMIT);
        // Transition rules and presence tests are cheap on bounded values (kube: ~100).
        let small = json!({"type": "array", "maxItems": 16, "items": {"type": "string", "maxLength": 63}});
        assert!(cost("oldSelf.all(x, x in self)", &small) < 10_000);
        let object = json!({"type": "object", "properties": {"x": {"type": "string"}}});
        assert!(cost("has(self.x) == has(oldSelf.x)", &object) < 100);
        // A map literal's values are costed; a literal range's items sized; a big range too.
        let hidden = "{'k': self.items.all(x, self.items.all(y, self.items.all(z, x == y)))}.k";
        assert!(cost(hidden, &unbounded) > RULE_LIMIT);
        assert!(cost("lists.range(10000000000).all(x, true)", &unbounded) > RULE_LIMIT);
        let mut doubling = "self.s".to_string();
        for _ in 0..31 {
            doubling = format!("[{doubling}].map(v, v + v)[0]");
        }
        assert!(cost(&format!("{doubling}.size() > 0"), &short) > RULE_LIMIT);
        assert!(cost("self.items.distinct().size() == self.items.size()", &unbounded) > RULE_LIMIT);
        assert!(cost("self.items.distinct().size() == self.items.size()", &bounded) < 100_000);
        // Joining bounded names is cheap.
        assert!(cost("self.names.map(n, n.lowerAscii()).join(',').size() < 500", &short) < 1_000);
    }
}
