//! A job shared by the probes of one scope: which probes use each of its
//! groups, and every function it has attached, so that a function two probes
//! name is attached once and a group goes when its last probe does.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sonde::attach::DetachHandle;
use sonde::{FunctionSet, GroupId, Job};

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
    /// The group the last [`Shared::place`] added, if it added one.
    pub(super) added: Option<GroupId>,
}

impl Shared {
    pub(super) fn new(job: Job) -> Shared {
        Shared {
            job,
            users: BTreeMap::new(),
            sites: HashMap::new(),
            added: None,
        }
    }

    /// Attaches the functions of `sets` (one per probe, all read from one
    /// file) that are not attached yet, as one group; returns each probe's
    /// places. All or nothing.
    pub(super) fn place(&mut self, sets: &[&FunctionSet]) -> Result<Vec<Vec<Place>>, String> {
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
        self.added = None;
        if !union.is_empty() {
            let offsets: Vec<u64> = union.iter().map(|f| f.file_offset).collect();
            let id = self.job.add_set(union).map_err(|e| e.to_string())?;
            for (i, off) in offsets.into_iter().enumerate() {
                self.sites.insert((dev, ino, off), (id, i));
            }
            self.users.insert(id, 0);
            self.added = Some(id);
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
    pub(super) fn release(&mut self, places: &[Place]) -> Vec<DetachHandle> {
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

    pub(super) fn drop_group(&mut self, id: GroupId) -> Vec<DetachHandle> {
        self.users.remove(&id);
        self.sites.retain(|_, (g, _)| *g != id);
        self.job.remove(id).unwrap_or_default()
    }

    /// Every group detached in the background (they wait out their grace
    /// periods together).
    pub(super) fn detach_all(&mut self) -> Vec<DetachHandle> {
        let ids: Vec<GroupId> = self.users.keys().copied().collect();
        ids.into_iter().flat_map(|id| self.drop_group(id)).collect()
    }

    /// Shrinks every group to the functions in `used` (group → indices still
    /// named by a probe), keeping their cookies: a function no probe names
    /// any more is no longer probed. Returns each shrunk group's index map.
    pub(super) fn compact(
        &mut self,
        used: &BTreeMap<GroupId, BTreeSet<usize>>,
    ) -> BTreeMap<GroupId, Vec<Option<usize>>> {
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
