//! Where a job's programs count: its settings (`record::Settings`, a
//! global-data map) and the cgroups whose processes count.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::CliError;
use crate::probes::Map;

/// Changes the job's settings (the programs' `.data.settings` global).
pub fn update_settings(
    object: &sonde::Object,
    change: impl FnOnce(&mut crate::record::Settings),
) -> Result<(), CliError> {
    let map = sonde::maps::Array::<crate::record::Settings>::new(Map::Settings.of(object)?)?;
    let mut s = map.get(0)?;
    change(&mut s);
    map.set(0, &s)?;
    Ok(())
}

/// `--cgroup` (and the agent's `cgroup = ...`): keeps the programs' `CGROUPS` map holding the cgroup's id and
/// those of its descendants, adding the cgroups created below it every half
/// second (a process of a new cgroup counts from then); stops when dropped.
pub struct CgroupWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CgroupWatch {
    /// Fills the map and turns the filter on (before any probe attaches, so
    /// only the cgroup's processes count from the first hit); `what` names the
    /// setting in errors (`--cgroup`, `cgroup = ...`).
    pub fn start(
        object: &sonde::Object,
        cgroup: sonde::cgroup::Cgroup,
        what: &'static str,
    ) -> Result<CgroupWatch, CliError> {
        let ids: sonde::maps::HashMap<u64, u8> = sonde::maps::HashMap::new(Map::Cgroups.of(object)?)?;
        let fill = move |ids: &sonde::maps::HashMap<u64, u8>| -> Result<(), CliError> {
            let subtree = cgroup.subtree_ids();
            if subtree.len() > crate::record::CGROUP_IDS as usize {
                return Err(CliError::new(format!(
                    "{} holds {} cgroups; {what} follows at most {}: name a smaller one",
                    cgroup.path().display(),
                    subtree.len(),
                    crate::record::CGROUP_IDS
                )));
            }
            for id in subtree {
                ids.insert(&id, &1)?;
            }
            Ok(())
        };
        fill(&ids)?;
        update_settings(object, |s| s.cgroup = 1)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::park_timeout(Duration::from_millis(500));
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                if let Err(e) = fill(&ids) {
                    eprintln!("sonde: {e}");
                    return;
                }
            }
        });
        Ok(CgroupWatch {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for CgroupWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
