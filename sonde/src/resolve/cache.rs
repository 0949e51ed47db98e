//! Symbol tables are read once per file: cached by device, inode, modification
//! time and size of the file as opened, so a file replaced on disk (a new build)
//! is read again, and a cached table always describes the very file opened.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use super::binary::{BinaryFile, FileId};
use super::{SymbolTable, TargetError};

type Key = (FileId, PathBuf);

fn cache() -> &'static Mutex<HashMap<Key, Arc<SymbolTable>>> {
    static CACHE: OnceLock<Mutex<HashMap<Key, Arc<SymbolTable>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The symbol table of `path`, read on first use and shared afterwards.
pub fn symbols(path: &Path, debug_root: &Path) -> Result<Arc<SymbolTable>, TargetError> {
    symbols_of(&BinaryFile::open(path)?, debug_root)
}

/// The symbol table of a binary already opened: read from it, or the cached
/// table of the same file (same device, inode, mtime and size).
pub fn symbols_of(binary: &BinaryFile, debug_root: &Path) -> Result<Arc<SymbolTable>, TargetError> {
    let key = (binary.id(), debug_root.to_path_buf());
    if let Some(t) = cache().lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        // Same device, inode, mtime and size: the cached table's mapping is of
        // this inode (the mapping pins it, so the number cannot have been reused).
        return Ok(Arc::clone(t));
    }
    // Read outside the lock: two threads may read the same file once each.
    let table = Arc::new(SymbolTable::from_binary(binary, debug_root)?);
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
