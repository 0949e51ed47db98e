//! The library's data types on the real kernel (#18): user stacks stored by the
//! program in a stack trace map, counted in an LRU hash keyed by stack id, read
//! back through the typed views.

use sonde::maps::{HashMap, StackTraceMap};
use sonde::resolve::SymbolTable;
use sonde::{AttachOptions, Object, Target};
use sonde_tests::{require_root, target_app, Waiting};

/// The file offset and path of virtual address `ip`, through a snapshot of
/// `/proc/PID/maps`.
fn translate(maps: &str, ip: u64) -> Option<(u64, String)> {
    maps.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (start, end) = f.next()?.split_once('-')?;
        let (start, end) = (u64::from_str_radix(start, 16).ok()?, u64::from_str_radix(end, 16).ok()?);
        let offset = u64::from_str_radix(f.nth(1)?, 16).ok()?;
        let path = f.nth(2)?.to_string();
        (ip >= start && ip < end).then(|| (ip - start + offset, path))
    })
}

#[test]
fn user_stacks_are_stored_and_counted_by_id() {
    require_root();
    let app = target_app();
    let table = SymbolTable::read(&app).expect("symbols");
    let entry = table.function("sonde_fn_a").expect("sonde_fn_a").file_offset;
    let mut object = Object::load(sonde_tests::PROBES).expect("object");
    // "aab": sonde_fn_a twice from the same call site, then sonde_fn_b.
    let waiting = Waiting::spawn("aab").until_blocked();
    let pid = waiting.pid();
    let _attachment = object
        .uprobe("count_stacks")
        .expect("program")
        .attach(
            &[Target::symbol(&app, "sonde_fn_a").cookie(0)],
            &AttachOptions::default().pid(pid),
        )
        .expect("attach");
    // Read while the process waits: its mappings do not move after.
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    waiting.run();

    let by_stack: HashMap<i64, u64> = HashMap::new(object.map("BY_STACK").expect("map")).expect("LRU hash view");
    let stacks = StackTraceMap::new(object.map("STACKS").expect("map")).expect("stack map view");
    let entries: Vec<(i64, u64)> = by_stack
        .iter()
        .expect("key walk")
        .collect::<Result<_, _>>()
        .expect("lookups");
    assert_eq!(entries.iter().map(|(_, n)| n).sum::<u64>(), 2, "two calls: {entries:?}");
    for (id, _) in &entries {
        let frames = stacks
            .get(u32::try_from(*id).expect("a stack id"))
            .expect("lookup")
            .expect("the stack is stored");
        assert!(frames.len() >= 2, "the function and its callers: {frames:x?}");
        // The innermost frame is the probed function's entry, in the target.
        let (offset, path) = translate(&maps, frames[0]).expect("frame 0 in a mapping");
        assert!(path.ends_with("target-app"), "{path}");
        assert_eq!(offset, entry, "frame 0 is sonde_fn_a's entry");
        // Its caller is in the target too (main's dispatch loop).
        let (_, caller) = translate(&maps, frames[1]).expect("frame 1 in a mapping");
        assert!(caller.ends_with("target-app"), "{caller}");
    }
    assert!(
        stacks.get(u32::MAX).expect("lookup").is_none(),
        "an unused id holds nothing"
    );
}

/// `sonde_ebpf::info!` and `debug!` in a program, formatted in user space from
/// the object's format strings: exact lines, in order.
#[test]
fn program_logs_are_formatted_in_user_space() {
    require_root();
    let app = target_app();
    let mut object = Object::load(sonde_tests::PROBES).expect("object");
    // "ab": sonde_fn_a(0), then sonde_fn_b(1).
    let waiting = Waiting::spawn("ab").until_blocked();
    let pid = waiting.pid();
    let _attachment = object
        .uprobe("log_calls")
        .expect("program")
        .attach(
            &[
                Target::symbol(&app, "sonde_fn_a").cookie(5),
                Target::symbol(&app, "sonde_fn_b").cookie(6),
            ],
            &AttachOptions::default().pid(pid),
        )
        .expect("attach");
    waiting.run();
    let mut reader = sonde::log::LogReader::new(sonde_tests::PROBES, &object).expect("log reader");
    let mut lines = Vec::new();
    while let Some(line) = reader.next_line() {
        lines.push(line);
    }
    assert_eq!(
        lines,
        [
            (log::Level::Info, "call 5 arg 0x0".to_string()),
            (log::Level::Debug, "no arguments at all".to_string()),
            (log::Level::Info, "call 6 arg 0x1".to_string()),
            (log::Level::Debug, "no arguments at all".to_string()),
        ]
    );
}

/// Records through a perf event array: one buffer per CPU, every call's record
/// read back exactly.
#[test]
fn records_arrive_through_per_cpu_perf_buffers() {
    require_root();
    let app = target_app();
    let mut object = Object::load(sonde_tests::PROBES).expect("object");
    let perf = sonde::maps::PerfEventArray::new(object.map("PERF_EVENTS").expect("map")).expect("view");
    let mut buffers = perf.open_all(4).expect("per-CPU buffers");
    assert!(!buffers.is_empty());
    let waiting = Waiting::spawn("abba").until_blocked();
    let pid = waiting.pid();
    let _attachment = object
        .uprobe("perf_calls")
        .expect("program")
        .attach(
            &[
                Target::symbol(&app, "sonde_fn_a").cookie(1),
                Target::symbol(&app, "sonde_fn_b").cookie(2),
            ],
            &AttachOptions::default().pid(pid),
        )
        .expect("attach");
    waiting.run();
    let mut events = Vec::new();
    for b in &mut buffers {
        while let Some(record) = b.next() {
            match &record {
                sonde::maps::PerfRecord::Sample(_) => {
                    events.push(record.sample_as::<sonde_tests::Event>().expect("a whole Event"));
                }
                sonde::maps::PerfRecord::Lost(n) => panic!("{n} records lost"),
            }
        }
    }
    events.sort_by_key(|e| e.value);
    let got: Vec<(u64, u64)> = events.iter().map(|e| (e.cookie, e.value)).collect();
    // "abba": a(0) b(1) b(2) a(3).
    assert_eq!(got, [(1, 0), (2, 1), (2, 2), (1, 3)]);
    assert!(events.iter().all(|e| (e.pid_tgid >> 32) as u32 == pid));
}

/// `#[usdt]` programs (#16): the spec found through the attach cookie, the
/// user's cookie kept in it, arguments read as the note says (a register, a
/// stack slot, a constant).
#[test]
fn usdt_programs_read_arguments_through_their_specs() {
    require_root();
    let app = sonde_tests::fixtures().join("fixture-usdt");
    let set = sonde::Functions::in_binary(&app)
        .pattern("usdt:sondefx:request")
        .resolve()
        .expect("the probe");
    let f = set.iter().next().expect("one probe");
    let probe = f.usdt.as_ref().expect("a USDT probe");
    assert!(probe.semaphore.is_some(), "request has a semaphore");
    let mut object = Object::load(sonde_tests::PROBES).expect("object");
    // Spec 0 carries the user's cookie 77.
    object
        .usdt_specs()
        .expect("the spec array")
        .set(0, &probe.spec(77).expect("decodable arguments"))
        .expect("spec written");
    let mut sites = set.targets();
    sites[0].attach_cookie = 0;
    let waiting = Waiting::spawn_path(&app, &[]).until_blocked();
    let _attachment = object
        .uprobe("usdt_args")
        .expect("program")
        .attach_sites(sites, &AttachOptions::default().pid(waiting.pid()))
        .expect("attach");
    waiting.run();
    let events = sonde_tests::drain_events(&object);
    let got: Vec<(u64, u64, u64)> = events.iter().map(|e| (e.cookie, e.value, e.kind)).collect();
    // request(i, 100 + i, -7) for i in 0..3: value = arg0, kind = arg1.
    assert_eq!(got, [(77, 0, 100), (77, 1, 101), (77, 2, 102)]);
}

/// String arguments in program logs (`UserStr`): read in the program,
/// escaped on the host, cut at 63 bytes with `...`, an unreadable pointer said.
#[test]
fn program_logs_print_strings_read_from_the_traced_process() {
    require_root();
    let pie = sonde_tests::fixtures().join("fixture-pie");
    let mut object = Object::load(sonde_tests::PROBES).expect("object");
    let waiting = Waiting::spawn_path(&pie, &["strings"]).until_blocked();
    let _attachment = object
        .uprobe("log_strings")
        .expect("program")
        .attach(
            &[Target::symbol(&pie, "str_echo").cookie(9)],
            &AttachOptions::default().pid(waiting.pid()),
        )
        .expect("attach");
    waiting.run();
    let mut reader = sonde::log::LogReader::new(sonde_tests::PROBES, &object).expect("log reader");
    let mut lines = Vec::new();
    while let Some((_, line)) = reader.next_line() {
        lines.push(line);
    }
    let long = format!("{}...", "x".repeat(63));
    let mut want = Vec::new();
    for s in ["hello", "w\u{f6}rld \\xff", long.as_str()] {
        want.push(format!("echo {s} from 9"));
        want.push(format!("{s} and {s}"));
        want.push("bad <unreadable>".to_string());
    }
    assert_eq!(lines, want);
}
