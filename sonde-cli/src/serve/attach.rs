//! Attaching what the agent resolved: one group per binary and scope, all or
//! nothing per batch, failures pending with their error.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use sonde::command::ProcessWatch;
use sonde::{AttachOptions, FunctionSet, Job, SessionMode};

use super::agent::{Agent, Attached, Series, State};
use super::config::{Probe, Scope};
use super::series::Jobs;
use super::shared::{Place, Shared};
use crate::probes::{shrink_unused, Map, Program, OBJECT};
use crate::record::LATENCY_BUCKETS;
use crate::scope::{update_settings, CgroupWatch};

impl Agent {
    /// Attaches probes resolved by [`resolve`] together: one group per binary
    /// and scope. Probes that fail are pending with their error (`before`: the
    /// error of their last try, logged at debug level when repeated). Probes
    /// the configuration dropped meanwhile are skipped. Returns how many
    /// attached.
    pub fn attach_all(&mut self, resolved: Vec<Resolved>, before: &BTreeMap<Probe, String>) -> usize {
        // Resolved probes by (scope, file).
        let mut batches: BTreeMap<(Scope, u64, u64), Batch> = BTreeMap::new();
        let in_force: BTreeSet<Probe> = self.config.probes.iter().cloned().collect();
        for (p, result) in resolved {
            if !in_force.contains(&p) || matches!(self.probes.get(&p), Some(State::Attached(_))) {
                continue;
            }
            match result {
                Ok(set) => {
                    let (dev, ino) = set.inode();
                    batches.entry((p.scope(), dev, ino)).or_default().push((p, set));
                }
                Err(e) => {
                    let state = self.pending_state(&p, e, before.get(&p));
                    self.probes.insert(p, state);
                }
            }
        }
        let mut attached = 0;
        for batch in batches.into_values() {
            let started = std::time::Instant::now();
            let result = self.attach_batch(&batch);
            self.timings.attach.observe(started.elapsed());
            match result {
                Ok(states) => {
                    for ((p, _), a) in batch.into_iter().zip(states) {
                        log::info!("probe {} {:?}: {}", p.binary, p.functions, self.summary(&a));
                        self.probes.insert(p, State::Attached(a));
                        attached += 1;
                    }
                }
                // Together they failed: each alone, so one bad probe does not
                // keep the others out.
                Err(_) if batch.len() > 1 => {
                    for one in batch {
                        let one = [one];
                        let state = match self.attach_batch(&one) {
                            Ok(mut a) => {
                                attached += 1;
                                State::Attached(a.remove(0))
                            }
                            Err(e) => self.pending_state(&one[0].0, e, before.get(&one[0].0)),
                        };
                        let [(p, _)] = one;
                        self.probes.insert(p, state);
                    }
                }
                Err(e) => {
                    for (p, _) in batch {
                        let state = self.pending_state(&p, e.clone(), before.get(&p));
                        self.probes.insert(p, state);
                    }
                }
            }
        }
        attached
    }

    /// A probe's pending state, logged (at debug level when `before` is the
    /// same error: retries do not warn again).
    fn pending_state(&mut self, p: &Probe, error: String, before: Option<&String>) -> State {
        *self.attach_errors.entry(p.binary.clone()).or_insert(0) += 1;
        let level = if before == Some(&error) {
            log::Level::Debug
        } else {
            log::Level::Warn
        };
        log::log!(
            level,
            "probe {} {:?}: {error}; retrying every {} s",
            p.binary,
            p.functions,
            self.config.retry_seconds
        );
        State::Pending {
            error,
            tried: Instant::now(),
        }
    }

    /// Attaches probes of one scope and one file, all or nothing.
    fn attach_batch(&mut self, batch: &[(Probe, FunctionSet)]) -> Result<Vec<Attached>, String> {
        let Some((first, set)) = batch.first() else {
            return Ok(Vec::new());
        };
        let scope = first.scope();
        let pid = scope.pid;
        for (p, _) in batch {
            if let Some(w) = p.pid.map(ProcessWatch::new).filter(ProcessWatch::exited) {
                return Err(format!("process {} exited", w.pid()));
            }
        }
        let max = self.config.max_functions;
        let max_latency = self.config.max_latency_functions;
        let max_series = self.config.max_container_series;
        let jobs = match self.jobs.entry(scope.clone()) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let mut builder = Job::builder_static(OBJECT)
                    .capacity(max, &[Map::Counts.name()])
                    .options(options(pid));
                let mut used = Vec::new();
                if scope.cgroup.is_some() {
                    used.push(Map::Cgroups);
                }
                if scope.containers {
                    // Keyed by (cookie, caller's cgroup) in the program.
                    used.push(Map::ByKey);
                    builder = builder
                        .program(Program::CountFiltered.name())
                        .map_size(Map::ByKey.name(), max_series);
                } else {
                    let program = Program::Count.for_scope(false, scope.cgroup.is_some());
                    builder = builder.program(program.name());
                }
                let count = shrink_unused(builder, &used).build().map_err(|e| e.to_string())?;
                let mut cgroups = Vec::new();
                if let Some(c) = &scope.cgroup {
                    cgroups.push(watch(&count, c)?);
                }
                if scope.containers {
                    update_settings(count.object(), |s| s.by_kind = crate::record::BY_CGROUP)
                        .map_err(|e| e.to_string())?;
                }
                e.insert(Jobs {
                    cgroups,
                    containers: scope.containers,
                    retired: BTreeSet::new(),
                    count: Shared::new(count),
                    latency: None,
                })
            }
        };
        let sets: Vec<&FunctionSet> = batch.iter().map(|(_, s)| s).collect();
        let counted = jobs.count.place(&sets)?;
        if let (true, Some(g)) = (jobs.containers, jobs.count.added) {
            // A reused cookie's rows from the function it counted before go
            // (those its last moments added after its counts were carried).
            let cookies: BTreeSet<u32> = jobs
                .count
                .job
                .group(g)
                .map(|(_, c)| {
                    c.iter()
                        .map(|&c| c as u32)
                        .filter(|c| jobs.retired.contains(c))
                        .collect()
                })
                .unwrap_or_default();
            if !cookies.is_empty() {
                super::series::clear_container_rows(jobs, &cookies);
                jobs.retired.retain(|c| !cookies.contains(c));
            }
        }
        let timed_sets: Vec<&FunctionSet> = batch.iter().filter(|(p, _)| p.latency).map(|(_, s)| s).collect();
        let timed = if timed_sets.is_empty() {
            Ok((Vec::new(), None))
        } else {
            (|| -> Result<(Vec<Vec<Place>>, Option<SessionMode>), String> {
                let shared = match &mut jobs.latency {
                    Some(s) => s,
                    empty => {
                        let builder = Job::builder_static(OBJECT)
                            .capacity(max_latency, &[Map::Stats.name(), Map::Counts.name()])
                            .per_cookie_slots(Map::Hist.name(), LATENCY_BUCKETS)
                            .program(Program::Latency.name())
                            .options(options(pid));
                        // The emulation's slots: where the session is emulated,
                        // and always where Go may come (its sessions are
                        // emulated on every kernel; this job serves every
                        // binary of the scope, now and after reloads).
                        let mut used = vec![Map::SessionSlots, Map::GoStacks];
                        if scope.cgroup.is_some() {
                            used.push(Map::Cgroups);
                        }
                        let job = shrink_unused(builder, &used).build().map_err(|e| e.to_string())?;
                        if let Some(c) = &scope.cgroup {
                            jobs.cgroups.push(watch(&job, c)?);
                        }
                        empty.insert(Shared::new(job))
                    }
                };
                let places = shared.place(&timed_sets)?;
                Ok((places, shared.job.session_mode()))
            })()
        };
        let (mut timed, session) = match timed {
            Ok(t) => t,
            Err(e) => {
                // All or nothing: the counting half goes too.
                for c in &counted {
                    self.detaching.extend(jobs.count.release(c));
                }
                return Err(e);
            }
        };
        let tier = jobs.count.job.tier();
        let path = set.path().to_path_buf();
        self.files.add(&path);
        timed.reverse();
        let latency_job = jobs.latency.as_ref().map(|l| &l.job);
        Ok(batch
            .iter()
            .zip(counted)
            .map(|((p, s), count)| {
                let latency = if p.latency { timed.pop() } else { None };
                Attached {
                    series: series(&jobs.count.job, latency_job, &count, latency.as_deref()),
                    count,
                    latency,
                    binary: p.binary.clone(),
                    path: path.clone(),
                    fingerprint: s.fingerprint(),
                    process: p.pid.map(ProcessWatch::new),
                    tier,
                    session: if p.latency { session } else { None },
                }
            })
            .collect())
    }
}

/// Probes of one scope and one file, resolved.
type Batch = Vec<(Probe, FunctionSet)>;

/// A probe and what its query resolved to (or why not).
pub type Resolved = (Probe, Result<FunctionSet, String>);

/// Resolves `probes` (reads symbol tables: the slow part, done without the
/// agent's lock), stopping early when `stop` is set.
pub fn resolve(probes: Vec<Probe>, stop: &std::sync::atomic::AtomicBool) -> Vec<Resolved> {
    let mut out = Vec::with_capacity(probes.len());
    for p in probes {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let r = p.query().resolve().map_err(|e| e.to_string());
        out.push((p, r));
    }
    out
}

/// The series of a probe's functions: labels and cookies from the groups.
fn series(count: &Job, timing: Option<&Job>, counted: &[Place], timed: Option<&[Place]>) -> Vec<Series> {
    let cookie = |job: &Job, (g, i): Place| job.group(g).and_then(|(_, c)| c.get(i).copied());
    counted
        .iter()
        .enumerate()
        .filter_map(|(n, &(g, i))| {
            let (set, cookies) = count.group(g)?;
            let f = set.get(i as u64)?;
            Some(Series {
                function: crate::human::label_value(&set.label(f)),
                count_cookie: *cookies.get(i)? as u32,
                timing_cookie: timing
                    .zip(timed.and_then(|t| t.get(n)))
                    .and_then(|(job, &p)| cookie(job, p))
                    .map(|c| c as u32),
            })
        })
        .collect()
}

fn options(pid: Option<u32>) -> AttachOptions {
    match pid {
        Some(pid) => AttachOptions::default().pid(pid),
        None => AttachOptions::default(),
    }
}

/// The cgroup filter of a `cgroup = ...` scope on `job`, on before any of its
/// probes attach.
fn watch(job: &Job, cgroup: &str) -> Result<CgroupWatch, String> {
    let c = sonde::cgroup::Cgroup::open(std::path::Path::new(cgroup)).map_err(|e| e.to_string())?;
    CgroupWatch::start(job.object(), c, "cgroup = ...").map_err(|e| e.to_string())
}
