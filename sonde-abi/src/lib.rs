//! What both sides of sonde's kernel boundary agree on, defined once: the eBPF
//! side (`sonde-ebpf`, `sonde-macros`) writes these, the user-space side
//! (`sonde`) reads them.
//!
//! | module | what |
//! | --- | --- |
//! | [`map`] | [`MapDef`] as the `maps` section holds it, [`MapType`], update flags |
//! | [`helper`] | kernel helper ids (`bpf_get_attach_cookie` is 174) |
//! | [`program`] | program and attach types, uprobe_multi flags |
//! | [`insn`] | [`Insn`] (`struct bpf_insn`) and the opcodes sonde rewrites |
//! | [`probe`] | [`ProbeKind`] and its ELF section names |
//! | [`pod`] | [`Pod`]: plain data for map keys, values and records |
//! | [`usdt`] | USDT argument specs, as user space writes and programs read them |
//!
//! `no_std`, no dependencies: it builds for the host and for `bpfel-unknown-none`.

#![no_std]
#![warn(missing_docs)]

pub mod helper;
pub mod insn;
pub mod map;
pub mod pod;
pub mod probe;
pub mod program;
pub mod usdt;

pub use insn::Insn;
pub use map::{MapDef, MapType};
pub use pod::Pod;
pub use probe::ProbeKind;
