//! Build script: with the `dtrace` feature, binds the host's `<dtrace.h>` with bindgen and links
//! libdtrace; without it, does nothing.
//!
//! Environment: `DTRACE_INCLUDE_DIR` (where `dtrace.h` is, plus any extra dirs separated by
//! `:`), `DTRACE_LIB_DIR` (where libdtrace is), `DTRACE_CLANG_ARGS` (extra clang arguments,
//! whitespace-separated, e.g. `-D_KERNEL_STRUCTURES`).

fn main() {
    #[cfg(feature = "dtrace")]
    dtrace::bind();
}

#[cfg(feature = "dtrace")]
mod dtrace {
    use std::path::{Path, PathBuf};

    /// Where `dtrace.h` lives on the platforms that install it.
    const DEFAULT_INCLUDE_DIRS: &[&str] = &["/usr/include", "/usr/local/include"];

    pub fn bind() {
        for var in ["DTRACE_INCLUDE_DIR", "DTRACE_LIB_DIR", "DTRACE_CLANG_ARGS"] {
            println!("cargo:rerun-if-env-changed={var}");
        }
        println!("cargo:rerun-if-changed=build.rs");
        // Oracle's DTrace for Linux differs from illumos' (dtrace_init, dtrace_go's flags,
        // key and signature placement); the glue branches on this cfg.
        println!("cargo::rustc-check-cfg=cfg(dtrace_oracle)");

        let extra: Vec<PathBuf> = std::env::var("DTRACE_INCLUDE_DIR")
            .map(|v| std::env::split_paths(&v).collect())
            .unwrap_or_default();
        let dirs: Vec<PathBuf> = extra
            .iter()
            .cloned()
            .chain(DEFAULT_INCLUDE_DIRS.iter().map(PathBuf::from))
            .collect();
        let header = dirs
            .iter()
            .map(|d| d.join("dtrace.h"))
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "the `dtrace` feature needs <dtrace.h>; none in {dirs:?}. \
                     Set DTRACE_INCLUDE_DIR (see README, \"DTrace hosts\")."
                )
            });
        println!("cargo:rerun-if-changed={}", header.display());
        let text = std::fs::read_to_string(&header).expect("read dtrace.h");
        let oracle = text.contains("dtrace_init(");
        if oracle {
            println!("cargo:rustc-cfg=dtrace_oracle");
        }

        let mut builder = bindgen::Builder::default()
            .header(header.display().to_string())
            .allowlist_function("dtrace_.*")
            .allowlist_type("dtrace_.*")
            .allowlist_var("DTRACE_.*")
            .allowlist_var("DTRACEACT_.*")
            .allowlist_var("DTRACEAGG_.*")
            .derive_default(true)
            .prepend_enum_name(false)
            .layout_tests(false)
            .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
        for dir in &extra {
            builder = builder.clang_arg(format!("-I{}", dir.display()));
        }
        if let Ok(args) = std::env::var("DTRACE_CLANG_ARGS") {
            builder = builder.clang_args(args.split_whitespace().map(str::to_owned));
        }
        let bindings = builder.generate().expect("bindgen could not bind dtrace.h");
        let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
        bindings
            .write_to_file(out.join("dtrace_bindings.rs"))
            .expect("write dtrace bindings");

        if let Ok(dir) = std::env::var("DTRACE_LIB_DIR") {
            println!(
                "cargo:rustc-link-search=native={}",
                Path::new(&dir).display()
            );
        }
        println!("cargo:rustc-link-lib=dylib=dtrace");
    }
}
