//! The generator of `openapi/definitions.json`: the built-in kinds' schemas (and everything
//! they reference) as k8s-openapi's schemars impls render them. Only tests build it, so the
//! shipped binary carries the rendered document instead of the code that renders it.
//! `hack/gen-openapi` rewrites the file; the test below fails while it is stale.

use serde_json::{Map, Value};

/// Where the rendered document is committed, from the crate's root.
const PATH: &str = "openapi/definitions.json";

fn render() -> (Vec<String>, String) {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{DeleteOptions, Status};
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let names = crate::registry::openapi_schemas(&mut generator);
    generator.subschema_for::<DeleteOptions>();
    generator.subschema_for::<Status>();
    let definitions: Map<String, Value> = generator.take_definitions(true);
    let mut text = serde_json::to_string_pretty(&definitions).expect("a JSON map serializes");
    text.push('\n');
    (names, text)
}

#[test]
fn committed_definitions_match_their_generator() {
    let (names, text) = render();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(PATH);
    if std::env::var_os("VT_REGENERATE").is_some() {
        std::fs::write(&path, &text).expect("write openapi/definitions.json");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(committed == text, "{PATH} is stale: run hack/gen-openapi");
    // The registry names each built-in kind's definition; every name is one the generator made.
    let registry: Vec<String> =
        crate::registry::Registry::builtin().all().iter().filter_map(|t| t.openapi.map(str::to_string)).collect();
    let mut sorted = names.clone();
    sorted.sort();
    let mut listed = registry.clone();
    listed.sort();
    listed.dedup();
    sorted.dedup();
    assert_eq!(sorted, listed, "the registry's definition names are the generated ones");
}
