//! The probe object of a run: the functions resolved, the programs loaded
//! with the maps sized to them, the settings written, a process tree followed.

use std::io::IsTerminal;
use std::time::Duration;

use sonde::{AttachOptions, FunctionSet, Functions, GroupId, Job};

use crate::args::{probe_groups, By, Common};
use crate::error::CliError;
use crate::filter::{Declared, FilterExpr, Site, ValueType};
use crate::probes::{shrink_unused, Map, Program, OBJECT};
use crate::report::SessionFunction;
use crate::scope::{update_settings, CgroupWatch};

/// Resolves every function, loads the object with `programs` and the maps
/// sized (`sizes(n)` for `n` functions; the maps this run does not use as
/// small as they go) and attaches; starts following a process tree first.
pub(super) fn attach_all(
    common: &Common,
    programs: &[Program],
    sizes: &dyn Fn(u32) -> Vec<(Map, u32)>,
    child: Option<u32>,
    site: Site,
) -> Result<Attached, CliError> {
    let pid = child.or(common.pid);
    // A cgroup that cannot be used is said before anything loads.
    let cgroup = match &common.cgroup {
        Some(path) => Some(sonde::cgroup::Cgroup::open(path).map_err(|e| CliError::new(e.to_string()))?),
        None => None,
    };
    // A followed tree is filtered in the program (a map of its processes fed
    // by the fork tracepoint): the uprobes then attach for every process.
    let follow = match (child, common.pid) {
        (Some(_), _) => !common.no_follow,
        (None, Some(_)) => common.follow,
        (None, None) => false,
    };
    let spinner = progress(common.json);
    let mut sets = Vec::new();
    for (binary, patterns) in probe_groups(&common.target, &common.patterns)? {
        spinner.set_message(format!(
            "resolving {} in {binary}",
            sonde::resolve::shorten(&patterns.join(" "))
        ));
        let mut query = Functions::in_binary(&binary).patterns(patterns);
        if let Some(pid) = pid.or(common.container) {
            query = query.pid(pid);
        }
        let set = query.resolve()?;
        if !set.skipped().is_empty() {
            let names: Vec<&str> = set.skipped().iter().take(5).map(|(n, _)| n.as_str()).collect();
            eprintln!(
                "sonde: skipping {} function{} of {binary} the kernel cannot probe (first instruction refused): {}{}",
                set.skipped().len(),
                if set.skipped().len() == 1 { "" } else { "s" },
                names.join(", "),
                if set.skipped().len() > 5 { ", …" } else { "" }
            );
        }
        sets.push(set);
    }
    let total: usize = sets.iter().map(FunctionSet::len).sum();
    let n = u32::try_from(total).map_err(|_| CliError::new("too many functions"))?;
    let mut options = AttachOptions::default();
    if let (Some(pid), false) = (pid, follow) {
        options = options.pid(pid);
    }
    if let Some(tier) = common.tier {
        options = options.tier(tier);
    }
    // One program per job: the maps are sized by the caller (indexed by
    // cookie), the registry holds exactly these functions, cookies distinct
    // across binaries (one multi link per binary).
    // The object holds every command's maps: those this run does not use
    // are made as small as the kernel allows, then the command's sizes.
    // Go functions' sessions are always emulated (their returns are probed
    // at return instructions, never by the kernel's return probes).
    let emulated = programs.iter().any(|p| p.is_session())
        && (sonde::SessionMode::expected(&options) != Some(sonde::SessionMode::Native)
            || sets.iter().any(FunctionSet::is_go));
    let usdt = common
        .patterns
        .iter()
        .chain([&common.target])
        .any(|p| p.contains("usdt:"));
    let by_stack = common.by.as_ref().is_some_and(|b| b.has(By::Stack));
    let used = [
        (Map::Traced, follow),
        (Map::Cgroups, cgroup.is_some()),
        (Map::ByKey, common.by.is_some()),
        (Map::Stacks, by_stack),
        (Map::StackIps, by_stack),
        (Map::UsdtSpecs, usdt),
        (Map::SessionSlots, emulated),
        (Map::GoStacks, sets.iter().any(FunctionSet::is_go)),
    ];
    let used: Vec<Map> = used.iter().filter(|(_, u)| *u).map(|(m, _)| *m).collect();
    let builder = Job::builder_static(OBJECT).capacity(n.max(1), &[]).options(options);
    let mut builder = shrink_unused(builder, &used);
    for (map, entries) in sizes(n) {
        builder = builder.map_size(map.name(), entries);
    }
    // The programs as this scope loads them (the lean counter alone when
    // nothing is followed and no cgroup filters).
    let programs: Vec<Program> = programs.iter().map(|p| p.for_scope(follow, cgroup.is_some())).collect();
    for p in &programs {
        builder = builder.program(p.name());
    }
    let mut job = builder.build()?;
    // Before any probe attaches: only the cgroup's processes count from the first hit.
    let cgroup_watch = match cgroup {
        Some(c) => Some(CgroupWatch::start(job.object(), c, "--cgroup")?),
        None => None,
    };
    if common.filter.is_some() {
        // On before any probe attaches: until a function's filter is
        // written, its hits do not count.
        update_settings(job.object(), |s| {
            s.filter = if site == Site::Entry { 1 } else { 2 };
        })?;
    }
    let links = match (pid, follow) {
        (Some(root), true) => follow_tree(&mut job, root, child.is_none())?,
        _ => Vec::new(),
    };
    let names: Vec<&str> = programs.iter().map(|p| p.name()).collect();
    spinner.set_message(format!("attaching {} to {total} functions", names.join(", ")));
    let mut groups = Vec::with_capacity(sets.len());
    for set in sets {
        groups.push(job.add_set(set)?);
    }
    spinner.finish_and_clear();
    Ok(Attached {
        job,
        groups,
        follow: links,
        cgroup: cgroup_watch,
    })
}

/// What [`attach_all`] made.
pub(super) struct Attached {
    /// The job, attached.
    pub job: Job,
    /// Its groups, one per binary.
    pub groups: Vec<GroupId>,
    /// The fork and exit tracepoints of a followed tree.
    pub follow: Vec<sonde::TracepointLink>,
    /// `--cgroup`, kept up to date.
    pub cgroup: Option<CgroupWatch>,
}

fn progress(json: bool) -> indicatif::ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(80));
    bar
}

/// Starts following the process tree of `root` before any uprobe attaches: the
/// fork and exit tracepoints keep `TRACED` up to date, `root` (and, for a
/// running process, its descendants of the moment) seed it, then `FOLLOW`
/// switches the programs to filtering by it.
pub(super) fn follow_tree(job: &mut Job, root: u32, running: bool) -> Result<Vec<sonde::TracepointLink>, CliError> {
    use sonde::maps::HashMap;
    let offset = sonde::TracePoint::field_offset("sched", "sched_process_fork", "child_pid").map_err(|e| {
        CliError::new(format!(
            "{e} (needed to follow child processes; --no-follow traces only the command)"
        ))
    })?;
    update_settings(job.object(), |s| s.child_pid_offset = u64::from(offset))?;
    let object = job.object_mut();
    let traced: HashMap<u32, u8> = HashMap::new(Map::Traced.of(object)?)?;
    let mut links = Vec::new();
    for program in [Program::FollowFork, Program::FollowExit] {
        links.push(object.tracepoint(program.name())?.attach()?);
    }
    traced.insert(&root, &1)?;
    if running {
        for pid in sonde::process::descendants(root) {
            traced.insert(&pid, &1)?;
        }
    }
    update_settings(job.object(), |s| s.follow = 1)?;
    Ok(links)
}

/// USDT probes: each one's argument spec at its cookie in the programs'
/// `USDT_SPECS`, so arguments are read as the note says.
pub(super) fn write_usdt_specs(object: &sonde::Object, functions: &[SessionFunction<'_>]) -> Result<(), CliError> {
    let usdt: Vec<_> = functions
        .iter()
        .filter_map(|f| f.function.usdt.as_ref().map(|u| (f.cookie, u)))
        .collect();
    if usdt.is_empty() {
        return Ok(());
    }
    let specs = object.usdt_specs()?;
    for (cookie, probe) in usdt {
        let index = u32::try_from(cookie).ok().filter(|i| *i < specs.len()).ok_or_else(|| {
            CliError::new(format!(
                "{}: USDT probes need cookies below {}",
                crate::human::text(&probe.label()),
                specs.len()
            ))
        })?;
        match probe.spec(cookie) {
            Ok(spec) => specs.set(index, &spec)?,
            Err(e) => eprintln!(
                "sonde: {}: its arguments read as registers",
                crate::human::text(&e.to_string())
            ),
        }
    }
    update_settings(object, |s| s.usdt = 1)
}

/// Arguments of Go functions are read as Go's register ABI passes them
/// (Go 1.17+): set when every function probed is in a Go program; with Go and
/// other binaries in one run the C registers stay, and the user is told.
pub(super) fn write_go_abi(object: &sonde::Object, functions: &[SessionFunction<'_>]) -> Result<(), CliError> {
    let go = functions.iter().filter(|f| f.set.is_go()).count();
    if go == 0 {
        return Ok(());
    }
    if go < functions.len() {
        eprintln!(
            "sonde: Go and non-Go functions in one run: arguments are read as C passes them (rdi, rsi, ...), \
             which is wrong for the Go functions; probe the Go program in a run of its own to read its arguments"
        );
        return Ok(());
    }
    update_settings(object, |s| s.go_abi = 1)
}

/// The types a USDT probe's note gives its arguments (signed or not); none
/// for a plain function.
pub fn usdt_types(f: &SessionFunction<'_>) -> Declared {
    let mut declared = Declared::default();
    if let Some(Ok(args)) = f.function.usdt.as_ref().map(|u| &u.args) {
        for (d, a) in declared.args.iter_mut().zip(args) {
            *d = Some(if a.signed { ValueType::I64 } else { ValueType::U64 });
        }
    }
    declared
}

/// Writes each function's compiled filter into `map` (by cookie), numbers
/// compared as `declared` types them.
pub(super) fn write_filters(
    object: &sonde::Object,
    functions: &[SessionFunction<'_>],
    expr: &FilterExpr,
    site: Site,
    declared: &dyn Fn(&SessionFunction<'_>) -> Declared,
) -> Result<(), CliError> {
    let map = match site {
        Site::Entry => Map::Filters,
        Site::Return => Map::FiltersReturn,
    };
    let filters = sonde::maps::Array::<crate::record::Filter>::new(map.of(object)?)?;
    for f in functions {
        let compiled = expr
            .compile_typed(&f.function.name, f.set.display_name(f.function), site, &declared(f))
            .map_err(CliError::new)?;
        filters.set(f.cookie as u32, &compiled)?;
    }
    Ok(())
}
