//! The object parser on real and malformed objects: errors, never panics.

use object::{Object as _, ObjectSection};
use sonde::object_file::{MapSource, ObjectSpec, ProbeKind, SpecError};
use sonde_tests::{crafted, PROBES};

fn section_range(name: &str) -> (usize, usize) {
    let f = object::File::parse(PROBES).unwrap();
    let s = f.section_by_name(name).unwrap();
    let (off, len) = s.file_range().unwrap();
    (off as usize, len as usize)
}

/// The test object with `count_calls`'s first relocation pointed at symbol 1
/// (a section or file symbol, not a map); its type (r_info's low 32 bits) kept.
fn count_calls_referring_to_no_map() -> Vec<u8> {
    let mut bytes = PROBES.to_vec();
    let (off, _) = section_range(".reluprobe/count_calls");
    let info = u64::from_le_bytes(bytes[off + 8..off + 16].try_into().unwrap());
    let patched = (1u64 << 32) | (info & 0xffff_ffff);
    bytes[off + 8..off + 16].copy_from_slice(&patched.to_le_bytes());
    bytes
}

#[test]
fn parses_the_test_programs() {
    let o = ObjectSpec::parse(PROBES).unwrap();
    assert_eq!(o.license.to_str().unwrap(), "GPL");
    let names: Vec<&str> = o.programs.iter().map(|p| p.name.as_str()).collect();
    for want in ["count_calls", "record_calls", "record_returns", "read_global_data"] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    let ret = o.programs.iter().find(|p| p.name == "record_returns").unwrap();
    assert_eq!(ret.kind, sonde::object_file::ProgramKind::Probe(ProbeKind::Return));
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
        let r = std::panic::catch_unwind(|| ObjectSpec::parse(&PROBES[..len]));
        assert!(r.is_ok(), "panic at length {len}");
        assert!(r.unwrap().is_err(), "truncated at {len} still parsed");
    }
}

#[test]
fn a_host_binary_is_not_bpf() {
    let bytes = std::fs::read(sonde_tests::target_app()).unwrap();
    assert!(matches!(ObjectSpec::parse(&bytes), Err(SpecError::NotBpf(_))));
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
    match ObjectSpec::parse(&bytes) {
        Err(SpecError::UnknownSection(s)) => assert_eq!(s, "kprobe/count_calls"),
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
    match ObjectSpec::parse(&bytes) {
        Err(SpecError::BadRelocation { section, .. }) => assert_eq!(section, "uprobe/count_calls"),
        other => panic!("unexpected: {other:?}"),
    }
}

#[test]
fn relocation_to_a_non_map_symbol_is_an_error() {
    let bytes = count_calls_referring_to_no_map();
    assert!(matches!(
        ObjectSpec::parse(&bytes),
        Err(SpecError::BadRelocation { .. })
    ));
}

#[test]
fn a_huge_bss_is_refused_without_allocating() {
    // 1 TiB: used to abort in `vec![0; size]`; 2^63: a capacity-overflow panic.
    for size in [1u64 << 40, 1 << 63, u64::MAX - 7] {
        let bytes = crafted::huge_bss(size);
        assert!(bytes.len() < 1024, "{} bytes", bytes.len());
        match ObjectSpec::parse(&bytes) {
            Err(SpecError::BadSection { section, reason }) => {
                assert_eq!(section, ".bss");
                assert!(reason.contains("too large"), "{reason}");
            }
            other => panic!("{size}: {other:?}"),
        }
    }
    // A .bss a map can hold still parses, with nothing allocated for it.
    let o = ObjectSpec::parse(&crafted::huge_bss(1 << 20)).unwrap();
    let bss = o.maps.iter().find(|m| m.name == ".bss").unwrap();
    assert_eq!(bss.def.value_size, 1 << 20);
    assert!(matches!(&bss.source, MapSource::Data { init, .. } if init.is_empty()));
}

#[test]
fn a_map_symbol_at_the_end_of_the_address_space_is_an_error() {
    // `start + 20` overflowed here.
    for at in [u64::MAX, u64::MAX - 19, 1 << 63, 1] {
        let r = std::panic::catch_unwind(|| ObjectSpec::parse(&crafted::map_symbol_at(at)));
        assert!(matches!(r, Ok(Err(SpecError::BadMapDef(_)))), "{at:#x}: {r:?}");
    }
}

#[test]
fn many_entry_points_link_in_bounded_memory() {
    // 120,000 instructions (960 KB) and 2,000 entry points of unknown size: each
    // used to copy the rest of the section (~7 GB). Now each ends where the next
    // one starts.
    let bytes = crafted::many_entries(120_000, 2_000, |_, _| 0);
    let o = ObjectSpec::parse(&bytes).unwrap();
    assert_eq!(o.programs.len(), 2_000);
    let total: usize = o.programs.iter().map(|p| p.insns.len()).sum();
    assert_eq!(total, 120_000);
    // Entry points that each claim the rest of the section: bounded, then refused.
    let bytes = crafted::many_entries(120_000, 2_000, |_, rest| rest);
    assert!(matches!(
        ObjectSpec::parse(&bytes),
        Err(SpecError::ObjectTooLarge { limit }) if limit == sonde::object_file::MAX_OBJECT_INSNS
    ));
}

#[test]
fn an_object_links_each_program_when_asked_for_and_refuses_a_malformed_one_then() {
    // One program's map reference points at a symbol that is no map: the
    // object loads (programs link when first asked for), that program is
    // refused by the name of its section, and the others link and stay usable.
    let bytes = count_calls_referring_to_no_map();
    let copied = sonde::Object::load(&bytes).expect("the maps and entries parse");
    let embedded = sonde::Object::load_static(Box::leak(bytes.into_boxed_slice())).expect("as embedded");
    for mut object in [copied, embedded] {
        assert!(object.program_names().contains(&"count_calls"));
        match object.uprobe("count_calls") {
            Err(sonde::ProgramError::Link(SpecError::BadRelocation { section, .. })) => {
                assert_eq!(section, "uprobe/count_calls")
            }
            other => panic!("unexpected: {other:?}"),
        }
        let p = object.uprobe("record_calls").expect("another program links");
        assert_eq!(p.name(), "record_calls");
        assert!(matches!(
            object.uprobe("no_such_program"),
            Err(sonde::ProgramError::NotFound(_))
        ));
        // A uprobe is not a tracepoint.
        assert!(matches!(
            object.tracepoint("record_calls"),
            Err(sonde::ProgramError::NotFound(_))
        ));
    }
}

#[test]
fn programs_linked_one_by_one_are_held_to_the_object_limit() {
    // Entry points that each claim the rest of the section: the object loads,
    // and linking them one after another stops at MAX_OBJECT_INSNS.
    let bytes = crafted::many_entries(120_000, 2_000, |_, rest| rest);
    let mut object = sonde::Object::load(&bytes).expect("parses");
    let names: Vec<String> = object.program_names().iter().map(|s| s.to_string()).collect();
    assert_eq!(names.len(), 2_000);
    let refused = names
        .iter()
        .find_map(|n| object.uprobe(n).err())
        .expect("the limit is reached");
    assert!(
        matches!(refused, sonde::ProgramError::Link(SpecError::ObjectTooLarge { limit }) if limit == sonde::object_file::MAX_OBJECT_INSNS),
        "{refused:?}"
    );
}
