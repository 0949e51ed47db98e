//! Session programs (`#[uprobe_session]`): the same events on every tier, native
//! (one program, one link, Linux 6.13+) or emulated (an entry and a return copy,
//! the per-call value in a map by thread and depth) — and nothing left in the
//! emulation's maps once every call has returned.

use sonde::maps::HashMap;
use sonde::{AttachOptions, Feature, Features, SessionMode, Tier};
use sonde_tests::*;

const SEQ: &str = "abcdabcaabbd";
/// Bit 62 of a cookie makes the program skip that function's returns.
const SKIP: u64 = 1 << 62;

/// What `session_calls` must send for `SEQ` with `cookies`: per call its entry
/// (argument, kind 0), then, unless skipped, its return (return value, the
/// session value `argument + 1_000_000` the entry set).
fn expected(cookies: &[u64]) -> Vec<(u64, u64, u64)> {
    let mut out = Vec::new();
    for (i, letter) in SEQ.chars().enumerate() {
        let f = FUNCTIONS.iter().position(|(_, l)| *l == letter).expect("letter");
        let cookie = cookies[f];
        out.push((cookie, i as u64, 0));
        if cookie & SKIP == 0 {
            out.push((cookie, expected_return(letter, i as u64), i as u64 + 1_000_000));
        }
    }
    out
}

fn emulation_entries(object: &sonde::Object) -> usize {
    ["SESSION_SLOTS"]
        .iter()
        .map(|name| {
            let full = object
                .map_names()
                .map(str::to_string)
                .find(|m| m.ends_with(name))
                .unwrap_or_else(|| panic!("{name} in the object"));
            let map = object.map(&full).expect("map");
            match map.def().key_size {
                8 => HashMap::<u64, u64>::new(map).expect("map").keys().expect("keys").len(),
                _ => HashMap::<[u64; 2], [u64; 2]>::new(map)
                    .expect("map")
                    .keys()
                    .expect("keys")
                    .len(),
            }
        })
        .sum()
}

fn run(options: AttachOptions, cookies: &[u64], want_mode: SessionMode) {
    let (object, attachment) = attach_and_run("session_calls", SEQ, cookies, options);
    let tier = attachment.tier();
    assert_eq!(attachment.session(), Some(want_mode), "session mode on {tier}");
    assert!(
        attachment.plan().to_string().contains(want_mode.name()),
        "{}",
        attachment.plan()
    );
    let events: Vec<(u64, u64, u64)> = drain_events(&object)
        .iter()
        .map(|e| (e.cookie, e.value, e.kind))
        .collect();
    assert_eq!(events, expected(cookies), "events on {tier} ({})", want_mode.name());
    // Native: one program (one link per binary). Emulated: an entry and a return
    // copy (per distinct cookie on the emulated tiers).
    let programs = attachment.programs().len();
    let copies = if tier.native_cookies() { 1 } else { cookies.len() };
    let want = if want_mode == SessionMode::Native {
        1
    } else {
        2 * copies
    };
    assert_eq!(programs, want, "programs on {tier}");
    if tier == Tier::Multi {
        let links = links_of(&prog_ids(&attachment)).len();
        assert_eq!(links, if want_mode == SessionMode::Native { 1 } else { 2 }, "links");
    }
    // Every emulated call popped its slot and depth.
    assert_eq!(emulation_entries(&object), 0, "emulation state left on {tier}");
    attachment.detach_in_background().wait();
}

#[test]
fn a_session_program_sees_the_same_calls_on_every_tier() {
    let cookies = [1, 2, 3 | SKIP, 4];
    for tier in Tier::ALL {
        if !tier_supported(tier) {
            continue;
        }
        let native = tier == Tier::Multi && Features::current().has(Feature::UprobeSession);
        let mode = if native {
            SessionMode::Native
        } else {
            SessionMode::Emulated
        };
        run(AttachOptions::default().tier(tier), &cookies, mode);
    }
}

#[test]
fn a_session_is_emulated_on_multi_without_the_session_link() {
    if !tier_supported(Tier::Multi) {
        return;
    }
    let options = AttachOptions::default()
        .tier(Tier::Multi)
        .disable(Feature::UprobeSession);
    run(options, &[5, 6 | SKIP, 7, 8], SessionMode::Emulated);
}

#[test]
fn sessions_are_native_where_the_kernel_has_them() {
    let f = Features::current();
    let (major, minor) = kernel_version();
    // The detection follows the version (6.13); the attach follows the detection.
    assert_eq!(
        f.has(Feature::UprobeSession),
        (major, minor) >= (6, 13),
        "{}",
        f.kernel_release
    );
    let mut object = sonde::Object::load(PROBES).expect("load");
    let probe = object.uprobe("session_calls").expect("program");
    let sites = sonde::resolve::sites(&targets(&[1, 2])).expect("sites");
    let plan = probe.plan(&sites, &AttachOptions::default()).expect("plan");
    let want = if f.has(Feature::UprobeSession) {
        SessionMode::Native
    } else {
        SessionMode::Emulated
    };
    assert_eq!(plan.session, Some(want), "{plan}");
}
