//! The object parser on real and malformed objects: errors, never panics.

use object::{Object as _, ObjectSection};
use sonde::obj::{ObjError, ObjectFile, ProbeKind};
use sonde_tests::PROBES;

fn section_range(name: &str) -> (usize, usize) {
    let f = object::File::parse(PROBES).unwrap();
    let s = f.section_by_name(name).unwrap();
    let (off, len) = s.file_range().unwrap();
    (off as usize, len as usize)
}

#[test]
fn parses_the_test_programs() {
    let o = ObjectFile::parse(PROBES).unwrap();
    assert_eq!(o.license.to_str().unwrap(), "GPL");
    let names: Vec<&str> = o.programs.iter().map(|p| p.name.as_str()).collect();
    for want in ["count_calls", "record_calls", "record_returns", "read_global_data"] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    let ret = o.programs.iter().find(|p| p.name == "record_returns").unwrap();
    assert_eq!(ret.kind, ProbeKind::Return);
    let maps: Vec<&str> = o.maps.iter().map(|m| m.name.as_str()).collect();
    for want in ["COUNTS", "EVENTS", "HITS", "SEEN", ".rodata"] {
        assert!(maps.contains(&want), "{want} in {maps:?}");
    }
    // Every map reference points at an ld_imm64.
    for p in &o.programs {
        for r in &p.relocs {
            assert!(p.insns[r.insn].is_ld_imm64(), "{}: reloc at {}", p.name, r.insn);
        }
    }
}

#[test]
fn truncated_objects_are_errors() {
    for len in (0..PROBES.len()).step_by(97) {
        let r = std::panic::catch_unwind(|| ObjectFile::parse(&PROBES[..len]));
        assert!(r.is_ok(), "panic at length {len}");
        assert!(r.unwrap().is_err(), "truncated at {len} still parsed");
    }
}

#[test]
fn a_host_binary_is_not_bpf() {
    let bytes = std::fs::read(sonde_tests::target_app()).unwrap();
    assert!(matches!(ObjectFile::parse(&bytes), Err(ObjError::NotBpf(_))));
}

#[test]
fn unknown_program_section_is_named() {
    // Rename `uprobe/count_calls` to `kprobe/count_calls` in the string table.
    let mut bytes = PROBES.to_vec();
    let needle = b"uprobe/count_calls\0";
    let hits: Vec<usize> = (0..bytes.len() - needle.len())
        .filter(|&i| &bytes[i..i + needle.len()] == needle)
        .collect();
    assert!(!hits.is_empty());
    for at in hits {
        bytes[at] = b'k';
    }
    match ObjectFile::parse(&bytes) {
        Err(ObjError::UnknownSection(s)) => assert_eq!(s, "kprobe/count_calls"),
        other => panic!("unexpected: {other:?}"),
    }
}

#[test]
fn relocation_outside_the_section_is_an_error() {
    let mut bytes = PROBES.to_vec();
    let (off, len) = section_range(".reluprobe/count_calls");
    assert!(len >= 16);
    // r_offset of the first Elf64_Rel: far past the section's instructions.
    bytes[off..off + 8].copy_from_slice(&0x10_0000u64.to_le_bytes());
    match ObjectFile::parse(&bytes) {
        Err(ObjError::BadRelocation { section, .. }) => assert_eq!(section, "uprobe/count_calls"),
        other => panic!("unexpected: {other:?}"),
    }
}

#[test]
fn relocation_to_a_non_map_symbol_is_an_error() {
    let mut bytes = PROBES.to_vec();
    let (off, _) = section_range(".reluprobe/count_calls");
    // r_info: keep the type (low 32 bits), point the symbol at index 1 (a section
    // or file symbol, not a map).
    let info = u64::from_le_bytes(bytes[off + 8..off + 16].try_into().unwrap());
    let patched = (1u64 << 32) | (info & 0xffff_ffff);
    bytes[off + 8..off + 16].copy_from_slice(&patched.to_le_bytes());
    assert!(matches!(ObjectFile::parse(&bytes), Err(ObjError::BadRelocation { .. })));
}
