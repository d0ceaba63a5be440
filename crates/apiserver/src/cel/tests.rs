use serde_json::json;

use super::*;

fn eval(src: &str, vars: &[(&str, Json)]) -> Outcome {
    deep(|| {
        let e = compile(src).unwrap_or_else(|err| panic!("{src}: {err}"));
        let mut budget = RUNTIME_BUDGET;
        Env::new(vars).eval(&e, &mut budget)
    })
    .expect("no panic")
}

fn truth(src: &str, vars: &[(&str, Json)]) -> bool {
    match eval(src, vars) {
        Outcome::Value(Value::Bool(b)) => b,
        other => panic!("{src}: {other:?}"),
    }
}

#[test]
fn ordinary_expressions_evaluate_as_before() {
    let object = json!({"metadata": {"name": "web", "labels": {"app.kubernetes.io/name": "web"}},
        "spec": {"replicas": 3, "containers": [{"name": "a", "image": "registry.example/a:1"},
                                                {"name": "b", "image": "registry.example/b:2"}]}});
    let vars = [("object", object)];
    assert!(truth("object.spec.replicas <= 5", &vars));
    assert!(truth("object.spec.containers.all(c, c.image.startsWith('registry.example/'))", &vars));
    assert!(truth("object.spec.containers.map(c, c.name).join(',') == 'a,b'", &vars));
    assert!(truth("object.spec.containers.exists(c, c.name in ['b', 'z'])", &vars));
    assert!(truth("object.metadata.name + '-x' == 'web-x'", &vars));
    assert!(truth("'a,b,c'.split(',').size() == 3 && 'aXa'.replace('X', 'b') == 'aba'", &vars));
    assert!(truth("strings.quote('x') == '\"x\"' && 'A'.lowerAscii() == 'a'", &vars));
    assert!(truth("'%s-%d'.format(['a', 1]) == 'a-1'", &vars));
    assert!(truth("object.spec.containers.filter(c, c.name == 'b').size() == 1", &vars));
    // Label keys are map keys, read as written (not escaped as schema field names).
    assert!(truth("object.metadata.labels['app.kubernetes.io/name'] == 'web'", &vars));
    assert!(truth("has(object.spec.replicas) && !has(object.spec.paused)", &vars));
    assert_eq!(eval("object.spec.missing == 1", &vars), Outcome::Error("no such key: missing".into()));
}

#[test]
fn nested_loops_are_cancelled_at_the_per_call_limit() {
    // 10⁸ iterations: minutes of a core without a meter.
    let ten = "[0,1,2,3,4,5,6,7,8,9]";
    let src = format!(
        "{ten}.all(a, {ten}.all(b, {ten}.all(c, {ten}.all(d, {ten}.all(e, {ten}.all(f, {ten}.all(g, {ten}.all(h, a+b+c+d+e+f+g+h >= 0))))))))"
    );
    let started = std::time::Instant::now();
    assert_eq!(eval(&src, &[]), Outcome::Error(COST_EXCEEDED.into()));
    println!("cancelled after {:?}", started.elapsed());
}

#[test]
fn loops_over_a_large_object_are_cancelled() {
    let items: Vec<Json> = (0..5_000).map(|i| json!(i)).collect();
    let vars = [("object", json!({"items": items}))];
    // 5,000 × 5,000 comparisons.
    assert_eq!(
        eval("object.items.all(x, object.items.exists(y, y == x))", &vars),
        Outcome::Error(COST_EXCEEDED.into())
    );
    // One pass is cheap.
    assert!(truth("object.items.all(x, x >= 0)", &vars));
}

#[test]
fn growing_strings_are_cancelled_before_they_are_built() {
    // Each replace multiplies the text by 64: 64⁶ bytes (68 GB) at the end.
    let big = "x".repeat(64);
    let mut src = "'x'".to_string();
    for _ in 0..6 {
        src = format!("{src}.replace('x', '{big}')");
    }
    assert_eq!(eval(&format!("{src}.size() > 0"), &[]), Outcome::Error(COST_EXCEEDED.into()));
    // Doubling by concatenation, and a join of many references to one string.
    let mut doubling = "'xxxxxxxxxxxxxxxx'".to_string();
    for _ in 0..40 {
        doubling = format!("[{doubling}].map(v, v + v)[0]");
    }
    assert_eq!(eval(&format!("size({doubling}) > 0"), &[]), Outcome::Error(COST_EXCEEDED.into()));
    let vars = [("object", json!({"s": "y".repeat(100_000), "n": (0..1000).collect::<Vec<_>>()}))];
    assert_eq!(eval("object.n.map(i, object.s).join('').size() > 0", &vars), Outcome::Error(COST_EXCEEDED.into()));
}

#[test]
fn a_budget_is_shared_and_runs_out() {
    let items: Vec<Json> = (0..50_000).map(|i| json!(i)).collect();
    let env = Env::new(&[("object", json!({"items": items}))]);
    let e = compile("object.items.all(x, x >= 0)").unwrap();
    let mut budget = RUNTIME_BUDGET;
    let mut passes = 0;
    // (Shallow enough for the test thread's stack.)
    loop {
        match env.eval(&e, &mut budget) {
            Outcome::Value(Value::Bool(true)) => passes += 1,
            Outcome::Error(m) => {
                assert_eq!(m, BUDGET_EXHAUSTED);
                break;
            }
            other => panic!("{other:?}"),
        }
        assert!(passes < 1_000, "the budget never ran out");
    }
    assert!(passes >= 10, "{passes} passes");
}

#[test]
fn message_construction_is_refused_not_a_panic() {
    // The interpreter panics evaluating these; they never get that far.
    for src in ["Foo{a: 1}", "{1: Foo{}}", "[Foo{}].size() == 1"] {
        let err = compile(src).unwrap_err();
        assert!(err.contains("undeclared reference to 'Foo'"), "{src}: {err}");
    }
    assert!(compile("1 +").unwrap_err().starts_with("compilation failed"));
}

#[test]
fn deep_and_long_expressions_are_refused_not_a_crash() {
    // Each of these overflows a 2 MiB stack when parsed or evaluated (the process aborts).
    let chain = |unit: &str, n: usize| std::iter::repeat_n(unit, n).collect::<String>();
    for src in [
        format!("1{}", chain(" + 1", 20_000)),
        format!("object{}", chain(".a", 20_000)),
        format!("'x'{}", chain("[0]", 20_000)),
    ] {
        let err = deep(|| compile(&src).map(|_| ())).expect("no panic").unwrap_err();
        assert_eq!(err, "compilation failed: max recursion depth exceeded", "{}", &src[..20]);
    }
    let long = format!("'{}' == ''", "x".repeat(MAX_CODE_POINTS));
    let err = deep(|| compile(&long).map(|_| ())).expect("no panic").unwrap_err();
    assert!(err.contains("expression code point size exceeds limit"), "{err}");
    // Within the limits, a deep one still evaluates.
    assert_eq!(eval(&format!("1{} == 201", chain(" + 1", 200)), &[]), Outcome::Value(Value::Bool(true)));
}

/// The metered evaluator agrees with kube-cel's own (unmetered) one across Kubernetes' CEL
/// libraries: every instrumented call form — functions, methods, namespaced functions,
/// operators, macros, optionals — evaluates as before.
#[test]
fn metering_changes_no_result() {
    use kube_core::cel::{VapEvaluator, VapExpression};
    let object = json!({"metadata": {"name": "web", "labels": {"a": "1", "b": "2"}},
        "spec": {"replicas": 3, "ports": [80, 443, 8080], "host": "Example.COM", "url": "https://example.com:8443/p?q=1",
                 "memory": "1Gi", "when": "2026-01-02T03:04:05Z", "ip": "10.0.0.1", "cidr": "10.0.0.0/8", "version": "1.2.3"}});
    let expressions = [
        "object.spec.ports.all(p, p > 0) && object.spec.ports.exists(p, p == 443) && object.spec.ports.exists_one(p, p == 80)",
        "object.spec.ports.map(p, p * 2) == [160, 886, 16160]",
        "object.spec.ports.filter(p, p > 100).size() == 2",
        "object.metadata.labels.all(k, k in ['a', 'b'])",
        "object.spec.host.lowerAscii() == 'example.com' && object.spec.host.upperAscii() == 'EXAMPLE.COM'",
        "object.spec.host.indexOf('.') == 7 && object.spec.host.lastIndexOf('M') == 10 && object.spec.host.charAt(0) == 'E'",
        "object.spec.host.substring(0, 7) == 'Example' && '  x '.trim() == 'x' && 'a-b-c'.split('-') == ['a', 'b', 'c']",
        "['a', 'b'].join('+') == 'a+b' && 'abc'.reverse() == 'cba' && 'aXbX'.replace('X', '') == 'ab'",
        "object.spec.host.matches('^[A-Za-z.]+$') && object.spec.host.startsWith('Ex') && object.spec.host.endsWith('OM')",
        "object.spec.host.contains('ple') && size(object.spec.host) == 11 && object.spec.host.size() == 11",
        "'%s has %d ports'.format([object.metadata.name, size(object.spec.ports)]) == 'web has 3 ports'",
        "strings.quote('a\"b') == '\"a\\\\\"b\"'",
        "math.greatest(1, 5, 3) == 5 && math.least([4, 2]) == 2",
        "sets.contains([1, 2, 3], [1, 2]) && sets.intersects([1], [1, 4]) && sets.equivalent([1, 2], [2, 1])",
        "[3, 1, 2].sort() == [1, 2, 3] && [1, 2, 3].isSorted() && [1, 2, 3].sum() == 6 && [1, 2, 2].indexOf(2) == 1",
        "base64.encode(b'hi') == 'aGk=' && base64.decode('aGk=') == b'hi'",
        "optional.of(1).hasValue() && !optional.none().hasValue() && optional.of(2).orValue(3) == 2",
        "url(object.spec.url).getHost() == 'example.com:8443' && url(object.spec.url).getPort() == '8443' && isURL(object.spec.url)",
        "quantity(object.spec.memory).isGreaterThan(quantity('500Mi')) && isQuantity('1Gi')",
        "ip(object.spec.ip).family() == 4 && cidr(object.spec.cidr).containsIP(ip(object.spec.ip)) && isIP('::1')",
        "semver(object.spec.version).major() == 1 && isSemver('1.0.0')",
        "timestamp(object.spec.when) < timestamp('2027-01-01T00:00:00Z') && duration('1h') > duration('59m')",
        "int('42') == 42 && string(7) == '7' && double(1) == 1.0 && uint(2) == 2u",
        "has(object.spec.replicas) && !has(object.spec.paused) && (object.spec.replicas > 2 ? true : false)",
        "jsonpatch.escapeKey('a/b~c') == 'a~1b~0c'",
        "object.metadata.labels.exists(k, object.metadata.labels[k] == '2')",
        "-object.spec.replicas == -3 && object.spec.replicas % 2 == 1 && object.spec.replicas / 2 == 1",
        "'b' in object.metadata.labels && 80 in object.spec.ports && !(81 in object.spec.ports)",
        "[1, 2] + [3] == [1, 2, 3] && 'ab' + 'c' == 'abc' && {'x': 1}.x == 1",
    ];
    let vars = [("object", object.clone())];
    for src in expressions {
        let old = VapEvaluator::builder().object(object.clone()).build().evaluate(&[VapExpression {
            expression: src.to_string(),
            message: None,
            message_expression: None,
        }]);
        assert!(old[0].passed, "kube-cel: {src}: {:?}", old[0].message);
        let now = eval(src, &vars);
        assert_eq!(now, Outcome::Value(Value::Bool(true)), "{src}");
    }
}

/// Copies the interpreter makes are charged: a field read copies the value under it, a list
/// literal copies its elements, a call copies its arguments (before, a loop reading a large
/// field per iteration, or a literal of 10,000 copies of the object, ran uncharged).
#[test]
fn copies_are_charged() {
    let items: Vec<Json> = (0..100_000).map(|i| json!(i)).collect();
    let vars = [("object", json!({"items": items}))];
    assert_eq!(eval("object.items.all(x, object.items[0] <= x)", &vars), Outcome::Error(COST_EXCEEDED.into()));
    let many = vec!["object"; 10_000].join(", ");
    assert_eq!(eval(&format!("size([{many}]) > 0"), &vars), Outcome::Error(COST_EXCEEDED.into()));
    assert_eq!(eval(&format!("sets.contains([{many}], [])"), &vars), Outcome::Error(COST_EXCEEDED.into()));
}

/// Calls that build or compare far more than they read are charged for it first.
#[test]
fn quadratic_and_building_calls_are_charged_first() {
    assert_eq!(eval("lists.range(1000000000000).size() > 0", &[]), Outcome::Error(COST_EXCEEDED.into()));
    let items: Vec<Json> = (0..20_000).map(|i| json!(i)).collect();
    let vars = [("object", json!({"items": items}))];
    assert_eq!(eval("object.items.distinct().size() > 0", &vars), Outcome::Error(COST_EXCEEDED.into()));
    assert_eq!(eval("sets.equivalent(object.items, object.items)", &vars), Outcome::Error(COST_EXCEEDED.into()));
    // Optionals weigh what they hold.
    let held = Value::Opaque(Arc::new(OptionalValue::of(Value::String(Arc::new("y".repeat(10_000))))));
    assert!(weight(&held, u64::MAX) > 1_000);
    // Small ones pass, namespaced functions of every library included.
    assert!(truth("lists.range(3) == [0, 1, 2] && [1, 1].distinct() == [1] && ip.isCanonical('::1')", &[]));
    assert!(truth("!format.dns1123Label().validate('web').hasValue()", &[]));
}
