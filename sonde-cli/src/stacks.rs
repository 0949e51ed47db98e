//! User stacks, captured in the program as (build id, file offset) per frame
//! (a build-id stack map: the kernel resolves each frame while the process
//! lives, so stacks of processes that exited still name their functions), and
//! symbolized here with blazesym: demangled names, file:line where debug
//! information exists.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
use sonde::maps::{BuildIdFrame, MapError, StackTraceMap};

use crate::probes::Map;
use crate::record::STACK_IPS_TAG;

/// What a report shows for a stack the kernel did not store.
pub const NOT_CAPTURED: &str = "[stack not captured]";

/// The program's two stack maps: `STACKS` (frames as build id and offset) and
/// `STACK_IPS`, the stacks `STACKS` refused, as addresses.
///
/// `STACKS` refuses a stack (`-EEXIST`) when its bucket holds the same
/// addresses resolved otherwise: the kernel resolves a whole stack to bare
/// addresses when it cannot take the process's mmap lock at once, which
/// another tracer attaching to any file the process maps (libc included)
/// holds for a moment. Such a stack is kept in `STACK_IPS` (same buckets) and
/// named here through its twin in `STACKS`.
pub struct StackMaps {
    stacks: StackTraceMap,
    ips: StackTraceMap,
    /// Per cookie, where its probe lies ([`Anchor`]).
    anchors: HashMap<u64, Anchor>,
}

/// Where a traced function's probe lies in its file. A stack taken at a
/// probe starts at the probe itself, so for a stack the kernel left as
/// addresses, `address − probe offset` of frame 0 is the file's load bias in
/// that process: every frame in the same segment is named by it, exactly.
struct Anchor {
    build_id: Vec<u8>,
    probe_offset: u64,
    /// File offsets of the segment holding the probe.
    segment: Range<u64>,
}

impl Anchor {
    /// Names `frames`' addresses in the probe's segment, when frame 0 (the
    /// probe) is an address.
    fn name(&self, frames: &mut [BuildIdFrame]) {
        let Some(&BuildIdFrame::Ip(first)) = frames.first() else {
            return;
        };
        let bias = first.wrapping_sub(self.probe_offset);
        for frame in frames.iter_mut() {
            if let BuildIdFrame::Ip(ip) = *frame {
                let offset = ip.wrapping_sub(bias);
                if self.segment.contains(&offset) {
                    *frame = BuildIdFrame::Resolved {
                        build_id: self.build_id.clone(),
                        offset,
                    };
                }
            }
        }
    }
}

impl StackMaps {
    /// Both maps of `object`, the probes of `functions`, and the files
    /// their frames name: the traced binaries (each read once, here) and
    /// every file this process maps (libc, the dynamic linker: the same files
    /// the traced processes use). A traced file with no build id is named by
    /// a key of its path.
    pub fn of(
        object: &sonde::Object,
        functions: &[crate::report::SessionFunction<'_>],
    ) -> Result<(StackMaps, Stacks), MapError> {
        let mut known = Stacks {
            symbolizer: Symbolizer::new(),
            files: HashMap::new(),
            seen: HashSet::new(),
            pids: HashSet::new(),
        };
        let mut files: HashMap<&Path, Option<(Vec<u8>, Segments)>> = HashMap::new();
        let mut anchors = HashMap::new();
        for f in functions {
            let path = f.set.path();
            let file = files.entry(path).or_insert_with(|| known.add_traced(path));
            // An ifunc's implementation and a `nop; nop5` site are probed
            // elsewhere than the probe offset says.
            if f.function.implementation.is_some() || f.function.nop5_offset.is_some() {
                continue;
            }
            let Some((key, segments)) = file else {
                continue;
            };
            let probe_offset = f.function.probe_offset();
            if let Some(segment) = segments.iter().find(|r| r.contains(&probe_offset)) {
                anchors.insert(
                    f.cookie,
                    Anchor {
                        build_id: key.clone(),
                        probe_offset,
                        segment: segment.clone(),
                    },
                );
            }
        }
        known.learn_maps("/proc/self/maps");
        let maps = StackMaps {
            stacks: StackTraceMap::new(Map::Stacks.of(object)?)?,
            ips: StackTraceMap::new(Map::StackIps.of(object)?)?,
            anchors,
        };
        Ok((maps, known))
    }

    /// Names the frames left as addresses that lie in the segment of
    /// `cookie`'s probe (see [`Anchor`]), when frame 0 is an address.
    fn anchored(&self, cookie: u64, frames: &mut [BuildIdFrame]) {
        if let Some(a) = self.anchors.get(&cookie) {
            a.name(frames);
        }
    }

    /// The frames of stack `id` as the program recorded it (an id in
    /// `STACKS`, or one in `STACK_IPS` with `STACK_IPS_TAG`), with the id the
    /// same stack has in `STACKS` when it is there (else `id`); `None` when it
    /// was not captured (a negative id: the kernel's errno) or is not there.
    pub fn frames(&self, id: i64) -> Option<(i64, Vec<BuildIdFrame>)> {
        let bucket = u32::try_from(id & (STACK_IPS_TAG - 1)).ok()?;
        match id {
            ..0 => None,
            id if id & STACK_IPS_TAG == 0 => Some((id, self.stacks.get_build_ids(bucket).ok()??)),
            _ => {
                let ips = self.ips.get(bucket).ok()??;
                let twin = self.stacks.get_build_ids(bucket).ok().flatten();
                Some(match same_stack(&ips, twin) {
                    Ok(frames) => (i64::from(bucket), frames),
                    Err(bare) => (id, bare),
                })
            }
        }
    }

    /// Stack `id` of a call of `cookie` named, one line per frame
    /// ([`Stacks::describe_with_caller`]), or [`NOT_CAPTURED`]; with the id
    /// it has in `STACKS` when it is there (one stack, one row: see
    /// [`StackMaps::frames`]).
    pub fn describe(&self, known: &Stacks, cookie: u64, id: i64, caller_delta: u64) -> (i64, Vec<String>) {
        match self.frames(id) {
            Some((id, mut frames)) => {
                self.anchored(cookie, &mut frames);
                (id, known.describe_with_caller(&frames, caller_delta))
            }
            None => (id, vec![NOT_CAPTURED.to_string()]),
        }
    }
}

/// The stack whose addresses are `ips` as (build id, offset) frames, taken
/// from `twin` (the stack in the same bucket of `STACKS`) when it is the same
/// stack: as many frames, each either the same address or a (build id,
/// offset) whose file lies at one load bias (address − offset) for all of
/// that file's frames (`Ok`). Otherwise the addresses alone (`Err`).
fn same_stack(ips: &[u64], twin: Option<Vec<BuildIdFrame>>) -> Result<Vec<BuildIdFrame>, Vec<BuildIdFrame>> {
    let bare = || ips.iter().map(|&ip| BuildIdFrame::Ip(ip)).collect();
    let Some(twin) = twin.filter(|t| t.len() == ips.len()) else {
        return Err(bare());
    };
    let mut bias: HashMap<&[u8], u64> = HashMap::new();
    let agrees = ips.iter().zip(&twin).all(|(&ip, frame)| match frame {
        BuildIdFrame::Ip(at) => *at == ip,
        BuildIdFrame::Resolved { build_id, offset } => {
            *bias.entry(build_id.as_slice()).or_insert(ip.wrapping_sub(*offset)) == ip.wrapping_sub(*offset)
        }
    });
    if agrees {
        Ok(twin)
    } else {
        Err(bare())
    }
}

/// Maps build ids to files and symbolizes frames.
pub struct Stacks {
    symbolizer: Symbolizer,
    files: HashMap<Vec<u8>, PathBuf>,
    seen: HashSet<PathBuf>,
    pids: HashSet<u32>,
}

impl Stacks {
    /// Knows traced binary `path` by its build id (or, with none, by a key of
    /// its path): its key and the file ranges of its loadable segments, from
    /// one parse; `None` when `object` cannot read it (then known as
    /// blazesym reads it, if it can).
    fn add_traced(&mut self, path: &Path) -> Option<(Vec<u8>, Segments)> {
        let Some((build_id, segments)) = file_segments(path) else {
            self.add_file(path);
            return None;
        };
        self.seen.insert(path.to_path_buf());
        let key = match build_id {
            Some(id) => {
                let key = padded(&id);
                self.files.entry(key.clone()).or_insert_with(|| path.to_path_buf());
                key
            }
            None => self.path_key(path),
        };
        Some((key, segments))
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

    /// The key frames of `path` carry when it has no build id (see
    /// [`Anchor`]): twelve zero bytes and a hash of the path, which no
    /// kernel-reported build id is.
    fn path_key(&mut self, path: &Path) -> Vec<u8> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        path.hash(&mut h);
        let mut key = vec![0u8; 12];
        key.extend_from_slice(&h.finish().to_be_bytes());
        self.files.insert(key.clone(), path.to_path_buf());
        key
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

/// `path`'s build id, if it has one, and the file ranges of its loadable
/// segments; `None` when it is not an ELF file it can read.
fn file_segments(path: &Path) -> Option<(Option<BuildId>, Segments)> {
    use ::object::{Object, ObjectSegment};
    let cache = ::object::ReadCache::new(std::fs::File::open(path).ok()?);
    let elf = ::object::File::parse(&cache).ok()?;
    // From the same parse: one open of the file, not two.
    let build_id = elf.build_id().ok()?.map(<[u8]>::to_vec);
    let segments = elf
        .segments()
        .map(|s| {
            let (start, len) = s.file_range();
            start..start.saturating_add(len)
        })
        .collect();
    Some((build_id, segments))
}

/// A file's GNU build id (its bytes).
type BuildId = Vec<u8>;

/// A file's loadable segments, as file offsets.
type Segments = Vec<Range<u64>>;

/// A build id as the kernel reports it: 20 bytes, zero-padded.
fn padded(id: &[u8]) -> Vec<u8> {
    let mut v = id.to_vec();
    v.resize(20, 0);
    v
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(id: u8, offset: u64) -> BuildIdFrame {
        BuildIdFrame::Resolved {
            build_id: vec![id; 20],
            offset,
        }
    }

    #[test]
    fn a_refused_stack_is_named_by_its_twin_when_every_frame_agrees() {
        // Binary 1 at bias 0x5000, libc (2) at 0x7f0000: the same stack.
        let ips = [0x5100, 0x5180, 0x7f0200, 0x7f0300, 0x9999];
        let twin = vec![
            at(1, 0x100),
            at(1, 0x180),
            at(2, 0x200),
            at(2, 0x300),
            BuildIdFrame::Ip(0x9999),
        ];
        assert_eq!(same_stack(&ips, Some(twin.clone())), Ok(twin));
    }

    #[test]
    fn frames_left_as_addresses_are_named_from_the_probe_in_its_segment() {
        // Probe at file offset 0x1159 of a binary whose text is 0x1000..0x2000,
        // mapped at bias 0x5555_5555_4000 (frame 0 is the probe).
        let anchor = Anchor {
            build_id: vec![7; 20],
            probe_offset: 0x1159,
            segment: 0x1000..0x2000,
        };
        let bias = 0x5555_5555_4000;
        let mut frames = vec![
            BuildIdFrame::Ip(bias + 0x1159),
            BuildIdFrame::Ip(bias + 0x1180),
            BuildIdFrame::Ip(0x7f00_0000_1234), // libc: left as it is
            BuildIdFrame::Ip(bias + 0x2000),    // past the segment: left
        ];
        anchor.name(&mut frames);
        assert_eq!(
            frames,
            [
                at(7, 0x1159),
                at(7, 0x1180),
                BuildIdFrame::Ip(0x7f00_0000_1234),
                BuildIdFrame::Ip(bias + 0x2000)
            ]
        );
        // Frame 0 resolved already: nothing to anchor on, nothing changed.
        let mut resolved = vec![at(1, 0x10), BuildIdFrame::Ip(bias + 0x1180)];
        anchor.name(&mut resolved);
        assert_eq!(resolved, [at(1, 0x10), BuildIdFrame::Ip(bias + 0x1180)]);
    }

    #[test]
    fn a_refused_stack_keeps_its_addresses_when_its_twin_is_another_stack() {
        let bare = |ips: &[u64]| ips.iter().map(|&ip| BuildIdFrame::Ip(ip)).collect::<Vec<_>>();
        let twin = vec![at(1, 0x100), at(1, 0x180), at(2, 0x200)];
        // One frame of binary 1 elsewhere: its two frames disagree on the bias.
        let other = [0x5100, 0x5190, 0x7f0200];
        assert_eq!(same_stack(&other, Some(twin.clone())), Err(bare(&other)));
        // Another depth.
        let shorter = [0x5100, 0x5180];
        assert_eq!(same_stack(&shorter, Some(twin.clone())), Err(bare(&shorter)));
        // An address frame that differs.
        let ips = [0x5100, 0x5180, 0x7f0200];
        let with_ip = vec![at(1, 0x100), at(1, 0x180), BuildIdFrame::Ip(0x7f0201)];
        assert_eq!(same_stack(&ips, Some(with_ip)), Err(bare(&ips)));
        // No twin at all.
        assert_eq!(same_stack(&ips, None), Err(bare(&ips)));
    }
}
