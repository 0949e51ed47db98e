//! The benchmarks measure the programs the `sonde` command ships.
fn main() {
    if let Err(e) = sonde_build::EbpfCrate::new("../sonde-cli/ebpf").build() {
        panic!("{e}");
    }
}
