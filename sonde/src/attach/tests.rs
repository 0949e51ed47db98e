//! The planner on four kernel shapes and each mechanism against the fake
//! kernel: what is asked of the kernel, what is held, what is rolled back.
//! No root, no kernel feature needed.

use std::ffi::CString;
use std::sync::Arc;

use super::*;
use crate::features::Feature;
use crate::resolve::BinaryFile;
use crate::sys::fake::FakeKernel;
use crate::sys::{fault, Call};
use sonde_abi::Insn;

/// The kernels sonde is tested on, by the features mainline gave them.
fn shapes() -> [(&'static str, Features); 4] {
    [
        ("5.10", Features::mainline(5, 10)),
        ("6.1", Features::mainline(6, 1)),
        ("6.6", Features::mainline(6, 6)),
        ("6.13", Features::mainline(6, 13)),
    ]
}

fn choose(options: &AttachOptions, features: &Features) -> Option<Tier> {
    plan::choose(options, features, false).ok().map(|(t, _)| t)
}

#[test]
fn planner_picks_the_best_tier_on_each_kernel_shape() {
    let all = AttachOptions::default();
    let one = AttachOptions::default().pid(1);
    let expected = [
        // shape, all processes, one process, session mode
        ("5.10", Tier::Emulated, Tier::Emulated, SessionMode::Emulated),
        ("6.1", Tier::PerfLink, Tier::PerfLink, SessionMode::Emulated),
        // uprobe_multi without its per-process filter (6.10): perf links for a pid.
        ("6.6", Tier::Multi, Tier::PerfLink, SessionMode::Emulated),
        ("6.13", Tier::Multi, Tier::Multi, SessionMode::Native),
    ];
    for ((name, features), (shape, every, pid, session)) in shapes().into_iter().zip(expected) {
        assert_eq!(name, shape);
        assert_eq!(choose(&all, &features), Some(every), "{name}, all processes");
        assert_eq!(choose(&one, &features), Some(pid), "{name}, one process");
        let tier = choose(&all, &features).unwrap_or(Tier::Tracefs);
        assert_eq!(
            mechanism::passes(ProbeKind::Session, tier, &features, false).1,
            Some(session),
            "{name}"
        );
        let (parts, _) = mechanism::passes(ProbeKind::Session, tier, &features, false);
        if session == SessionMode::Emulated {
            // The return half first: no return runs before its entry could push.
            assert_eq!(parts.len(), 2);
            assert_eq!(parts[0].half, Some(crate::programs::SessionHalf::Return));
        }
        // Go: emulated on every kernel, the return half an entry probe at the
        // return instructions, both halves keyed by goroutine frame; a plain
        // return probe is an entry probe there too.
        let (go, mode) = mechanism::passes(ProbeKind::Session, tier, &features, true);
        assert_eq!(mode, Some(SessionMode::Emulated), "{name}");
        assert_eq!(go.len(), 2);
        assert!(go[0].at_returns && go[0].kind == ProbeKind::Entry && go[0].go);
        assert_eq!(go[0].half, Some(crate::programs::SessionHalf::Return));
        assert!(!go[1].at_returns && go[1].go);
        let (ret, _) = mechanism::passes(ProbeKind::Return, tier, &features, true);
        assert!(ret.len() == 1 && ret[0].at_returns && ret[0].kind == ProbeKind::Entry);
    }
}

#[test]
fn planner_says_why_each_tier_was_passed_over() {
    let f = Features::mainline(6, 6);
    let (tier, why) = plan::choose(&AttachOptions::default().pid(1), &f, false).unwrap();
    assert_eq!(tier, Tier::PerfLink);
    let text = plan::describe_refusals(&why);
    assert_eq!(text, "multi: needs uprobe_multi_pid_filter (Linux 6.10+)");
    // Native cookies only, on 5.10: nothing fits, every tier says why.
    let old = Features::mainline(5, 10);
    let err = plan::choose(&AttachOptions::default().native_cookies_only(), &old, false).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("multi: needs uprobe_multi (Linux 6.6+), bpf_cookie (Linux 5.15+)"),
        "{text}"
    );
    assert!(text.contains("emulated: emulates cookies"), "{text}");
    assert!(text.contains("tracefs: emulates cookies"), "{text}");
    // A PMU refusal moves past both PMU tiers.
    let (tier, why) = plan::choose(&AttachOptions::default(), &Features::mainline(6, 1), true).unwrap();
    assert_eq!(tier, Tier::Tracefs);
    assert_eq!(why.iter().filter(|(_, r)| *r == Refusal::PmuPermission).count(), 2);
    // A disabled feature is named as disabled.
    let off = Features::mainline(6, 13).without(&[Feature::UprobeMulti]);
    let (tier, why) = plan::choose(&AttachOptions::default(), &off, false).unwrap();
    assert_eq!(tier, Tier::PerfLink);
    assert_eq!(plan::describe_refusals(&why), "multi: needs uprobe_multi (disabled)");
    // A pinned tier the kernel lacks is refused, not replaced.
    let pinned = AttachOptions::default().tier(Tier::Multi);
    assert!(plan::choose(&pinned, &Features::mainline(6, 1), false).is_err());
}

const CALL_COOKIE: Insn = Insn {
    code: 0x85,
    regs: 0,
    off: 0,
    imm: 174,
};
const EXIT: Insn = Insn {
    code: 0x95,
    regs: 0,
    off: 0,
    imm: 0,
};

/// A program that reads its cookie (so emulated tiers load a copy per cookie).
fn probe(kind: ProbeKind) -> UProbe {
    UProbe::new(
        "fake".into(),
        kind,
        vec![CALL_COOKIE, EXIT],
        CString::new("GPL").unwrap_or_default(),
    )
}

fn binary(path: &str) -> Arc<BinaryFile> {
    Arc::new(BinaryFile::open(std::path::Path::new(path)).expect("open a binary"))
}

/// Sites in two binaries: this test program (cookies 1, 2, 2) and /bin/sh (3).
fn sites() -> Vec<ProbeSite> {
    let exe = std::env::current_exe().expect("own path");
    let a = binary(&exe.to_string_lossy());
    let b = binary("/bin/sh");
    let site = |binary: &Arc<BinaryFile>, offset, cookie| ProbeSite {
        binary: Arc::clone(binary),
        offset,
        ref_ctr_offset: None,
        attach_cookie: cookie,
        value: cookie,
        symbol: None,
        nop5_offset: None,
        function: None,
    };
    vec![
        site(&a, 0x1000, 1),
        site(&a, 0x1010, 2),
        site(&a, 0x1020, 2),
        site(&b, 0x2000, 3),
    ]
}

fn attach_on(
    kind: ProbeKind,
    options: &AttachOptions,
    features: &Features,
) -> (FakeKernel, Result<Attachment, AttachError>) {
    let kernel = FakeKernel::install();
    let mut p = probe(kind);
    let result = super::attach(&mut p, sites(), options, features);
    // The probe's cache holds programs too: only the attachment keeps them.
    drop(p);
    (kernel, result)
}

#[test]
fn multi_makes_one_link_per_binary_with_every_offset_and_cookie() {
    let (kernel, result) = attach_on(ProbeKind::Entry, &AttachOptions::default(), &Features::mainline(6, 6));
    let a = result.expect("attach");
    assert_eq!(a.tier(), Tier::Multi);
    assert_eq!(kernel.count(Call::ProgLoad), 1);
    let links = kernel.of(Call::LinkCreate);
    assert_eq!(links.len(), 2, "one link per binary");
    assert!(
        links[0].detail.contains("offsets=[1000, 1010, 1020] cookies=[1, 2, 2]"),
        "{links:?}"
    );
    assert!(links[1].detail.contains("offsets=[2000] cookies=[3]"), "{links:?}");
    assert!(links.iter().all(|l| l.detail.contains("flags=0 pid=0")));
    assert_eq!(kernel.count(Call::PerfEventOpen), 0);
    assert_eq!(a.kernel_objects(), 2);
    assert_eq!(a.plan().descriptors, 3, "one program, two links");
    assert_eq!(kernel.open_fds(), 3);
    drop(a);
    assert_eq!(kernel.open_fds(), 0, "detached: every descriptor closed");
}

#[test]
fn multi_return_probes_and_native_sessions_ask_their_attach_types() {
    let (kernel, result) = attach_on(ProbeKind::Return, &AttachOptions::default(), &Features::mainline(6, 6));
    drop(result.expect("attach"));
    let flags = format!("flags={}", bpf_flag_return());
    assert!(kernel.of(Call::LinkCreate).iter().all(|l| l.detail.contains(&flags)));
    let (kernel, result) = attach_on(
        ProbeKind::Session,
        &AttachOptions::default(),
        &Features::mainline(6, 13),
    );
    let a = result.expect("attach");
    assert_eq!(a.session(), Some(SessionMode::Native));
    let session = sonde_abi::program::BPF_TRACE_UPROBE_SESSION;
    assert!(kernel.of(Call::LinkCreate)[0]
        .detail
        .starts_with(&format!("uprobe_multi type={session} ")));
    assert_eq!(kernel.count(Call::ProgLoad), 1, "one program for entry and return");
}

fn bpf_flag_return() -> u32 {
    crate::sys::bpf::BPF_F_UPROBE_MULTI_RETURN
}

#[test]
fn perf_link_opens_an_event_and_a_link_with_the_cookie_per_site() {
    let (kernel, result) = attach_on(
        ProbeKind::Entry,
        &AttachOptions::default().pid(std::process::id()),
        &Features::mainline(6, 1),
    );
    let a = result.expect("attach");
    assert_eq!(a.tier(), Tier::PerfLink);
    assert_eq!(kernel.count(Call::ProgLoad), 1, "native cookies: one program");
    let opens = kernel.of(Call::PerfEventOpen);
    assert_eq!(opens.len(), 4);
    assert!(
        opens[3]
            .detail
            .ends_with(&format!(":0x2000 pid={}", std::process::id())),
        "{opens:?}"
    );
    let cookies: Vec<String> = kernel.of(Call::LinkCreate).into_iter().map(|r| r.detail).collect();
    assert_eq!(
        cookies,
        [
            "perf_event cookie=1",
            "perf_event cookie=2",
            "perf_event cookie=2",
            "perf_event cookie=3"
        ]
    );
    let ioctls: Vec<String> = kernel.of(Call::PerfIoctl).into_iter().map(|r| r.detail).collect();
    assert_eq!(ioctls, ["ENABLE"; 4]);
    assert_eq!(a.kernel_objects(), 8);
    assert_eq!(a.plan().descriptors, 9);
    drop(a);
    assert_eq!(kernel.open_fds(), 0);
}

#[test]
fn emulated_loads_a_copy_per_distinct_cookie_and_sets_it_by_ioctl() {
    let (kernel, result) = attach_on(ProbeKind::Return, &AttachOptions::default(), &Features::mainline(5, 10));
    let a = result.expect("attach");
    assert_eq!(a.tier(), Tier::Emulated);
    assert_eq!(kernel.count(Call::ProgLoad), 3, "cookies 1, 2 and 3");
    assert_eq!(a.plan().program_loads, 3);
    assert_eq!(kernel.count(Call::LinkCreate), 0);
    assert!(kernel
        .of(Call::PerfEventOpen)
        .iter()
        .all(|r| r.detail.contains(" return pid=-1")));
    let ioctls: Vec<String> = kernel.of(Call::PerfIoctl).into_iter().map(|r| r.detail).collect();
    assert_eq!(ioctls, ["SET_BPF", "ENABLE"].repeat(4));
    drop(a);
    assert_eq!(kernel.open_fds(), 0);
}

#[test]
fn emulated_sessions_attach_the_return_half_first() {
    let (kernel, result) = attach_on(ProbeKind::Session, &AttachOptions::default(), &Features::mainline(6, 1));
    let a = result.expect("attach");
    assert_eq!(a.session(), Some(SessionMode::Emulated));
    let opens = kernel.of(Call::PerfEventOpen);
    assert_eq!(opens.len(), 8, "two passes of four sites");
    assert!(opens[..4].iter().all(|r| r.detail.contains(" return ")), "{opens:?}");
    assert!(opens[4..].iter().all(|r| !r.detail.contains(" return ")), "{opens:?}");
    assert_eq!(kernel.count(Call::ProgLoad), 2, "an entry and a return copy");
}

#[test]
fn tracefs_writes_an_entry_per_site_and_removes_it_on_detach() {
    let options = AttachOptions::default().tier(Tier::Tracefs);
    let (kernel, result) = attach_on(ProbeKind::Entry, &options, &Features::mainline(5, 10));
    let a = result.expect("attach");
    let writes = kernel.of(Call::TracefsWrite);
    assert_eq!(writes.len(), 4);
    let prefix = format!("p:sonde/sonde_{}_", std::process::id());
    assert!(writes.iter().all(|w| w.detail.starts_with(&prefix)), "{writes:?}");
    assert!(writes[3].detail.ends_with(":0x2000"), "{writes:?}");
    assert_eq!(kernel.count(Call::TracefsRead), 4);
    assert_eq!(kernel.count(Call::PerfEventOpenTracepoint), 4);
    assert_eq!(a.tracefs_events().len(), 4);
    drop(a);
    let removals: Vec<_> = kernel
        .of(Call::TracefsWrite)
        .into_iter()
        .filter(|w| w.detail.starts_with("-:sonde/"))
        .collect();
    assert_eq!(removals.len(), 4, "every entry removed");
    assert_eq!(kernel.open_fds(), 0);
}

#[test]
fn a_failure_half_way_leaves_nothing_held() {
    let features = Features::mainline(6, 6);
    let kernel = FakeKernel::install();
    let _fault = fault::inject(Call::LinkCreate, 2, libc::EINVAL);
    let mut p = probe(ProbeKind::Entry);
    let err = super::attach(&mut p, sites(), &AttachOptions::default(), &features).unwrap_err();
    // The second binary's link failed: the error names it (/bin/sh may be a
    // link to busybox: its resolved path).
    let second = sites()[3].path().display().to_string();
    assert!(err.to_string().contains(&format!("{second}:0x2000")), "{err}");
    drop(p);
    assert_eq!(kernel.count(Call::LinkCreate), 2);
    assert_eq!(kernel.open_fds(), 0, "the first link and the program were closed");

    // Tracefs: the entry written before the failing open is removed again.
    let kernel = FakeKernel::install();
    let _fault = fault::inject(Call::PerfEventOpen, 3, libc::EINVAL);
    let mut p = probe(ProbeKind::Entry);
    let options = AttachOptions::default().tier(Tier::Tracefs);
    assert!(super::attach(&mut p, sites(), &options, &features).is_err());
    drop(p);
    let writes = kernel.of(Call::TracefsWrite);
    let added = writes.iter().filter(|w| w.detail.starts_with("p:")).count();
    let removed = writes.iter().filter(|w| w.detail.starts_with("-:")).count();
    assert_eq!((added, removed), (3, 3), "{writes:?}");
    assert_eq!(kernel.open_fds(), 0);
}

#[test]
fn a_pmu_refusal_falls_back_to_tracefs() {
    let kernel = FakeKernel::install();
    let _fault = fault::inject(Call::PerfEventOpen, 1, libc::EPERM);
    let mut p = probe(ProbeKind::Entry);
    let a = super::attach(&mut p, sites(), &AttachOptions::default(), &Features::mainline(6, 1)).expect("fallback");
    assert_eq!(a.tier(), Tier::Tracefs);
    assert!(a
        .plan()
        .passed_over
        .iter()
        .any(|(t, r)| *t == Tier::PerfLink && *r == Refusal::PmuPermission));
    assert_eq!(kernel.count(Call::PerfEventOpenTracepoint), 4);
    drop((a, p));
    assert_eq!(kernel.open_fds(), 0);
}

#[test]
fn an_empty_target_list_attaches_nothing() {
    let kernel = FakeKernel::install();
    let mut p = probe(ProbeKind::Entry);
    let err = super::attach(&mut p, Vec::new(), &AttachOptions::default(), &Features::mainline(6, 6)).unwrap_err();
    assert!(matches!(err, AttachError::NoTargets));
    assert!(kernel.requests().is_empty(), "nothing asked of the kernel");
}
