//! The trait every attach mechanism implements. A tier is one file with a unit
//! struct implementing [`Mechanism`], plus its row in [`super::tier::TIERS`].

use std::sync::Arc;
use std::time::Duration;

use super::{AttachError, Link, Scope, SessionMode, Tier, PER_TARGET_DETACH_COST};
use crate::features::{Feature, Features};
use crate::object_file::ProbeKind;
use crate::programs::{AttachType, Cookie, Load, LoadedProgram, SessionHalf, UProbe};
use crate::resolve::ProbeSite;

/// One attach pass: the kind the mechanism attaches as, and the session half
/// the program copy serves (emulated sessions take two passes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Part {
    pub kind: ProbeKind,
    pub half: Option<SessionHalf>,
    /// Go: the pass goes at each return instruction of the functions (as an
    /// entry probe there), not at their entries.
    pub at_returns: bool,
    /// Go: session halves pair a call by goroutine frame, not by thread.
    pub go: bool,
}

impl Part {
    const fn plain(kind: ProbeKind) -> Part {
        Part {
            kind,
            half: None,
            at_returns: false,
            go: false,
        }
    }
}

/// The passes of one attach, at most two (an emulated session's halves):
/// kept inline, an attach allocates nothing for them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Parts {
    parts: [Part; 2],
    len: usize,
}

impl Parts {
    fn one(part: Part) -> Parts {
        Parts {
            parts: [part; 2],
            len: 1,
        }
    }

    fn two(first: Part, second: Part) -> Parts {
        Parts {
            parts: [first, second],
            len: 2,
        }
    }
}

impl std::ops::Deref for Parts {
    type Target = [Part];
    fn deref(&self) -> &[Part] {
        &self.parts[..self.len]
    }
}

/// What one pass works on.
pub(crate) struct Pass<'a> {
    /// The tier running (errors name it).
    pub tier: Tier,
    pub sites: &'a [ProbeSite],
    pub scope: Scope,
    pub part: Part,
    pub features: &'a Features,
}

/// What one pass holds: the programs loaded and the kernel attachments made.
pub(crate) type Held = (Vec<Arc<LoadedProgram>>, Vec<Link>);

/// An attach mechanism: what it needs from the kernel, what it loads, what it
/// holds and costs, how it attaches. Everything tier-specific lives behind it.
/// The defaults describe a per-target mechanism with emulated cookies: one
/// kernel object per site, no BPF link.
pub(crate) trait Mechanism: Sync {
    /// The features it needs for probes in `scope`.
    fn requires(&self, scope: Scope) -> &'static [Feature];

    /// The program load one site needs in one pass.
    fn load(&self, part: Part, site: &ProbeSite) -> Load;

    /// Attaches one pass; on failure everything it made is dropped (detached).
    fn attach(&self, pass: &Pass<'_>, probe: &mut UProbe) -> Result<Held, AttachError>;

    /// Whether the kernel supplies the cookie (no program copy per cookie).
    fn native_cookies(&self) -> bool {
        false
    }

    /// Whether it opens perf events on the uprobe PMU (refused to unprivileged
    /// callers on patched kernels: the attach then moves past it).
    fn uses_pmu(&self) -> bool {
        false
    }

    /// One kernel object per site (and a slow, serialised detach each).
    fn per_target(&self) -> bool {
        true
    }

    /// Whether a session program (`#[uprobe_session]`) runs natively here.
    fn native_session(&self, _features: &Features) -> bool {
        false
    }

    /// Descriptors one pass holds besides its programs.
    fn descriptors(&self, _binaries: usize, sites: usize) -> u64 {
        sites as u64
    }

    /// Upper estimate of the time detaching one pass blocks.
    fn detach_estimate(&self, _binaries: usize, sites: usize) -> Duration {
        PER_TARGET_DETACH_COST * sites as u32
    }

    /// The kernel's `bpf_link_info.type` of the BPF links it makes, if it makes any.
    fn link_type(&self) -> Option<u32> {
        None
    }
}

/// The load of one pass: `attach_type` and `cookie`, for the pass's session half.
pub(crate) fn load(attach_type: AttachType, cookie: Cookie, part: Part) -> Load {
    let mut load = Load::new(attach_type, cookie);
    load.session = part.half;
    load.go_frames = part.go;
    load
}

/// The passes a program of `kind` needs on `tier`: the return half of an
/// emulated session first, so that no return runs without its entry's slot
/// having had the chance to be pushed. For Go functions (`go`), returns are
/// entry probes at each return instruction, and sessions always emulated (a
/// native session's return half is a uretprobe).
pub(crate) fn passes(kind: ProbeKind, tier: Tier, features: &Features, go: bool) -> (Parts, Option<SessionMode>) {
    let at_return = |half| Part {
        kind: ProbeKind::Entry,
        half,
        at_returns: true,
        go,
    };
    match kind {
        ProbeKind::Return if go => return (Parts::one(at_return(None)), None),
        ProbeKind::Session => {}
        _ => return (Parts::one(Part::plain(kind)), None),
    }
    if !go && tier.mechanism().native_session(features) {
        return (Parts::one(Part::plain(kind)), Some(SessionMode::Native));
    }
    let returns = if go {
        at_return(Some(SessionHalf::Return))
    } else {
        Part {
            half: Some(SessionHalf::Return),
            ..Part::plain(ProbeKind::Return)
        }
    };
    let entries = Part {
        half: Some(SessionHalf::Entry),
        go,
        ..Part::plain(ProbeKind::Entry)
    };
    (Parts::two(returns, entries), Some(SessionMode::Emulated))
}
