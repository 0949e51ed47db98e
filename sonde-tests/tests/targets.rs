//! Target resolution (#5): globs, demangled names, versions, aliases, stripped
//! binaries and their debug files, library lookup, locations; attaching to what
//! was resolved and counting per function proves the offsets.

use std::collections::BTreeMap;

use sonde::resolve::FunctionSet;
use sonde::{AttachOptions, Functions, Object, ProbeSite, Target, TargetError};
use sonde_tests::{counts, fixtures, links_of, prog_ids, require_root, spawn_fixture, target_app, PROBES};

/// Tests here count fds and links: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn names(set: &FunctionSet) -> Vec<String> {
    let mut v: Vec<String> = set.iter().map(|f| set.display_name(f).to_string()).collect();
    v.sort();
    v
}

fn find(binary: &str, patterns: &[&str]) -> FunctionSet {
    Functions::in_binary(fixtures().join(binary))
        .patterns(patterns.iter().copied())
        .resolve()
        .unwrap_or_else(|e| panic!("{binary} {patterns:?}: {e}"))
}

/// Attaches `count_calls` to `sets` (cookies numbered across sets), runs the
/// fixture, and returns calls per display name.
fn count(fixture: &str, sets: &[&FunctionSet]) -> BTreeMap<String, u64> {
    require_root();
    let mut object = Object::load(PROBES).expect("load");
    let mut targets: Vec<ProbeSite> = Vec::new();
    let mut label = Vec::new();
    for set in sets {
        for (t, f) in set.targets().into_iter().zip(set.iter()) {
            label.push(match set.symbol(f).filter(|s| s.version.is_some()) {
                Some(s) => s.versioned_name(),
                None => set.display_name(f).to_string(),
            });
            let cookie = targets.len() as u64;
            targets.push(t.with_cookie(cookie));
        }
    }
    let app = spawn_fixture(fixture);
    let attachment = object
        .uprobe("count_calls")
        .expect("program")
        .attach_sites(targets, &AttachOptions::default().pid(app.pid()))
        .expect("attach");
    app.run();
    let mut out: BTreeMap<String, u64> = label.iter().map(|l| (l.clone(), 0)).collect();
    for (cookie, n) in counts(&object, "COUNTS") {
        *out.get_mut(&label[cookie as usize]).expect("cookie in range") += n;
    }
    drop(attachment);
    out
}

/// Whether the Rust fixture was built: a cross build for another machine
/// has no Rust standard library for it (the rest of the test runs; this part
/// is named as skipped).
fn rust_fixture() -> bool {
    let there = fixtures().join("fixture-rs-nopie").exists();
    if !there {
        sonde_tests::skip(
            "Rust v0 names",
            "fixture-rs-nopie is not built for this machine (a cross build has no Rust std for it)",
        );
    }
    there
}

fn expect(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn globs_select_exactly_the_expected_functions_and_fold_aliases() {
    let _serial = serial();
    let all = find("fixture-pie", &["fx_*"]);
    assert_eq!(names(&all), ["fx_alpha", "fx_beta", "fx_delta", "fx_gamma"]);
    let skipped: Vec<&str> = all.skipped().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        skipped,
        ["fx_locked"],
        "a first instruction the kernel refuses (LOCK prefix, ldxr) is left out of a glob"
    );
    let alpha = all.iter().find(|f| &*f.name == "fx_alpha").expect("fx_alpha");
    assert_eq!(
        all.symbol(alpha)
            .expect("a symbol")
            .aliases
            .iter()
            .map(|a| &**a)
            .collect::<Vec<_>>(),
        ["fx_alpha_alias"],
        "the alias is folded into one function"
    );
    assert_eq!(names(&find("fixture-pie", &["fx_[ab]*"])), ["fx_alpha", "fx_beta"]);
    assert_eq!(names(&find("fixture-pie", &["fx_?eta"])), ["fx_beta"]);
    // The alias by name is the same function, attached once.
    let by_alias = find("fixture-pie", &["fx_alpha_alias", "fx_alpha"]);
    assert_eq!(by_alias.len(), 1);
    assert_eq!(by_alias.iter().next().map(|f| f.file_offset), Some(alpha.file_offset));
    // Cookies are indices in the set.
    let cookies: Vec<u64> = all.iter().map(|f| f.cookie).collect();
    assert_eq!(cookies, [0, 1, 2, 3]);
}

#[test]
fn demangled_names_cpp_overloads_and_rust_v0_and_legacy() {
    let cpp = find("fixture-cpp", &["geo::*"]);
    // A function template's demangled name starts with its return type: the
    // qualified name without it is matched.
    assert_eq!(
        names(&cpp),
        [
            "double geo::twice<double>(double)",
            "geo::Shape::area(int) const",
            "geo::Shape::area(int, int) const",
            "geo::detail::scale(double)"
        ]
    );
    assert_eq!(find("fixture-cpp", &["geo::Shape::area"]).len(), 2, "every overload");
    // A destructor's variants are separate functions with one demangled name:
    // their labels tell them apart.
    let dtor = find("fixture-cpp", &["Sq::~Sq"]);
    let mut labels: Vec<String> = dtor.iter().map(|f| dtor.label(f)).collect();
    labels.sort();
    assert_eq!(
        labels,
        [
            "Sq::~Sq() [base]",
            "Sq::~Sq() [complete]",
            "Sq::~Sq() [deleting]",
            "Sq::~Sq() [unified]"
        ]
    );
    let one = find("fixture-cpp", &["geo::Shape::area(int) const"]);
    assert_eq!(
        one.iter().map(|f| &*f.name).collect::<Vec<_>>(),
        ["_ZNK3geo5Shape4areaEi"]
    );
    // Raw names match too, and both names are reported.
    let raw = find("fixture-cpp", &["_ZNK3geo5Shape4areaEii"]);
    let f = raw.iter().next().expect("one");
    assert_eq!(raw.demangled(f), Some("geo::Shape::area(int, int) const"));

    if rust_fixture() {
        let v0 = find("fixture-rs-nopie", &["*workload::Counter::*"]);
        assert_eq!(
            names(&v0),
            [
                "fixture_rs::workload::Counter::bump",
                "fixture_rs::workload::Counter::reset"
            ]
        );
        assert!(v0.iter().all(|f| f.name.starts_with("_R")), "v0 manglings");
    }

    let legacy = Functions::in_binary(target_app())
        .pattern("*workload::Counter::bump")
        .resolve()
        .expect("legacy");
    assert_eq!(names(&legacy), ["target_app::workload::Counter::bump"]);
    // target-app is mangled as its compiler chooses: legacy with this host's
    // rustup stable; the arm64 cross build's rustc (1.96, rustc-web) mangles
    // v0, which fixture-rs covers.
    if legacy.iter().all(|f| f.name.starts_with("_R")) {
        sonde_tests::skip(
            "legacy Rust manglings",
            "target-app was built with v0 manglings (this rustc's default)",
        );
    } else {
        assert!(legacy.iter().all(|f| f.name.starts_with("_ZN")), "legacy manglings");
    }
}

#[test]
fn symbol_versions_pick_the_asked_version() {
    let _serial = serial();
    let lib = "libvers.so";
    let v1 = find(lib, &["vers_add@VER_1"]);
    let v2 = find(lib, &["vers_add@@VER_2"]);
    let plain = find(lib, &["vers_add"]);
    let off = |s: &FunctionSet| s.iter().next().map(|f| f.file_offset);
    assert_ne!(off(&v1), off(&v2), "two implementations");
    assert_eq!(off(&plain), off(&v2), "a bare name is the default version");
    assert_eq!(
        find(lib, &["vers_*@VER_2"]).len(),
        2,
        "vers_add@@VER_2 and vers_mul@@VER_2"
    );
    let err = Functions::in_binary(fixtures().join(lib))
        .pattern("vers_add@VER_9")
        .resolve()
        .unwrap_err();
    assert!(matches!(err, TargetError::NoSymbol { .. }), "{err}");
}

#[test]
fn pie_nopie_cpp_rust_and_shared_library_offsets_count_exactly() {
    let _serial = serial();
    for fixture in ["fixture-pie", "fixture-nopie"] {
        let fx = find(fixture, &["fx_*"]);
        let vers = find("libvers.so", &["vers_add@VER_1", "vers_add@@VER_2"]);
        assert_eq!(
            count(fixture, &[&fx, &vers]),
            expect(&[
                ("fx_alpha", 1),
                ("fx_beta", 2),
                ("fx_gamma", 3),
                ("fx_delta", 4),
                ("vers_add@VER_1", 0),
                ("vers_add@@VER_2", 5)
            ]),
            "{fixture}"
        );
    }
    let cpp = find("fixture-cpp", &["geo::*"]);
    assert_eq!(
        count("fixture-cpp", &[&cpp]),
        expect(&[
            ("double geo::twice<double>(double)", 5),
            ("geo::Shape::area(int) const", 2),
            ("geo::Shape::area(int, int) const", 3),
            ("geo::detail::scale(double)", 4)
        ])
    );
    if !rust_fixture() {
        return;
    }
    let rs = find("fixture-rs-nopie", &["*Counter::*"]);
    assert_eq!(
        count("fixture-rs-nopie", &[&rs]),
        expect(&[
            ("fixture_rs::workload::Counter::bump", 6),
            ("fixture_rs::workload::Counter::reset", 1)
        ])
    );
}

#[test]
fn stripped_binaries_use_their_debug_file_by_debuglink_or_build_id() {
    let _serial = serial();
    let link = find("fixture-stripped-link", &["fx_*"]);
    assert!(link
        .symbols()
        .debug_file()
        .is_some_and(|p| p.ends_with(".debug/fixture-stripped-link.debug")));
    assert_eq!(
        count("fixture-stripped-link", &[&link]),
        expect(&[("fx_alpha", 1), ("fx_beta", 2), ("fx_gamma", 3), ("fx_delta", 4)])
    );
    let by_id = Functions::in_binary(fixtures().join("fixture-stripped-id"))
        .debug_root(fixtures().join("debugroot"))
        .pattern("fx_*")
        .resolve()
        .expect("build-id debug file");
    assert!(by_id
        .symbols()
        .debug_file()
        .is_some_and(|p| p.to_string_lossy().contains(".build-id/")));
    assert_eq!(names(&by_id), ["fx_alpha", "fx_beta", "fx_delta", "fx_gamma"]);
    assert_eq!(
        by_id.iter().map(|f| f.file_offset).collect::<Vec<_>>(),
        find("fixture-pie", &["fx_*"])
            .iter()
            .map(|f| f.file_offset)
            .collect::<Vec<_>>()
    );

    let err = find_err("fixture-stripped-bare", "fx_*");
    assert!(err.contains("stripped") && err.contains("debug"), "{err}");
}

fn find_err(binary: &str, pattern: &str) -> String {
    Functions::in_binary(fixtures().join(binary))
        .pattern(pattern)
        .resolve()
        .expect_err("must be refused")
        .to_string()
}

#[test]
fn bare_library_names_with_and_without_a_pid() {
    let _serial = serial();
    let libc = Functions::in_binary("libc")
        .pattern("malloc")
        .resolve()
        .expect("libc by name");
    assert!(
        libc.path().to_string_lossy().contains("libc.so"),
        "{}",
        libc.path().display()
    );
    assert_eq!(names(&libc), ["malloc"]);

    // libvers is in no system directory: only the process that maps it finds it.
    let err = Functions::in_binary("libvers")
        .pattern("vers_add")
        .resolve()
        .unwrap_err();
    assert!(matches!(err, TargetError::LibraryNotFound { .. }), "{err}");
    let app = spawn_fixture("fixture-pie").until_blocked();
    let found = Functions::in_binary("libvers")
        .pid(app.pid())
        .pattern("vers_add")
        .resolve()
        .expect("libvers through /proc/PID/maps");
    assert_eq!(
        found.path(),
        std::fs::canonicalize(fixtures().join("libvers.so")).unwrap()
    );
    let libc_of_pid = Functions::in_binary("libc")
        .pid(app.pid())
        .pattern("free")
        .resolve()
        .expect("libc");
    assert_eq!(libc_of_pid.path(), libc.path());
    app.run();

    let err = Functions::in_binary("libc")
        .pid(u32::MAX / 2)
        .pattern("free")
        .resolve()
        .unwrap_err();
    assert!(
        matches!(err, TargetError::Process(sonde::ProcessError::OutOfRange(_))),
        "{err}"
    );
    let mut gone = std::process::Command::new("true").spawn().expect("true");
    let pid = gone.id();
    gone.wait().expect("wait");
    let err = Functions::in_binary("libc")
        .pid(pid)
        .pattern("free")
        .resolve()
        .unwrap_err();
    assert!(
        matches!(err, TargetError::Process(sonde::ProcessError::NoSuchProcess(p)) if p == pid),
        "{err}"
    );
}

#[test]
fn locations_symbol_offset_file_offset_and_virtual_address() {
    let _serial = serial();
    let bin = fixtures().join("fixture-nopie");
    let table = Functions::in_binary(&bin)
        .pattern("fx_beta")
        .resolve()
        .expect("fx_beta");
    let beta = table.iter().next().expect("one").clone();
    let beta_address = table.symbol(&beta).expect("a symbol").address;
    let resolved = sonde::resolve::sites(&[
        Target::symbol(&bin, "fx_beta"),
        Target::virtual_address(&bin, beta_address),
        Target::file_offset(&bin, beta.file_offset),
    ])
    .expect("resolve");
    assert!(resolved.iter().all(|r| r.offset == beta.file_offset), "{resolved:?}");
    // Non-PIE: addresses are absolute, offsets are not.
    assert_ne!(beta_address, beta.file_offset);
}

#[test]
fn the_kernel_refuses_what_the_resolver_skips() {
    let _serial = serial();
    require_root();
    let bin = fixtures().join("fixture-pie");
    let err = find_err("fixture-pie", "fx_locked");
    // x86-64: a LOCK prefix; arm64: an exclusive load (`ldxr`).
    let why = if cfg!(target_arch = "aarch64") {
        "exclusive"
    } else {
        "LOCK"
    };
    assert!(err.contains("cannot be probed") && err.contains(why), "{err}");
    // The same place as a raw file offset (no check): the kernel refuses it too
    // when it installs the breakpoint in a process that maps the file, so the
    // rule matches the kernel, and nothing stays attached.
    let app = spawn_fixture("fixture-pie").until_blocked();
    let table = sonde::resolve::SymbolTable::read(&bin).expect("symbols");
    let f = table.function("fx_locked").expect("fx_locked");
    let mut object = Object::load(PROBES).expect("load");
    let before = sonde::inspect::links().expect("links").len();
    let err = object
        .uprobe("count_calls")
        .expect("program")
        .attach(&[Target::file_offset(&bin, f.file_offset)], &AttachOptions::default())
        .expect_err("the kernel refuses a LOCK-prefixed instruction (arm64: ldxr)");
    assert!(err.to_string().contains("cannot be probed"), "{err}");
    assert_eq!(sonde::inspect::links().expect("links").len(), before);
    app.run();
}

#[test]
fn refusals_name_the_problem_and_leave_nothing_attached() {
    let _serial = serial();
    require_root();
    let bin = fixtures().join("fixture-pie");
    let mut object = Object::load(PROBES).expect("load");
    let _ = sonde::Features::current();
    let before = sonde::inspect::links().expect("links").len();
    let fds = sonde_tests::open_fds();
    let cases: Vec<(Target, &str)> = vec![
        (Target::symbol(&bin, "fx_alpah"), "did you mean: fx_alpha"),
        (Target::symbol(&bin, "vers_add"), "imported"),
        (Target::symbol(&bin, "fx_alpha").at_offset(1), "inside an instruction"),
        (Target::symbol(&bin, "fx_alpha").at_offset(4096), "outside `fx_alpha`"),
        (Target::virtual_address(&bin, 0xdead_0000_0000), "no loadable segment"),
        (
            Target::symbol(fixtures().join("no-such-binary"), "f"),
            "cannot open binary",
        ),
        (Target::symbol("libno-such-library", "f"), "not found"),
    ];
    for (target, message) in cases {
        let probe = object.uprobe("count_calls").expect("program");
        let err = probe
            .attach(&[target.clone().cookie(1)], &AttachOptions::default())
            .expect_err("refused");
        assert!(
            err.to_string().contains(message),
            "{target:?}: `{err}` lacks `{message}`"
        );
    }
    assert!(find_err("fixture-pie", "nothing_like_this_*").contains("no function matches"));
    assert!(find_err("fixture-pie", "[unclosed").contains("bad pattern"));
    assert_eq!(sonde::inspect::links().expect("links").len(), before, "no link left");
    assert_eq!(sonde_tests::open_fds(), fds, "no fd leaked");
    assert!(links_of(&[]).is_empty());
    let _ = prog_ids;
}

/// #26: a USDT site written `nop; nop5` is probed on its nop5 where the kernel
/// turns a uprobe there into a call (x86-64 6.18+: the traced process maps the
/// kernel's `[uprobes-trampoline]` at the first hit), on its 1-byte nop
/// elsewhere (and when the feature is disabled: no trampoline then); the
/// counts are exact either way, on every tier.
#[test]
fn a_usdt_site_written_nop_nop5_is_probed_on_its_nop5_where_the_kernel_optimises_it() {
    use std::io::{BufRead, Write};
    let _s = serial();
    require_root();
    if !cfg!(target_arch = "x86_64") {
        sonde_tests::skip(
            "the nop5 placement",
            "x86-64 only (arm64 has no 5-byte nop to optimise)",
        );
        return;
    }
    let exe = fixtures().join("fixture-usdt-nop5");
    let set = Functions::in_binary(&exe)
        .pattern("usdt:nop5fx:fast")
        .resolve()
        .expect("resolve");
    let f = set.iter().next().expect("the probe");
    assert_eq!(
        f.nop5_offset,
        Some(f.file_offset + 1),
        "the nop5 is found after the nop"
    );
    let optimised = sonde::Features::current().has(sonde::Feature::UprobeNop5);
    for tier in sonde::Tier::ALL.into_iter().filter(|t| sonde_tests::tier_supported(*t)) {
        for disabled in [false, true] {
            let mut options = AttachOptions::default().tier(tier);
            if disabled {
                options = options.disable(sonde::Feature::UprobeNop5);
            }
            let on_nop5 = optimised && !disabled;
            let mut child = std::process::Command::new(&exe)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("spawn");
            let mut object = Object::load(PROBES).expect("load");
            let attachment = object
                .uprobe("count_calls")
                .expect("program")
                .attach_sites(set.targets(), &options.pid(child.id()))
                .unwrap_or_else(|e| panic!("{tier}: {e}"));
            assert_eq!(attachment.plan().on_nop5, usize::from(on_nop5), "{tier}");
            let want = if on_nop5 { f.file_offset + 1 } else { f.file_offset };
            assert_eq!(attachment.sites()[0].offset, want, "{tier}, nop5 disabled: {disabled}");
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(b"go\n").expect("go");
            let mut line = String::new();
            std::io::BufReader::new(child.stdout.take().expect("stdout"))
                .read_line(&mut line)
                .expect("fired");
            assert_eq!(line, "fired\n");
            let maps = std::fs::read_to_string(format!("/proc/{}/maps", child.id())).expect("maps");
            assert_eq!(
                maps.contains("[uprobes-trampoline]"),
                on_nop5,
                "{tier}, nop5 disabled: {disabled}: the kernel's trampoline is mapped exactly when the nop5 is probed"
            );
            stdin.write_all(b"end\n").expect("end");
            drop(stdin);
            assert!(child.wait().expect("wait").success());
            assert_eq!(
                counts(&object, "COUNTS"),
                vec![(0, 3)],
                "{tier}, nop5 disabled: {disabled}"
            );
            attachment.detach();
        }
    }
    if !optimised {
        sonde_tests::skip(
            "the nop5 placement",
            "this kernel does not optimise uprobes on a nop5 (x86-64 6.18+)",
        );
    }
}

#[test]
fn sets_of_one_file_absorb_each_other_whatever_table_each_came_from() {
    let _serial = serial();
    // A copy only this test reads: no other test's cached table of it.
    let dir = std::env::temp_dir().join(format!("sonde-absorb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bin = dir.join("fixture-pie");
    std::fs::copy(fixtures().join("fixture-pie"), &bin).expect("copy");
    let resolve = |name: &str, whole: bool| {
        let q = Functions::in_binary(&bin).pattern(name);
        let q = if whole { q.whole_table() } else { q };
        q.resolve().unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    // A few exact names of a file not read yet: a table of just those each.
    let (alpha, beta) = (resolve("fx_alpha", false), resolve("fx_beta", false));
    assert!(
        alpha.symbols().functions().len() < 4,
        "a table of fx_alpha and its aliases only"
    );
    let mut partial = alpha.clone();
    assert!(!partial.absorb(&beta), "fx_alpha's table does not number fx_beta");
    assert_eq!(names(&partial), ["fx_alpha"], "nothing added");
    // A set of the whole table absorbs any set of the file, each function
    // renumbered into its table.
    let mut whole = resolve("fx_gamma", true);
    assert!(whole.absorb(&alpha) && whole.absorb(&beta));
    assert_eq!(names(&whole), ["fx_alpha", "fx_beta", "fx_gamma"]);
    for (cookie, f) in whole.iter().enumerate() {
        assert_eq!(f.cookie, cookie as u64);
        let s = whole.symbol(f).expect("a symbol");
        assert_eq!((&*s.name, s.file_offset), (&*f.name, f.file_offset), "{f:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
