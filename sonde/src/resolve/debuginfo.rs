//! Separate debug files of stripped binaries, found the way gdb finds them:
//!
//! 1. by build-id: `<root>/.build-id/<first byte hex>/<rest hex>.debug`, accepted
//!    only when the file's own build-id is the binary's;
//! 2. by `.gnu_debuglink` name, in the binary's directory, its `.debug/`
//!    subdirectory and `<root>/<binary's directory>/`, accepted only when the
//!    file's CRC-32 is the one the link records.
//!
//! `<root>` is `/usr/lib/debug` unless the caller names another.

use std::path::{Path, PathBuf};

use object::Object as _;

use super::binary::BinaryFile;

/// Where distributions install debug files.
pub const DEFAULT_DEBUG_ROOT: &str = "/usr/lib/debug";

/// The outcome of a search.
#[derive(Debug)]
pub(crate) enum DebugFile {
    /// A debug file that belongs to the binary: its path and its contents as
    /// checked (the symbols are read from this very mapping).
    Found(PathBuf, memmap2::Mmap),
    /// None: the paths looked at.
    Missing(Vec<PathBuf>),
}

/// Finds the debug file of `binary`.
pub(crate) fn find(
    binary: &Path,
    build_id: Option<&[u8]>,
    debuglink: Option<&(String, u32)>,
    root: &Path,
) -> DebugFile {
    let mut looked = Vec::new();
    if let Some(id) = build_id.filter(|id| id.len() >= 2) {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let candidate = root
            .join(".build-id")
            .join(&hex[..2])
            .join(format!("{}.debug", &hex[2..]));
        if let Some(data) = map(&candidate) {
            if build_id_of(&data).as_deref() == Some(id) {
                return DebugFile::Found(candidate, data);
            }
        }
        looked.push(candidate);
    }
    if let Some((name, crc)) = debuglink {
        let dir = binary.parent().unwrap_or(Path::new("/"));
        let relative = dir.strip_prefix("/").unwrap_or(dir);
        for candidate in [
            dir.join(name),
            dir.join(".debug").join(name),
            root.join(relative).join(name),
        ] {
            if candidate == binary {
                continue;
            }
            if let Some(data) = map(&candidate) {
                let id_ok = match (build_id, build_id_of(&data)) {
                    (Some(want), Some(have)) => want == have.as_slice(),
                    _ => true,
                };
                if crc32fast::hash(&data) == *crc && id_ok {
                    return DebugFile::Found(candidate, data);
                }
            }
            looked.push(candidate);
        }
    }
    DebugFile::Missing(looked)
}

fn map(path: &Path) -> Option<memmap2::Mmap> {
    BinaryFile::open(path).ok()?.map().ok()
}

fn build_id_of(data: &[u8]) -> Option<Vec<u8>> {
    let file = object::File::parse(data).ok()?;
    file.build_id().ok().flatten().map(<[u8]>::to_vec)
}
