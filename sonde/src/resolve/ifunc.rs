//! GNU indirect functions (`STT_GNU_IFUNC`: `strlen`, `memcpy`, ...). The symbol
//! is a *resolver* the dynamic linker runs once, at binding, to pick an
//! implementation for this CPU (`__strlen_evex`, `__strlen_avx2`, ...); a probe
//! on the symbol counts bindings, not calls. The calls go to the
//! implementation, which is found here by asking this process's own dynamic
//! linker, when the binary is already mapped in sonde (libc always is): same
//! file, same CPU, same choice as any process on this machine that binds it
//! (unless `GLIBC_TUNABLES` steers it there). Nothing is loaded for this: a
//! binary not mapped here keeps its resolver, and says so.

use std::ffi::CString;

use super::BinaryFile;

/// One line of `/proc/self/maps` that maps a file.
struct Mapping {
    start: u64,
    end: u64,
    offset: u64,
    /// (major, minor, inode)
    id: (u32, u32, u64),
    path: String,
}

fn mappings() -> Vec<Mapping> {
    let Ok(text) = std::fs::read_to_string("/proc/self/maps") else {
        return Vec::new();
    };
    text.lines().filter_map(parse_mapping).collect()
}

/// `start-end perms offset major:minor inode path`.
fn parse_mapping(line: &str) -> Option<Mapping> {
    let mut f = line.splitn(6, ' ');
    let (start, end) = f.next()?.split_once('-')?;
    let _perms = f.next()?;
    let offset = u64::from_str_radix(f.next()?, 16).ok()?;
    let (major, minor) = f.next()?.split_once(':')?;
    let inode: u64 = f.next()?.parse().ok()?;
    let path = f.next()?.trim_start().to_string();
    if inode == 0 || !path.starts_with('/') {
        return None;
    }
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        offset,
        id: (
            u32::from_str_radix(major, 16).ok()?,
            u32::from_str_radix(minor, 16).ok()?,
            inode,
        ),
        path,
    })
}

/// The file offset in `binary` of the implementation the dynamic linker binds
/// the ifunc `name` (of `version`, if versioned) to on this machine; `None` when
/// `binary` is not mapped in this process or the answer is not in `binary`.
pub(crate) fn bound_implementation(binary: &BinaryFile, name: &str, version: Option<&str>) -> Option<u64> {
    let (dev, ino) = binary.inode();
    let id = (libc::major(dev), libc::minor(dev), ino);
    let maps = mappings();
    let mapped = maps.iter().find(|m| m.id == id)?;
    let path = CString::new(mapped.path.as_bytes()).ok()?;
    let name = CString::new(name).ok()?;
    // SAFETY: RTLD_NOLOAD only returns a handle to an object already loaded (no
    // constructor runs, nothing is mapped); the handle is closed below.
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD) };
    if handle.is_null() {
        return None;
    }
    let addr = match version.and_then(|v| CString::new(v).ok()) {
        // SAFETY: a live handle and NUL-terminated strings.
        #[cfg(target_env = "gnu")]
        Some(v) => unsafe { libc::dlvsym(handle, name.as_ptr(), v.as_ptr()) },
        // No versioned lookup outside glibc (a static musl sonde maps no
        // libc at all, so it does not get here): unknown, never a guess.
        #[cfg(not(target_env = "gnu"))]
        Some(_) => std::ptr::null_mut(),
        // SAFETY: as above.
        None => unsafe { libc::dlsym(handle, name.as_ptr()) },
    };
    // SAFETY: balances the dlopen above (the object stays loaded: it was before).
    unsafe { libc::dlclose(handle) };
    let addr = addr as u64;
    if addr == 0 {
        return None;
    }
    maps.iter()
        .find(|m| m.id == id && addr >= m.start && addr < m.end)
        .map(|m| addr - m.start + m.offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines() {
        let m = parse_mapping(
            "7f1c2a228000-7f1c2a3a1000 r-xp 00028000 fd:01 1837302    /usr/lib/x86_64-linux-gnu/libc.so.6",
        )
        .expect("a file mapping");
        assert_eq!((m.start, m.end, m.offset), (0x7f1c2a228000, 0x7f1c2a3a1000, 0x28000));
        assert_eq!(m.id, (0xfd, 1, 1837302));
        assert_eq!(m.path, "/usr/lib/x86_64-linux-gnu/libc.so.6");
        assert!(parse_mapping("7ffd1000-7ffd2000 rw-p 00000000 00:00 0    [stack]").is_none());
        assert!(parse_mapping("garbage").is_none());
    }

    #[test]
    fn libc_strlen_is_bound_to_an_implementation() {
        let libc = BinaryFile::open(std::path::Path::new("/lib/x86_64-linux-gnu/libc.so.6"));
        let Ok(libc) = libc else { return };
        let Some(offset) = bound_implementation(&libc, "strlen", Some("GLIBC_2.2.5")) else {
            panic!("libc is mapped in every test process: strlen resolves");
        };
        let table = crate::resolve::elf::SymbolTable::read(std::path::Path::new("/lib/x86_64-linux-gnu/libc.so.6"))
            .expect("libc symbols");
        let resolver = table.function("strlen").expect("strlen").file_offset;
        assert_ne!(offset, resolver, "the implementation, not the resolver");
    }
}
