//! Symbol tables are read once per file: cached by device, inode, modification
//! time and size of the file as opened, so a file replaced on disk (a new build)
//! is read again, and a cached table always describes the very file opened.
//!
//! The cache is bounded ([`CAPACITY`] tables, least recently used evicted): a
//! long-running agent that sees many binaries and rebuilds keeps a fixed size.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use super::binary::{BinaryFile, FileId};
use super::{SymbolTable, TargetError};

type Key = (FileId, PathBuf);

/// The most symbol tables kept.
pub const CAPACITY: usize = 32;

#[derive(Default)]
struct Cache {
    tables: HashMap<Key, (Arc<SymbolTable>, u64)>,
    tick: u64,
}

impl Cache {
    fn get(&mut self, key: &Key) -> Option<Arc<SymbolTable>> {
        self.tick += 1;
        let tick = self.tick;
        self.tables.get_mut(key).map(|(t, used)| {
            *used = tick;
            Arc::clone(t)
        })
    }

    fn insert(&mut self, key: Key, table: Arc<SymbolTable>) {
        self.tick += 1;
        if self.tables.len() >= CAPACITY && !self.tables.contains_key(&key) {
            let oldest = self
                .tables
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.tables.remove(&k);
            }
        }
        self.tables.insert(key, (table, self.tick));
    }
}

fn cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// How many tables are cached.
pub fn len() -> usize {
    cache().lock().unwrap_or_else(|e| e.into_inner()).tables.len()
}

/// The symbol table of `path`, read on first use and shared afterwards.
pub fn symbols(path: &Path, debug_root: &Path) -> Result<Arc<SymbolTable>, TargetError> {
    symbols_of(&BinaryFile::open(path)?, debug_root)
}

/// The symbol table of a binary already opened: read from it, or the cached
/// table of the same file (same device, inode, mtime and size).
pub fn symbols_of(binary: &BinaryFile, debug_root: &Path) -> Result<Arc<SymbolTable>, TargetError> {
    symbols_of_mapped(binary, debug_root, None)
}

/// [`symbols_of`], reading from `data` (the binary's mapping, when the caller
/// has one) on a miss.
pub(crate) fn symbols_of_mapped(
    binary: &BinaryFile,
    debug_root: &Path,
    data: Option<memmap2::Mmap>,
) -> Result<Arc<SymbolTable>, TargetError> {
    let key = (binary.id(), debug_root.to_path_buf());
    if let Some(t) = cache().lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        // Same device, inode, mtime and size: the cached table's mapping is of
        // this inode (the mapping pins it, so the number cannot have been reused).
        return Ok(t);
    }
    // Read outside the lock: two threads may read the same file once each.
    let data = match data {
        Some(d) => d,
        None => binary.map()?,
    };
    let table = Arc::new(SymbolTable::from_mapped(binary, data, debug_root)?);
    cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, Arc::clone(&table));
    Ok(table)
}

/// The cached table of a binary already opened, if there is one.
pub(crate) fn cached(binary: &BinaryFile, debug_root: &Path) -> Option<Arc<SymbolTable>> {
    let key = (binary.id(), debug_root.to_path_buf());
    cache().lock().unwrap_or_else(|e| e.into_inner()).get(&key)
}

/// Forgets every cached table (for benchmarks that measure a cold read).
pub fn clear() {
    cache().lock().unwrap_or_else(|e| e.into_inner()).tables.clear();
}
