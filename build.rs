//! Build script: compiles the native eBPF backend's BPF C programs (`src/consumer/ebpf/bpf/`)
//! with clang into BPF objects that the binary embeds (`include_bytes!` from `OUT_DIR`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    compile_bpf();
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
