//! What a run was asked to measure, and where to write it.

use std::path::PathBuf;

/// Run options.
pub struct Opts {
    /// Small N and few runs: the smoke run `cargo xtask test` does.
    pub quick: bool,
    /// Output directory.
    pub out: PathBuf,
    /// The `sonde` binary (events and CLI figures).
    pub sonde: PathBuf,
    /// Only the figures beside libbpf and aya (printed as a table).
    pub peers_only: bool,
}
