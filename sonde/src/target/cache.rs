//! Symbol tables are read once per file: cached by device, inode, modification
//! time and size, so a file replaced on disk (a new build) is read again.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use super::{SymbolTable, TargetError};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
    size: u64,
    debug_root: PathBuf,
}

fn cache() -> &'static Mutex<HashMap<Key, Arc<SymbolTable>>> {
    static CACHE: OnceLock<Mutex<HashMap<Key, Arc<SymbolTable>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The symbol table of `path`, read on first use and shared afterwards.
pub fn symbols(path: &Path, debug_root: &Path) -> Result<Arc<SymbolTable>, TargetError> {
    let meta = std::fs::metadata(path).map_err(|source| TargetError::NoSuchBinary {
        path: path.to_path_buf(),
        source,
    })?;
    let key = Key {
        dev: meta.dev(),
        ino: meta.ino(),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        size: meta.size(),
        debug_root: debug_root.to_path_buf(),
    };
    if let Some(t) = cache().lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(Arc::clone(t));
    }
    // Read outside the lock: two threads may read the same file once each.
    let table = Arc::new(SymbolTable::read_with_debug_root(path, debug_root)?);
    cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, Arc::clone(&table));
    Ok(table)
}

/// Forgets every cached table (for benchmarks that measure a cold read).
pub fn clear() {
    cache().lock().unwrap_or_else(|e| e.into_inner()).clear();
}
