//! Async readers (feature `tokio`): a ring buffer and perf buffers awaited on
//! a tokio runtime, readiness through `tokio::io::unix::AsyncFd` (the ring's
//! epoll descriptor, each perf buffer's event descriptor), the records read
//! from shared memory as the blocking readers do.
//!
//! ```no_run
//! # async fn run(object: sonde::Object, pid: u32) -> Result<(), Box<dyn std::error::Error>> {
//! use sonde::Pod;
//! #[derive(Clone, Copy, Pod)]
//! #[repr(C)]
//! struct Event { cookie: u64, arg0: u64 }
//!
//! let mut ring = sonde::maps::RingBuf::new(object.map("EVENTS")?)?;
//! ring.until_exit(pid)?; // `None` below once that process has exited and all is read
//! let mut events = sonde::maps::AsyncRingBuf::new(ring)?;
//! while let Some(event) = events.next_as::<Event>().await {
//!     let event = event?;
//!     println!("{} {:#x}", event.cookie, event.arg0);
//! }
//! # Ok(()) }
//! ```

use std::os::fd::{AsRawFd, RawFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::{MapError, PerfBuffer, PerfRecord, Pod, RingBuf};

/// A descriptor number owned by the reader beside it (dropped after it).
struct Raw(RawFd);

impl AsRawFd for Raw {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// `fd` registered with the current runtime for reading; an error (not
/// tokio's panic) outside a runtime.
fn register(fd: RawFd) -> std::io::Result<AsyncFd<Raw>> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(std::io::Error::other(
            "an async reader needs a tokio runtime: create it inside one (with its I/O driver enabled)",
        ));
    }
    // SAFETY: `fd` belongs to the reader stored beside the `AsyncFd` in the
    // same struct, declared after it: it stays open (the same description,
    // the same number) until the `AsyncFd` is dropped.
    unsafe { AsyncFd::register_with_interest(Raw(fd), Interest::READABLE) }.map_err(|e| e.into_parts().1)
}

/// A [`RingBuf`] awaited on a tokio runtime (Linux 5.8).
pub struct AsyncRingBuf {
    // Dropped first: deregistered while the descriptor is still open.
    ready: AsyncFd<Raw>,
    ring: RingBuf,
}

impl AsyncRingBuf {
    /// Registers the ring's epoll descriptor with the current tokio runtime
    /// (an error outside one).
    pub fn new(ring: RingBuf) -> std::io::Result<AsyncRingBuf> {
        let ready = register(ring.as_poll_fd().as_raw_fd())?;
        Ok(AsyncRingBuf { ready, ring })
    }

    /// The next record as a `T` once there is one; `None` when the process of
    /// [`RingBuf::until_exit`] has exited and every record it left was read
    /// (never, without one).
    pub async fn next_as<T: Pod>(&mut self) -> Option<Result<T, MapError>> {
        loop {
            // Checked before reading: what the process wrote before it exited
            // is in the buffer by then.
            let exited = self.ring.process_exited();
            if let Some(record) = self.ring.next_as::<T>() {
                return Some(record);
            }
            if exited {
                return None;
            }
            let mut guard = match self.ready.readable().await {
                Ok(g) => g,
                Err(e) => return Some(Err(self.ring.map_error(e))),
            };
            // Records may have come between the check above and the wake-up.
            if let Some(record) = self.ring.next_as::<T>() {
                return Some(record);
            }
            guard.clear_ready();
        }
    }

    /// The blocking reader inside (to call [`RingBuf::next`] for records read
    /// in place).
    pub fn get_mut(&mut self) -> &mut RingBuf {
        &mut self.ring
    }
}

/// A CPU's [`PerfBuffer`] awaited on a tokio runtime (aya's
/// `AsyncPerfEventArray` buffer).
pub struct AsyncPerfBuffer {
    ready: AsyncFd<Raw>,
    buffer: PerfBuffer,
}

impl AsyncPerfBuffer {
    /// Registers the buffer's event descriptor with the current tokio runtime.
    pub fn new(buffer: PerfBuffer) -> std::io::Result<AsyncPerfBuffer> {
        let ready = register(buffer.as_poll_fd().as_raw_fd())?;
        Ok(AsyncPerfBuffer { ready, buffer })
    }

    /// The next record (a sample, or a count of samples the kernel lost) once
    /// there is one.
    pub async fn next(&mut self) -> std::io::Result<PerfRecord> {
        loop {
            if let Some(record) = self.buffer.next() {
                return Ok(record);
            }
            let mut guard = self.ready.readable().await?;
            if let Some(record) = self.buffer.next() {
                return Ok(record);
            }
            guard.clear_ready();
        }
    }

    /// The CPU it belongs to.
    pub fn cpu(&self) -> u32 {
        self.buffer.cpu()
    }

    /// The blocking reader inside.
    pub fn get_mut(&mut self) -> &mut PerfBuffer {
        &mut self.buffer
    }
}
