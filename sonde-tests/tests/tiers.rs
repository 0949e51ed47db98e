//! Every attach tier, forced in turn, gives the same exact per-cookie counts; the
//! automatic choice follows the kernel's features.

use sonde::{AttachOptions, Feature, Features, Tier};
use sonde_tests::*;

const SEQ: &str = "abcdabcaabbd";

fn each_tier(program: &str, map: &str, cookies: &[u64]) {
    for tier in Tier::ALL {
        if !tier_supported(tier) {
            continue;
        }
        let (object, attachment) = attach_and_run(program, SEQ, cookies, AttachOptions::default().tier(tier));
        assert_eq!(attachment.tier(), tier);
        assert_eq!(
            counts(&object, map),
            expected_counts(SEQ, cookies),
            "{program} on tier {tier}"
        );
        let loads = attachment.programs().len();
        let distinct = {
            let mut c = cookies.to_vec();
            c.sort_unstable();
            c.dedup();
            c.len()
        };
        assert_eq!(
            loads,
            if tier.native_cookies() { 1 } else { distinct },
            "programs loaded on {tier}"
        );
        // Detach off the test's thread; wait so the next tier starts clean.
        attachment.detach_in_background().wait();
    }
}

#[test]
fn uprobe_counts_match_on_every_tier() {
    each_tier("count_calls", "COUNTS", &[1, 2, 3, 4]);
}

#[test]
fn uretprobe_counts_match_on_every_tier() {
    each_tier("record_returns", "RET_COUNTS", &[10, 20, 30, 40]);
}

#[test]
fn sixty_four_bit_cookies_survive_every_tier() {
    let cookies = [0xdead_beef_0000_0001, 0xffff_ffff_ffff_fffe, 1 << 63, 0x1_0000_0000];
    each_tier("count_calls", "COUNTS", &cookies);
}

#[test]
fn identical_cookies_share_one_emulated_program() {
    let cookies = [7, 7, 9, 9];
    let (object, attachment) = attach_and_run(
        "count_calls",
        SEQ,
        &cookies,
        AttachOptions::default().tier(Tier::Emulated),
    );
    assert_eq!(attachment.programs().len(), 2);
    let a = SEQ.chars().filter(|c| *c == 'a' || *c == 'b').count() as u64;
    let c = SEQ.chars().filter(|c| *c == 'c' || *c == 'd').count() as u64;
    assert_eq!(counts(&object, "COUNTS"), vec![(7, a), (9, c)]);
    attachment.detach_in_background().wait();
}

#[test]
fn emulated_cookies_reach_the_ring_buffer_in_order() {
    let cookies = [0xdead_beef_0000_0001, 2, 3, 4];
    let (object, attachment) = attach_and_run(
        "record_calls",
        SEQ,
        &cookies,
        AttachOptions::default().tier(Tier::Emulated),
    );
    let seen: Vec<u64> = drain_events(&object).iter().map(|e| e.cookie).collect();
    let want: Vec<u64> = SEQ
        .chars()
        .map(|c| cookies[FUNCTIONS.iter().position(|f| f.1 == c).unwrap()])
        .collect();
    assert_eq!(seen, want);
    attachment.detach_in_background().wait();
}

#[test]
fn planner_picks_the_expected_tier_for_this_kernel() {
    // Mainline: uprobe_multi with the pid fix from 6.10 (6.6 for all processes),
    // cookies and perf links from 5.15, the PMU from 4.17.
    let want = match kernel_version() {
        v if v >= (6, 10) => Tier::Multi,
        v if v >= (5, 15) => Tier::PerfLink,
        _ => Tier::Emulated,
    };
    let (object, attachment) = attach_and_run("count_calls", "abcd", &[1, 2, 3, 4], AttachOptions::default());
    println!("planner tier: {}", attachment.tier());
    assert_eq!(attachment.tier(), want, "{}", attachment.plan());
    assert_eq!(counts(&object, "COUNTS"), expected_counts("abcd", &[1, 2, 3, 4]));
    attachment.detach_in_background().wait();
}

#[test]
fn automatic_choice_follows_features() {
    let cases = [
        (vec![], Tier::Multi),
        (vec![Feature::BpfCookie], Tier::Emulated),
        (vec![Feature::UprobeMulti], Tier::PerfLink),
        (vec![Feature::UprobeMulti, Feature::UprobePmu], Tier::Tracefs),
    ];
    for (disabled, want) in cases {
        if !tier_supported(want) {
            continue;
        }
        let mut options = AttachOptions::default();
        for f in &disabled {
            options = options.disable(*f);
        }
        let (object, attachment) = attach_and_run("count_calls", "abc", &[1, 2, 3], options);
        assert_eq!(attachment.tier(), want, "with {disabled:?} disabled");
        assert_eq!(counts(&object, "COUNTS"), expected_counts("abc", &[1, 2, 3]));
        attachment.detach_in_background().wait();
    }
}

#[test]
fn pinned_tier_the_kernel_lacks_is_refused_with_the_reason() {
    require_root();
    let mut object = sonde::Object::load(PROBES).unwrap();
    let err = object
        .uprobe("count_calls")
        .unwrap()
        .attach(
            &targets(&[1]),
            &AttachOptions::default().tier(Tier::Multi).disable(Feature::UprobeMulti),
        )
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("multi: needs uprobe_multi"), "{text}");
    let err = object
        .uprobe("count_calls")
        .unwrap()
        .attach(
            &targets(&[1]),
            &AttachOptions::default()
                .native_cookies_only()
                .disable(Feature::BpfCookie)
                .disable(Feature::UprobeMulti),
        )
        .unwrap_err();
    assert!(err.to_string().contains("refused by require_native_cookies"), "{err}");
}

#[test]
fn features_match_the_kernel_version() {
    // A feature the running kernel's version guarantees must be detected: a probe
    // that rots fails here (distributions backport, so extra features are fine).
    let f = Features::current();
    let rel = &f.kernel_release;
    let mut parts = rel
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let version = (parts.next().unwrap(), parts.next().unwrap());
    for feature in Feature::ALL {
        if let Some(since) = feature.since() {
            if version >= since && !f.disabled().contains(&feature) {
                assert!(f.has(feature), "{feature} (since {since:?}) not detected on {rel}");
            }
        }
    }
    assert!(f.uprobe_pmu_type.is_some());
    assert_eq!(f.retprobe_bit, Some(0));
}
