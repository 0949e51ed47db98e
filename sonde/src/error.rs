//! `sonde::Error`: any error of the library, for callers that do not tell
//! the layers apart (each layer has its own enum). The top of the layers: it
//! names them all, and nothing below it names it.

use crate::attach::AttachError;
use crate::object::LoadError;
use crate::process::ProcessError;
use crate::programs::ProgramError;
use crate::resolve::TargetError;

/// Any sonde error; each area also has its own enum (loading:
/// [`LoadError`], resolving: [`TargetError`], attaching: [`AttachError`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object file is malformed.
    #[error(transparent)]
    Object(#[from] crate::object_file::SpecError),
    /// A map could not be created or used.
    #[error(transparent)]
    Map(#[from] crate::maps::MapError),
    /// A program did not load.
    #[error(transparent)]
    Program(#[from] ProgramError),
    /// A target did not resolve.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// Attaching failed (nothing stays attached).
    #[error(transparent)]
    Attach(#[from] AttachError),
    /// A job's cookie registry is full.
    #[error(transparent)]
    JobFull(#[from] crate::job::RegistryFull),
    /// A job could not be built, grown or shrunk.
    #[error(transparent)]
    Job(#[from] crate::job::JobError),
    /// A pid that names no user-space process.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// A system call failed.
    #[error(transparent)]
    Syscall(#[from] crate::sys::SyscallError),
    /// The object did not load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A tracepoint program could not be attached.
    #[error(transparent)]
    Tracepoint(#[from] crate::programs::TracepointError),
}
