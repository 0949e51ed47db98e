//! Probe kinds and the ELF section names that carry them: the macros write the
//! section, the loader reads the kind back from it.

/// What a uprobe program is attached as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeKind {
    /// Function entry (`#[uprobe]`, section `uprobe/NAME`).
    Entry,
    /// Function return (`#[uretprobe]`, section `uretprobe/NAME`).
    Return,
    /// Entry and return in one program (`uprobe.session/NAME`; native on 6.13+).
    Session,
    /// A USDT probe point (`usdt/NAME`), attached at the note's address with its
    /// semaphore.
    Usdt,
}

impl ProbeKind {
    /// Every kind.
    pub const ALL: [ProbeKind; 4] = [ProbeKind::Entry, ProbeKind::Return, ProbeKind::Session, ProbeKind::Usdt];

    /// The section prefix the macros write: `uprobe`, `uretprobe`,
    /// `uprobe.session`, `usdt`.
    pub const fn section_prefix(self) -> &'static str {
        match self {
            ProbeKind::Entry => "uprobe",
            ProbeKind::Return => "uretprobe",
            ProbeKind::Session => "uprobe.session",
            ProbeKind::Usdt => "usdt",
        }
    }

    /// The kind and program name a section `PREFIX/NAME` carries.
    pub fn from_section(section: &str) -> Option<(ProbeKind, &str)> {
        let (prefix, name) = section.split_once('/')?;
        let kind = ProbeKind::ALL.into_iter().find(|k| k.section_prefix() == prefix)?;
        Some((kind, name))
    }

    /// Whether the probe fires at function return (the kernel's retprobe
    /// flavour of each mechanism).
    pub const fn at_return(self) -> bool {
        matches!(self, ProbeKind::Return)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_round_trip() {
        for k in ProbeKind::ALL {
            let mut buf = [0u8; 32];
            let prefix = k.section_prefix().as_bytes();
            buf[..prefix.len()].copy_from_slice(prefix);
            buf[prefix.len()..prefix.len() + 2].copy_from_slice(b"/f");
            let s = core::str::from_utf8(&buf[..prefix.len() + 2]).unwrap();
            assert_eq!(ProbeKind::from_section(s), Some((k, "f")));
        }
        assert_eq!(ProbeKind::from_section("kprobe/f"), None);
        assert_eq!(ProbeKind::from_section("uprobe.multi/f"), None);
    }
}
