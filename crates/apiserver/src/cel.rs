//! Tenants' CEL expressions (admission policies, webhooks' `matchConditions`) evaluated under
//! kube-apiserver's runtime cost limits, so that one tenant's expression can neither spin a
//! core of the shared process nor fill its memory.
//!
//! kube-apiserver counts an expression's cost while it runs and cancels it past
//! `PerCallLimit` (10⁶; "roughly 0.1 second") or once a binding's expressions together pass
//! `RuntimeCELCostBudget` (10⁷) — `k8s.io/apiserver/pkg/apis/cel/config.go`. The CEL
//! interpreter vt uses has no such counter, so each expression is rewritten once, when it is
//! compiled, to count for itself:
//! - every comprehension (`all`, `exists`, `map`, `filter`, ...) charges, per iteration, the
//!   size of its loop body;
//! - every call that can traverse or build large values (`+`, comparisons, `in`, every named
//!   function) goes through one guard that charges, before the call, what its arguments hold
//!   (a tenth per byte of text, one per list item or map entry, as kube's traversal costs) and
//!   what the call is about to build (`replace`, `join`, `split`, `+`, `format` are sized
//!   first), and after it, what it built.
//!
//! Crossing the limit unwinds out of the evaluation at once (`resume_unwind`, no panic hook,
//! nothing printed) with kube's error. Expressions the interpreter cannot evaluate without
//! panicking (message construction `Foo{...}`) are refused when compiled, and any other panic
//! inside the interpreter becomes an evaluation error, never a failed request task.

use std::cell::Cell;
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;

use kube_core::cel::KubeCelExt;
pub use kube_core::cel::cel::Value;
use kube_core::cel::cel::common::ast::{CallExpr, EntryExpr, Expr, IdedExpr, LiteralValue, operators};
use kube_core::cel::cel::objects::{Key, Map, OptionalValue};
use kube_core::cel::cel::{Context, ExecutionError, FunctionContext, Program};
use serde_json::Value as Json;

/// kube's `PerCallLimit`: the cost one expression may spend.
pub const PER_CALL_LIMIT: u64 = 1_000_000;
/// kube's `RuntimeCELCostBudget`: what the expressions of one binding (one webhook's
/// conditions) may spend together.
pub const RUNTIME_BUDGET: u64 = 10_000_000;

/// What all the CEL of one admission phase (its policies' bindings, its webhooks' match
/// conditions) may spend together — vt's bound, beyond kube's per-binding budget, so that many
/// bindings cannot hold a seat of the shared process for many budgets' worth of CPU. Past it
/// the request is refused whatever the failure policies say (a budget one binding spent must
/// not make a later webhook be skipped).
pub const REQUEST_BUDGET: u64 = 5 * RUNTIME_BUDGET;
/// vt's words when a request's CEL passes [`REQUEST_BUDGET`].
pub const REQUEST_EXHAUSTED: &str = "the admission expressions of this request exceeded their total cost budget";

/// cel-go's words when an expression passes its limit (kube prefixes "operation cancelled").
pub const COST_EXCEEDED: &str = "operation cancelled: actual cost limit exceeded";
/// kube's words when a binding's budget is spent.
pub const BUDGET_EXHAUSTED: &str =
    "validation failed due to running out of cost budget, no further validation rules will be run";

/// The guard every sized call goes through, and the comprehension counter.
const CALL: &str = "@vt_call";
const TICK: &str = "@vt_tick";
const COPY: &str = "@vt_copy";

/// Built-in operators that neither traverse nor build anything large: left as they are.
const CHEAP: &[&str] = &[
    operators::LOGICAL_AND,
    operators::LOGICAL_OR,
    operators::LOGICAL_NOT,
    operators::CONDITIONAL,
    operators::NOT_STRICTLY_FALSE,
    operators::NEGATE,
    operators::SUBSTRACT,
    operators::MULTIPLY,
    operators::DIVIDE,
    operators::MODULO,
    operators::INDEX,
    operators::OPT_INDEX,
    operators::OPT_SELECT,
    "size",
];

/// Function namespaces (`strings.quote(...)`): their "target" is a name, not a value.
const NAMESPACES: &[&str] = &["strings", "math", "sets", "base64", "optional", "lists", "jsonpatch", "format", "ip"];

/// A compiled, instrumented expression.
#[derive(Debug)]
pub struct Expression {
    expr: IdedExpr,
}

/// cel-go's parser limits, which Kubernetes' CEL environments keep: an expression's size in
/// code points and the depth of its syntax tree.
pub const MAX_CODE_POINTS: usize = 100_000;
/// See [`MAX_CODE_POINTS`].
pub const MAX_DEPTH: usize = 250;

/// The stack CEL's parser and interpreter run on (see [`deep`]): both recurse once per level
/// of nesting, and a chain like `1 + 1 + ...` or `x.a.a.a...` is nested as deep as it is long.
const DEEP_STACK: usize = 256 << 20;

/// Runs `f` — CEL parsing or evaluation — on a thread of its own with a stack no expression
/// within [`MAX_CODE_POINTS`] can overflow (a request task's stack is 2 MiB, and an overflow
/// aborts the whole process, every tenant's API server with it). The stack is reserved, not
/// committed: only the pages a deep expression touches cost memory. `None` if `f` panicked.
///
/// Called from a runtime worker, the wait is announced to the runtime (`block_in_place`): an
/// expression may compute for up to a binding's budget (about a second), and the workers are
/// shared by every tenant's requests — their other tasks move to another thread meanwhile.
pub fn deep<T: Send>(f: impl FnOnce() -> T + Send) -> Option<T> {
    let run = || {
        std::thread::scope(|s| {
            let worker = std::thread::Builder::new().name("cel".into()).stack_size(DEEP_STACK).spawn_scoped(s, f);
            worker.ok()?.join().ok()
        })
    };
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(run),
        _ => run(),
    }
}

/// Parses `source` within cel-go's limits and refuses what the interpreter cannot evaluate.
/// Call it on a [`deep`] thread.
pub fn parse(source: &str) -> Result<Program, String> {
    let size = source.chars().count();
    if size > MAX_CODE_POINTS {
        return Err(format!(
            "compilation failed: expression code point size exceeds limit: size: {size}, limit {MAX_CODE_POINTS}"
        ));
    }
    let program = Program::compile(source).map_err(|e| format!("compilation failed: {e}"))?;
    if depth(program.expression()) > MAX_DEPTH {
        return Err("compilation failed: max recursion depth exceeded".into());
    }
    unsupported(program.expression()).map_or(Ok(program), Err)
}

/// Compiles `source` (on a [`deep`] thread): the error, or the expression ready to evaluate.
pub fn compile(source: &str) -> Result<Expression, String> {
    let program = parse(source)?;
    Ok(Expression { expr: instrument(program.expression()) })
}

/// The depth of a syntax tree (counted without recursing).
fn depth(e: &IdedExpr) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(e, 1usize)];
    while let Some((e, d)) = stack.pop() {
        deepest = deepest.max(d);
        stack.extend(children(e).into_iter().map(|c| (c, d + 1)));
    }
    deepest
}

/// A node's sub-expressions.
fn children(e: &IdedExpr) -> Vec<&IdedExpr> {
    let mut out = Vec::new();
    match &e.expr {
        Expr::Call(c) => {
            out.extend(c.target.as_deref());
            out.extend(&c.args);
        }
        Expr::Comprehension(c) => out.extend([&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result]),
        Expr::List(l) => out.extend(&l.elements),
        Expr::Map(m) => {
            for entry in &m.entries {
                match &entry.expr {
                    EntryExpr::MapEntry(me) => out.extend([&me.key, &me.value]),
                    EntryExpr::StructField(f) => out.push(&f.value),
                }
            }
        }
        Expr::Struct(st) => {
            for entry in &st.entries {
                if let EntryExpr::StructField(f) = &entry.expr {
                    out.push(&f.value);
                }
            }
        }
        Expr::Select(s) => out.push(&s.operand),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
    out
}

/// Why an expression cannot be evaluated, if it cannot: the interpreter panics on message
/// construction (`Foo{a: 1}`), which Kubernetes' CEL environments declare no types for either.
fn unsupported(e: &IdedExpr) -> Option<String> {
    let mut stack = vec![e];
    while let Some(e) = stack.pop() {
        match &e.expr {
            Expr::Struct(s) => return Some(format!("compilation failed: undeclared reference to '{}'", s.type_name)),
            Expr::Unspecified => return Some("compilation failed: an empty expression".into()),
            Expr::Map(m) => {
                let field = m.entries.iter().find_map(|en| match &en.expr {
                    EntryExpr::StructField(f) => Some(&f.field),
                    EntryExpr::MapEntry(_) => None,
                });
                if let Some(field) = field {
                    return Some(format!("compilation failed: unexpected field '{field}' in a map"));
                }
            }
            _ => {}
        }
        stack.extend(children(e));
    }
    None
}

/// How many nodes an expression has (a comprehension's per-iteration charge).
fn nodes(e: &IdedExpr) -> u64 {
    1 + children(e).into_iter().map(nodes).sum::<u64>()
}

fn lit_str(s: &str) -> IdedExpr {
    IdedExpr { id: 0, expr: Expr::Literal(LiteralValue::String(s.to_string().into())) }
}

fn lit_int(i: i64) -> IdedExpr {
    IdedExpr { id: 0, expr: Expr::Literal(LiteralValue::Int(i.into())) }
}

fn ident(name: &str) -> IdedExpr {
    IdedExpr { id: 0, expr: Expr::Ident(name.to_string()) }
}

/// `e` wrapped so that the value it yields is charged by its weight (`@vt_copy(e)`).
fn copied(e: IdedExpr) -> IdedExpr {
    if matches!(e.expr, Expr::Literal(_)) {
        return e;
    }
    IdedExpr { id: 0, expr: Expr::Call(CallExpr { func_name: COPY.into(), target: None, args: vec![e] }) }
}

/// The expression rewritten to count its cost (see the module's documentation).
fn instrument(e: &IdedExpr) -> IdedExpr {
    let expr = match &e.expr {
        Expr::Call(c) => {
            let target = c.target.as_deref().map(instrument);
            let args: Vec<IdedExpr> = c.args.iter().map(instrument).collect();
            if CHEAP.contains(&c.func_name.as_str()) {
                Expr::Call(CallExpr { func_name: c.func_name.clone(), target: target.map(Box::new), args })
            } else {
                // @vt_call("name", mode, target?, args...): mode 0 — a function, 1 — a method
                // on a value, 2 — a function in a namespace (the target stays a name).
                let namespaced =
                    matches!(&target, Some(IdedExpr { expr: Expr::Ident(n), .. }) if NAMESPACES.contains(&n.as_str()));
                let mode = match (&target, namespaced) {
                    (None, _) => 0,
                    (Some(_), false) => 1,
                    (Some(_), true) => 2,
                };
                let mut all = vec![lit_str(&c.func_name), lit_int(mode)];
                all.extend(target);
                all.extend(args);
                Expr::Call(CallExpr { func_name: CALL.into(), target: None, args: all })
            }
        }
        Expr::Comprehension(c) => {
            let per_iteration = (nodes(&c.loop_cond) + nodes(&c.loop_step)).max(1);
            let mut out = (**c).clone();
            out.iter_range = instrument(&c.iter_range);
            out.accu_init = instrument(&c.accu_init);
            out.loop_step = instrument(&c.loop_step);
            out.result = instrument(&c.result);
            out.loop_cond = IdedExpr {
                id: 0,
                expr: Expr::Call(CallExpr {
                    func_name: TICK.into(),
                    target: None,
                    args: vec![instrument(&c.loop_cond), lit_int(per_iteration as i64)],
                }),
            };
            Expr::Comprehension(Box::new(out))
        }
        // A literal copies each element in: each is charged as it is had.
        Expr::List(l) => {
            let mut out = l.clone();
            out.elements = l.elements.iter().map(|x| copied(instrument(x))).collect();
            Expr::List(out)
        }
        Expr::Map(m) => {
            let mut out = m.clone();
            for entry in &mut out.entries {
                if let EntryExpr::MapEntry(me) = &mut entry.expr {
                    me.key = instrument(&me.key);
                    me.value = copied(instrument(&me.value));
                }
            }
            Expr::Map(out)
        }
        // Reading a field copies the value under it: charged by its weight (a `has()` test
        // copies nothing).
        Expr::Select(s) => {
            let mut out = s.clone();
            out.operand = Box::new(instrument(&s.operand));
            if s.test {
                Expr::Select(out)
            } else {
                return copied(IdedExpr { id: e.id, expr: Expr::Select(out) });
            }
        }
        other => other.clone(),
    };
    IdedExpr { id: e.id, expr }
}

// ---- the meter ---------------------------------------------------------------------------

thread_local! {
    /// What the running evaluation has spent, and may spend (evaluation is synchronous: one
    /// meter per thread is one per evaluation).
    static SPENT: Cell<u64> = const { Cell::new(0) };
    static LIMIT: Cell<u64> = const { Cell::new(0) };
}

/// The unwinding payload that ends an evaluation past its limit.
struct Exceeded;

fn charge(cost: u64) {
    let spent = SPENT.get().saturating_add(cost);
    SPENT.set(spent);
    if spent > LIMIT.get() {
        resume_unwind(Box::new(Exceeded));
    }
}

/// What remains to spend (a traversal stops counting past it).
fn remaining() -> u64 {
    LIMIT.get().saturating_sub(SPENT.get())
}

/// The cost of traversing `v` (a tenth per byte of text, one per item, entry or scalar),
/// counted up to `cap`.
fn weight(v: &Value, cap: u64) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        total = total.saturating_add(match v {
            Value::String(s) => 1 + s.len() as u64 / 10,
            Value::Bytes(b) => 1 + b.len() as u64 / 10,
            Value::List(l) => {
                stack.extend(l.iter());
                1
            }
            Value::Map(m) => {
                for (k, v) in m.map.iter() {
                    if let Key::String(s) = k {
                        total = total.saturating_add(s.len() as u64 / 10);
                    }
                    stack.push(v);
                }
                1
            }
            // An optional weighs what it holds.
            Value::Opaque(_) => {
                if let Ok(o) = <&OptionalValue>::try_from(v)
                    && let Some(inner) = o.value()
                {
                    stack.push(inner);
                }
                1
            }
            _ => 1,
        });
        if total > cap {
            break;
        }
    }
    total
}

/// The length of a string or bytes (for `join`); nothing for other values.
fn text_len(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.len() as u64,
        Value::Bytes(b) => b.len() as u64,
        _ => 0,
    }
}

/// What a call is about to build, when that can be far more than what it reads.
fn building(name: &str, this: Option<&Value>, args: &[Value]) -> u64 {
    match (name, this, args) {
        ("replace", Some(Value::String(s)), [Value::String(old), Value::String(new), ..]) => {
            let hits =
                if old.is_empty() { s.chars().count() as u64 + 1 } else { s.matches(old.as_str()).count() as u64 };
            (s.len() as u64 + hits * new.len() as u64) / 10
        }
        ("join", Some(Value::List(items)), rest) => {
            let sep = rest.first().map_or(0, text_len);
            let mut total = sep * items.len() as u64;
            for i in items.iter() {
                total = total.saturating_add(text_len(i));
            }
            total / 10
        }
        ("split", Some(Value::String(s)), [Value::String(sep), ..]) => {
            if sep.is_empty() {
                s.chars().count() as u64
            } else {
                s.matches(sep.as_str()).count() as u64 + 1
            }
        }
        (operators::ADD, None, [a, b]) => weight(a, remaining()).saturating_add(weight(b, remaining())),
        // `lists.range(n)` builds n items.
        ("range", None, [Value::Int(n)]) => u64::try_from(*n).unwrap_or(0),
        // Quadratic ones: every pair is compared.
        ("distinct", Some(Value::List(l)), _) => (l.len() as u64).saturating_mul(l.len() as u64),
        (f, None, [Value::List(a), Value::List(b)]) if SET_FUNCTIONS.contains(&f) => {
            (a.len() as u64).saturating_mul(b.len() as u64)
        }
        // A regex is compiled on every call (a short pattern can compile to a large program),
        // then run over the text.
        (f, Some(Value::String(s)), [Value::String(p), ..]) if REGEX_FUNCTIONS.contains(&f) => {
            REGEX_COMPILE.saturating_add((s.len() as u64).saturating_mul(p.len() as u64 + 1) / 10)
        }
        // `format` prints its arguments: they weigh what they print, roughly.
        ("format", Some(_), [a]) => weight(a, remaining()).saturating_mul(2),
        _ => 0,
    }
}

/// What compiling a regex is charged (`matches` compiles its pattern on every call): at most a
/// thousand compilations fit in one expression. The CRD rule estimate charges the same.
pub(crate) const REGEX_COMPILE: u64 = 1_000;
/// The functions that compile a regex per call.
pub(crate) const REGEX_FUNCTIONS: &[&str] = &["matches", "find", "findAll"];
/// The `sets.*` functions, which compare every pair of their two lists.
pub(crate) const SET_FUNCTIONS: &[&str] = &["contains", "intersects", "equivalent"];

/// `@vt_call("name", mode, target?, args...)`: charges the call, then makes it.
fn guarded_call(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let (Some(Expr::Literal(LiteralValue::String(name))), Some(Expr::Literal(LiteralValue::Int(mode)))) =
        (ftx.args.first().map(|a| &a.expr), ftx.args.get(1).map(|a| &a.expr))
    else {
        return Err(ftx.error("malformed guarded call"));
    };
    let name: &str = name.inner();
    let mode: i64 = *mode.inner();
    let rest = &ftx.args[2..];
    let (target, arg_exprs) = match mode {
        0 => (None, rest),
        _ => (rest.first(), rest.get(1..).unwrap_or(&[])),
    };
    // Each value read is charged as soon as it is had (resolving copies it): a call with many
    // copies of a large value stops at the first ones. `+` is charged once, as what it builds.
    let reads = name != operators::ADD;
    let mut had = |e: &IdedExpr| -> Result<Value, ExecutionError> {
        let v = ftx.ptx.resolve(e)?;
        if reads {
            charge(weight(&v, remaining()));
        }
        Ok(v)
    };
    let this = match (mode, target) {
        (1, Some(t)) => Some(had(t)?),
        _ => None,
    };
    let args = arg_exprs.iter().map(&mut had).collect::<Result<Vec<_>, _>>()?;
    charge(building(name, this.as_ref(), &args));
    // The call itself, on the values already computed.
    let mut scope = ftx.ptx.new_inner_scope();
    let names: Vec<String> = (0..args.len()).map(|i| format!("@vt_a{i}")).collect();
    for (n, v) in names.iter().zip(args) {
        scope.add_variable_from_value(n.as_str(), v);
    }
    let call_target = match (mode, target, this) {
        (1, _, Some(v)) => {
            scope.add_variable_from_value("@vt_t", v);
            Some(Box::new(ident("@vt_t")))
        }
        (2, Some(t), _) => Some(Box::new(t.clone())),
        _ => None,
    };
    let call = IdedExpr {
        id: 0,
        expr: Expr::Call(CallExpr {
            func_name: name.to_string(),
            target: call_target,
            args: names.iter().map(|n| ident(n)).collect(),
        }),
    };
    let out = Value::resolve(&call, &scope)?;
    if reads {
        charge(weight(&out, remaining()));
    }
    Ok(out)
}

/// `@vt_copy(e)`: `e`'s value, charged by its weight.
fn copy(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let v = ftx.ptx.resolve(&ftx.args[0])?;
    charge(weight(&v, remaining()));
    Ok(v)
}

/// `@vt_tick(cond, n)`: one iteration of a comprehension, charged `n`.
fn tick(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    let per_iteration = match ftx.args.get(1).map(|a| &a.expr) {
        Some(Expr::Literal(LiteralValue::Int(n))) => (*n.inner()).max(1) as u64,
        _ => 1,
    };
    charge(per_iteration);
    ftx.ptx.resolve(&ftx.args[0])
}

// ---- evaluation --------------------------------------------------------------------------

/// The function library (CEL's, Kubernetes', and the meter's), registered once per process
/// rather than for every evaluation.
fn base() -> &'static Context<'static> {
    static BASE: std::sync::OnceLock<Context<'static>> = std::sync::OnceLock::new();
    BASE.get_or_init(|| {
        let mut ctx = Context::default().with_all();
        ctx.add_function(CALL, guarded_call);
        ctx.add_function(TICK, tick);
        ctx.add_function(COPY, copy);
        ctx
    })
}

/// An evaluation's variables (`object`, `oldObject`, `request`, `params`, ...), bound once for
/// all the expressions evaluated against them; [`Env::with`] adds some for a narrower scope
/// (a binding's `params`) without converting the others again.
pub struct Env<'a> {
    ctx: Context<'a>,
}

/// What an expression came to.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// It evaluated to this.
    Value(Value),
    /// It failed to evaluate (the error in kube's words where kube has them).
    Error(String),
}

impl Outcome {
    /// What a condition or validation came to: its truth, or why it has none (an error, or a
    /// value that is not a bool).
    pub fn truth(self) -> Result<bool, String> {
        match self {
            Outcome::Value(Value::Bool(b)) => Ok(b),
            Outcome::Value(other) => Err(format!("no such overload: expected a bool, got {}", type_name(&other))),
            Outcome::Error(why) => Err(why),
        }
    }
}

impl Env<'static> {
    /// The variables, from JSON (kept as they are: labels' and annotations' keys are map keys,
    /// not field names to escape).
    pub fn new(vars: &[(&str, Json)]) -> Env<'static> {
        Env { ctx: base().new_inner_scope() }.bound(vars)
    }
}

impl Env<'_> {
    /// These variables and `vars` besides.
    pub fn with(&self, vars: &[(&str, Json)]) -> Env<'_> {
        Env { ctx: self.ctx.new_inner_scope() }.bound(vars)
    }

    fn bound(mut self, vars: &[(&str, Json)]) -> Self {
        for (name, v) in vars {
            self.ctx.add_variable_from_value(*name, to_cel(v));
        }
        self
    }

    /// Evaluates `e` within `budget` (what the caller's budget has left; lowered by what it
    /// spent). Past `PER_CALL_LIMIT` or the budget, kube's error.
    pub fn eval(&self, e: &Expression, budget: &mut u64) -> Outcome {
        if *budget == 0 {
            return Outcome::Error(BUDGET_EXHAUSTED.into());
        }
        let limit = PER_CALL_LIMIT.min(*budget);
        SPENT.set(0);
        LIMIT.set(limit);
        let result = catch_unwind(AssertUnwindSafe(|| Value::resolve(&e.expr, &self.ctx)));
        let spent = SPENT.get();
        *budget = budget.saturating_sub(spent);
        match result {
            Ok(Ok(v)) => Outcome::Value(v),
            Ok(Err(err)) => Outcome::Error(describe(&err)),
            Err(payload) if payload.is::<Exceeded>() => {
                Outcome::Error(if limit < PER_CALL_LIMIT { BUDGET_EXHAUSTED.into() } else { COST_EXCEEDED.into() })
            }
            Err(_) => Outcome::Error("internal error evaluating the expression".into()),
        }
    }
}

/// An evaluation error in words close to cel-go's.
fn describe(err: &ExecutionError) -> String {
    match err {
        ExecutionError::NoSuchKey(k) => format!("no such key: {k}"),
        ExecutionError::UndeclaredReference(r) => format!("undeclared reference to '{r}'"),
        ExecutionError::NoSuchOverload => "no such overload".into(),
        other => other.to_string(),
    }
}

/// A CEL value's type, in CEL's words.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::List(_) => "list",
        Value::Map(_) => "map",
        Value::Function(..) => "function",
        Value::Int(_) => "int",
        Value::UInt(_) => "uint",
        Value::Float(_) => "double",
        Value::String(_) => "string",
        Value::Bytes(_) => "bytes",
        Value::Bool(_) => "bool",
        Value::Duration(_) => "google.protobuf.Duration",
        Value::Timestamp(_) => "google.protobuf.Timestamp",
        Value::Null => "null_type",
        _ => "dyn",
    }
}

/// A JSON value as CEL sees it (integers as `int`, others as `double`).
pub fn to_cel(v: &Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(u)) => Value::UInt(u),
            _ => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(Arc::new(s.clone())),
        Json::Array(items) => Value::List(Arc::new(items.iter().map(to_cel).collect())),
        Json::Object(fields) => {
            let map: HashMap<Key, Value> =
                fields.iter().map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v))).collect();
            Value::Map(Map { map: Arc::new(map) })
        }
    }
}

#[cfg(test)]
mod tests;
