//! An object's maps exist in the kernel only once something needs them: a
//! program that uses them loads, or the caller asks for one. Counted from the
//! descriptors this process holds (`anon_inode:bpf-map`), each map named
//! through its fdinfo's `map_id` (one test in this binary: nothing else
//! creates maps meanwhile).

use std::collections::BTreeSet;

use sonde::object_file::{ObjectSpec, ProgramKind};
use sonde::{AttachType, Cookie, Feature, Features, Load, Object};
use sonde_tests::{require_root, PROBES};

/// The ids of the BPF maps this process holds a descriptor of.
fn held_map_ids() -> BTreeSet<u32> {
    let mut ids = BTreeSet::new();
    for e in std::fs::read_dir("/proc/self/fd").expect("fd dir").flatten() {
        let is_map = std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == "anon_inode:bpf-map");
        if !is_map {
            continue;
        }
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", e.file_name().to_string_lossy()))
            .unwrap_or_default();
        if let Some(id) = info
            .lines()
            .find_map(|l| l.strip_prefix("map_id:"))
            .and_then(|v| v.trim().parse().ok())
        {
            ids.insert(id);
        }
    }
    ids
}

#[test]
fn maps_are_created_when_a_program_or_the_caller_needs_them() {
    require_root();
    let spec = ObjectSpec::parse(PROBES).expect("parse");
    // A uprobe program of the test object and the maps it references.
    let program = spec
        .programs
        .iter()
        .filter(|p| matches!(p.kind, ProgramKind::Probe(_)))
        .max_by_key(|p| p.relocs.len())
        .expect("a uprobe program");
    let used: BTreeSet<usize> = program.relocs.iter().map(|r| r.map).collect();
    assert!(
        !used.is_empty() && used.len() < spec.maps.len(),
        "a program using some maps"
    );
    let unused = (0..spec.maps.len())
        .find(|i| !used.contains(i))
        .map(|i| spec.maps[i].name.clone())
        .expect("a map the program does not use");

    let before = held_map_ids();
    let mut object = Object::load(PROBES).expect("load");
    assert_eq!(held_map_ids(), before, "no map before a program loads");

    // Native cookies need 5.15+ (`bpf_get_attach_cookie`); 5.10 loads the
    // emulated form, which uses the same maps.
    let first = if Features::current().has(Feature::BpfCookie) {
        Cookie::Native
    } else {
        Cookie::Emulated(3)
    };
    object
        .uprobe(&program.name)
        .expect("program")
        .load(Load::new(AttachType::PerfEvent, first))
        .expect("load the program");
    let after_load = held_map_ids();
    assert_eq!(
        after_load.len() - before.len(),
        used.len(),
        "`{}` created exactly the {} maps it uses",
        program.name,
        used.len()
    );
    // The same maps serve a second load of it (emulated cookie: another copy).
    object
        .uprobe(&program.name)
        .expect("program")
        .load(Load::new(AttachType::PerfEvent, Cookie::Emulated(7)))
        .expect("load an emulated-cookie copy");
    assert_eq!(held_map_ids(), after_load, "no map created twice");

    // Asking for a map creates it; asking again returns the same one.
    let map = object.map(&unused).expect("an unused map, by name");
    let with_it = held_map_ids();
    assert_eq!(with_it.len(), after_load.len() + 1, "{unused} created when asked for");
    drop(map);
    object.map(&unused).expect("again");
    assert_eq!(held_map_ids(), with_it);
    // Every map, on request.
    assert_eq!(object.maps().expect("all maps").len(), spec.maps.len());
    assert_eq!(held_map_ids().len(), before.len() + spec.maps.len());
    drop(object);
    assert_eq!(held_map_ids(), before, "every map closed with the object");
}
