//! Failures leave nothing behind: no link, no perf event, no tracefs entry, no
//! descriptor. Each test holds one lock, so descriptor counts are not disturbed by
//! a test running beside it.

use std::sync::Mutex;

use sonde::sys::{fault, Call};
use sonde::{AttachError, AttachOptions, AttachType, Cookie, Feature, Object, Refusal, Target, TargetError, Tier};
use sonde_tests::*;

static SERIAL: Mutex<()> = Mutex::new(());

/// One test at a time; a failed test does not block the others.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    // Probe the kernel first: the probes make calls an injected fault would hit.
    let _ = sonde::Features::current();
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The state to compare before and after.
#[derive(Debug, PartialEq)]
struct Kernel {
    fds: usize,
    our_tracefs: Vec<String>,
}

fn snapshot() -> Kernel {
    let me = format!("sonde_{}_", std::process::id());
    Kernel {
        fds: open_fds(),
        our_tracefs: sonde::inspect::tracefs_uprobes()
            .into_iter()
            .filter(|l| l.contains(&me))
            .collect(),
    }
}

fn loaded() -> Object {
    require_root();
    let mut o = Object::load(PROBES).unwrap();
    // Load every variant these tests use first, so descriptor counts compare
    // attach state only.
    let p = o.uprobe("count_calls").unwrap();
    let f = sonde::Features::current();
    if f.has(Feature::UprobeMulti) {
        p.load(sonde::Load::new(AttachType::UprobeMulti, Cookie::Native))
            .unwrap();
    }
    if f.has(Feature::BpfCookie) {
        p.load(sonde::Load::new(AttachType::PerfEvent, Cookie::Native)).unwrap();
    }
    for c in [1, 2, 3, 4] {
        p.load(sonde::Load::new(AttachType::PerfEvent, Cookie::Emulated(c)))
            .unwrap();
    }
    o
}

/// [`loaded`], and the kernel ids of the variants loaded.
fn loaded_with_ids() -> (Object, Vec<u32>) {
    let mut object = loaded();
    let ids = object
        .uprobe("count_calls")
        .unwrap()
        .loaded()
        .map(|p| p.info().unwrap().id)
        .collect();
    (object, ids)
}

#[test]
fn eperm_from_the_pmu_falls_back_to_tracefs() {
    let _s = serial();
    let mut object = loaded();
    let app = Waiting::spawn("abcabc");
    let options = AttachOptions::default().pid(app.pid()).disable(Feature::UprobeMulti);
    let guard = fault::inject(Call::PerfEventOpen, 1, libc::EPERM);
    let attachment = object
        .uprobe("count_calls")
        .unwrap()
        .attach(&targets(&[1, 2, 3]), &options)
        .unwrap();
    drop(guard);
    assert_eq!(attachment.tier(), Tier::Tracefs, "{}", attachment.plan());
    assert!(attachment
        .plan()
        .passed_over
        .iter()
        .any(|(t, r)| *r == Refusal::PmuPermission && *t == Tier::PerfLink));
    assert_eq!(attachment.tracefs_events().len(), 3);
    app.run();
    assert_eq!(counts(&object, "COUNTS"), expected_counts("abcabc", &[1, 2, 3]));
    let events = attachment.tracefs_events();
    drop(attachment);
    let listed = sonde::inspect::tracefs_uprobes();
    for e in events {
        assert!(!listed.iter().any(|l| l.contains(&e)), "{e} removed");
    }
}

#[test]
fn emfile_on_the_third_target_is_a_clean_error() {
    let _s = serial();
    let mut object = loaded();
    let before = snapshot();
    for tier in [Tier::PerfLink, Tier::Emulated, Tier::Tracefs] {
        if !tier_supported(tier) {
            continue;
        }
        let _g = fault::inject(Call::PerfEventOpen, 3, libc::EMFILE);
        let err = object
            .uprobe("count_calls")
            .unwrap()
            .attach(&targets(&[1, 2, 3, 4]), &AttachOptions::default().tier(tier))
            .unwrap_err();
        match err {
            AttachError::TooManyFiles { attached, wanted, .. } => {
                assert_eq!((attached, wanted), (2, 4), "{tier}");
            }
            other => panic!("{tier}: unexpected {other}"),
        }
        assert_eq!(snapshot(), before, "{tier}: nothing left after EMFILE");
    }
}

#[test]
fn einval_at_link_create_is_a_clean_error() {
    let _s = serial();
    let (mut object, ids) = loaded_with_ids();
    let before = snapshot();
    for tier in [Tier::Multi, Tier::PerfLink] {
        if !tier_supported(tier) {
            continue;
        }
        let _g = fault::inject(Call::LinkCreate, 1, libc::EINVAL);
        let err = object
            .uprobe("count_calls")
            .unwrap()
            .attach(&targets(&[1, 2, 3]), &AttachOptions::default().tier(tier))
            .unwrap_err();
        assert!(err.to_string().contains("BPF_LINK_CREATE"), "{tier}: {err}");
        assert_eq!(snapshot(), before, "{tier}: nothing left");
        assert!(links_of(&ids).is_empty(), "{tier}: no link listed");
    }
}

#[test]
fn a_failure_half_way_rolls_back_every_tier() {
    let _s = serial();
    let (mut object, ids) = loaded_with_ids();
    let before = snapshot();
    // The kernel refuses the last target (an injected EINVAL; a bad offset no
    // longer reaches the kernel): everything attached before it must go.
    let t = targets(&[1, 2, 3]);
    for tier in [Tier::PerfLink, Tier::Emulated, Tier::Tracefs] {
        if !tier_supported(tier) {
            continue;
        }
        let _g = fault::inject(Call::PerfEventOpen, 3, libc::EINVAL);
        let _t = fault::inject(Call::TracefsWrite, 3, libc::EINVAL);
        let err = object
            .uprobe("count_calls")
            .unwrap()
            .attach(&t, &AttachOptions::default().tier(tier))
            .unwrap_err();
        assert!(matches!(err, AttachError::Target { .. }), "{tier}: {err}");
        assert!(err.to_string().contains(FUNCTIONS[2].0), "names the target: {err}");
        assert_eq!(snapshot(), before, "{tier}: rolled back");
        assert!(links_of(&ids).is_empty());
    }
}
#[test]
fn missing_symbol_and_binary_are_named_and_nothing_stays() {
    require_root();
    let _s = serial();
    let mut object = Object::load(PROBES).unwrap();
    let before = open_fds();
    let probe = object.uprobe("count_calls").unwrap();
    let err = probe
        .attach(
            &[
                Target::symbol(target_app(), "sonde_fn_a").cookie(1),
                Target::symbol(target_app(), "no_such_function").cookie(2),
            ],
            &AttachOptions::default(),
        )
        .unwrap_err();
    match &err {
        AttachError::Resolve(TargetError::NoSymbol { symbol, binary, .. }) => {
            assert_eq!(symbol, "no_such_function");
            assert!(binary.ends_with("target-app"));
        }
        other => panic!("unexpected: {other}"),
    }
    assert!(err.to_string().contains("no_such_function"));
    let err = probe
        .attach(&[Target::symbol("/nonexistent/bin", "main")], &AttachOptions::default())
        .unwrap_err();
    assert!(
        matches!(err, AttachError::Resolve(TargetError::NoSuchBinary { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("/nonexistent/bin"));
    assert_eq!(probe.loaded().count(), 0, "nothing loaded for unresolvable targets");
    assert_eq!(open_fds(), before, "no descriptor leaked");
}

/// A detach handed to a background process: once that process is done, the
/// kernel calls the program no more (a second run of the binary counts nothing:
/// so this process kept no copy of a link), no link and no tracefs entry
/// remain, and this process holds no descriptor more than before. On every per-target tier,
/// where the kernel's wait is long (and on multi, where it is short).
#[test]
fn a_detach_handed_off_leaves_nothing_once_its_process_is_done() {
    let _s = serial();
    require_root();
    let dir = std::env::temp_dir().join(format!("sonde-handoff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    // A copy of its own: probes on it are system-wide, and no other test runs it.
    let app = dir.join("target-app");
    std::fs::copy(target_app(), &app).expect("copy target-app");
    let cookies = [11, 12, 13, 14];
    for tier in sonde::Tier::ALL {
        if !tier_supported(tier) {
            continue;
        }
        let fds = open_fds();
        let mut object = sonde::Object::load(PROBES).expect("load");
        let targets: Vec<sonde::Target> = FUNCTIONS
            .iter()
            .zip(cookies)
            .map(|((name, _), c)| sonde::Target::symbol(&app, *name).cookie(c))
            .collect();
        let attachment = object
            .uprobe("count_calls")
            .expect("program")
            .attach(&targets, &sonde::AttachOptions::default().tier(tier))
            .unwrap_or_else(|e| panic!("attach on {tier}: {e}"));
        let ids = prog_ids(&attachment);
        let entries = attachment.tracefs_events();
        Waiting::spawn_path(&app, &["abcdabcaabbd"]).run();
        let want = expected_counts("abcdabcaabbd", &cookies);
        assert_eq!(counts(&object, "COUNTS"), want, "on {tier}");
        let pid = attachment.hand_off().expect("hand off").expect("something to detach");
        assert!(
            wait_exited(pid, std::time::Duration::from_secs(30)),
            "the detach process {pid} ({tier}) is still running after 30 s"
        );
        Waiting::spawn_path(&app, &["abcdabcaabbd"]).run();
        assert_eq!(counts(&object, "COUNTS"), want, "{tier}: nothing counted once detached");
        drop(object);
        assert_eq!(open_fds(), fds, "{tier}: every descriptor closed");
        assert!(links_of(&ids).is_empty(), "{tier}: links left {:?}", links_of(&ids));
        let events = sonde::inspect::tracefs_uprobes();
        for e in &entries {
            assert!(
                !events.iter().any(|l| l.contains(e.as_str())),
                "{tier}: {e} left in uprobe_events"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
