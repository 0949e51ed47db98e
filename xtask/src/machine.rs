//! The machines sonde is built, tested and packaged for: one name for each,
//! however Debian, Rust and QEMU spell it. What a machine means to the guests
//! (`vm`) and to the packages (`dist`) is said beside that work.

/// A machine sonde runs on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Machine {
    X86_64,
    Arm64,
}

impl Machine {
    /// Debian's name: `amd64`, `arm64`.
    pub(crate) fn debian(self) -> &'static str {
        match self {
            Machine::X86_64 => "amd64",
            Machine::Arm64 => "arm64",
        }
    }

    /// Rust's (and the tarball's): `x86_64`, `aarch64`.
    pub(crate) fn rust(self) -> &'static str {
        match self {
            Machine::X86_64 => "x86_64",
            Machine::Arm64 => "aarch64",
        }
    }
}
