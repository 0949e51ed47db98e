//! Why a job could not be built, grown or shrunk.

use super::RegistryFull;
use crate::attach::AttachError;
use crate::maps::MapError;
use crate::object::LoadError;
use crate::programs::ProgramError;
use crate::resolve::TargetError;

/// Why a [`super::Job`] operation failed; nothing it started stays attached.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// The object did not load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A program of the job is not in the object.
    #[error(transparent)]
    Program(#[from] ProgramError),
    /// A map indexed by cookie could not be used.
    #[error(transparent)]
    Map(#[from] MapError),
    /// Functions did not resolve.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// Attaching failed.
    #[error(transparent)]
    Attach(#[from] AttachError),
    /// The cookie registry is full.
    #[error(transparent)]
    Full(#[from] RegistryFull),
}
