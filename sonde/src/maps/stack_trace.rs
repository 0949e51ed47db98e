use std::os::fd::AsFd;

use super::{Map, MapError, BPF_MAP_TYPE_STACK_TRACE};
use crate::sys::bpf;

/// One frame of a build-id stack map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildIdFrame {
    /// The file mapped there (by its GNU build id, 20 bytes for SHA-1 ids,
    /// zero-padded) and the offset in it.
    Resolved {
        /// The build id.
        build_id: Vec<u8>,
        /// File offset of the instruction.
        offset: u64,
    },
    /// Only the address (the kernel could not look the mapping up).
    Ip(u64),
}

/// A `BPF_MAP_TYPE_STACK_TRACE` map (Linux 4.6): stacks the program stored with
/// `bpf_get_stackid` (`sonde_ebpf::maps::StackTrace`), each an array of
/// instruction addresses, innermost first, read by id.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let object: sonde::Object = unimplemented!();
/// let stacks = sonde::maps::StackTraceMap::new(object.map("STACKS")?)?;
/// if let Some(frames) = stacks.get(3)? {
///     for ip in frames {
///         println!("{ip:#x}");
///     }
/// }
/// # Ok(()) }
/// ```
pub struct StackTraceMap {
    map: Map,
}

impl StackTraceMap {
    /// A view of a stack trace map.
    pub fn new(map: Map) -> Result<Self, MapError> {
        let def = map.def();
        map.check(
            &[BPF_MAP_TYPE_STACK_TRACE],
            4,
            def.value_size as usize,
            "a stack trace map",
        )?;
        if def.value_size == 0 || !def.value_size.is_multiple_of(8) {
            return Err(MapError::Mismatch {
                name: map.name().to_string(),
                actual: format!("a stack trace map with {}-byte values", def.value_size),
                wanted: "8-byte frames".into(),
            });
        }
        Ok(StackTraceMap { map })
    }

    /// The frames of stack `id` (innermost first; the kernel's zero padding
    /// dropped), or `None` if no stack has that id.
    pub fn get(&self, id: u32) -> Result<Option<Vec<u64>>, MapError> {
        let mut v = vec![0u8; self.map.def().value_size as usize];
        let found = bpf::map_lookup_elem(self.map.as_fd(), &id.to_ne_bytes(), &mut v).map_err(|e| self.map.err(e))?;
        if !found {
            return Ok(None);
        }
        let frames = v
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or_default()))
            .take_while(|&ip| ip != 0)
            .collect();
        Ok(Some(frames))
    }

    /// The frames of stack `id` of a build-id stack map
    /// (`StackTrace::with_build_ids` on the eBPF side), innermost first.
    pub fn get_build_ids(&self, id: u32) -> Result<Option<Vec<BuildIdFrame>>, MapError> {
        let mut v = vec![0u8; self.map.def().value_size as usize];
        let found = bpf::map_lookup_elem(self.map.as_fd(), &id.to_ne_bytes(), &mut v).map_err(|e| self.map.err(e))?;
        if !found {
            return Ok(None);
        }
        let mut frames = Vec::new();
        for f in v.chunks_exact(32) {
            let status = i32::from_ne_bytes([f[0], f[1], f[2], f[3]]);
            let mut word = [0u8; 8];
            word.copy_from_slice(&f[24..32]);
            let value = u64::from_ne_bytes(word);
            match status {
                // BPF_STACK_BUILD_ID_VALID
                1 => frames.push(BuildIdFrame::Resolved {
                    build_id: f[4..24].to_vec(),
                    offset: value,
                }),
                // BPF_STACK_BUILD_ID_IP: the kernel could not look the file up.
                2 => frames.push(BuildIdFrame::Ip(value)),
                // BPF_STACK_BUILD_ID_EMPTY: past the last frame.
                _ => break,
            }
        }
        Ok(Some(frames))
    }

    /// Forgets stack `id` (its bucket can hold another stack); `Ok(false)` if absent.
    pub fn remove(&self, id: u32) -> Result<bool, MapError> {
        bpf::map_delete_elem(self.map.as_fd(), &id.to_ne_bytes()).map_err(|e| self.map.err(e))
    }
}
