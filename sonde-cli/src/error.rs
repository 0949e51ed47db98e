//! The command's errors and exit statuses.

/// An error for the user: one or two lines naming the problem and the fix.
#[derive(Debug)]
pub struct CliError(pub String);

impl CliError {
    /// An error saying `msg`.
    pub fn new(msg: impl Into<String>) -> Self {
        CliError(msg.into())
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! from_display {
    ($($t:ty),*) => {$(
        impl From<$t> for CliError {
            fn from(e: $t) -> Self {
                CliError(e.to_string())
            }
        }
    )*};
}

from_display!(
    sonde::Error,
    sonde::JobError,
    sonde::TargetError,
    sonde::AttachError,
    sonde::ProgramError,
    sonde::maps::MapError,
    sonde::TracepointError,
    std::io::Error
);
