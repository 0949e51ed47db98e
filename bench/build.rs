//! The benchmarks measure the programs the `sonde` command ships, beside the
//! same logic in C (`peer/count.bpf.c`) loaded by libbpf and by aya.
fn main() {
    if let Err(e) = sonde_build::EbpfCrate::new("../sonde-cli/ebpf").build() {
        panic!("{e}");
    }
    println!("cargo:rerun-if-changed=peer/count.bpf.c");
    let dir = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    // Both programs for libbpf; the `uprobe` one alone for aya 0.14, which
    // has no uprobe_multi.
    for (out, defines) in [
        ("peer-count.bpf.o", &[][..]),
        ("peer-count-single.bpf.o", &["-DSINGLE_ONLY"][..]),
    ] {
        let status = std::process::Command::new("clang")
            .args(["-O2", "-g", "-target", "bpf"])
            .args(defines)
            .args(["-c", "peer/count.bpf.c", "-o"])
            .arg(dir.join(out))
            .status()
            .unwrap_or_else(|e| {
                panic!("clang (the benchmark peers' program is C; `cargo xtask setup` installs it): {e}")
            });
        assert!(status.success(), "clang failed on peer/count.bpf.c");
    }
}
