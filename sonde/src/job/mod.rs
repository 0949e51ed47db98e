//! A job: one object's programs attached under one plan to a set of functions
//! that can grow and shrink while it runs. The `sonde` command and the metrics
//! agent are drivers over it.
//!
//! ```no_run
//! # fn main() -> Result<(), sonde::Error> {
//! use sonde::{Functions, Job};
//! let bytes = std::fs::read("probes.bpf.o").unwrap();
//! // Maps indexed by cookie hold 1,000 entries; `count` runs at every function.
//! let mut job = Job::builder(&bytes)
//!     .capacity(1_000, &["COUNTS"])
//!     .program("count")
//!     .build()?;
//! let libc = job.add(&Functions::in_binary("libc").patterns(["malloc", "free"]))?;
//! let ssl = job.add(&Functions::in_binary("libssl.so.3").pattern("SSL_*"))?;
//! for f in job.functions() {
//!     println!("{} {} (tier {})", f.cookie, f.name, job.tier());
//! }
//! for detach in job.remove(ssl)? {
//!     detach.wait(); // libc's functions keep their cookies and counts
//! }
//! # let _ = libc;
//! # Ok(()) }
//! ```
//!
//! Cookies come from a [`CookieRegistry`]: stable while a function stays, reused
//! after a removal only once the fresh ones are spent, and the job clears the
//! slots of the per-cookie maps it was told about before reuse.

mod error;
mod registry;

pub use error::JobError;

use std::collections::BTreeMap;

pub use registry::{CookieRegistry, RegistryFull};

use crate::attach::{AttachOptions, Attachment, DetachHandle, Tier};
use crate::object::Object;
use crate::resolve::{FunctionSet, Functions};

/// What a job was built with: the object, capacity, programs and options.
#[derive(Debug)]
pub struct JobBuilder<'a> {
    bytes: ObjectBytes<'a>,
    capacity: u32,
    per_cookie: Vec<(String, u32)>,
    sizes: Vec<(String, u32)>,
    programs: Vec<String>,
    options: AttachOptions,
}

/// The object's bytes: read where they are when static (linked per program
/// asked for, [`Object::load_static_with`]), or their code copied.
#[derive(Debug, Clone, Copy)]
enum ObjectBytes<'a> {
    Borrowed(&'a [u8]),
    Static(&'static [u8]),
}

impl<'a> JobBuilder<'a> {
    /// At most `capacity` functions at once; the maps named in `per_cookie`
    /// (arrays or hashes keyed by cookie) are sized to it and have a freed
    /// cookie's slot cleared before it is reused.
    pub fn capacity(mut self, capacity: u32, per_cookie: &[&str]) -> Self {
        self.capacity = capacity.max(1);
        self.per_cookie = per_cookie.iter().map(|s| (s.to_string(), 1)).collect();
        self
    }

    /// An array with `slots` consecutive entries per cookie (cookie `c` owns
    /// `c * slots .. (c + 1) * slots`, e.g. a histogram's buckets): sized to
    /// `capacity * slots`, a freed cookie's entries cleared before reuse. Call
    /// after [`JobBuilder::capacity`].
    pub fn per_cookie_slots(mut self, map: &str, slots: u32) -> Self {
        self.per_cookie.push((map.to_string(), slots.max(1)));
        self
    }

    /// Sets another map's `max_entries` at load (a ring buffer's size).
    pub fn map_size(mut self, map: &str, entries: u32) -> Self {
        self.sizes.push((map.to_string(), entries));
        self
    }

    /// Attaches program `name` to every function (several: in this order).
    pub fn program(mut self, name: &str) -> Self {
        self.programs.push(name.to_string());
        self
    }

    /// How to attach (scope, pinned tier, disabled features).
    pub fn options(mut self, options: AttachOptions) -> Self {
        self.options = options;
        self
    }

    /// Loads the object with its maps sized; attaches nothing yet.
    pub fn build(self) -> Result<Job, JobError> {
        let JobBuilder {
            bytes,
            capacity,
            per_cookie,
            mut sizes,
            programs,
            options,
        } = self;
        for (m, slots) in &per_cookie {
            sizes.push((m.clone(), capacity.saturating_mul(*slots)));
        }
        let sizes: Vec<(&str, u32)> = sizes.iter().map(|(m, n)| (m.as_str(), *n)).collect();
        let mut object = match bytes {
            ObjectBytes::Borrowed(bytes) => Object::load_with(bytes, &sizes)?,
            ObjectBytes::Static(bytes) => Object::load_static_with(bytes, &sizes)?,
        };
        for p in &programs {
            object.uprobe(p)?;
        }
        Ok(Job {
            object,
            per_cookie,
            programs,
            options,
            registry: CookieRegistry::new(u64::from(capacity)),
            groups: BTreeMap::new(),
            next_group: 0,
        })
    }
}

/// Names one [`Job::add`], to [`Job::remove`] it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(u64);

/// One function of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFunction<'a> {
    /// Its cookie in this job.
    pub cookie: u64,
    /// Raw symbol name.
    pub name: &'a str,
    /// The name to show: demangled, with its version where another function of
    /// its group has the same name.
    pub label: String,
    /// The group it was added with.
    pub group: GroupId,
    /// Its binary.
    pub binary: &'a std::path::Path,
}

struct Group {
    set: FunctionSet,
    cookies: Vec<u64>,
    attachments: Vec<Attachment>,
}

/// Programs attached to a registry of functions (see the module documentation).
pub struct Job {
    object: Object,
    per_cookie: Vec<(String, u32)>,
    programs: Vec<String>,
    options: AttachOptions,
    registry: CookieRegistry,
    groups: BTreeMap<GroupId, Group>,
    next_group: u64,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("programs", &self.programs)
            .field("functions", &self.registry.live())
            .field("capacity", &self.registry.capacity())
            .finish()
    }
}

impl Job {
    /// Starts a job over the eBPF object `bytes`.
    pub fn builder(bytes: &[u8]) -> JobBuilder<'_> {
        Self::builder_of(ObjectBytes::Borrowed(bytes))
    }

    /// [`Job::builder`] for an object embedded in the program
    /// (`include_bytes!`): its code is read where it is and only the
    /// programs the job runs are linked ([`Object::load_static_with`]).
    pub fn builder_static(bytes: &'static [u8]) -> JobBuilder<'static> {
        Self::builder_of(ObjectBytes::Static(bytes))
    }

    fn builder_of(bytes: ObjectBytes<'_>) -> JobBuilder<'_> {
        JobBuilder {
            bytes,
            capacity: 1,
            per_cookie: Vec::new(),
            sizes: Vec::new(),
            programs: Vec::new(),
            options: AttachOptions::default(),
        }
    }

    /// Resolves `functions` and attaches every program to them, each function
    /// with a cookie of its own. All or nothing: on error nothing of this group
    /// stays attached and its cookies return to the registry.
    pub fn add(&mut self, functions: &Functions) -> Result<GroupId, JobError> {
        let set = functions.resolve()?;
        self.add_set(set)
    }

    /// [`Job::add`] for functions already resolved.
    pub fn add_set(&mut self, set: FunctionSet) -> Result<GroupId, JobError> {
        let (cookies, reused) = self.registry.take(set.len() as u64)?;
        let result = self
            .clear_slots(&reused)
            .and_then(|()| self.attach_group(&set, &cookies));
        match result {
            Ok(attachments) => {
                let id = GroupId(self.next_group);
                self.next_group += 1;
                self.groups.insert(
                    id,
                    Group {
                        set,
                        cookies,
                        attachments,
                    },
                );
                Ok(id)
            }
            Err(e) => {
                self.registry.give_back(&cookies);
                Err(e)
            }
        }
    }

    fn attach_group(&mut self, set: &FunctionSet, cookies: &[u64]) -> Result<Vec<Attachment>, JobError> {
        let sites: Vec<_> = set
            .targets()
            .into_iter()
            .zip(cookies)
            .map(|(s, &c)| s.with_cookie(c))
            .collect();
        let mut attachments = Vec::with_capacity(self.programs.len());
        for p in &self.programs {
            let probe = self.object.uprobe(p)?;
            // On error the attachments made so far drop here: nothing stays.
            attachments.push(probe.attach_sites(sites.clone(), &self.options)?);
        }
        Ok(attachments)
    }

    fn clear_slots(&self, cookies: &[u64]) -> Result<(), JobError> {
        for (name, slots) in &self.per_cookie {
            let map = self.object.map(name)?;
            let slots = u64::from(*slots);
            for &c in cookies {
                for i in 0..slots {
                    map.clear_slot(c * slots + i)?;
                }
            }
        }
        Ok(())
    }

    /// Detaches one group (on a background thread: per-target tiers take about
    /// 0.1 s a probe); its cookies return to the registry.
    pub fn remove(&mut self, id: GroupId) -> Result<Vec<DetachHandle>, JobError> {
        let Some(group) = self.groups.remove(&id) else {
            return Ok(Vec::new());
        };
        let handles = group
            .attachments
            .into_iter()
            .map(Attachment::detach_in_background)
            .collect();
        self.registry.give_back(&group.cookies);
        Ok(handles)
    }

    /// Keeps only the functions of group `id` that `keep` accepts, each with
    /// its cookie, so what the maps hold for them goes on: the group's links
    /// are detached (synchronously), then the kept functions attached again;
    /// the others' cookies return to the registry. Calls in between (about a
    /// millisecond on the multi tier) are not seen. Returns each function's new
    /// index (`None`: dropped); nothing kept removes the group. On an attach
    /// error the group is gone.
    pub fn shrink(
        &mut self,
        id: GroupId,
        mut keep: impl FnMut(&crate::resolve::FunctionMatch) -> bool,
    ) -> Result<Vec<Option<usize>>, JobError> {
        let Some(Group {
            mut set,
            cookies,
            attachments,
        }) = self.groups.remove(&id)
        else {
            return Ok(Vec::new());
        };
        let flags: Vec<bool> = set.iter().map(&mut keep).collect();
        attachments.into_iter().for_each(Attachment::detach);
        let (mut kept, mut freed, mut map) = (Vec::new(), Vec::new(), Vec::new());
        for (&k, &c) in flags.iter().zip(&cookies) {
            if k {
                map.push(Some(kept.len()));
                kept.push(c);
            } else {
                map.push(None);
                freed.push(c);
            }
        }
        let mut i = 0;
        set.retain(|_| {
            i += 1;
            flags[i - 1]
        });
        self.registry.give_back(&freed);
        if set.is_empty() {
            return Ok(map);
        }
        match self.attach_group(&set, &kept) {
            Ok(attachments) => {
                self.groups.insert(
                    id,
                    Group {
                        set,
                        cookies: kept,
                        attachments,
                    },
                );
                Ok(map)
            }
            Err(e) => {
                self.registry.give_back(&kept);
                Err(e)
            }
        }
    }

    /// Every function attached, in cookie order within each group.
    pub fn functions(&self) -> impl Iterator<Item = JobFunction<'_>> {
        self.groups.iter().flat_map(|(id, g)| {
            g.set.iter().zip(&g.cookies).map(move |(f, &cookie)| JobFunction {
                cookie,
                name: &f.name,
                label: g.set.label(f),
                group: *id,
                binary: g.set.path(),
            })
        })
    }

    /// A group's resolved functions (index i has the group's i-th cookie).
    pub fn group(&self, id: GroupId) -> Option<(&FunctionSet, &[u64])> {
        self.groups.get(&id).map(|g| (&g.set, g.cookies.as_slice()))
    }

    /// Functions attached.
    pub fn len(&self) -> usize {
        self.registry.live() as usize
    }

    /// Whether nothing is attached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tier of the first attachment (every group runs under the same plan
    /// rules; `Multi` before anything is attached).
    pub fn tier(&self) -> Tier {
        self.groups
            .values()
            .flat_map(|g| g.attachments.first())
            .map(Attachment::tier)
            .next()
            .unwrap_or(Tier::Multi)
    }

    /// How its session programs run (native or emulated), `None` when it
    /// attaches none.
    pub fn session_mode(&self) -> Option<crate::attach::SessionMode> {
        self.attachments().find_map(Attachment::session)
    }

    /// Hits the kernel skipped on this job's probes: a uprobe program on the
    /// perf-event path (perf-link, emulated and tracefs tiers) is not run when
    /// a BPF program or a BPF map syscall already holds its CPU (the kernel's
    /// per-CPU `bpf_prog_active` guard; a map syscall holds it even while its
    /// task is preempted, so another process's map reads can cost hits). The
    /// count and times are then short by this many. The multi tier (6.6+) never
    /// skips a hit this way (`Some(0)`); the others are counted from Linux 6.7.
    /// `None` where the kernel skips hits without counting them (a per-target
    /// tier before 6.7). The programs' counters are the kernel's since load.
    ///
    /// ```no_run
    /// # fn show(job: &sonde::Job) {
    /// match job.skipped_hits() {
    ///     Some(0) => {}
    ///     Some(n) => eprintln!("{n} hits skipped by the kernel: counts are short by {n}"),
    ///     None => eprintln!("this kernel does not count skipped hits"),
    /// }
    /// # }
    /// ```
    pub fn skipped_hits(&self) -> Option<u64> {
        let counted = crate::features::kernel_at_least(6, 7);
        let mut seen = std::collections::BTreeSet::new();
        let mut total = 0;
        for a in self.attachments().filter(|a| a.tier() != Tier::Multi) {
            if !counted {
                return None;
            }
            for p in a.programs() {
                let info = p.info().ok()?;
                if seen.insert(info.id) {
                    total += info.missed;
                }
            }
        }
        Some(total)
    }

    /// Every attachment, for plans and kernel ids.
    pub fn attachments(&self) -> impl Iterator<Item = &Attachment> {
        self.groups.values().flat_map(|g| g.attachments.iter())
    }

    /// The object: its maps hold what the programs record.
    pub fn object(&self) -> &Object {
        &self.object
    }

    /// The object, to write its maps or attach its other programs (tracepoints).
    pub fn object_mut(&mut self) -> &mut Object {
        &mut self.object
    }

    /// Takes every attachment out (to detach them as the caller chooses); the
    /// job keeps its maps.
    pub fn take_attachments(&mut self) -> Vec<Attachment> {
        let mut out = Vec::new();
        for g in self.groups.values_mut() {
            out.append(&mut g.attachments);
        }
        out
    }
}
