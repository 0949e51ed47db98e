//! The agent's state: the configured probes, each attached (its functions in
//! the jobs' groups) or pending (the error, retried), and the jobs that hold
//! them — one counting job and one timing job per scope (all processes, one
//! pid, or one cgroup; counted per container or not: [`Scope`]).
//!
//! Probes share what they attach: the probes applied together on one binary
//! and scope become one group (one link on the multi tier), and a function
//! already attached in a scope is counted once, whatever number of probes name
//! it. A group is detached when the last probe using it goes, so memory,
//! descriptors and links follow the functions attached, not the entries of the
//! configuration, and the counters of the functions that stay keep growing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Instant;

use sonde::attach::DetachHandle;
use sonde::command::ProcessWatch;
use sonde::resolve::watch::{Change, FileWatch, Fingerprint};
use sonde::{GroupId, SessionMode, Tier};

use super::config::{Config, Probe, Scope};
use super::series::{Carried, Jobs, SelfTimings};
use super::shared::{Place, Shared};

/// The agent, also after a panicking holder (the state stays usable).
pub fn lock(agent: &std::sync::Mutex<Agent>) -> std::sync::MutexGuard<'_, Agent> {
    agent.lock().unwrap_or_else(|p| p.into_inner())
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
    /// The binary as configured (the `binary` label).
    pub binary: String,
    /// The binary's canonical path and what its file was when it was read.
    pub path: PathBuf,
    pub(super) fingerprint: Fingerprint,
    /// The process of a `pid = N` probe, watched for its exit.
    pub(super) process: Option<ProcessWatch>,
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
    pub jobs: BTreeMap<Scope, Jobs>,
    /// Each configured probe (a probe listed twice is one).
    pub probes: BTreeMap<Probe, State>,
    /// Failed attaches by configured binary, since start.
    pub attach_errors: BTreeMap<String, u64>,
    /// Detaches under way (per-target tiers take ~0.1 s a probe).
    pub(super) detaching: Vec<DetachHandle>,
    /// The attached binaries, watched for writes (shared with the main loop,
    /// which waits on it).
    pub files: FileWatch,
    /// Whether the configuration in force has been applied (resolving runs
    /// outside the lock: a scrape meanwhile sees part of it).
    pub applied: bool,
    /// Counts of functions detached since start, by (scope, binary as
    /// configured, function label): added to what the maps hold when they are
    /// attached again, so counters reset only when the agent restarts. One
    /// entry per function ever detached (a few hundred bytes each).
    pub carried: BTreeMap<(Scope, String, String), Carried>,
    /// The agent's own timings (attach, detach, scrape), for its self-metrics.
    pub timings: SelfTimings,
    /// Cgroup paths by id (`container_labels`), a removed one's kept.
    pub names: sonde::cgroup::Names,
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
            applied: false,
            carried: BTreeMap::new(),
            timings: Default::default(),
            names: Default::default(),
        }
    }

    /// Makes the configuration `config` the one in force and returns the
    /// probes it adds, to resolve (outside the agent's lock: that is the slow
    /// part) and hand to [`Agent::attach_all`], and those it no longer lists,
    /// to hand to [`Agent::retire`] after: they stay attached until then, so a
    /// function a new probe names again keeps its place and its counters go on
    /// (an edited function list, `latency` switched, a probe moved to another
    /// entry). Map sizes stay those of the start. Returns (new, gone).
    pub fn apply(&mut self, mut config: Config) -> (Vec<Probe>, Vec<Probe>) {
        self.applied = false;
        let sizes = |c: &Config| (c.max_functions, c.max_latency_functions, c.max_container_series);
        if sizes(&config) != sizes(&self.config) && !self.jobs.is_empty() {
            log::warn!(
                "max_functions, max_latency_functions and max_container_series take effect at the next start; keeping the current sizes"
            );
            config.max_functions = self.config.max_functions;
            config.max_latency_functions = self.config.max_latency_functions;
            config.max_container_series = self.config.max_container_series;
        }
        let wanted: BTreeSet<Probe> = config.probes.iter().cloned().collect();
        self.config = config;
        let gone: Vec<Probe> = self.probes.keys().filter(|p| !wanted.contains(*p)).cloned().collect();
        let new = wanted.into_iter().filter(|p| !self.probes.contains_key(p)).collect();
        (new, gone)
    }

    /// Detaches the probes `gone` (from [`Agent::apply`]), once the new ones
    /// are attached: what no probe names any more is detached, its counts
    /// carried for the day it is named again. Returns how many there were.
    pub fn retire(&mut self, gone: &[Probe]) -> usize {
        for p in gone {
            if let Some(State::Attached(a)) = self.probes.remove(p) {
                self.detach(&p.scope(), &a);
            } else {
                self.probes.remove(p);
            }
            log::info!("probe {} {:?}: removed", p.binary, p.functions);
        }
        if !gone.is_empty() {
            self.compact();
        }
        gone.len()
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
                    self.detach(&p.scope(), &a);
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
        let timings = &mut self.timings;
        self.detaching.retain(|h| match h.took() {
            Some(took) => {
                timings.detach.observe(took);
                false
            }
            None => !h.is_finished(),
        });
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
                self.detach(&p.scope(), &a);
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
    pub(super) fn summary(&self, a: &Attached) -> String {
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
    fn detach(&mut self, scope: &Scope, a: &Attached) {
        self.carry(scope, a);
        let Some(jobs) = self.jobs.get_mut(scope) else { return };
        self.detaching.extend(jobs.count.release(&a.count));
        if let (Some(shared), Some(places)) = (jobs.latency.as_mut(), a.latency.as_ref()) {
            self.detaching.extend(shared.release(places));
        }
    }

    /// Adds to [`Agent::carried`] the counts of `a`'s functions (its probe
    /// already out of `probes`) that no other probe of the scope keeps
    /// attached: read now, before their groups detach (calls in the last
    /// moments of a detach, about a millisecond on the multi tier, are not
    /// seen), and added back when the function is attached again, so its
    /// counters never go down while the agent runs.
    fn carry(&mut self, scope: &Scope, a: &Attached) {
        let Some(jobs) = self.jobs.get(scope) else { return };
        let mut kept_count = BTreeSet::new();
        let mut kept_timing = BTreeSet::new();
        for (p, s) in &self.probes {
            let State::Attached(other) = s else { continue };
            if p.scope() == *scope {
                kept_count.extend(other.series.iter().map(|f| f.count_cookie));
                kept_timing.extend(other.series.iter().filter_map(|f| f.timing_cookie));
            }
        }
        let binary = a.binary.clone();
        let mut retired = Vec::new();
        for f in &a.series {
            let count = !kept_count.contains(&f.count_cookie);
            let timing = f.timing_cookie.filter(|c| !kept_timing.contains(c));
            if !count && timing.is_none() {
                continue;
            }
            let now = super::series::read_series(jobs, count.then_some(f.count_cookie), timing, &mut self.names);
            if count && jobs.containers {
                retired.push(f.count_cookie);
            }
            self.carried
                .entry((scope.clone(), binary.clone(), f.function.clone()))
                .or_default()
                .add(&now);
        }
        if let Some(jobs) = self.jobs.get_mut(scope) {
            jobs.retired.extend(retired);
        }
    }

    /// Shrinks every shared group to what the probes still name (once after
    /// a batch of detaches): a function no probe names is no longer probed,
    /// the counters of the others go on.
    fn compact(&mut self) {
        let scopes: Vec<Scope> = self.jobs.keys().cloned().collect();
        for scope in scopes {
            self.compact_scope(&scope);
        }
    }

    fn compact_scope(&mut self, scope: &Scope) {
        let Some(jobs) = self.jobs.get_mut(scope) else { return };
        // What the scope's probes still name.
        let (mut counted, mut timed): (BTreeMap<GroupId, BTreeSet<usize>>, BTreeMap<GroupId, BTreeSet<usize>>) =
            Default::default();
        for (p, s) in &self.probes {
            let State::Attached(other) = s else { continue };
            if p.scope() != *scope {
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
            if p.scope() != *scope {
                continue;
            }
            remap(&mut other.count, &count_maps);
            if let Some(l) = other.latency.as_mut() {
                remap(l, &time_maps);
            }
        }
    }

    /// Detaches everything, every group at once (at exit): what is still
    /// detaching (per-target links, ~0.1 s each in the kernel) is handed to a
    /// background process, so the agent exits at once; the probes go in the
    /// kernel's own time, as they would have here.
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
            if h.is_finished() {
                h.wait();
                continue;
            }
            match h.hand_off() {
                Ok(Some(pid)) => log::info!("the last detaches go on in process {pid}"),
                Ok(None) => {}
                Err(e) => log::warn!("cannot hand the last detaches to a background process ({e}); exiting after them"),
            }
        }
    }
}

/// Whether the process of a `pid` probe has exited.
fn exited(a: &Attached) -> bool {
    a.process.as_ref().is_some_and(ProcessWatch::exited)
}
