//! Build script: compiles the native eBPF backend's BPF C programs (`src/consumer/ebpf/bpf/`)
//! with clang into BPF objects that the binary embeds (`include_bytes!` from `OUT_DIR`); with
//! the `dtrace` feature, also binds the host's `<dtrace.h>` with bindgen and links libdtrace.
//!
//! Environment: `BPF_CLANG` (the clang to use), `DTRACE_INCLUDE_DIR` (where `dtrace.h` is, plus
//! any extra dirs separated by `:`), `DTRACE_LIB_DIR` (where libdtrace is), `DTRACE_CLANG_ARGS`
//! (extra clang arguments, whitespace-separated, e.g. `-D_KERNEL_STRUCTURES`). For macOS targets,
//! `SDKROOT` (else `xcrun --sdk macosx --show-sdk-path`) names the SDK whose `usr/include` holds
//! the system headers.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    // Oracle's DTrace for Linux differs from illumos' (dtrace_init, dtrace_go's flags, key and
    // signature placement, no vtimestamp); the code branches on this cfg, which only the
    // `dtrace` feature's header check sets.
    println!("cargo::rustc-check-cfg=cfg(dtrace_oracle)");
    // Only Linux runs the native eBPF backend; DTrace hosts (illumos, FreeBSD, macOS) build
    // without clang's BPF target or libbpf's headers.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        compile_bpf();
    }
    #[cfg(feature = "dtrace")]
    dtrace::bind();
}

/// Compiles every `*.bpf.c` under `src/consumer/ebpf/bpf/` to `$OUT_DIR/<name>.bpf.o`.
///
/// The programs use only stable UAPI types (`linux/bpf.h`) plus a few kernel structs declared
/// with `preserve_access_index`, so libbpf relocates field offsets against the running kernel's
/// BTF at load time (CO-RE) and no vmlinux.h is generated or committed.
fn compile_bpf() {
    let dir = Path::new("src/consumer/ebpf/bpf");
    println!("cargo:rerun-if-changed={}", dir.display());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets the target arch");
    // The kernel's name for the architecture (bpf_tracing.h) and Debian's multiarch include
    // directory, where <asm/types.h> lives.
    let (target_arch, multiarch) = match arch.as_str() {
        "x86_64" => ("x86", "x86_64-linux-gnu"),
        "aarch64" => ("arm64", "aarch64-linux-gnu"),
        "riscv64" => ("riscv", "riscv64-linux-gnu"),
        other => panic!("no BPF build for target arch {other}"),
    };
    let clang = std::env::var("BPF_CLANG").unwrap_or_else(|_| "clang".to_owned());
    let mut sources: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read the BPF source directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
        .collect();
    sources.sort();
    for source in sources {
        let name = source.file_name().expect("a file").to_string_lossy();
        let object = out.join(name.replace(".bpf.c", ".bpf.o"));
        let status = Command::new(&clang)
            .args(["-g", "-O2", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-D__TARGET_ARCH_{target_arch}"))
            .arg(format!("-I/usr/include/{multiarch}"))
            .arg("-I")
            .arg(dir)
            .arg("-c")
            .arg(&source)
            .arg("-o")
            .arg(&object)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {clang} to build the eBPF programs ({e}); \
                     install clang and libbpf-dev (scripts/test and scripts/run do)"
                )
            });
        assert!(status.success(), "{clang} failed on {}", source.display());
    }
}

#[cfg(feature = "dtrace")]
mod dtrace {
    use super::{Command, Path, PathBuf};

    /// Where `dtrace.h` lives on the platforms that install it.
    const DEFAULT_INCLUDE_DIRS: &[&str] = &["/usr/include", "/usr/local/include"];

    pub fn bind() {
        for var in ["DTRACE_INCLUDE_DIR", "DTRACE_LIB_DIR", "DTRACE_CLANG_ARGS"] {
            println!("cargo:rerun-if-env-changed={var}");
        }
        println!("cargo:rerun-if-changed=build.rs");

        let extra: Vec<PathBuf> = std::env::var("DTRACE_INCLUDE_DIR")
            .map(|v| std::env::split_paths(&v).collect())
            .unwrap_or_default();
        let sdk = macos_sdk();
        let dirs: Vec<PathBuf> = extra
            .iter()
            .cloned()
            .chain(sdk.iter().map(|s| s.join("usr/include")))
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
        // dtrace.h's own includes (sys/dtrace.h, mach/machine.h, …) are SDK headers too; a
        // sysroot in DTRACE_CLANG_ARGS, which come later, still wins.
        if let Some(sdk) = &sdk {
            builder = builder
                .clang_arg("-isysroot")
                .clang_arg(sdk.display().to_string());
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

    /// The macOS SDK when building for macOS: Apple's dtrace project installs its public
    /// `dtrace.h` under `/usr/include`, which since macOS 10.14 exists only in the SDK. `None`
    /// for other targets, or when no SDK can be found (a cross build names its headers with
    /// DTRACE_INCLUDE_DIR and DTRACE_CLANG_ARGS).
    fn macos_sdk() -> Option<PathBuf> {
        if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("macos") {
            return None;
        }
        println!("cargo:rerun-if-env-changed=SDKROOT");
        if let Some(root) = std::env::var_os("SDKROOT").filter(|r| !r.is_empty()) {
            return Some(PathBuf::from(root));
        }
        let out = Command::new("xcrun")
            .args(["--sdk", "macosx", "--show-sdk-path"])
            .output()
            .ok()
            .filter(|o| o.status.success())?;
        let path = String::from_utf8(out.stdout).ok()?;
        let path = path.trim();
        (!path.is_empty()).then(|| PathBuf::from(path))
    }
}
