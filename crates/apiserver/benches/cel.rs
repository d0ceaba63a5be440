//! What metering tenants' CEL costs, and how soon a runaway expression is stopped:
//! `cargo bench -p vt-apiserver --bench cel`. Compares vt's metered evaluator (`cel.rs`)
//! with kube-cel's own (unmetered) VAP evaluator on a typical policy, and times the
//! deep-stack thread every evaluation batch runs on.

use std::time::{Duration, Instant};

use kube_core::cel::{AdmissionRequest, GroupVersionKind, GroupVersionResource, VapEvaluator, VapExpression};
use serde_json::json;
use vt_apiserver::cel::{self, Outcome};

fn per_op(n: u32, mut f: impl FnMut()) -> Duration {
    for _ in 0..n.min(100) {
        f();
    }
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed() / n
}

fn main() {
    let object = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "prod", "labels": {"app": "web", "team": "a"}},
        "spec": {"replicas": 3, "template": {"spec": {"containers": [
            {"name": "web", "image": "registry.example/web:1.2", "ports": [{"containerPort": 8080}]},
            {"name": "sidecar", "image": "registry.example/proxy:3", "ports": [{"containerPort": 9090}]},
            {"name": "log", "image": "registry.example/log:7"}]}}}});
    let expressions = [
        "object.spec.replicas <= 5",
        "object.spec.template.spec.containers.all(c, c.image.startsWith('registry.example/'))",
        "object.metadata.labels.team in ['a', 'b']",
        "object.spec.template.spec.containers.map(c, c.name).join(',').size() < 100",
    ];
    println!("CEL, one typical policy of {} expressions on a Deployment", expressions.len());

    // kube-cel's evaluator (what vt used before): compile + evaluate per request.
    let request = AdmissionRequest {
        operation: "CREATE".into(),
        username: "jane".into(),
        uid: String::new(),
        groups: vec![],
        name: "web".into(),
        namespace: "prod".into(),
        dry_run: false,
        kind: GroupVersionKind { group: "apps".into(), version: "v1".into(), kind: "Deployment".into() },
        resource: GroupVersionResource { group: "apps".into(), version: "v1".into(), resource: "deployments".into() },
    };
    let vap: Vec<VapExpression> = expressions
        .iter()
        .map(|e| VapExpression { expression: e.to_string(), message: None, message_expression: None })
        .collect();
    let unmetered = per_op(2_000, || {
        let results = VapEvaluator::builder().object(object.clone()).request(request.clone()).build().evaluate(&vap);
        assert!(results.iter().all(|r| r.passed));
    });
    // vt's: compile (with instrumentation) + evaluate with the meter, on the calling thread.
    let vars = [("object", object.clone()), ("oldObject", json!(null)), ("request", json!({"operation": "CREATE"}))];
    let metered = || {
        let env = cel::Env::new(&vars);
        let mut budget = cel::RUNTIME_BUDGET;
        for e in &expressions {
            let compiled = cel::compile(e).expect("compiles");
            assert_eq!(env.eval(&compiled, &mut budget), Outcome::Value(cel::Value::Bool(true)));
        }
    };
    let here = per_op(2_000, metered);
    let on_deep = per_op(2_000, || cel::deep(metered).expect("no panic"));
    let spawn = per_op(2_000, || cel::deep(|| ()).expect("no panic"));
    println!("  kube-cel (unmetered), compile + evaluate    {:>8.1} µs", unmetered.as_secs_f64() * 1e6);
    println!("  vt metered, compile + evaluate              {:>8.1} µs", here.as_secs_f64() * 1e6);
    println!("  vt metered, on its deep-stack thread        {:>8.1} µs", on_deep.as_secs_f64() * 1e6);
    println!("  the deep-stack thread alone (spawn + join)  {:>8.1} µs", spawn.as_secs_f64() * 1e6);

    // A runaway: 10⁸ iterations unmetered; stopped at PerCallLimit.
    let ten = "[0,1,2,3,4,5,6,7,8,9]";
    let runaway = format!(
        "{ten}.all(a, {ten}.all(b, {ten}.all(c, {ten}.all(d, {ten}.all(e, {ten}.all(f, {ten}.all(g, {ten}.all(h, a+b+c+d+e+f+g+h >= 0))))))))"
    );
    let cancelled = per_op(5, || {
        let out = cel::deep(|| {
            let mut budget = cel::RUNTIME_BUDGET;
            cel::Env::new(&[]).eval(&cel::compile(&runaway).expect("compiles"), &mut budget)
        });
        assert_eq!(out, Some(Outcome::Error(cel::COST_EXCEEDED.into())));
    });
    println!(
        "  a runaway expression, cancelled at the per-call limit (10^6) after {:.1} ms",
        cancelled.as_secs_f64() * 1e3
    );
    // A whole binding's budget (10⁷) spent by ten such expressions.
    let spent = per_op(2, || {
        cel::deep(|| {
            let env = cel::Env::new(&[]);
            let e = cel::compile(&runaway).expect("compiles");
            let mut budget = cel::RUNTIME_BUDGET;
            while budget > 0 {
                env.eval(&e, &mut budget);
            }
        });
    });
    println!("  a binding's whole budget (10^7) spent in {:.1} ms", spent.as_secs_f64() * 1e3);
}
