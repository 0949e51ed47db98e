//! The agent's state: the configured probes, each attached (its functions in
//! the jobs' groups) or pending (the error, retried), and the jobs that hold
//! them — one counting job and one timing job per scope (all processes, or
//! one pid).
//!
//! Probes share what they attach: the probes applied together on one binary
//! and scope become one group (one link on the multi tier), and a function
//! already attached in a scope is counted once, whatever number of probes name
//! it. A group is detached when the last probe using it goes, so memory,
//! descriptors and links follow the functions attached, not the entries of the
//! configuration, and the counters of the functions that stay keep growing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use sonde::attach::DetachHandle;
use sonde::command::ProcessWatch;
use sonde::resolve::watch::{Change, FileWatch, Fingerprint};
use sonde::{AttachOptions, FunctionSet, GroupId, Job, SessionMode, Tier};

use super::config::{Config, Probe};
use crate::probes::{shrink_unused, Map, Program, OBJECT};
use crate::record::BUCKETS;

/// Where one function of a probe is: its group, and its index in the group's set.
pub type Place = (GroupId, usize);

/// A job, and which probes use each of its groups.
pub struct Shared {
    /// The job.
    pub job: Job,
    /// How many probes use each group (detached at none).
    users: BTreeMap<GroupId, usize>,
    /// Every function attached, by (device, inode, file offset).
    sites: HashMap<(u64, u64, u64), Place>,
}

impl Shared {
    fn new(job: Job) -> Shared {
        Shared {
            job,
            users: BTreeMap::new(),
            sites: HashMap::new(),
        }
    }

    /// Attaches the functions of `sets` (one per probe, all read from one
    /// file) that are not attached yet, as one group; returns each probe's
    /// places. All or nothing.
    fn place(&mut self, sets: &[&FunctionSet]) -> Result<Vec<Vec<Place>>, String> {
        let Some(first) = sets.first() else {
            return Ok(Vec::new());
        };
        let (dev, ino) = first.inode();
        let mut union = (*first).clone();
        for s in &sets[1..] {
            // Batched by (device, inode): only a write between two reads differs.
            if !union.absorb(s) {
                return Err(format!(
                    "{} changed while its probes were read; tried again at the next retry",
                    s.path().display()
                ));
            }
        }
        union.retain(|f| !self.sites.contains_key(&(dev, ino, f.file_offset)));
        if !union.is_empty() {
            let offsets: Vec<u64> = union.iter().map(|f| f.file_offset).collect();
            let id = self.job.add_set(union).map_err(|e| e.to_string())?;
            for (i, off) in offsets.into_iter().enumerate() {
                self.sites.insert((dev, ino, off), (id, i));
            }
            self.users.insert(id, 0);
        }
        let places: Vec<Vec<Place>> = sets
            .iter()
            .map(|s| {
                s.iter()
                    .filter_map(|f| self.sites.get(&(dev, ino, f.file_offset)).copied())
                    .collect()
            })
            .collect();
        for p in &places {
            for id in p.iter().map(|(g, _)| *g).collect::<BTreeSet<_>>() {
                *self.users.entry(id).or_insert(0) += 1;
            }
        }
        // A group nobody took (every function failed to map): detached now.
        let idle: Vec<GroupId> = self.users.iter().filter(|(_, n)| **n == 0).map(|(g, _)| *g).collect();
        for g in idle {
            self.drop_group(g);
        }
        Ok(places)
    }

    /// A probe stops using `places`; returns the detaches of the groups no
    /// probe uses any more.
    fn release(&mut self, places: &[Place]) -> Vec<DetachHandle> {
        let mut handles = Vec::new();
        for id in places.iter().map(|(g, _)| *g).collect::<BTreeSet<_>>() {
            let Some(n) = self.users.get_mut(&id) else { continue };
            *n = n.saturating_sub(1);
            if *n == 0 {
                handles.extend(self.drop_group(id));
            }
        }
        handles
    }

    fn drop_group(&mut self, id: GroupId) -> Vec<DetachHandle> {
        self.users.remove(&id);
        self.sites.retain(|_, (g, _)| *g != id);
        self.job.remove(id).unwrap_or_default()
    }

    /// Every group detached in the background (they wait out their grace
    /// periods together).
    fn detach_all(&mut self) -> Vec<DetachHandle> {
        let ids: Vec<GroupId> = self.users.keys().copied().collect();
        ids.into_iter().flat_map(|id| self.drop_group(id)).collect()
    }

    /// Shrinks every group to the functions in `used` (group → indices still
    /// named by a probe), keeping their cookies: a function no probe names
    /// any more is no longer probed. Returns each shrunk group's index map.
    fn compact(&mut self, used: &BTreeMap<GroupId, BTreeSet<usize>>) -> BTreeMap<GroupId, Vec<Option<usize>>> {
        let mut maps = BTreeMap::new();
        let groups: Vec<GroupId> = self.users.keys().copied().collect();
        for g in groups {
            let Some(keep) = used.get(&g) else { continue };
            let len = self.job.group(g).map_or(0, |(s, _)| s.len());
            if keep.len() >= len {
                continue;
            }
            let mut i = 0;
            let map = match self.job.shrink(g, |_| {
                i += 1;
                keep.contains(&(i - 1))
            }) {
                Ok(map) => map,
                Err(e) => {
                    log::warn!("re-attaching the functions still probed failed: {e}");
                    vec![None; len]
                }
            };
            if self.job.group(g).is_none() {
                self.users.remove(&g);
            }
            self.sites.retain(|_, place| {
                if place.0 != g {
                    return true;
                }
                match map.get(place.1).copied().flatten() {
                    Some(n) => {
                        place.1 = n;
                        true
                    }
                    None => false,
                }
            });
            maps.insert(g, map);
        }
        maps
    }

    /// Groups (links on the multi tier) attached.
    pub fn groups(&self) -> usize {
        self.users.len()
    }
}

/// The jobs of one scope (`None`: every process).
pub struct Jobs {
    /// `count` on every function.
    pub count: Shared,
    /// `latency` (a session program) on the functions of `latency = true`
    /// probes; built on first use.
    pub latency: Option<Shared>,
}

/// One function of a probe as its series are read at each scrape: its label
/// value (escaped) and cookies, worked out once at attach.
pub struct Series {
    /// The `function` label value, escaped for the exposition formats.
    pub function: String,
    /// Its cookie in the counting job.
    pub count_cookie: u32,
    /// Its cookie in the timing job (`latency = true`).
    pub timing_cookie: Option<u32>,
}

/// A probe that is attached.
pub struct Attached {
    /// Its functions' series.
    pub series: Vec<Series>,
    /// Its functions in the scope's counting job.
    pub count: Vec<Place>,
    /// Its functions in the timing job (`latency = true`).
    pub latency: Option<Vec<Place>>,
    /// The binary's canonical path and what its file was when it was read.
    pub path: PathBuf,
    fingerprint: Fingerprint,
    /// The process of a `pid = N` probe, watched for its exit.
    process: Option<ProcessWatch>,
    /// The tier the counting program runs on.
    pub tier: Tier,
    /// How the timing program's session runs.
    pub session: Option<SessionMode>,
}

/// One configured probe's state.
pub enum State {
    /// Attached.
    Attached(Attached),
    /// Not attached: why, and since when (retried every `retry_seconds`).
    Pending {
        /// The error, as said to the user.
        error: String,
        /// When it was last tried.
        tried: Instant,
    },
}

/// The whole agent.
pub struct Agent {
    /// The configuration in force.
    pub config: Config,
    /// Jobs by scope.
    pub jobs: BTreeMap<Option<u32>, Jobs>,
    /// Each configured probe (a probe listed twice is one).
    pub probes: BTreeMap<Probe, State>,
    /// Failed attaches by configured binary, since start.
    pub attach_errors: BTreeMap<String, u64>,
    /// Detaches under way (per-target tiers take ~0.1 s a probe).
    detaching: Vec<DetachHandle>,
    /// The attached binaries, watched for writes (shared with the main loop,
    /// which waits on it).
    pub files: FileWatch,
}

impl Agent {
    /// An agent with nothing attached yet.
    pub fn new(config: Config) -> Agent {
        Agent {
            config,
            jobs: BTreeMap::new(),
            probes: BTreeMap::new(),
            attach_errors: BTreeMap::new(),
            detaching: Vec::new(),
            files: FileWatch::new(),
        }
    }

    /// Makes the configuration `config` the one in force: detaches the probes
    /// it no longer lists and returns the new ones, to resolve (outside the
    /// agent's lock: that is the slow part) and hand to [`Agent::attach_all`].
    /// Map sizes stay those of the start. Returns (new probes, detached count).
    pub fn apply(&mut self, mut config: Config) -> (Vec<Probe>, usize) {
        if (config.max_functions, config.max_latency_functions)
            != (self.config.max_functions, self.config.max_latency_functions)
            && !self.jobs.is_empty()
        {
            log::warn!(
                "max_functions and max_latency_functions take effect at the next start; keeping the current sizes"
            );
            config.max_functions = self.config.max_functions;
            config.max_latency_functions = self.config.max_latency_functions;
        }
        let wanted: BTreeSet<Probe> = config.probes.iter().cloned().collect();
        self.config = config;
        let gone: Vec<Probe> = self.probes.keys().filter(|p| !wanted.contains(*p)).cloned().collect();
        for p in &gone {
            if let Some(State::Attached(a)) = self.probes.remove(p) {
                self.detach(p.pid, &a);
            }
            log::info!("probe {} {:?}: removed", p.binary, p.functions);
        }
        if !gone.is_empty() {
            self.compact();
        }
        let new = wanted.into_iter().filter(|p| !self.probes.contains_key(p)).collect();
        (new, gone.len())
    }

    /// Probes pending now (not attached).
    pub fn pending(&self) -> usize {
        self.probes
            .values()
            .filter(|s| matches!(s, State::Pending { .. }))
            .count()
    }

    /// The probes to try again: pending ones whose last try is
    /// `retry_seconds` old, and attached ones whose binary was replaced on disk
    /// (detached here; those rewritten in place or whose process exited stay
    /// pending). Returns them with the error of their last try, to resolve
    /// outside the lock and hand to [`Agent::attach_all`].
    pub fn due(&mut self) -> (Vec<Probe>, BTreeMap<Probe, String>) {
        let every = std::time::Duration::from_secs(self.config.retry_seconds);
        let due: Vec<Probe> = self
            .probes
            .iter()
            .filter(|(_, s)| match s {
                State::Pending { tried, .. } => tried.elapsed() >= every,
                State::Attached(a) => a.fingerprint.change_at(&a.path).is_some() || exited(a),
            })
            .map(|(p, _)| p.clone())
            .collect();
        let mut before = BTreeMap::new();
        let mut again = Vec::new();
        for p in due {
            match self.probes.get(&p) {
                Some(State::Attached(_)) => {
                    let Some(State::Attached(a)) = self.probes.remove(&p) else {
                        continue;
                    };
                    self.detach(p.pid, &a);
                    if let Some(pending) = self.gone(&a) {
                        self.probes.insert(p, pending);
                        continue;
                    }
                    log::info!("{} was replaced on disk: attaching to the new file", a.path.display());
                    // Pending until attached again.
                    self.probes.insert(
                        p.clone(),
                        State::Pending {
                            error: "replaced on disk: attaching to the new file".into(),
                            tried: Instant::now(),
                        },
                    );
                }
                Some(State::Pending { error, .. }) => {
                    before.insert(p.clone(), error.clone());
                }
                None => continue,
            }
            again.push(p);
        }
        self.compact();
        self.detaching.retain(|h| !h.is_finished());
        (again, before)
    }

    /// Detaches at once every probe whose binary was rewritten in place (its
    /// offsets may now fall inside instructions) or whose process exited; they
    /// are attached again at a retry once the file is left alone.
    pub fn detach_changed(&mut self) {
        let changed: Vec<Probe> = self
            .probes
            .iter()
            .filter(|(_, s)| match s {
                State::Attached(a) => a.fingerprint.change_at(&a.path) == Some(Change::Rewritten) || exited(a),
                State::Pending { .. } => false,
            })
            .map(|(p, _)| p.clone())
            .collect();
        for p in changed {
            if let Some(State::Attached(a)) = self.probes.remove(&p) {
                self.detach(p.pid, &a);
                let state = self.gone(&a).unwrap_or_else(|| State::Pending {
                    error: "detached".into(),
                    tried: Instant::now(),
                });
                self.probes.insert(p, state);
            }
        }
        self.compact();
    }

    /// The pending state of a detached probe whose file was rewritten or whose
    /// process exited (logged); `None` when it was only replaced.
    fn gone(&self, a: &Attached) -> Option<State> {
        let error = if let Some(w) = a.process.as_ref().filter(|w| w.exited()) {
            format!("process {} exited: detached", w.pid())
        } else if a.fingerprint.change_at(&a.path) == Some(Change::Rewritten) {
            format!(
                "{} was rewritten in place while probed: detached at once (its old offsets may fall inside new instructions); attached again when unchanged for {} s",
                a.path.display(),
                self.config.retry_seconds
            )
        } else {
            return None;
        };
        log::warn!("{error}");
        Some(State::Pending {
            error,
            tried: Instant::now(),
        })
    }

    /// One line per probe: attached (functions, tier) or pending (why).
    pub fn status(&self) -> String {
        let mut out = String::new();
        for (p, state) in &self.probes {
            let what = match state {
                State::Attached(a) => format!("attached: {}", self.summary(a)),
                State::Pending { error, .. } => format!("pending: {error}"),
            };
            out.push_str(&format!("{} {}: {what}\n", p.binary, p.functions.join(" ")));
        }
        out
    }

    /// `N function(s) of PATH, tier T[, session M]`.
    fn summary(&self, a: &Attached) -> String {
        format!(
            "{} function(s) of {}, tier {}{}",
            a.count.len(),
            a.path.display(),
            a.tier,
            a.session.map(|m| format!(", {}", m.name())).unwrap_or_default()
        )
    }

    /// Functions attached, all probes together (each once per scope).
    pub fn attached_functions(&self) -> usize {
        self.jobs.values().map(|j| j.count.job.len()).sum()
    }

    /// Groups attached (links on the multi tier), counting and timing jobs.
    pub fn groups(&self) -> usize {
        self.jobs
            .values()
            .map(|j| j.count.groups() + j.latency.as_ref().map_or(0, Shared::groups))
            .sum()
    }

    /// Releases what `a` (already out of `probes`) used: groups no other
    /// probe uses are detached; [`Agent::compact`] then shrinks the shared ones.
    fn detach(&mut self, pid: Option<u32>, a: &Attached) {
        let Some(jobs) = self.jobs.get_mut(&pid) else { return };
        self.detaching.extend(jobs.count.release(&a.count));
        if let (Some(shared), Some(places)) = (jobs.latency.as_mut(), a.latency.as_ref()) {
            self.detaching.extend(shared.release(places));
        }
    }

    /// Shrinks every shared group to what the probes still name (once after
    /// a batch of detaches): a function no probe names is no longer probed,
    /// the counters of the others go on.
    fn compact(&mut self) {
        let scopes: Vec<Option<u32>> = self.jobs.keys().copied().collect();
        for pid in scopes {
            self.compact_scope(pid);
        }
    }

    fn compact_scope(&mut self, pid: Option<u32>) {
        let Some(jobs) = self.jobs.get_mut(&pid) else { return };
        // What the scope's probes still name.
        let (mut counted, mut timed): (BTreeMap<GroupId, BTreeSet<usize>>, BTreeMap<GroupId, BTreeSet<usize>>) =
            Default::default();
        for (p, s) in &self.probes {
            let State::Attached(other) = s else { continue };
            if p.pid != pid {
                continue;
            }
            for &(g, i) in &other.count {
                counted.entry(g).or_default().insert(i);
            }
            for &(g, i) in other.latency.iter().flatten() {
                timed.entry(g).or_default().insert(i);
            }
        }
        let count_maps = jobs.count.compact(&counted);
        let time_maps = jobs.latency.as_mut().map(|l| l.compact(&timed)).unwrap_or_default();
        if count_maps.is_empty() && time_maps.is_empty() {
            return;
        }
        let remap = |places: &mut Vec<Place>, maps: &BTreeMap<GroupId, Vec<Option<usize>>>| {
            places.retain_mut(|(g, i)| match maps.get(g) {
                Some(map) => match map.get(*i).copied().flatten() {
                    Some(n) => {
                        *i = n;
                        true
                    }
                    None => false,
                },
                None => true,
            });
        };
        for (p, s) in self.probes.iter_mut() {
            let State::Attached(other) = s else { continue };
            if p.pid != pid {
                continue;
            }
            remap(&mut other.count, &count_maps);
            if let Some(l) = other.latency.as_mut() {
                remap(l, &time_maps);
            }
        }
    }

    /// Attaches probes resolved by [`resolve`] together: one group per binary
    /// and scope. Probes that fail are pending with their error (`before`: the
    /// error of their last try, logged at debug level when repeated). Probes
    /// the configuration dropped meanwhile are skipped. Returns how many
    /// attached.
    pub fn attach_all(&mut self, resolved: Vec<Resolved>, before: &BTreeMap<Probe, String>) -> usize {
        // Resolved probes by (scope, file).
        let mut batches: BTreeMap<(Option<u32>, u64, u64), Batch> = BTreeMap::new();
        let in_force: BTreeSet<Probe> = self.config.probes.iter().cloned().collect();
        for (p, result) in resolved {
            if !in_force.contains(&p) || matches!(self.probes.get(&p), Some(State::Attached(_))) {
                continue;
            }
            match result {
                Ok(set) => {
                    let (dev, ino) = set.inode();
                    batches.entry((p.pid, dev, ino)).or_default().push((p, set));
                }
                Err(e) => {
                    let state = self.pending_state(&p, e, before.get(&p));
                    self.probes.insert(p, state);
                }
            }
        }
        let mut attached = 0;
        for batch in batches.into_values() {
            match self.attach_batch(&batch) {
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
        let pid = first.pid;
        for (p, _) in batch {
            if let Some(w) = p.pid.map(ProcessWatch::new).filter(ProcessWatch::exited) {
                return Err(format!("process {} exited", w.pid()));
            }
        }
        let (max, max_latency) = (self.config.max_functions, self.config.max_latency_functions);
        let jobs = match self.jobs.entry(pid) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let builder = Job::builder(OBJECT)
                    .capacity(max, &[Map::Counts.name()])
                    .program(Program::Count.name())
                    .options(options(pid));
                let count = shrink_unused(builder, &[]).build().map_err(|e| e.to_string())?;
                e.insert(Jobs {
                    count: Shared::new(count),
                    latency: None,
                })
            }
        };
        let sets: Vec<&FunctionSet> = batch.iter().map(|(_, s)| s).collect();
        let counted = jobs.count.place(&sets)?;
        let timed_sets: Vec<&FunctionSet> = batch.iter().filter(|(p, _)| p.latency).map(|(_, s)| s).collect();
        let timed = if timed_sets.is_empty() {
            Ok((Vec::new(), None))
        } else {
            (|| -> Result<(Vec<Vec<Place>>, Option<SessionMode>), String> {
                let shared = match &mut jobs.latency {
                    Some(s) => s,
                    empty => {
                        let builder = Job::builder(OBJECT)
                            .capacity(max_latency, &[Map::MaxNs.name(), Map::SumNs.name(), Map::Counts.name()])
                            .per_cookie_slots(Map::Hist.name(), BUCKETS)
                            .program(Program::Latency.name())
                            .options(options(pid));
                        // The emulation's maps only where the session is emulated.
                        let used: &[Map] = match SessionMode::expected(&options(pid)) {
                            Some(SessionMode::Native) => &[],
                            _ => &[Map::SessionSlots],
                        };
                        let job = shrink_unused(builder, used).build().map_err(|e| e.to_string())?;
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
                    path: path.clone(),
                    fingerprint: s.fingerprint(),
                    process: p.pid.map(ProcessWatch::new),
                    tier,
                    session: if p.latency { session } else { None },
                }
            })
            .collect())
    }

    /// Detaches everything, every group at once, and waits (at exit).
    pub fn finish(mut self) {
        let mut handles: Vec<DetachHandle> = self.detaching.drain(..).collect();
        for jobs in self.jobs.values_mut() {
            handles.extend(jobs.count.detach_all());
            if let Some(l) = jobs.latency.as_mut() {
                handles.extend(l.detach_all());
            }
        }
        self.jobs.clear();
        for h in handles {
            h.wait();
        }
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

/// Whether the process of a `pid` probe has exited.
fn exited(a: &Attached) -> bool {
    a.process.as_ref().is_some_and(ProcessWatch::exited)
}
