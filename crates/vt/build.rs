//! Link settings of the `vt` binary.
//!
//! Optimized builds on x86_64 Linux, linked by LLVM's lld (Rust's default linker there since
//! 1.90, the workspace's minimum), are made smaller without changing behaviour
//! (docs/benchmarks.md, binary size):
//! - identical functions are folded (`--icf=all`): monomorphized generics often compile to the
//!   same machine code for different types. Rust makes no promise that distinct functions have
//!   distinct addresses, so folding them changes nothing a program may rely on;
//! - relative relocations are packed (`-z pack-relative-relocs`, DT_RELR): the binary stays
//!   position-independent (ASLR) with a fraction of the relocation table. Only when the build
//!   machine's glibc (the one the binary links against) loads DT_RELR, i.e. 2.36 or later.
//!
//! `VT_PLAIN_LINK=1` turns both off (another linker, a cross build). Debug builds link as
//! they were.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=VT_PLAIN_LINK");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let lld_target = var("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu";
    if !lld_target || var("PROFILE") != "release" || !var("VT_PLAIN_LINK").is_empty() {
        return;
    }
    println!("cargo:rustc-link-arg-bins=-Wl,--icf=all");
    if var("HOST") == var("TARGET") && glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether this machine's glibc is at least `major.minor` (`getconf GNU_LIBC_VERSION`).
fn glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else { return false };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.trim().strip_prefix("glibc ") else { return false };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}
