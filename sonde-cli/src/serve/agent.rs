//! The agent's state: the configured probes, each attached (its groups in the
//! jobs) or pending (the error, retried), and the jobs that hold them — one
//! counting job and one timing job per scope (all processes, or one pid).
//!
//! Applying a configuration attaches what is new and detaches what is gone
//! (in the background), so the counters of the probes that stay keep growing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use sonde::attach::DetachHandle;
use sonde::command::ProcessWatch;
use sonde::resolve::watch::{Change, FileWatch, Fingerprint};
use sonde::{AttachOptions, GroupId, Job, SessionMode, Tier};

use super::config::{Config, Probe};
use crate::record::BUCKETS;
use crate::session::shrink_unused;

/// The jobs of one scope (`None`: every process).
pub struct Jobs {
    /// `count` on every function.
    pub count: Job,
    /// `latency` (a session program) on the functions of `latency = true`
    /// probes; built on first use.
    pub latency: Option<Job>,
}

/// A probe that is attached.
pub struct Attached {
    /// Its functions in the scope's counting job.
    pub count: GroupId,
    /// Its functions in the timing job (`latency = true`).
    pub latency: Option<GroupId>,
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
            files: FileWatch::default(),
        }
    }

    /// Makes the attached probes those of `config`: detaches the probes it no
    /// longer lists, attaches the new ones; the others are untouched. Map sizes
    /// stay those of the start. Returns (attached, detached, pending) counts.
    pub fn apply(&mut self, mut config: Config) -> (usize, usize, usize) {
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
        let wanted: Vec<Probe> = {
            let mut v = config.probes.clone();
            v.sort();
            v.dedup();
            v
        };
        self.config = config;
        let gone: Vec<Probe> = self.probes.keys().filter(|p| !wanted.contains(p)).cloned().collect();
        for p in &gone {
            if let Some(State::Attached(a)) = self.probes.remove(p) {
                self.detach(p.pid, &a);
            }
            log::info!("probe {} {:?}: removed", p.binary, p.functions);
        }
        let mut attached = 0;
        for p in wanted {
            if self.probes.contains_key(&p) {
                continue;
            }
            let state = self.attach(&p, None);
            attached += usize::from(matches!(state, State::Attached(_)));
            self.probes.insert(p, state);
        }
        let pending = self
            .probes
            .values()
            .filter(|s| matches!(s, State::Pending { .. }))
            .count();
        (attached, gone.len(), pending)
    }

    /// Retries pending probes whose last try is `retry_seconds` old,
    /// re-attaches probes whose binary was replaced on disk, and detaches
    /// those whose binary was rewritten in place or whose process exited.
    pub fn retry(&mut self) {
        let every = std::time::Duration::from_secs(self.config.retry_seconds);
        let keys: Vec<Probe> = self.probes.keys().cloned().collect();
        for p in keys {
            let redo = match self.probes.get(&p) {
                Some(State::Pending { tried, .. }) => tried.elapsed() >= every,
                Some(State::Attached(a)) => a.fingerprint.change_at(&a.path).is_some() || exited(a),
                None => false,
            };
            if !redo {
                continue;
            }
            let before = match self.probes.remove(&p) {
                Some(State::Attached(a)) => {
                    self.detach(p.pid, &a);
                    if let Some(pending) = self.gone(&a) {
                        self.probes.insert(p, pending);
                        continue;
                    }
                    log::info!("{} was replaced on disk: attaching to the new file", a.path.display());
                    None
                }
                Some(State::Pending { error, .. }) => Some(error),
                None => None,
            };
            let state = self.attach(&p, before.as_deref());
            self.probes.insert(p, state);
        }
        self.detaching.retain(|h| !h.is_finished());
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
                State::Attached(a) => format!("attached: {}", self.summary(p, a)),
                State::Pending { error, .. } => format!("pending: {error}"),
            };
            out.push_str(&format!("{} {}: {what}\n", p.binary, p.functions.join(" ")));
        }
        out
    }

    /// `N function(s) of PATH, tier T[, session M]`.
    fn summary(&self, p: &Probe, a: &Attached) -> String {
        let n = self
            .jobs
            .get(&p.pid)
            .and_then(|j| j.count.group(a.count))
            .map_or(0, |(s, _)| s.len());
        format!(
            "{n} function(s) of {}, tier {}{}",
            a.path.display(),
            a.tier,
            a.session.map(|m| format!(", {}", m.name())).unwrap_or_default()
        )
    }

    /// Functions attached, all probes together.
    pub fn attached_functions(&self) -> usize {
        self.jobs.values().map(|j| j.count.len()).sum()
    }

    fn detach(&mut self, pid: Option<u32>, a: &Attached) {
        let Some(jobs) = self.jobs.get_mut(&pid) else { return };
        if let Ok(h) = jobs.count.remove(a.count) {
            self.detaching.extend(h);
        }
        if let (Some(job), Some(id)) = (jobs.latency.as_mut(), a.latency) {
            if let Ok(h) = job.remove(id) {
                self.detaching.extend(h);
            }
        }
    }

    /// Attaches `p`; `before` is the error of its last try (a repeat of it is
    /// logged at debug level, not warned again every retry).
    fn attach(&mut self, p: &Probe, before: Option<&str>) -> State {
        match self.try_attach(p) {
            Ok(a) => {
                log::info!("probe {} {:?}: {}", p.binary, p.functions, self.summary(p, &a));
                State::Attached(a)
            }
            Err(error) => {
                *self.attach_errors.entry(p.binary.clone()).or_insert(0) += 1;
                let level = if before == Some(error.as_str()) {
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
        }
    }

    fn try_attach(&mut self, p: &Probe) -> Result<Attached, String> {
        let set = p.query().resolve().map_err(|e| e.to_string())?;
        let (path, fingerprint) = (set.path().to_path_buf(), set.fingerprint());
        let process = p.pid.map(ProcessWatch::new);
        if let Some(w) = process.as_ref().filter(|w| w.exited()) {
            return Err(format!("process {} exited", w.pid()));
        }
        let (max, max_latency) = (self.config.max_functions, self.config.max_latency_functions);
        let jobs = match self.jobs.entry(p.pid) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let builder = Job::builder(crate::session::PROBES)
                    .capacity(max, &["COUNTS"])
                    .program("count")
                    .options(options(p.pid));
                let count = shrink_unused(builder, &[]).build().map_err(|e| e.to_string())?;
                e.insert(Jobs { count, latency: None })
            }
        };
        let count = jobs.count.add_set(set.clone()).map_err(|e| e.to_string())?;
        let tier = jobs.count.tier();
        let mut latency = None;
        let mut session = None;
        if p.latency {
            let timed = (|| -> Result<(GroupId, Option<SessionMode>), sonde::Error> {
                let job = match &mut jobs.latency {
                    Some(job) => job,
                    empty => {
                        let builder = Job::builder(crate::session::PROBES)
                            .capacity(max_latency, &["MAX_NS", "SUM_NS", "COUNTS"])
                            .per_cookie_slots("HIST", BUCKETS)
                            .program("latency")
                            .options(options(p.pid));
                        // The emulation's maps only where the session is emulated.
                        let used: &[&str] = match SessionMode::expected(&options(p.pid)) {
                            Some(SessionMode::Native) => &[],
                            _ => &["SESSION_SLOTS"],
                        };
                        empty.insert(shrink_unused(builder, used).build()?)
                    }
                };
                let id = job.add_set(set)?;
                Ok((id, job.session_mode()))
            })();
            match timed {
                Ok((id, mode)) => {
                    latency = Some(id);
                    session = mode;
                }
                Err(e) => {
                    // All or nothing: the counting half goes too.
                    if let Ok(h) = jobs.count.remove(count) {
                        self.detaching.extend(h);
                    }
                    return Err(e.to_string());
                }
            }
        }
        self.files.add(&path);
        Ok(Attached {
            count,
            latency,
            path,
            fingerprint,
            process,
            tier,
            session,
        })
    }

    /// Waits for every detach under way (at exit).
    pub fn finish(mut self) {
        self.jobs.clear();
        for h in self.detaching.drain(..) {
            h.wait();
        }
    }
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
