//! Deflates the pre-rendered OpenAPI definitions (`openapi/definitions.json`, ~MBs of JSON)
//! into the build's output, where `openapi.rs` includes them: the binary carries a tenth.

fn main() {
    let source = "openapi/definitions.json";
    println!("cargo:rerun-if-changed={source}");
    let json = std::fs::read(source).unwrap_or_else(|e| panic!("read {source}: {e}"));
    let deflated = miniz_oxide::deflate::compress_to_vec(&json, 9);
    let out =
        std::path::Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("definitions.json.deflate");
    std::fs::write(&out, deflated).unwrap_or_else(|e| panic!("write {}: {e}", out.display()));
}
