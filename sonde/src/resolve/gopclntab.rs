//! Function names and entry addresses from a Go binary's `.gopclntab`: the
//! table the Go runtime itself uses for stack traces, kept by `-ldflags=-s -w`
//! (which drops `.symtab` and DWARF), so a stripped Go program is still traced
//! by name (`main.handle`, `net/http.(*conn).serve`).
//!
//! Layouts (Go's `runtime/symtab.go`, `debug/gosym/pclntab.go`), by the magic
//! in the first 4 bytes (little-endian, as on every target sonde supports):
//!
//! | magic | Go | header after the 8-byte prefix | function table entry |
//! | --- | --- | --- | --- |
//! | `0xfffffffb` | 1.2–1.15 | `nfunc` | `(entry, funcoff)`, pointer-sized; names relative to the table |
//! | `0xfffffffa` | 1.16–1.17 | `nfunc, nfiles, funcnameOffset, cu, filetab, pctab, pclnOffset` | `(entry, funcoff)`, pointer-sized |
//! | `0xfffffff0` / `0xfffffff1` | 1.18–1.19 / 1.20+ | `nfunc, nfiles, textStart, funcnameOffset, cu, filetab, pctab, pclnOffset` | `(entryoff, funcoff)`, `u32` each, entries relative to `textStart` |
//!
//! The function table has `nfunc + 1` entries, sorted, the last one the end
//! of the last function: a function's size is the next entry minus its own.
//! Every read is bounds-checked: a damaged table yields fewer names or none,
//! never a panic.

use std::sync::Arc;

/// A function of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GoFunction {
    /// The package-qualified name (`main.grow`, `sync.(*WaitGroup).Wait`).
    pub name: Arc<str>,
    /// Virtual address of its entry.
    pub address: u64,
    /// Bytes up to the next function's entry.
    pub size: u64,
}

/// Go versions by table magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Go12,
    Go116,
    Go118,
}

/// Reads a little-endian unsigned integer of `size` (4 or 8) bytes at `at`.
fn uint(data: &[u8], at: usize, size: usize) -> Option<u64> {
    let bytes = data.get(at..at.checked_add(size)?)?;
    Some(match size {
        4 => u64::from(u32::from_le_bytes(bytes.try_into().ok()?)),
        8 => u64::from_le_bytes(bytes.try_into().ok()?),
        _ => return None,
    })
}

/// The NUL-terminated name at `at` (at most 4 KiB; not UTF-8 is escaped later
/// like any symbol name: kept lossy here).
fn name_at(data: &[u8], at: usize) -> Option<Arc<str>> {
    let rest = data.get(at..)?;
    let len = rest.iter().take(4096).position(|&b| b == 0)?;
    Some(Arc::from(String::from_utf8_lossy(&rest[..len]).as_ref()))
}

/// The functions of the table `table` (the bytes of `.gopclntab`); `text` is
/// the address of the first text section (`runtime.text`), used by Go 1.18+
/// tables whose own `textStart` is 0 in the file (relocated at load, PIE).
/// `None` when the table is not one of the layouts above.
pub(crate) fn functions(table: &[u8], text: u64) -> Option<Vec<GoFunction>> {
    let magic = u32::from_le_bytes(table.get(..4)?.try_into().ok()?);
    let layout = match magic {
        0xffff_fffb => Layout::Go12,
        0xffff_fffa => Layout::Go116,
        0xffff_fff0 | 0xffff_fff1 => Layout::Go118,
        _ => return None,
    };
    // Two zero pad bytes, the instruction-size quantum, the pointer size.
    if table.get(4..6)? != [0, 0] {
        return None;
    }
    let ptr = usize::from(*table.get(7)?);
    if ptr != 4 && ptr != 8 {
        return None;
    }
    let word = |i: usize| uint(table, 8 + i * ptr, ptr).and_then(|v| usize::try_from(v).ok());
    let nfunc = word(0)?;
    // Where names are (relative to the table), where the function table is,
    // what entries are relative to, and the entry size.
    let (names, functab, base, field) = match layout {
        Layout::Go12 => (0, 8 + ptr, 0, ptr),
        Layout::Go116 => (word(2)?, word(6)?, 0, ptr),
        Layout::Go118 => {
            let start = uint(table, 8 + 2 * ptr, ptr)?;
            (word(3)?, word(7)?, if start == 0 { text } else { start }, 4)
        }
    };
    // `nfunc + 1` entries must fit: a bogus count is refused, not allocated.
    let entries = nfunc.checked_add(1)?;
    if functab.checked_add(entries.checked_mul(2 * field)?)? > table.len() {
        return None;
    }
    let entry = |i: usize| uint(table, functab + i * 2 * field, field).map(|e| base.wrapping_add(e));
    let mut out = Vec::with_capacity(nfunc);
    for i in 0..nfunc {
        let (Some(address), Some(end)) = (entry(i), entry(i + 1)) else {
            break;
        };
        let Some(funcoff) = uint(table, functab + i * 2 * field + field, field) else {
            break;
        };
        // The `_func` record: its entry (pointer-sized, or a u32 offset on
        // 1.18+), then the name's offset (an i32).
        let record = match layout {
            Layout::Go12 => usize::try_from(funcoff).ok(),
            _ => functab.checked_add(usize::try_from(funcoff).ok()?),
        };
        let Some(record) = record else { continue };
        let Some(name_off) = uint(table, record + field, 4).map(|v| v as u32 as i32) else {
            continue;
        };
        let Some(at) = usize::try_from(name_off).ok().and_then(|o| names.checked_add(o)) else {
            continue;
        };
        let Some(name) = name_at(table, at) else { continue };
        if end <= address || name.is_empty() {
            continue;
        }
        out.push(GoFunction {
            name,
            address,
            size: end - address,
        });
    }
    Some(out)
}

/// The functions of an ELF Go binary's `.gopclntab` section (the table of
/// internally linked Go programs; an externally linked one may fold it into
/// another section, where it is not looked for). `None` without one.
pub(crate) fn from_elf(data: &[u8]) -> Option<Vec<GoFunction>> {
    use object::{Object as _, ObjectSection as _};
    let elf = object::File::parse(data).ok()?;
    let table = elf.section_by_name(".gopclntab")?.data().ok()?;
    let text = elf.section_by_name(".text").map_or(0, |s| s.address());
    functions(table, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table of `layout` holding `funcs` (name, entry, size), laid out as
    /// Go's linker does, 8-byte pointers.
    fn table(layout: Layout, text: u64, funcs: &[(&str, u64, u64)]) -> Vec<u8> {
        let magic: u32 = match layout {
            Layout::Go12 => 0xffff_fffb,
            Layout::Go116 => 0xffff_fffa,
            Layout::Go118 => 0xffff_fff1,
        };
        let header_words = match layout {
            Layout::Go12 => 1,
            Layout::Go116 => 7,
            Layout::Go118 => 8,
        };
        let field = if layout == Layout::Go118 { 4 } else { 8 };
        let header = 8 + 8 * header_words;
        let mut names = Vec::new();
        let mut name_offs = Vec::new();
        for (n, _, _) in funcs {
            name_offs.push(names.len());
            names.extend_from_slice(n.as_bytes());
            names.push(0);
        }
        // Layout: header, function table (where Go 1.2 has it), records, names.
        let functab = header;
        let records = functab + (funcs.len() + 1) * 2 * field;
        let record_size = field + 4;
        let names_at = records + funcs.len() * record_size;
        let mut t = vec![0u8; names_at + names.len()];
        t[..4].copy_from_slice(&magic.to_le_bytes());
        t[6] = 1;
        t[7] = 8;
        let put = |t: &mut Vec<u8>, at: usize, v: u64, size: usize| {
            t[at..at + size].copy_from_slice(&v.to_le_bytes()[..size]);
        };
        put(&mut t, 8, funcs.len() as u64, 8);
        let name_base = match layout {
            Layout::Go12 => 0,
            _ => names_at,
        };
        match layout {
            Layout::Go12 => {}
            Layout::Go116 => {
                put(&mut t, 8 + 2 * 8, names_at as u64, 8);
                put(&mut t, 8 + 6 * 8, functab as u64, 8);
            }
            Layout::Go118 => {
                put(&mut t, 8 + 2 * 8, text, 8);
                put(&mut t, 8 + 3 * 8, names_at as u64, 8);
                put(&mut t, 8 + 7 * 8, functab as u64, 8);
            }
        }
        t[names_at..names_at + names.len()].copy_from_slice(&names);
        let rel = |addr: u64| if layout == Layout::Go118 { addr - text } else { addr };
        for (i, (_, entry, _)) in funcs.iter().enumerate() {
            let record = records + i * record_size;
            let funcoff = match layout {
                Layout::Go12 => record,
                _ => record - functab,
            };
            put(&mut t, functab + i * 2 * field, rel(*entry), field);
            put(&mut t, functab + i * 2 * field + field, funcoff as u64, field);
            put(&mut t, record, rel(*entry), field);
            put(&mut t, record + field, (names_at + name_offs[i] - name_base) as u64, 4);
        }
        let (_, last, size) = funcs[funcs.len() - 1];
        put(&mut t, functab + funcs.len() * 2 * field, rel(last + size), field);
        t
    }

    #[test]
    fn every_layout_gives_names_entries_and_sizes() {
        let funcs = [
            ("main.main", 0x401000, 0x40),
            ("net/http.(*conn).serve", 0x401040, 0x100),
            ("main.handle", 0x401140, 0x20),
        ];
        for layout in [Layout::Go12, Layout::Go116, Layout::Go118] {
            let got = functions(&table(layout, 0x401000, &funcs), 0x401000).expect("a table");
            let got: Vec<(&str, u64, u64)> = got.iter().map(|f| (&*f.name, f.address, f.size)).collect();
            assert_eq!(got, funcs, "{layout:?}");
        }
        // A 1.18+ table whose textStart is 0 in the file (PIE): the text
        // section's address stands in.
        let mut t = table(Layout::Go118, 0x401000, &funcs);
        t[8 + 16..8 + 24].fill(0);
        let got = functions(&t, 0x401000).expect("a table");
        assert_eq!(got[1].address, 0x401040);
    }

    #[test]
    fn damaged_tables_give_nothing_or_less_never_a_panic() {
        let funcs = [("main.main", 0x401000, 0x40), ("main.f", 0x401040, 0x10)];
        let good = table(Layout::Go118, 0x401000, &funcs);
        assert_eq!(functions(&[], 0), None);
        assert_eq!(functions(&good[..6], 0), None);
        let mut bad_magic = good.clone();
        bad_magic[0] = 0;
        assert_eq!(functions(&bad_magic, 0x401000), None);
        // A count far beyond the bytes is refused before anything is allocated.
        let mut huge = good.clone();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(functions(&huge, 0x401000), None);
        // Every truncation and every single-byte change: no panic.
        for len in 0..good.len() {
            let _ = functions(&good[..len], 0x401000);
        }
        for i in 0..good.len() {
            let mut t = good.clone();
            t[i] ^= 0xff;
            let _ = functions(&t, 0x401000);
        }
    }
}
