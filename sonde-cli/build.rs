fn main() {
    if let Err(e) = sonde_build::EbpfCrate::new("ebpf").build() {
        panic!("{e}");
    }
}
