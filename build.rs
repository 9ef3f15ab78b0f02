//! Link-time set-up for libtorch.
//!
//! * An rpath to libtorch's `lib/` directory, so binaries and tests run without
//!   `LD_LIBRARY_PATH` (an `LD_LIBRARY_PATH` set at run time still wins, which is
//!   how a binary built here runs on a machine with its own PyTorch).
//! * `--no-as-needed` around `libtorch_cuda`: nothing in our code references a
//!   CUDA symbol directly, so without it the linker drops the library and CUDA is
//!   silently unavailable at run time.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=build.rs");
    let Some(libtorch) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        println!("cargo:warning=LIBTORCH is not set; run scripts/setup.sh (it creates .venv/libtorch)");
        println!("cargo:rustc-env=ACF_LIBTORCH_BUILD_VERSION=unknown");
        return;
    };
    let version = std::fs::read_to_string(libtorch.join("version.py"))
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("__version__ = ").map(|v| v.trim_matches(['\'', '"']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=ACF_LIBTORCH_BUILD_VERSION={version}");
    let lib = libtorch.join("lib");
    let lib = lib.canonicalize().unwrap_or(lib);
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        for arg in ["-Wl,--no-as-needed", "-ltorch_cuda", "-lc10_cuda", "-Wl,--as-needed"] {
            println!("cargo:rustc-link-arg-bin=acf-index-engine={arg}");
        }
    }
}
