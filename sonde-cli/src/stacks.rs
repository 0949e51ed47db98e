//! User stacks, captured in the program as (build id, file offset) per frame
//! (a build-id stack map: the kernel resolves each frame while the process
//! lives, so stacks of processes that exited still name their functions), and
//! symbolized here with blazesym: demangled names, file:line where debug
//! information exists.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
use sonde::maps::BuildIdFrame;

/// Maps build ids to files and symbolizes frames.
pub struct Stacks {
    symbolizer: Symbolizer,
    files: HashMap<Vec<u8>, PathBuf>,
    seen: HashSet<PathBuf>,
    pids: HashSet<u32>,
}

impl Stacks {
    /// Knows `binaries` (the traced ones) and every file this process maps
    /// (libc, the dynamic linker: the same files the traced processes use).
    pub fn new<'a>(binaries: impl IntoIterator<Item = &'a Path>) -> Stacks {
        let mut s = Stacks {
            symbolizer: Symbolizer::new(),
            files: HashMap::new(),
            seen: HashSet::new(),
            pids: HashSet::new(),
        };
        for b in binaries {
            s.add_file(b);
        }
        s.learn_maps("/proc/self/maps");
        s
    }

    fn add_file(&mut self, path: &Path) {
        if !self.seen.insert(path.to_path_buf()) {
            return;
        }
        if let Ok(Some(id)) = blazesym::helper::read_elf_build_id(&path) {
            self.files.entry(padded(&id)).or_insert_with(|| path.to_path_buf());
        }
    }

    fn learn_maps(&mut self, maps: &str) {
        let Ok(text) = std::fs::read_to_string(maps) else {
            return;
        };
        for line in text.lines() {
            if let Some(path) = line.split_whitespace().nth(5).filter(|p| p.starts_with('/')) {
                self.add_file(Path::new(path));
            }
        }
    }

    /// Learns the files process `pid` maps (once per pid; nothing if it exited).
    pub fn learn_pid(&mut self, pid: u32) {
        if self.pids.insert(pid) {
            self.learn_maps(&format!("/proc/{pid}/maps"));
        }
    }

    /// One line per frame, innermost first: `name+0xOFF (file:line)`,
    /// `[file]+0xOFF` when the file has no symbol there, `[unknown]` otherwise;
    /// control characters of names and paths escaped.
    pub fn describe(&self, frames: &[BuildIdFrame]) -> Vec<String> {
        frames
            .iter()
            .map(|f| match f {
                BuildIdFrame::Resolved { build_id, offset } => match self.files.get(&padded(build_id)) {
                    Some(path) => self.symbolize(path, *offset),
                    None => format!("[build id {}]+{offset:#x}", hex(build_id)),
                },
                BuildIdFrame::Ip(ip) => format!("[unknown] {ip:#x}"),
            })
            .map(|s| crate::human::text(&s))
            .collect()
    }

    /// [`Stacks::describe`], with the direct caller put back when the
    /// kernel's walk skipped it (a stack taken at a function's first
    /// instruction; `caller_delta` as `record::caller_frame` says): only when
    /// it lands on a function of the probed function's file, and only when
    /// the walk's next frame is not it already.
    pub fn describe_with_caller(&self, frames: &[BuildIdFrame], caller_delta: u64) -> Vec<String> {
        let mut lines = self.describe(frames);
        let Some(BuildIdFrame::Resolved { build_id, offset }) = frames.first() else {
            return lines;
        };
        let (Some(path), Some(caller)) = (
            self.files.get(&padded(build_id)),
            crate::record::caller_frame(*offset, caller_delta),
        ) else {
            return lines;
        };
        let walked = matches!(frames.get(1), Some(BuildIdFrame::Resolved { build_id: b, offset: o })
            if padded(b) == padded(build_id) && *o == caller);
        if !walked {
            if let Some(line) = self.symbol(path, caller) {
                lines.insert(1, crate::human::text(&line));
            }
        }
        lines
    }

    fn symbolize(&self, path: &Path, offset: u64) -> String {
        self.symbol(path, offset).unwrap_or_else(|| {
            let file = path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            format!("[{file}]+{offset:#x}")
        })
    }

    /// `name+0xOFF (file:line)` of the function at `offset` of `path`, if one is.
    fn symbol(&self, path: &Path, offset: u64) -> Option<String> {
        let src = Source::Elf(Elf::new(path));
        let syms = self.symbolizer.symbolize(&src, Input::FileOffset(&[offset][..])).ok()?;
        let Some(Symbolized::Sym(sym)) = syms.first() else {
            return None;
        };
        let mut s = format!("{}+{:#x}", sym.name, sym.offset);
        if let Some(ci) = &sym.code_info {
            match ci.line {
                Some(line) => s.push_str(&format!(" ({}:{line})", Path::new(&ci.file).display())),
                None => s.push_str(&format!(" ({})", Path::new(&ci.file).display())),
            }
        }
        Some(s)
    }
}

/// A build id as the kernel reports it: 20 bytes, zero-padded.
fn padded(id: &[u8]) -> Vec<u8> {
    let mut v = id.to_vec();
    v.resize(20, 0);
    v
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}
