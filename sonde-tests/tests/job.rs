//! The library `Job`: functions added and removed while it runs, cookies stable
//! for those that stay, freed cookies reused with their map slots cleared, and
//! a full registry refused with nothing attached.

use std::collections::BTreeMap;

use sonde::{AttachOptions, Functions, Job, Tier};
use sonde_tests::{counts, fixtures, link_count, require_root, spawn_fixture, tier_supported, PROBES};

fn fx(names: &[&str]) -> Functions {
    Functions::in_binary(fixtures().join("fixture-pie")).patterns(names.iter().copied())
}

fn by_cookie(job: &Job) -> BTreeMap<u64, u64> {
    counts(job.object(), "COUNTS").into_iter().collect()
}

#[test]
fn functions_come_and_go_while_counts_of_the_others_keep_growing() {
    require_root();
    for tier in Tier::ALL {
        if !tier_supported(tier) {
            continue;
        }
        let links_before = link_count();
        let mut job = Job::builder(PROBES)
            .capacity(4, &["COUNTS"])
            .program("count_calls")
            .options(AttachOptions::default().tier(tier))
            .build()
            .expect("job");
        let a = job.add(&fx(&["fx_alpha", "fx_beta"])).expect("add a");
        let b = job.add(&fx(&["fx_gamma", "fx_delta"])).expect("add b");
        let cookies: Vec<(u64, String)> = job.functions().map(|f| (f.cookie, f.name.to_string())).collect();
        assert_eq!(
            cookies,
            [(0, "fx_alpha"), (1, "fx_beta"), (2, "fx_gamma"), (3, "fx_delta")]
                .map(|(c, n)| (c, n.to_string()))
                .to_vec(),
            "{tier}"
        );
        spawn_fixture("fixture-pie").run();
        assert_eq!(
            by_cookie(&job),
            BTreeMap::from([(0, 1), (1, 2), (2, 3), (3, 4)]),
            "{tier}"
        );
        // Shrink: b's functions stop counting, a's keep their cookies and counts.
        for h in job.remove(b).expect("remove b") {
            h.wait();
        }
        assert_eq!(job.len(), 2);
        spawn_fixture("fixture-pie").run();
        assert_eq!(
            by_cookie(&job),
            BTreeMap::from([(0, 2), (1, 4), (2, 3), (3, 4)]),
            "{tier}"
        );
        // Grow again: fresh cookies are spent, so fx_delta reuses cookie 2,
        // cleared first.
        let c = job.add(&fx(&["fx_delta"])).expect("add c");
        assert_eq!(job.group(c).map(|(_, cookies)| cookies.to_vec()), Some(vec![2]));
        spawn_fixture("fixture-pie").run();
        assert_eq!(
            by_cookie(&job),
            BTreeMap::from([(0, 3), (1, 6), (2, 4), (3, 4)]),
            "{tier}"
        );
        // Full: two more functions with one cookie left; nothing attached.
        let links = link_count();
        let err = job.add(&fx(&["fx_gamma", "fx_beta"])).expect_err("full");
        assert!(err.to_string().contains("at most 4 functions"), "{err}");
        assert_eq!(link_count(), links);
        assert_eq!(job.len(), 3);
        let _ = a;
        drop(job);
        assert_eq!(link_count(), links_before, "{tier}");
    }
}
