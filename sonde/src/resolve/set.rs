//! What a query found: the functions of one binary file, each with its
//! cookie, and the table they were read from.

use super::name::Name;
use std::path::Path;
use std::sync::Arc;

use super::{BinaryFile, FunctionSymbol, ProbeSite, SymbolTable, Target};

/// One function a [`Functions`](super::Functions) query selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionMatch {
    /// Its cookie: its index in the set.
    pub cookie: u64,
    /// Raw symbol name (without version); its demangled form is
    /// [`FunctionSet::demangled`] (computed on demand: a set can hold 100k names).
    pub name: Name,
    /// File offset of its entry (for an ifunc whose implementation is known,
    /// the implementation's entry): its identity.
    pub file_offset: u64,
    /// Bytes past the entry where it is probed ([`FunctionMatch::probe_offset`]):
    /// 4 when the function starts with `endbr64` (x86-64 built with
    /// `-fcf-protection`) before a `push` the kernel emulates, and no branch
    /// of the function lands between: the kernel single-steps `endbr64` out of
    /// line, a second trap per hit (measured 28 µs a hit against 1.2 µs on the
    /// `push` here). Counts, arguments, stacks and returns are the same there:
    /// `endbr64` changes no register, flag, stack or memory. Else 0.
    pub entry_skip: u64,
    /// For a GNU indirect function (`strlen`, `memcpy`: the symbol is a resolver
    /// run once at binding), the implementation calls really reach on this
    /// machine, probed instead of the resolver; `None` for other functions, or
    /// when it cannot be told (the binary is not mapped in this process: then
    /// the resolver is probed, and counts bindings).
    pub implementation: Option<Implementation>,
    /// For a USDT probe point (pattern `usdt:PROVIDER:NAME`): its note (the
    /// semaphore is set through the attachment, the arguments are read as
    /// its specs say). Boxed: most matches are functions, and a set can
    /// hold 100k of them.
    pub usdt: Option<Box<super::usdt::UsdtProbe>>,
    /// For a USDT site written `nop; nop5` (as libbpf's `usdt.h` writes them):
    /// the file offset of the 5-byte nop after its 1-byte nop, where the
    /// attachment moves the probe on kernels that turn a uprobe on a 5-byte
    /// nop into a call with no trap ([`crate::Feature::UprobeNop5`], x86-64
    /// 6.18+). `None` for other sites, and for a site whose arguments read
    /// `%rip` (it would see the other address).
    pub nop5_offset: Option<u64>,
    /// Its index in the set's symbol table ([`FunctionSet::symbol`]);
    /// `usize::MAX` for a USDT point.
    pub(super) index: usize,
    /// Its symbol's size in bytes (0 unknown, and for a USDT point): the
    /// extent [`FunctionSet::targets`] hands on, kept here so that making
    /// targets reads no symbol table (measured: reading it there made a cold
    /// resolve and targets of 10,000 names 1.74–1.79 → 2.13–2.25 ms).
    pub(super) size: u64,
}

impl FunctionMatch {
    /// The file offset its probes are placed at: its entry plus
    /// [`FunctionMatch::entry_skip`].
    pub fn probe_offset(&self) -> u64 {
        self.file_offset + self.entry_skip
    }
}

/// The implementation an ifunc binds to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Implementation {
    /// Its name (`__strlen_evex`), when the symbol table has one (libc's
    /// implementations are named in its debug file: Debian's `libc6-dbg`).
    pub name: Option<Name>,
    /// File offset of its entry.
    pub file_offset: u64,
    /// Its size in bytes (0 when unnamed or unknown).
    pub size: u64,
}

impl Implementation {
    /// Its name, or its offset (`0x167ac0`) when unnamed.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => n.to_string(),
            None => format!("{:#x}", self.file_offset),
        }
    }
}

/// The functions a query resolved to, in pattern order (then address order),
/// each once.
#[derive(Debug, Clone)]
pub struct FunctionSet {
    pub(super) binary: Arc<BinaryFile>,
    pub(super) table: Arc<SymbolTable>,
    /// How many functions of the set show each display name (for
    /// [`FunctionSet::label`]), counted on first use: one pass, not one per label.
    pub(super) names: std::sync::OnceLock<rustc_hash::FxHashMap<String, u32>>,
    pub(super) functions: Vec<FunctionMatch>,
    pub(super) skipped: Vec<(String, &'static str)>,
}

impl FunctionSet {
    /// The binary's canonical path.
    pub fn path(&self) -> &Path {
        self.binary.path()
    }

    /// Whether the binary is a Go program (see
    /// [`BinaryFile::is_go`](super::BinaryFile::is_go)): its functions are
    /// probed past their stack check, never at return.
    pub fn is_go(&self) -> bool {
        self.binary.is_go()
    }

    /// Device and inode of the file that was read: a path whose `stat` now
    /// gives another pair names a replaced binary (a package upgrade).
    pub fn inode(&self) -> (u64, u64) {
        self.binary.inode()
    }

    /// The read file's identity and contents marks: compare with
    /// [`watch::Fingerprint::change_at`](super::watch::Fingerprint::change_at)
    /// to learn it was rewritten in place or replaced.
    pub fn fingerprint(&self) -> super::watch::Fingerprint {
        self.binary.fingerprint()
    }

    /// Keeps the functions `keep` accepts (their cookies renumbered: the
    /// index stays the cookie).
    pub fn retain(&mut self, mut keep: impl FnMut(&FunctionMatch) -> bool) {
        self.functions.retain(|f| keep(f));
        for (i, f) in self.functions.iter_mut().enumerate() {
            f.cookie = i as u64;
        }
        self.names = std::sync::OnceLock::new();
    }

    /// Adds the functions of `other` (a set of the same opened file) that are
    /// not here yet, by file offset; `false` (nothing added) when `other` was
    /// read from another file, or when the two sets were resolved from two
    /// partial tables of it (a few exact names each, see
    /// [`Functions::whole_table`](super::Functions::whole_table)) and this
    /// one's lacks a function of `other`.
    pub fn absorb(&mut self, other: &FunctionSet) -> bool {
        if self.fingerprint() != other.fingerprint() {
            return false;
        }
        let mut have: rustc_hash::FxHashSet<u64> = self.functions.iter().map(|f| f.file_offset).collect();
        let mut added = Vec::new();
        for f in &other.functions {
            if !have.insert(f.file_offset) {
                continue;
            }
            let mut f = f.clone();
            // Its symbol, as this set's table numbers it.
            if let Some(s) = other.symbol(&f).filter(|_| !Arc::ptr_eq(&self.table, &other.table)) {
                let functions = self.table.functions();
                match self.table.named(&s.name).find(|&i| functions[i].address == s.address) {
                    Some(i) => f.index = i,
                    None => return false,
                }
            }
            f.cookie = (self.functions.len() + added.len()) as u64;
            added.push(f);
        }
        self.functions.extend(added);
        self.names = std::sync::OnceLock::new();
        true
    }

    /// The selected functions; `cookie` is the index.
    pub fn iter(&self) -> std::slice::Iter<'_, FunctionMatch> {
        self.functions.iter()
    }

    /// How many functions.
    pub fn len(&self) -> usize {
        self.functions.len()
    }

    /// Whether none.
    pub fn is_empty(&self) -> bool {
        self.functions.is_empty()
    }

    /// The function with this cookie.
    pub fn get(&self, cookie: u64) -> Option<&FunctionMatch> {
        self.functions.get(usize::try_from(cookie).ok()?)
    }

    /// The symbol `f` was found as (version, aliases, address, size, file
    /// offset, ifunc); `None` for a USDT point, which is no symbol.
    pub fn symbol(&self, f: &FunctionMatch) -> Option<&FunctionSymbol> {
        self.table.functions().get(f.index)
    }

    /// `f`'s name with its symbol's version (`memcpy@@GLIBC_2.14`,
    /// `memcpy@GLIBC_2.2.5`), when the symbol has one; `None` for an
    /// unversioned symbol and a USDT point.
    pub fn versioned_name(&self, f: &FunctionMatch) -> Option<String> {
        self.symbol(f)
            .filter(|s| s.version.is_some())
            .map(FunctionSymbol::versioned_name)
    }

    /// The demangled name of `f` (Rust legacy and v0, C++), if mangled.
    pub fn demangled(&self, f: &FunctionMatch) -> Option<&str> {
        if f.usdt.is_some() {
            return None;
        }
        self.table.demangled(f.index)
    }

    /// The name to show: demangled if mangled, else raw.
    pub fn display_name<'a>(&'a self, f: &'a FunctionMatch) -> &'a str {
        self.demangled(f).unwrap_or(&f.name)
    }

    /// Functions a glob matched but the kernel cannot probe (first instruction
    /// refused by its x86-64 uprobe code), with the reason; not in the set.
    pub fn skipped(&self) -> &[(String, &'static str)] {
        &self.skipped
    }

    /// The name to show where functions must be told apart: the display name,
    /// with its version (`vers_add@VER_1`) when another function of the set
    /// has the same name, its file offset (`helper [0x1199]`) when two
    /// functions share a name and no version (two `static` functions of one
    /// name), and for an ifunc the implementation probed
    /// (`strlen (→ __strlen_evex)`).
    pub fn label(&self, f: &FunctionMatch) -> String {
        let name = self.display_name(f);
        let names = self.names.get_or_init(|| {
            let mut names = rustc_hash::FxHashMap::default();
            names.reserve(self.functions.len());
            for g in &self.functions {
                *names.entry(self.display_name(g).to_string()).or_insert(0u32) += 1;
            }
            names
        });
        let twin = names.get(name).is_some_and(|&n| n > 1);
        let versioned = twin.then(|| self.versioned_name(f)).flatten();
        if let Some(m) = &f.implementation {
            // `strlen (→ __strlen_evex)`: the calls counted are the implementation's.
            let base = versioned.unwrap_or_else(|| name.to_string());
            format!("{base} (→ {})", m.label())
        } else if let Some(v) = versioned {
            v
        } else if let Some(variant) = twin.then(|| super::names::structor_variant(&f.name)).flatten() {
            // `Sq::~Sq()` twice: the complete- and base-object destructors.
            format!("{name} [{variant}]")
        } else if twin {
            format!("{name} [{:#x}]", f.file_offset)
        } else {
            name.to_string()
        }
    }

    /// The symbol table the set came from (for a few exact names of a binary
    /// not read before, a table of just those functions).
    pub fn symbols(&self) -> &SymbolTable {
        &self.table
    }

    /// Ready-to-attach targets, cookie = index.
    pub fn targets(&self) -> Vec<ProbeSite> {
        self.functions
            .iter()
            .map(|f| ProbeSite {
                binary: Arc::clone(&self.binary),
                offset: f.probe_offset(),
                ref_ctr_offset: f.usdt.as_ref().and_then(|u| u.semaphore),
                attach_cookie: f.cookie,
                value: f.cookie,
                symbol: Some(f.name.clone()),
                nop5_offset: f.nop5_offset,
                // A function's own entry (not an ifunc's implementation, not
                // a USDT point) and extent.
                function: (f.implementation.is_none() && f.usdt.is_none() && f.size > 0)
                    .then_some((f.file_offset, f.size)),
            })
            .collect()
    }

    /// The same as [`Target`]s (for callers that build target lists by hand).
    pub fn as_targets(&self) -> Vec<Target> {
        self.functions
            .iter()
            .map(|f| Target::file_offset(self.binary.path(), f.probe_offset()).cookie(f.cookie))
            .collect()
    }
}

impl<'a> IntoIterator for &'a FunctionSet {
    type Item = &'a FunctionMatch;
    type IntoIter = std::slice::Iter<'a, FunctionMatch>;
    fn into_iter(self) -> Self::IntoIter {
        self.functions.iter()
    }
}
