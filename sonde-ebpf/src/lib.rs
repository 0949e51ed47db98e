//! The eBPF side of sonde: write uprobe programs in Rust.
//!
//! One program attached to many functions tells them apart by its cookie:
//!
//! ```no_run
//! use sonde_ebpf::{map, maps::HashMap, uprobe, ProbeContext};
//!
//! #[map]
//! static CALLS: HashMap<u64, u64> = HashMap::with_max_entries(64);
//!
//! #[uprobe]
//! fn generic_probe(ctx: ProbeContext) -> u32 {
//!     // The cookie is the value user space gave this function when attaching.
//!     CALLS.increment(&ctx.cookie());
//!     0
//! }
//! ```
//!
//! Programs build for `bpfel-unknown-none` with `-Z build-std=core` and
//! `bpf-linker`; `sonde-build` does that from a `build.rs`. Each item says which
//! kernel it needs; the user-space library picks the attach mechanism so that
//! [`ProbeContext::cookie`] works on every supported kernel (5.10 and later).
//!
//! The object must declare a license: [`license!`]`("GPL")` (helpers such as
//! `probe_read_user` are GPL-only).
#![no_std]
#![warn(missing_docs)]
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

mod context;
pub mod helpers;
pub mod log;
pub mod maps;
pub mod session;
pub mod usdt;

pub use context::{EbpfContext, FromRegister, ProbeContext, RetProbeContext, TracePointContext};
pub use session::SessionContext;
pub use sonde_abi::Pod;
/// `#[derive(Pod)]` for `#[repr(C)]` records without padding (checked at compile time).
pub use sonde_macros::Pod;
pub use sonde_macros::{map, tracepoint, uprobe, uprobe_session, uretprobe, usdt};
pub use usdt::UsdtContext;

/// Declares the object's license (the kernel reads the `license` section).
///
/// ```no_run
/// sonde_ebpf::license!("GPL");
/// ```
#[macro_export]
macro_rules! license {
    ($l:literal) => {
        #[no_mangle]
        #[link_section = "license"]
        pub static LICENSE: [u8; $l.len() + 1] = {
            let src = $l.as_bytes();
            let mut out = [0u8; $l.len() + 1];
            let mut i = 0;
            while i < src.len() {
                out[i] = src[i];
                i += 1;
            }
            out
        };
    };
}

/// Declares the panic handler an eBPF binary needs. Panics cannot happen in a
/// program the verifier accepted, so the handler is unreachable.
#[macro_export]
macro_rules! panic_handler {
    () => {
        #[cfg(target_arch = "bpf")]
        #[panic_handler]
        fn panic(_info: &::core::panic::PanicInfo) -> ! {
            // SAFETY: the verifier rejects programs with reachable panics (no loops
            // without bound, no calls it cannot see), so this is never entered.
            unsafe { ::core::hint::unreachable_unchecked() }
        }
    };
}
