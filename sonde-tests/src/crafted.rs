//! Hostile eBPF objects built byte-exact with `object::write`: each one broke an
//! earlier parser (abort, panic, overflow, quadratic memory).

use object::write::{Object, Symbol, SymbolSection};
use object::{Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolKind, SymbolScope};

/// `r0 = 0; exit`.
const RETURN_ZERO: [u8; 16] = [0xb7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];

fn new_object() -> Object<'static> {
    let mut o = Object::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little);
    let license = o.add_section(Vec::new(), b"license".to_vec(), SectionKind::Data);
    o.append_section_data(license, b"GPL\0", 1);
    o
}

fn add_function(o: &mut Object<'static>, section: object::write::SectionId, name: &str, at: u64, size: u64) {
    o.add_symbol(Symbol {
        name: name.as_bytes().to_vec(),
        value: at,
        size,
        kind: SymbolKind::Text,
        scope: SymbolScope::Linkage,
        weak: false,
        section: SymbolSection::Section(section),
        flags: SymbolFlags::None,
    });
}

fn with_program(mut o: Object<'static>) -> Vec<u8> {
    let text = o.add_section(Vec::new(), b"uprobe/p".to_vec(), SectionKind::Text);
    o.append_section_data(text, &RETURN_ZERO, 8);
    add_function(&mut o, text, "p", 0, 16);
    o.write().expect("object::write")
}

/// A `.bss` of `size` bytes (a 368-byte file may claim 1 TiB).
pub fn huge_bss(size: u64) -> Vec<u8> {
    let mut o = new_object();
    let bss = o.add_section(Vec::new(), b".bss".to_vec(), SectionKind::UninitializedData);
    o.append_section_bss(bss, size, 8);
    with_program(o)
}

/// A map symbol whose address sits at the end of the address space.
pub fn map_symbol_at(address: u64) -> Vec<u8> {
    let mut o = new_object();
    let maps = o.add_section(Vec::new(), b"maps".to_vec(), SectionKind::Data);
    o.append_section_data(maps, &[0u8; 20], 4);
    o.add_symbol(Symbol {
        name: b"M".to_vec(),
        value: address,
        size: 20,
        kind: SymbolKind::Data,
        scope: SymbolScope::Linkage,
        weak: false,
        section: SymbolSection::Section(maps),
        flags: SymbolFlags::None,
    });
    with_program(o)
}

/// One code section of `insns` instructions with `programs` entry points, each
/// of size `size_of(i)` (in bytes; 0 = unknown).
pub fn many_entries(insns: usize, programs: usize, size_of: impl Fn(usize, u64) -> u64) -> Vec<u8> {
    let mut o = new_object();
    let text = o.add_section(Vec::new(), b"uprobe/p".to_vec(), SectionKind::Text);
    let mut code = Vec::with_capacity(insns * 8);
    for _ in 0..insns / 2 {
        code.extend_from_slice(&RETURN_ZERO);
    }
    o.append_section_data(text, &code, 8);
    let stride = (insns / programs / 2 * 2).max(2);
    for i in 0..programs {
        let at = (i * stride * 8) as u64;
        add_function(&mut o, text, &format!("p{i}"), at, size_of(i, code.len() as u64 - at));
    }
    o.write().expect("object::write")
}

/// A machine sonde here does not probe, with the name sonde gives it: arm64
/// on an x86-64 host, x86-64 on an arm64 one.
pub fn other_architecture() -> (Architecture, &'static str) {
    if cfg!(target_arch = "aarch64") {
        (Architecture::X86_64, "x86-64")
    } else {
        (Architecture::Aarch64, "arm64")
    }
}

/// The name sonde gives the machine the tests run on.
pub fn host_architecture_name() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "x86-64"
    }
}

/// A relocatable ELF for another machine, with one function `f` (`ret`:
/// `d65f03c0` on aarch64, `c3` elsewhere).
pub fn foreign_elf(arch: Architecture) -> Vec<u8> {
    let mut o = Object::new(BinaryFormat::Elf, arch, Endianness::Little);
    let text = o.add_section(Vec::new(), b".text".to_vec(), SectionKind::Text);
    let ret: &[u8] = if arch == Architecture::Aarch64 {
        &[0xc0, 0x03, 0x5f, 0xd6]
    } else {
        &[0xc3, 0x90, 0x90, 0x90]
    };
    o.append_section_data(text, ret, 4);
    add_function(&mut o, text, "f", 0, 4);
    o.write().expect("object::write")
}
