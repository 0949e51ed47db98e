//! A tracer must never harm what it traces: every fact about a binary comes from
//! one opened file (a path flipped between two looks cannot pair one file's
//! offsets with another's code), a path reaches tracefs only as a name that
//! cannot inject a line, and every location is proven to start an instruction.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use object::{Object as _, ObjectSection as _};
use sonde::{AttachOptions, Functions, Object, Target, TargetError, Tier};
use sonde_tests::{
    counts, crafted, fixtures, link_count, require_root, spawn_fixture, tier_supported, wait_for_detach_workers, PROBES,
};

/// Tests here attach system-wide and count tracefs lines: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The calls fixture-pie and fixture-nopie make, by function.
const CALLS: [(&str, u64); 4] = [("fx_alpha", 1), ("fx_beta", 2), ("fx_gamma", 3), ("fx_delta", 4)];

fn fx(binary: &Path) -> sonde::FunctionSet {
    Functions::in_binary(binary)
        .patterns(CALLS.iter().map(|(n, _)| *n))
        .resolve()
        .unwrap_or_else(|e| panic!("{}: {e}", binary.display()))
}

fn by_name(object: &Object, set: &sonde::FunctionSet) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = set.iter().map(|f| (f.name.to_string(), 0)).collect();
    for (cookie, n) in counts(object, "COUNTS") {
        let f = set.get(cookie).expect("cookie of the set");
        *out.get_mut(&*f.name).expect("name") += n;
    }
    out
}

fn expected() -> BTreeMap<String, u64> {
    CALLS.iter().map(|(n, c)| (n.to_string(), *c)).collect()
}

/// A scratch directory under the fixtures (same filesystem: hard links work).
/// A scratch directory beside the fixtures (hard links to them need the same
/// file system), removed when the test ends, passed or not: nothing is left
/// in the fixtures (the guests' initramfs copies them).
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // The whole tree made for it (a name with `/` makes several levels).
        if let Ok(rest) = self.0.strip_prefix(fixtures()) {
            if let Some(top) = rest.components().next() {
                let _ = std::fs::remove_dir_all(fixtures().join(top));
            }
        }
    }
}

fn scratch(name: &str) -> Scratch {
    let d = fixtures().join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    Scratch(d)
}

#[test]
fn a_symlink_flipped_after_resolving_does_not_move_the_probes() {
    require_root();
    let _s = serial();
    let dir = scratch("flip");
    let link = dir.join("app");
    std::os::unix::fs::symlink(fixtures().join("fixture-pie"), &link).expect("symlink");
    for tier in Tier::ALL {
        if !tier_supported(tier) {
            continue;
        }
        let set = fx(&link);
        // The name now means another binary, with other offsets for the same names.
        std::fs::remove_file(&link).expect("unlink");
        std::os::unix::fs::symlink(fixtures().join("fixture-nopie"), &link).expect("symlink");
        let mut object = Object::load(PROBES).expect("load");
        let attachment = object
            .uprobe("count_calls")
            .expect("program")
            .attach_sites(set.targets(), &AttachOptions::default().tier(tier))
            .expect("attach");
        // The binary the name points at now runs untouched: nothing counted.
        spawn_fixture("fixture-nopie").run();
        let zero: BTreeMap<String, u64> = CALLS.iter().map(|(n, _)| (n.to_string(), 0)).collect();
        assert_eq!(by_name(&object, &set), zero, "{tier}: probes followed the name");
        // The binary resolved is the one probed, exactly.
        spawn_fixture("fixture-pie").run();
        assert_eq!(by_name(&object, &set), expected(), "{tier}");
        drop(attachment);
        std::fs::remove_file(&link).expect("unlink");
        std::os::unix::fs::symlink(fixtures().join("fixture-pie"), &link).expect("symlink");
    }
}

#[test]
fn resolving_while_a_symlink_flips_pairs_each_path_with_its_own_offsets() {
    let _s = serial();
    let dir = scratch("race");
    let (pie, nopie) = (fixtures().join("fixture-pie"), fixtures().join("fixture-nopie"));
    let truth: BTreeMap<PathBuf, Vec<u64>> = [&pie, &nopie]
        .into_iter()
        .map(|p| {
            let set = fx(p);
            (set.path().to_path_buf(), set.iter().map(|f| f.file_offset).collect())
        })
        .collect();
    assert_ne!(
        truth[&truth.keys().next().cloned().unwrap()],
        truth[&truth.keys().nth(1).cloned().unwrap()]
    );
    let link = dir.join("app");
    std::os::unix::fs::symlink(&pie, &link).expect("symlink");
    let stop = Arc::new(AtomicBool::new(false));
    let guest = std::env::var_os("SONDE_GUEST").is_some();
    let flipper = {
        let (stop, link, dir) = (Arc::clone(&stop), link.clone(), dir.to_path_buf());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let tmp = dir.join("tmp");
                let _ = std::fs::remove_file(&tmp);
                let to = if n.is_multiple_of(2) { &nopie } else { &pie };
                std::os::unix::fs::symlink(to, &tmp).expect("symlink");
                std::fs::rename(&tmp, &link).expect("rename");
                n += 1;
                // In a guest both vCPUs share one host thread: a rename
                // preempted mid-way holds the resolver's path walk until the
                // flipper's vCPU runs again (measured on arm64: 200
                // resolutions of 0.1 s each not done in 3 minutes with
                // back-to-back flips). A pause per flip there; none on the host.
                if guest {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            n
        })
    };
    let mut seen = BTreeMap::<PathBuf, u32>::new();
    // Emulated guests resolve ~10x slower: fewer rounds there.
    let rounds = if guest { 200 } else { 1_500 };
    for _ in 0..rounds {
        let set = fx(&link);
        let offsets: Vec<u64> = set.iter().map(|f| f.file_offset).collect();
        let want = truth
            .get(set.path())
            .unwrap_or_else(|| panic!("unknown path {}", set.path().display()));
        assert_eq!(
            &offsets,
            want,
            "offsets of one file reported with {}",
            set.path().display()
        );
        *seen.entry(set.path().to_path_buf()).or_default() += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let flips = flipper.join().expect("flipper");
    assert!(flips > 10, "the link flipped {flips} times");
    println!("resolutions per file while the link flipped {flips} times: {seen:?}");
}

#[test]
fn a_path_with_newlines_and_spaces_cannot_inject_a_tracefs_line() {
    require_root();
    let _s = serial();
    let dir = scratch("odd name\np:sonde/injected /bin/sh:0x0 x");
    let odd = dir.join("fixture pie");
    // The same inode under a hostile name: the fixture itself runs unchanged.
    std::fs::hard_link(fixtures().join("fixture-pie"), &odd).expect("hard link");
    for tier in Tier::ALL {
        if !tier_supported(tier) {
            continue;
        }
        wait_for_detach_workers();
        let lines_before = sonde::inspect::tracefs_uprobes().len();
        let set = fx(&odd);
        assert_eq!(set.path(), odd, "the path reported is the file opened");
        let mut object = Object::load(PROBES).expect("load");
        let app = spawn_fixture("fixture-pie");
        let attachment = object
            .uprobe("count_calls")
            .expect("program")
            .attach_sites(set.targets(), &AttachOptions::default().tier(tier).pid(app.pid()))
            .expect("attach");
        let lines = sonde::inspect::tracefs_uprobes();
        if tier == Tier::Tracefs {
            assert_eq!(lines.len(), lines_before + CALLS.len(), "{lines:#?}");
            let ours: Vec<&String> = lines.iter().filter(|l| l.contains("sonde/")).collect();
            let fd_path = format!("/proc/{}/fd/", std::process::id());
            assert!(ours.iter().all(|l| l.contains(&fd_path)), "{ours:#?}");
        } else {
            assert_eq!(lines.len(), lines_before, "{tier} writes no tracefs line");
        }
        assert!(!lines.iter().any(|l| l.contains("injected")), "{lines:#?}");
        app.run();
        assert_eq!(by_name(&object, &set), expected(), "{tier}");
        drop(attachment);
        assert_eq!(
            sonde::inspect::tracefs_uprobes().len(),
            lines_before,
            "{tier}: nothing left"
        );
    }
}

fn plt_offset(binary: &Path) -> u64 {
    let data = std::fs::read(binary).expect("read");
    let file = object::File::parse(&*data).expect("elf");
    let plt = file.section_by_name(".plt").expect(".plt");
    plt.file_range().expect("in file").0
}

#[test]
fn every_location_kind_is_proven_to_start_an_instruction() {
    let pie = fixtures().join("fixture-pie");
    let set = fx(&pie);
    let alpha = set.iter().find(|f| &*f.name == "fx_alpha").cloned().expect("fx_alpha");
    let alpha_address = set.symbol(&alpha).expect("a symbol").address;
    // fx_alpha is `lea 0x1(%rdi),%eax` (3 bytes), then `ret` (arm64: `add w0,
    // w0, #1`, 4 bytes); crtstuff's size-0 deregister_tm_clones starts with
    // `lea 0x..(%rip),%rdi`, 7 bytes (arm64: two 4-byte instructions).
    let (second, tm_second) = if cfg!(target_arch = "aarch64") { (4, 8) } else { (3, 7) };
    let refused = |t: Target| match sonde::resolve::sites(std::slice::from_ref(&t)) {
        Err(e) => e,
        Ok(r) => panic!("{t:?} resolved to {:#x}", r[0].offset),
    };
    for t in [
        Target::file_offset(&pie, alpha.file_offset + 1),
        Target::file_offset(&pie, alpha.file_offset + 2),
        Target::virtual_address(&pie, alpha_address + 1),
        Target::symbol(&pie, "fx_alpha").at_offset(2),
        // A symbol of size 0 (crtstuff's, `lea 0x..(%rip),%rdi` is 7 bytes).
        Target::symbol(&pie, "deregister_tm_clones").at_offset(3),
    ] {
        let e = refused(t);
        assert!(matches!(e, TargetError::NotInstructionBoundary { .. }), "{e}");
        assert!(e.to_string().contains("inside an instruction"), "{e}");
    }
    // Boundaries resolve, named by the function that holds them.
    let ok = sonde::resolve::sites(&[
        Target::file_offset(&pie, alpha.file_offset + second),
        Target::virtual_address(&pie, alpha_address),
        Target::symbol(&pie, "deregister_tm_clones").at_offset(tm_second),
    ])
    .expect("boundaries");
    assert_eq!(ok[0].offset, alpha.file_offset + second);
    assert_eq!(ok[0].symbol.as_deref(), Some(format!("fx_alpha+{second:#x}").as_str()));
    assert_eq!(ok[1].symbol.as_deref(), Some("fx_alpha"));
    // A size-0 symbol ends at the next function: an offset past it is refused.
    let e = refused(Target::symbol(&pie, "deregister_tm_clones").at_offset(0x1000));
    assert!(matches!(e, TargetError::OffsetOutsideSymbol { .. }), "{e}");
    // Not code at all (the ELF header), or code no symbol covers (the PLT).
    // (arm64's linker maps the ELF header into the executable segment: there
    // it is code no symbol covers, refused as unverifiable.)
    let e = refused(Target::file_offset(&pie, 0));
    assert!(
        matches!(e, TargetError::NotCode { .. })
            || cfg!(target_arch = "aarch64") && matches!(e, TargetError::Unverifiable { .. }),
        "{e}"
    );
    let plt = plt_offset(&pie) + 16;
    let e = refused(Target::file_offset(&pie, plt));
    assert!(matches!(e, TargetError::Unverifiable { .. }), "{e}");
    assert!(e.to_string().contains("allow_unverified"), "{e}");
    let vouched = sonde::resolve::sites(&[Target::file_offset(&pie, plt).allow_unverified()]).expect("vouched");
    assert_eq!(vouched[0].offset, plt);
}

#[test]
fn a_mid_instruction_file_offset_never_reaches_the_kernel() {
    require_root();
    let _s = serial();
    let pie = fixtures().join("fixture-pie");
    let alpha = fx(&pie)
        .iter()
        .find(|f| &*f.name == "fx_alpha")
        .cloned()
        .expect("fx_alpha");
    let before = link_count();
    let mut object = Object::load(PROBES).expect("load");
    let err = object
        .uprobe("count_calls")
        .expect("program")
        .attach(
            &[Target::file_offset(&pie, alpha.file_offset + 1)],
            &AttachOptions::default(),
        )
        .expect_err("refused");
    assert!(err.to_string().contains("inside an instruction"), "{err}");
    assert_eq!(link_count(), before, "nothing attached");
    // And the program computes what it should with nothing attached.
    spawn_fixture("fixture-pie").run();
}

#[test]
fn a_binary_of_another_architecture_is_refused_by_name() {
    let dir = std::env::temp_dir().join(format!("sonde-foreign-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (other, other_name) = crafted::other_architecture();
    let path = dir.join("app-foreign");
    std::fs::write(&path, crafted::foreign_elf(other)).expect("write");
    let e = Functions::in_binary(&path).pattern("f").resolve().expect_err("refused");
    assert!(matches!(e, TargetError::WrongArchitecture { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(other_name) && msg.contains(crafted::host_architecture_name()),
        "{msg}"
    );
    let e = sonde::resolve::sites(&[Target::symbol(&path, "f")]).expect_err("refused");
    assert!(matches!(e, TargetError::WrongArchitecture { .. }), "{e}");
    // A FIFO is refused at once (opening one for reading used to wait for a
    // writer forever).
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().expect("utf-8")).expect("path");
    // SAFETY: a valid path string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let e = Functions::in_binary(&fifo).pattern("f").resolve().expect_err("fifo");
    assert!(e.to_string().contains("a pipe or socket"), "{e}");
    // Neither a directory nor an empty file is a binary.
    let e = Functions::in_binary(&dir).pattern("f").resolve().expect_err("dir");
    assert!(e.to_string().contains("is a directory"), "{e}");
    let empty = dir.join("empty");
    std::fs::write(&empty, b"").expect("write");
    let e = Functions::in_binary(&empty).pattern("f").resolve().expect_err("empty");
    assert!(e.to_string().contains("empty file"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_descriptor_limit_is_raised_before_programs_load() {
    require_root();
    let _s = serial();
    let Some(tier) = [Tier::Emulated, Tier::PerfLink]
        .into_iter()
        .find(|t| tier_supported(*t))
    else {
        return;
    };
    let _ = sonde::Features::current();
    let set = Functions::in_binary(fixtures().join("libmany.so"))
        .pattern("many_0000?")
        .resolve()
        .expect("resolve");
    let mut object = Object::load(PROBES).expect("load");
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointers; the limit is restored below.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) };
    // Room for a few descriptors only: ten program copies (emulated) or ten
    // links (perf-link) and ten perf events need more.
    let tight = libc::rlimit {
        rlim_cur: sonde_tests::open_fds() as u64 + 6,
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &tight) };
    let result = object
        .uprobe("count_calls")
        .expect("program")
        .attach_sites(set.targets(), &AttachOptions::default().tier(tier));
    // SAFETY: as above.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) };
    let attachment = result.expect("the soft limit is raised before anything loads");
    assert_eq!(attachment.sites().len(), 10);
    assert_eq!(
        attachment.plan().descriptors,
        if tier == Tier::Emulated { 20 } else { 21 }
    );
    // A hard limit that cannot hold them is refused up front: see the CLI test
    // `descriptors_are_reserved_before_anything_loads` (lowering the hard limit
    // cannot be undone in this process).
}

/// The file offset of data symbol `name` (through its section).
fn data_file_offset(binary: &Path, name: &str) -> u64 {
    use object::ObjectSymbol;
    let data = std::fs::read(binary).expect("read");
    let file = object::File::parse(&*data).expect("elf");
    let sym = file.symbols().find(|s| s.name() == Ok(name)).expect("symbol");
    let section = file
        .section_by_index(sym.section_index().expect("section"))
        .expect("section");
    sym.address() - section.address() + section.file_range().expect("in file").0
}

#[test]
fn a_semaphore_is_raised_while_attached_on_every_tier() {
    require_root();
    let _s = serial();
    let bin = fixtures().join("fixture-semaphore");
    let semaphore = data_file_offset(&bin, "fx_semaphore");
    let run = |tier: Tier, with_semaphore: bool| -> (String, BTreeMap<String, u64>) {
        let mut target = Target::symbol(&bin, "fx_guarded").cookie(0);
        if with_semaphore {
            target = target.semaphore(semaphore);
        }
        let sites = sonde::resolve::sites(&[target]).expect("resolve");
        assert_eq!(sites[0].ref_ctr_offset, with_semaphore.then_some(semaphore));
        let mut object = Object::load(PROBES).expect("load");
        let app = sonde_tests::Waiting::spawn_path(&bin, &[]);
        let attachment = object
            .uprobe("count_calls")
            .expect("program")
            .attach_sites(sites, &AttachOptions::default().tier(tier).pid(app.pid()))
            .expect("attach");
        let out = app.run_output();
        let counts: BTreeMap<String, u64> = counts(&object, "COUNTS")
            .into_iter()
            .map(|(c, n)| (format!("cookie {c}"), n))
            .collect();
        drop(attachment);
        (out.trim().to_string(), counts)
    };
    for tier in Tier::ALL {
        if !tier_supported(tier) {
            continue;
        }
        let (out, counts) = run(tier, true);
        assert_eq!(out, "1", "{tier}: the kernel raised the semaphore");
        assert_eq!(counts.get("cookie 0"), Some(&1), "{tier}: the guarded call was counted");
        let (out, counts) = run(tier, false);
        assert_eq!(out, "0", "{tier}: no semaphore asked, none raised");
        assert_eq!(counts.get("cookie 0").copied().unwrap_or(0), 0, "{tier}");
    }
}

#[test]
fn the_symbol_cache_stays_bounded() {
    let _s = serial();
    let dir = scratch("cache-bound");
    for i in 0..(sonde::resolve::cache::CAPACITY + 8) {
        let copy = dir.join(format!("app-{i}"));
        std::fs::copy(fixtures().join("fixture-pie"), &copy).expect("copy");
        // A glob reads (and caches) the whole table.
        let before = sonde::resolve::cache::len();
        Functions::in_binary(&copy).pattern("fx_*").resolve().expect("resolve");
        let after = sonde::resolve::cache::len();
        assert!(after <= sonde::resolve::cache::CAPACITY);
        assert!(
            after > before || after == sonde::resolve::cache::CAPACITY,
            "{before} -> {after}"
        );
    }
    // The most recent table is still cached and answers the same.
    let last = dir.join(format!("app-{}", sonde::resolve::cache::CAPACITY + 7));
    assert_eq!(fx(&last).len(), CALLS.len());
}
