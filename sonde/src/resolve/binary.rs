//! One opened binary: every fact sonde uses about a file (its symbols, build-id,
//! instructions, the path it reports, its identity, the path handed to the
//! kernel) comes from this one open file, so a path that changes meaning between
//! two looks (a symlink flipped, a file replaced) cannot pair one file's offsets
//! with another file's code.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::TargetError;

/// A binary opened once.
///
/// Its symbol table ([`super::cache`]) is read from a mapping of this open file,
/// or taken from the cache when an earlier read had the same device, inode,
/// mtime and size (the cached mapping pins that inode, so the number cannot
/// have been reused). The descriptor lives as long as the targets resolved from
/// it, and is the file the kernel attaches to.
///
/// The kernel is handed `/proc/PID/fd/N` of this very file (see
/// [`BinaryFile::kernel_path`]): a magic link the kernel follows to the open
/// file itself, never to whatever the original path names by then. That path is
/// also plain ASCII, so it fits tracefs' `uprobe_events` syntax whatever the
/// real path contains (spaces, newlines).
#[derive(Debug)]
pub struct BinaryFile {
    file: File,
    path: PathBuf,
    fingerprint: Fingerprint,
    go: std::sync::OnceLock<bool>,
}

/// This process's number in the pid namespace of the `/proc` mounted here
/// (`/proc/self` names it), read once per process: a child forked later
/// reads its own (a `pthread_atfork` handler forgets the number in the
/// child), and no attach pays a `getpid`. `None` when `/proc/self` cannot be
/// read.
fn proc_pid() -> Option<u32> {
    use std::sync::atomic::{AtomicU32, Ordering};
    // The number /proc gives this process; 0: not read yet (or forked since).
    static CACHED: AtomicU32 = AtomicU32::new(0);
    static FORGET_IN_CHILD: std::sync::Once = std::sync::Once::new();
    extern "C" fn forget() {
        CACHED.store(0, Ordering::Relaxed);
    }
    // Registered before the first number is kept, so no fork can copy a
    // number without the child forgetting it.
    FORGET_IN_CHILD.call_once(|| {
        // SAFETY: registers a handler that only stores to an atomic (async-signal
        // safe, as a child of a multithreaded parent needs).
        unsafe { libc::pthread_atfork(None, None, Some(forget)) };
    });
    let cached = CACHED.load(Ordering::Relaxed);
    if cached != 0 {
        return Some(cached);
    }
    let pid: u32 = std::fs::read_link("/proc/self").ok()?.to_str()?.parse().ok()?;
    CACHED.store(pid, Ordering::Relaxed);
    Some(pid)
}

/// `/proc/PID/fd/N` of an open file, NUL-terminated, built on the stack (an
/// attach names its binary to the kernel once per link: no allocation).
pub(crate) struct KernelPath {
    /// `/proc/` (6) + a pid or `self` (at most 10) + `/fd/` (4) + a
    /// descriptor (at most 10) + NUL: 31 bytes at most.
    buf: [u8; 32],
    len: usize,
}

impl KernelPath {
    fn push(&mut self, bytes: &[u8]) {
        // Never past the end: the longest name fits, as counted above.
        let end = (self.len + bytes.len()).min(self.buf.len() - 1);
        let n = end - self.len;
        self.buf[self.len..end].copy_from_slice(&bytes[..n]);
        self.len = end;
    }

    /// Appends `n` in decimal.
    fn push_decimal(&mut self, n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut n = n;
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }

    /// The name, as the kernel takes it.
    pub(crate) fn as_c_str(&self) -> &CStr {
        // The byte after the last one pushed is still the array's zero.
        CStr::from_bytes_until_nul(&self.buf[..=self.len]).unwrap_or_default()
    }
}

/// What identifies a file's contents for caching: device, inode, mtime, size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub mtime: (i64, i64),
    pub size: u64,
}

impl BinaryFile {
    /// Opens `path` (following symlinks once, at open time) and maps it.
    /// A directory, device or empty file is refused by name.
    pub fn open(path: &Path) -> Result<Self, TargetError> {
        let no_such = |source| TargetError::NoSuchBinary {
            path: path.to_path_buf(),
            source,
        };
        // Non-blocking: opening a FIFO for reading would otherwise wait for a
        // writer forever; for a regular file the flag changes nothing.
        let file = match in_process_root(path) {
            // A container's file: resolved inside its root, whatever its
            // symlinks say.
            Some((root, relative)) => crate::sys::files::open_in_root(&root, &relative).map_err(|e| {
                no_such(std::io::Error::new(
                    e.source.kind(),
                    format!("{e} (inside {})", root.display()),
                ))
            })?,
            None => {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(path)
                    .map_err(no_such)?
            }
        };
        let meta = file.metadata().map_err(no_such)?;
        let kind = meta.file_type();
        let what = if kind.is_dir() {
            Some("a directory")
        } else if kind.is_block_device() || kind.is_char_device() {
            Some("a device")
        } else if kind.is_fifo() || kind.is_socket() {
            Some("a pipe or socket")
        } else if !kind.is_file() {
            Some("not a regular file")
        } else if meta.len() == 0 {
            Some("an empty file")
        } else {
            None
        };
        if let Some(what) = what {
            return Err(TargetError::NotABinary {
                path: path.to_path_buf(),
                what,
            });
        }
        // The name of the file actually opened (symlinks resolved by the open).
        let real =
            std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap_or_else(|_| path.to_path_buf());
        Ok(BinaryFile {
            path: real,
            fingerprint: Fingerprint::of(&meta),
            file,
            go: std::sync::OnceLock::new(),
        })
    }

    /// The path of the file that was opened (symlinks resolved).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path the kernel is given: `/proc/PID/fd/N` of this open file, which
    /// names this inode and no other, and needs no escaping. `PID` is this
    /// process as `/proc` numbers it (read from `/proc/self`, so a `/proc` of
    /// another pid namespace still names this process); the kernel walks it
    /// faster than `/proc/self/fd/N`, whose `self` is one more link to follow.
    pub fn kernel_path(&self) -> CString {
        self.kernel_name().as_c_str().to_owned()
    }

    /// [`BinaryFile::kernel_path`] without an allocation.
    pub(crate) fn kernel_name(&self) -> KernelPath {
        let mut path = KernelPath { buf: [0; 32], len: 0 };
        path.push(b"/proc/");
        match proc_pid() {
            Some(pid) => path.push_decimal(u64::from(pid)),
            None => path.push(b"self"),
        }
        path.push(b"/fd/");
        path.push_decimal(u64::try_from(self.file.as_raw_fd()).unwrap_or_default());
        path
    }

    /// Device and inode of the open file.
    pub fn inode(&self) -> (u64, u64) {
        (self.fingerprint.dev, self.fingerprint.ino)
    }

    /// Whether this is a Go program or library (its build info: a
    /// `.go.buildinfo`, `.gopclntab` or `.note.go.buildid` section, or the
    /// build-info magic where section headers were stripped). Read once.
    pub fn is_go(&self) -> bool {
        *self
            .go
            .get_or_init(|| self.map().is_ok_and(|data| go_build_info(&data)))
    }

    /// [`BinaryFile::is_go`], told from `data`: this file's contents, mapped
    /// already (a resolve reads them once; no second mapping).
    pub(crate) fn is_go_in(&self, data: &[u8]) -> bool {
        *self.go.get_or_init(|| go_build_info(data))
    }

    /// What the file's contents were when it was opened: a write in place
    /// (`cp new old`) changes the size or the change time, which no user can
    /// set back.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    pub(crate) fn id(&self) -> FileId {
        let Fingerprint {
            dev, ino, mtime, size, ..
        } = self.fingerprint;
        FileId { dev, ino, mtime, size }
    }

    /// Maps the open file read-only: only the pages read (symbol tables, a
    /// function's first bytes) are loaded, not a whole 200 MB library.
    pub(crate) fn map(&self) -> Result<memmap2::Mmap, TargetError> {
        // SAFETY: a private read-only mapping. Binaries are replaced, not rewritten
        // in place, when rebuilt or upgraded; a replacement keeps this mapping.
        unsafe { memmap2::Mmap::map(&self.file) }.map_err(|source| TargetError::NoSuchBinary {
            path: self.path.clone(),
            source,
        })
    }
}

/// `/proc/PID/root/REST` split into the process's root and `REST`: such a path
/// names a file as that process sees it, and is resolved inside that root.
fn in_process_root(path: &Path) -> Option<(PathBuf, PathBuf)> {
    use std::path::Component;
    let mut c = path.components();
    let (Some(Component::RootDir), Some(proc_), Some(pid), Some(root)) = (c.next(), c.next(), c.next(), c.next())
    else {
        return None;
    };
    let pid = pid.as_os_str().to_str()?;
    if proc_.as_os_str() != "proc" || root.as_os_str() != "root" || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let rest = c.as_path();
    Some((
        Path::new("/proc").join(pid).join("root"),
        if rest.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            rest.to_path_buf()
        },
    ))
}

/// The magic Go's linker writes at the start of the build info (Go 1.13+).
const GO_BUILDINFO_MAGIC: &[u8] = b"\xff Go buildinf:";

/// Whether ELF bytes carry Go's build info.
fn go_build_info(data: &[u8]) -> bool {
    use object::read::elf::ElfFile64;
    use object::{Object, ObjectSection};
    if let Ok(elf) = ElfFile64::<object::Endianness>::parse(data) {
        // With section headers, they say it: a program that merely holds the
        // magic as a constant (sonde itself) is not a Go program.
        if elf.sections().next().is_some() {
            return elf
                .sections()
                .any(|s| matches!(s.name(), Ok(".go.buildinfo" | ".gopclntab" | ".note.go.buildid")));
        }
    }
    // Section headers stripped: the build-info header, 16-byte aligned in the
    // file: the magic, the pointer size (4 or 8), flags (bits 0 and 1 only).
    data.chunks_exact(16)
        .any(|c| c.starts_with(GO_BUILDINFO_MAGIC) && matches!(c[GO_BUILDINFO_MAGIC.len()], 4 | 8) && c[15] & !0x3 == 0)
}

/// A file's identity and the marks any change of its contents leaves:
/// (device, inode) tell a replaced file, size and times a rewritten one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// Status change time (seconds, nanoseconds): moves on every write.
    pub ctime: (i64, i64),
}

impl Fingerprint {
    /// The fingerprint in a file's metadata.
    fn of(m: &std::fs::Metadata) -> Fingerprint {
        Fingerprint {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// The fingerprint of what `path` names now (symlinks followed).
    pub fn of_path(path: &Path) -> std::io::Result<Fingerprint> {
        std::fs::metadata(path).map(|m| Fingerprint::of(&m))
    }
}

impl PartialEq for BinaryFile {
    fn eq(&self, other: &Self) -> bool {
        self.inode() == other.inode()
    }
}

impl Eq for BinaryFile {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_path_names_the_open_file_even_after_the_name_moves() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("sonde-kpath-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let exe = dir.join("exe");
        std::fs::copy(std::env::current_exe().expect("own path"), &exe).expect("copy");
        let binary = BinaryFile::open(&exe).expect("open");
        // Another file takes the name: the kernel path still names the one opened.
        std::fs::rename(&exe, dir.join("old")).expect("rename");
        std::fs::write(&exe, b"not it").expect("write");
        let path = binary.kernel_path();
        let text = path.to_str().expect("ascii");
        assert!(
            text.starts_with(&format!("/proc/{}/fd/", proc_pid().expect("/proc/self"))),
            "{text}"
        );
        let named = std::fs::metadata(text).expect("stat the kernel path");
        assert_eq!((named.dev(), named.ino()), binary.inode());
        assert_ne!(std::fs::metadata(&exe).expect("stat").ino(), named.ino());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_forked_child_names_its_own_descriptors() {
        // The parent's number is kept; the child must not reuse it (its
        // /proc/PARENT/fd/N would name the parent's table).
        let parent = proc_pid().expect("/proc/self");
        // SAFETY: the child only reads /proc/self and leaves with _exit.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork");
        if child == 0 {
            let own = std::fs::read_link("/proc/self")
                .ok()
                .and_then(|p| p.to_str()?.parse::<u32>().ok());
            let ok = proc_pid().is_some_and(|p| Some(p) == own && p != parent);
            // SAFETY: leaves the child without running the test harness's exit.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child named {parent}'s descriptors"
        );
        assert_eq!(proc_pid(), Some(parent));
    }

    #[test]
    fn decimals_are_written_as_format_writes_them_and_never_overflow() {
        for n in [0, 7, 10, 4_294_967_295, u64::MAX] {
            let mut out = KernelPath { buf: [0; 32], len: 0 };
            out.push(b"x");
            out.push_decimal(n);
            assert_eq!(out.as_c_str().to_bytes(), format!("x{n}").as_bytes());
        }
        // Past the room (never reached by a pid and a descriptor): cut, not a panic.
        let mut out = KernelPath { buf: [0; 32], len: 0 };
        out.push_decimal(u64::MAX);
        out.push_decimal(u64::MAX);
        assert_eq!(out.as_c_str().to_bytes().len(), 31);
    }

    #[test]
    fn a_program_holding_the_go_magic_as_a_constant_is_not_go() {
        // This test binary holds GO_BUILDINFO_MAGIC in its .rodata (maybe
        // 16-byte aligned): its section headers say it is not Go.
        let me = std::fs::read(std::env::current_exe().expect("own path")).expect("read");
        assert!(!go_build_info(&me));
        // Without section headers, only a whole build-info header counts.
        let mut header = [0u8; 32];
        header[16..30].copy_from_slice(GO_BUILDINFO_MAGIC);
        header[30] = 8;
        header[31] = 2;
        assert!(go_build_info(&header));
        header[30] = 0x41;
        assert!(!go_build_info(&header), "a pointer size of 0x41 is not a header");
    }
}
