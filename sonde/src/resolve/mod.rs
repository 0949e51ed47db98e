//! Targets: "these functions of this binary, library or process" turned into
//! file offsets with cookies.
//!
//! A uprobe takes a file offset, not a virtual address: for a symbol, the offset
//! through the `PT_LOAD` segment that holds it (`st_value - p_vaddr + p_offset`).
//!
//! Two ways in, sharing one resolver:
//! - [`Target`]: one location (symbol, symbol + offset, file offset, virtual
//!   address) with the cookie you choose;
//! - [`Functions`]: glob patterns over a binary's raw and demangled names, giving
//!   a [`FunctionSet`] whose targets carry their index as cookie.
//!
//! | piece | module |
//! |---|---|
//! | symbol tables, versions, aliases | `elf` |
//! | the implementation an ifunc binds to ([`Implementation`]) | `ifunc` |
//! | demangling and globs | `names` ([`demangle`], [`Pattern`]) |
//! | debug files of stripped binaries | [`debuginfo`] |
//! | bare library names, `/proc/PID/maps`, `ld.so.cache`, containers | [`libpath`] |
//! | one opened file per binary, handed to the kernel | [`BinaryFile`] |
//! | per-file cache (device, inode, mtime) | [`cache`] |
//! | x86-64 instruction boundaries | `boundary` |
//! | USDT probes: `.note.stapsdt`, semaphores, argument specs | [`usdt`] |
//! | probed files rewritten in place or replaced | [`watch`] |

mod binary;
pub mod cache;
pub mod debuginfo;
mod demangle;
mod elf;
mod error;
mod gopclntab;
mod ifunc;
pub mod libpath;
mod lookup;
mod name;
mod names;
mod query;
mod read;
mod request;
mod set;
mod site;
pub mod usdt;
pub mod watch;

use std::path::Path;
use std::sync::Arc;

pub use binary::BinaryFile;
pub use demangle::demangle;
pub use elf::{FunctionSymbol, SymbolTable};
pub use error::{shorten, TargetError};
pub use libpath::find_binary;
pub use name::Name;
pub use names::Pattern;
pub use query::Functions;
pub use request::{Location, Target};
pub use set::{FunctionMatch, FunctionSet, Implementation};
pub use site::ProbeSite;

use crate::arch::host;
pub(crate) use crate::arch::host::go_return_sites;

/// Resolves targets to probe sites. Each binary is opened once and its
/// symbols read once ([`cache`]); bare library names are looked up
/// ([`find_binary`]). Every location is proven to start an instruction the
/// kernel can probe.
pub fn sites(targets: &[Target]) -> Result<Vec<ProbeSite>, TargetError> {
    let mut out = Vec::with_capacity(targets.len());
    // One open file and table per (binary as named, pid): 10,000 targets of one
    // binary cost one open, one stat and one lookup of the cache.
    type Opened = (Arc<BinaryFile>, Arc<SymbolTable>);
    let mut opened: Vec<((&Path, Option<u32>), Opened)> = Vec::new();
    for t in targets {
        let key = (t.binary(), t.pid());
        let (binary, table) = match opened.iter().find(|(k, _)| *k == key) {
            Some((_, o)) => o.clone(),
            None => {
                let path = find_binary(t.binary(), t.pid())?;
                let binary = Arc::new(BinaryFile::open(&path)?);
                let table = cache::symbols_of(&binary, Path::new(debuginfo::DEFAULT_DEBUG_ROOT))?;
                opened.push((key, (Arc::clone(&binary), Arc::clone(&table))));
                (binary, table)
            }
        };
        let (offset, symbol) = locate(&table, t)?;
        if let Some(reason) = table.refusal_at(offset) {
            return Err(TargetError::NotProbeable {
                symbol: symbol.clone().unwrap_or_else(|| format!("offset {offset:#x}")),
                binary: table.path().to_path_buf(),
                reason,
            });
        }
        out.push(ProbeSite {
            binary,
            offset,
            ref_ctr_offset: t.ref_ctr_offset(),
            attach_cookie: t.cookie_value(),
            value: t.cookie_value(),
            symbol: symbol.map(Name::from),
            nop5_offset: None,
            function: None,
        });
    }
    Ok(out)
}

/// The file offset of `t` in `table`'s binary, proven to start an instruction.
fn locate(table: &SymbolTable, t: &Target) -> Result<(u64, Option<String>), TargetError> {
    let path = || table.path().to_path_buf();
    let (address, what) = match t.location() {
        Location::Symbol { name, offset } => {
            let f = table.function(name)?;
            let (_, extent) = table
                .function_holding(f.address)
                .filter(|(g, _)| g.address == f.address)
                .unwrap_or((f, f.size));
            if *offset > 0 && (extent == 0 || *offset >= extent) {
                return Err(TargetError::OffsetOutsideSymbol {
                    symbol: f.name.to_string(),
                    offset: *offset,
                    size: extent,
                    binary: path(),
                });
            }
            check_boundary(table, f, extent, *offset)?;
            return Ok((f.file_offset + offset, Some(f.name.to_string())));
        }
        Location::FileOffset(off) => {
            if *off >= table.file_size() {
                return Err(TargetError::BadFileOffset {
                    offset: *off,
                    size: table.file_size(),
                    binary: path(),
                });
            }
            let what = format!("file offset {off:#x}");
            let address = table.code_address_of(*off).ok_or_else(|| TargetError::NotCode {
                location: what.clone(),
                binary: path(),
            })?;
            (address, what)
        }
        Location::VirtualAddress(addr) => {
            let what = format!("address {addr:#x}");
            let Some(off) = table.file_offset_of(*addr) else {
                return Err(TargetError::NotMapped {
                    symbol: format!("{addr:#x}"),
                    address: *addr,
                    binary: path(),
                });
            };
            if table.code_address_of(off) != Some(*addr) {
                return Err(TargetError::NotCode {
                    location: what,
                    binary: path(),
                });
            }
            (*addr, what)
        }
    };
    let offset = table.file_offset_of(address).unwrap_or_default();
    match table.function_holding(address) {
        Some((f, extent)) => {
            check_boundary(table, f, extent, address - f.address)?;
            let symbol = if address == f.address {
                f.name.to_string()
            } else {
                format!("{}+{:#x}", f.name, address - f.address)
            };
            Ok((offset, Some(symbol)))
        }
        None if t.is_unverified() => Ok((offset, None)),
        None => Err(TargetError::Unverifiable {
            location: what,
            binary: path(),
        }),
    }
}

/// A USDT probe's site must be the one-byte `nop` `<sys/sdt.h>` emits (x86-64;
/// the 4-byte `nop` on arm64) and, inside a known function, start an
/// instruction decoded from the function's entry; its semaphore (a `short` the
/// kernel increments) must lie in the file, 2-byte aligned.
pub(super) fn check_usdt_site(table: &SymbolTable, u: &usdt::UsdtProbe) -> Result<(), TargetError> {
    let refuse = |reason: String| TargetError::BadUsdtSite {
        probe: u.label(),
        binary: table.path().to_path_buf(),
        reason,
    };
    // Inside an instruction first: the more basic fault, and on arm64 (fixed
    // 4-byte instructions) a site that is not aligned cannot hold the nop.
    if let Some((f, extent)) = table.function_holding(u.address) {
        check_boundary(table, f, extent, u.address - f.address).map_err(|e| refuse(e.to_string()))?;
    }
    let nop = host::USDT_NOP;
    match table.bytes_at(u.file_offset, nop.len() as u64) {
        Some(b) if b == nop => {}
        Some(b) if b.len() == nop.len() => {
            return Err(refuse(format!(
                "its site at file offset {:#x} holds {b:02x?}, not the nop <sys/sdt.h> places there",
                u.file_offset
            )))
        }
        _ => {
            return Err(refuse(format!(
                "its site at file offset {:#x} is past the end of the file",
                u.file_offset
            )))
        }
    }
    if let Some(sem) = u.semaphore {
        if sem.saturating_add(2) > table.file_size() {
            return Err(refuse(format!(
                "its semaphore at file offset {sem:#x} is past the end of the file ({} bytes)",
                table.file_size()
            )));
        }
        if sem % 2 != 0 {
            return Err(refuse(format!(
                "its semaphore at file offset {sem:#x} is not 2-byte aligned (the kernel counts in a short)"
            )));
        }
    }
    Ok(())
}

/// An offset into `f` (whose code spans `extent` bytes) must start an
/// instruction: decoded from the function's entry on x86-64, a multiple of the
/// fixed instruction size elsewhere.
/// The file offset of the 5-byte nop right after USDT site `u`'s 1-byte nop,
/// when the site is written `nop; nop5`, no argument reads `%rip`, and no
/// direct branch of the function holding it lands on the nop5 (x86-64; the
/// site itself was checked by [`check_usdt_site`]). See
/// [`FunctionMatch::nop5_offset`].
pub(super) fn usdt_nop5(table: &SymbolTable, u: &usdt::UsdtProbe) -> Option<u64> {
    if host::NOP5.is_empty() {
        return None;
    }
    let bytes = table.bytes_at(u.file_offset, (host::USDT_NOP.len() + host::NOP5.len()) as u64)?;
    if bytes[..host::USDT_NOP.len()] != *host::USDT_NOP || bytes[host::USDT_NOP.len()..] != host::NOP5 {
        return None;
    }
    // An argument read relative to the instruction pointer would move too.
    let reads_ip = u.args.as_ref().is_ok_and(|args| {
        args.iter().any(|a| {
            matches!(a.location,
                usdt::UsdtArgLocation::Reg { pt_regs_offset } | usdt::UsdtArgLocation::Mem { pt_regs_offset, .. }
                    if pt_regs_offset == host::PT_REGS_IP)
        })
    });
    if reads_ip {
        return None;
    }
    // A branch straight to the nop5 would fire the probe without passing the nop.
    if let Some((f, extent)) = table.function_holding(u.address) {
        let code = table.bytes_at(f.file_offset, extent).unwrap_or_default();
        if host::direct_branch_to(code, f.address, u.address + host::USDT_NOP.len() as u64) {
            return None;
        }
    }
    Some(u.file_offset + host::USDT_NOP.len() as u64)
}

fn check_boundary(table: &SymbolTable, f: &FunctionSymbol, extent: u64, offset: u64) -> Result<(), TargetError> {
    if offset == 0 {
        return Ok(());
    }
    let inside = |instruction| TargetError::NotInstructionBoundary {
        symbol: f.name.to_string(),
        offset,
        instruction,
        binary: table.path().to_path_buf(),
    };
    let code = table.bytes_at(f.file_offset, extent).unwrap_or_default();
    host::check_boundary(code, f.address, offset).map_err(inside)
}
