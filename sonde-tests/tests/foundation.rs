//! One program, many functions, one cookie each: the foundation, on the real
//! kernel with the automatic tier.

use sonde::maps::PerCpuArray;
use sonde::{AttachOptions, Object, Target, TargetError};
use sonde_tests::*;

const SEQ: &str = "abcabcaadbbbcda";

#[test]
fn one_program_counts_each_function_by_cookie() {
    let cookies = [1, 2, 3, 4];
    let (object, attachment) = attach_and_run("count_calls", SEQ, &cookies, AttachOptions::default());
    assert_eq!(counts(&object, "COUNTS"), expected_counts(SEQ, &cookies));
    // One program loaded for four functions (one per distinct cookie where the
    // kernel has no cookies and the tier emulates them).
    let want = if attachment.tier().native_cookies() {
        1
    } else {
        cookies.len()
    };
    assert_eq!(attachment.programs().len(), want, "{}", attachment.plan());
    let hits: u64 = PerCpuArray::<u64>::new(object.map("HITS").unwrap())
        .unwrap()
        .get(0)
        .unwrap()
        .iter()
        .sum();
    assert_eq!(hits, SEQ.len() as u64);
}

#[test]
fn ring_buffer_sees_cookies_in_call_order() {
    let cookies = [11, 22, 33, 44];
    let (object, _attachment) = attach_and_run("record_calls", SEQ, &cookies, AttachOptions::default());
    let seen: Vec<(u64, u64)> = drain_events(&object).iter().map(|e| (e.cookie, e.value)).collect();
    let want: Vec<(u64, u64)> = SEQ
        .chars()
        .enumerate()
        .map(|(i, c)| (cookies[FUNCTIONS.iter().position(|f| f.1 == c).unwrap()], i as u64))
        .collect();
    assert_eq!(seen, want, "(cookie, first argument) per call, in order");
}

#[test]
fn uretprobe_sees_cookie_and_return_value() {
    let cookies = [5, 6, 7, 8];
    let (object, _a) = attach_and_run("record_returns", SEQ, &cookies, AttachOptions::default());
    assert_eq!(counts(&object, "RET_COUNTS"), expected_counts(SEQ, &cookies));
    let events = drain_events(&object);
    assert!(events.iter().all(|e| e.kind == 1));
    let seen: Vec<(u64, u64)> = events.iter().map(|e| (e.cookie, e.value)).collect();
    let want: Vec<(u64, u64)> = SEQ
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let f = FUNCTIONS.iter().position(|f| f.1 == c).unwrap();
            (cookies[f], expected_return(c, i as u64))
        })
        .collect();
    assert_eq!(seen, want, "(cookie, return value) per return, in order");
}

#[test]
fn drop_detaches() {
    let cookies = [1, 2, 3];
    let (object, attachment) = attach_and_run("count_calls", "abc", &cookies, AttachOptions::default());
    assert_eq!(counts(&object, "COUNTS"), expected_counts("abc", &cookies));
    let ids = prog_ids(&attachment);
    let link_ids = attachment.link_ids();
    // Tiers with native cookies hold BPF links the kernel lists; the others hold
    // perf events only (checked below through the counts).
    assert_eq!(link_ids.is_empty(), !attachment.tier().native_cookies());
    let listed: Vec<u32> = links_of(&ids).iter().map(|l| l.id).collect();
    assert_eq!(listed, link_ids, "the kernel lists the links held");
    drop(attachment);
    assert!(links_of(&ids).is_empty(), "links gone after drop");
    // Calls are no longer counted.
    let app = Waiting::spawn("aaabbbccc");
    app.run();
    assert_eq!(counts(&object, "COUNTS"), expected_counts("abc", &cookies));
}

#[test]
fn global_data_is_read_from_rodata() {
    let (object, _a) = attach_and_run("read_global_data", "abc", &[0, 1, 2], AttachOptions::default());
    let seen = sonde::maps::Array::<u64>::new(object.map("SEEN").unwrap()).unwrap();
    assert_eq!(seen.to_vec().unwrap(), vec![10, 20, 30, 0]);
}

#[test]
fn rejected_program_carries_the_verifier_log() {
    require_root();
    let mut object = Object::load(PROBES).unwrap();
    let err = object
        .uprobe("rejected_by_verifier")
        .unwrap()
        .attach(&targets(&[1]), &AttachOptions::default())
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("rejected program `rejected_by_verifier`"), "{text}");
    assert!(text.contains("map_value_or_null"), "log tail names the problem: {text}");
}

#[test]
fn imported_symbol_and_bad_offsets_are_refused() {
    let table = sonde::resolve::SymbolTable::read(&target_app()).unwrap();
    let f = table.function("sonde_fn_a").unwrap();
    assert!(f.size > 0);
    let err = sonde::resolve::sites(&[Target::symbol(target_app(), "sonde_fn_a").at_offset(f.size + 1)]).unwrap_err();
    assert!(matches!(err, TargetError::OffsetOutsideSymbol { .. }), "{err}");
    let err = sonde::resolve::sites(&[Target::file_offset(target_app(), u64::MAX / 2)]).unwrap_err();
    assert!(matches!(err, TargetError::BadFileOffset { .. }), "{err}");
    // target-app imports `write` or similar from libc: value-0 symbols are refused.
    let imported = ["write", "malloc", "memcpy", "__libc_start_main"]
        .iter()
        .find(|s| matches!(table.function(s), Err(TargetError::Imported { .. })));
    assert!(imported.is_some(), "an imported libc function is refused with a hint");
}

/// An event loop that ends with the traced command: `RingBuf::until_exit`
/// wakes the wait at the command's exit (its pidfd), and
/// `read_until_exit` returns after the records it left, every one of them.
#[test]
fn an_event_loop_ends_with_the_traced_command() {
    require_root();
    let cookies = [11, 22, 33, 44];
    let mut object = Object::load(PROBES).expect("load object");
    // `exec`: the pid held is target-app's; stdin closed, so it does not wait.
    let script = format!("exec {} {SEQ} < /dev/null > /dev/null", target_app().display());
    let mut held = sonde::command::HeldCommand::spawn(["sh", "-c", &script]).expect("held command");
    let _attachment = object
        .uprobe("record_calls")
        .expect("program")
        .attach(&targets(&cookies), &AttachOptions::default().pid(held.pid()))
        .expect("attach");
    let mut ring = sonde::maps::RingBuf::new(object.map("EVENTS").expect("EVENTS")).expect("ring");
    ring.until_exit(held.pid()).expect("watch the command");
    held.release().expect("release");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let done = ring.read_until_exit(|r| {
            seen.push(r.read::<Event>().expect("an Event").cookie);
            true
        });
        let _ = tx.send((done.is_ok(), seen));
    });
    let (ok, seen) = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("read_until_exit returned after the command exited");
    assert!(ok);
    assert_eq!(held.wait(), 0);
    let want: Vec<u64> = SEQ
        .chars()
        .map(|c| cookies[FUNCTIONS.iter().position(|f| f.1 == c).expect("letter")])
        .collect();
    assert_eq!(seen, want, "every record, in order, then the end");
}
