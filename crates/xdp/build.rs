//! Compiles the C XDP programs in `xdp-prog/` with clang into OUT_DIR so the binary
//! embeds them and never looks for an object file at run time.

use std::{env, path::PathBuf, process::Command};

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("../../xdp-prog");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".into());
    for prog in ["glasswire", "xdp_pass"] {
        let src = root.join(format!("{prog}.bpf.c"));
        println!("cargo:rerun-if-changed={}", src.display());
        let obj = out.join(format!("{prog}.bpf.o"));
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror"])
            // Debian keeps asm/types.h under the multiarch include directory.
            .arg("-I/usr/include/x86_64-linux-gnu")
            .arg("-I/usr/include/aarch64-linux-gnu")
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {clang} to build {}: {e} (install clang and libbpf-dev)",
                    src.display()
                )
            });
        assert!(status.success(), "{clang} failed on {}", src.display());
    }
    println!("cargo:rerun-if-env-changed=CLANG");
}
