//! A fake kernel for tests (feature `fault-injection`, and sonde's own unit
//! tests): while a [`FakeKernel`] is installed on a thread, every modelled call
//! of that thread answers from it instead of the kernel — a new descriptor, an
//! id, success — and is recorded with what it asked, so a mechanism's calls,
//! their arguments and its rollback can be checked without root. Faults
//! injected with [`super::fault`] still come first.
//!
//! Descriptors it hands out are the write ends of pipes whose read ends it
//! keeps: [`FakeKernel::open_fds`] counts those the code under test still holds.
//! Calls it does not model (map reads, ring buffers, `fork`) fail with `ENOSYS`.
//!
//! ```
//! # #[cfg(feature = "fault-injection")] {
//! use sonde::sys::{fake::FakeKernel, Call};
//! let kernel = FakeKernel::install();
//! // ... attach something ...
//! assert_eq!(kernel.count(Call::LinkCreate), 0);
//! assert_eq!(kernel.open_fds(), 0, "everything closed");
//! # }
//! ```

#![cfg_attr(not(any(test, feature = "fault-injection")), allow(dead_code, unreachable_pub))]

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;

use super::Call;

/// One call the fake kernel answered: which, and what it asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The call.
    pub call: Call,
    /// Its arguments as text (`path:0xoffset cookie=7`, a tracefs line, ...);
    /// empty where the call records none.
    pub detail: String,
}

#[derive(Default)]
struct State {
    requests: Vec<Request>,
    /// Read ends of the pipes whose write ends were handed out as descriptors.
    kept: Vec<OwnedFd>,
    next_id: u64,
}

thread_local! {
    static KERNEL: RefCell<Option<Rc<RefCell<State>>>> = const { RefCell::new(None) };
}

/// The fake kernel of this thread; uninstalled when dropped.
#[must_use = "the fake kernel is uninstalled when dropped"]
pub struct FakeKernel {
    state: Rc<RefCell<State>>,
}

impl FakeKernel {
    /// Installs a fresh fake kernel on this thread.
    pub fn install() -> FakeKernel {
        let state = Rc::new(RefCell::new(State {
            next_id: 100,
            ..State::default()
        }));
        KERNEL.with(|k| *k.borrow_mut() = Some(Rc::clone(&state)));
        FakeKernel { state }
    }

    /// Every call answered so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.state.borrow().requests.clone()
    }

    /// The requests of one kind.
    pub fn of(&self, call: Call) -> Vec<Request> {
        self.state
            .borrow()
            .requests
            .iter()
            .filter(|r| r.call == call)
            .cloned()
            .collect()
    }

    /// How many calls of `call` were answered (or failed by an injected fault).
    pub fn count(&self, call: Call) -> usize {
        self.state.borrow().requests.iter().filter(|r| r.call == call).count()
    }

    /// Fake descriptors handed out and not yet closed.
    pub fn open_fds(&self) -> usize {
        self.state.borrow().kept.iter().filter(|r| !peer_closed(r)).count()
    }
}

impl Drop for FakeKernel {
    fn drop(&mut self) {
        KERNEL.with(|k| *k.borrow_mut() = None);
    }
}

/// Whether the write end of the pipe whose read end is `read` is closed.
fn peer_closed(read: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: read.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents & libc::POLLHUP != 0
}

/// Whether a fake kernel is installed on this thread.
pub(crate) fn active() -> bool {
    KERNEL.with(|k| k.borrow().is_some())
}

/// What the fake kernel makes of a call's result type.
pub(crate) trait Answer: Sized {
    /// The fake kernel's answer (default: the call is not modelled).
    fn answer(_kernel: &mut Kernel<'_>) -> io::Result<Self> {
        Err(io::Error::from_raw_os_error(libc::ENOSYS))
    }
}

/// The fake kernel's state, lent to an [`Answer`].
pub(crate) struct Kernel<'a>(&'a mut State);

impl Kernel<'_> {
    fn fd(&mut self) -> io::Result<OwnedFd> {
        let mut ends = [0; 2];
        // SAFETY: valid out-array of two descriptors.
        if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: two new descriptors we own.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
        self.0.kept.push(read);
        Ok(write)
    }
}

impl Answer for OwnedFd {
    fn answer(kernel: &mut Kernel<'_>) -> io::Result<Self> {
        kernel.fd()
    }
}

impl Answer for () {
    fn answer(_: &mut Kernel<'_>) -> io::Result<Self> {
        Ok(())
    }
}

impl Answer for u64 {
    fn answer(kernel: &mut Kernel<'_>) -> io::Result<Self> {
        kernel.0.next_id += 1;
        Ok(kernel.0.next_id)
    }
}

impl Answer for libc::c_long {}
impl Answer for libc::c_int {}
impl Answer for u32 {}
impl Answer for usize {}
impl Answer for bool {}
impl<T> Answer for Option<T> {}
impl<T> Answer for *mut T {}
impl Answer for std::fs::File {}
impl<A, B> Answer for (A, B) {}
impl Answer for super::ring::Mapping {}

/// The fake kernel's answer to `call` (recorded with `detail`), or `None` when
/// none is installed on this thread.
pub(crate) fn answer<T: Answer>(call: Call, detail: impl FnOnce() -> String) -> Option<io::Result<T>> {
    let state = KERNEL.with(|k| k.borrow().clone())?;
    let mut state = state.borrow_mut();
    state.requests.push(Request { call, detail: detail() });
    Some(T::answer(&mut Kernel(&mut state)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_record_and_count_open_descriptors() {
        let k = FakeKernel::install();
        let a: OwnedFd = answer(Call::LinkCreate, || "one".into()).unwrap().unwrap();
        let b: OwnedFd = answer(Call::LinkCreate, String::new).unwrap().unwrap();
        let id: u64 = answer(Call::TracefsRead, String::new).unwrap().unwrap();
        assert!(id > 0);
        assert_eq!(k.count(Call::LinkCreate), 2);
        assert_eq!(k.of(Call::LinkCreate)[0].detail, "one");
        assert_eq!(k.open_fds(), 2);
        drop(a);
        assert_eq!(k.open_fds(), 1);
        drop(b);
        assert_eq!(k.open_fds(), 0);
        let unmodelled: Option<io::Result<bool>> = answer(Call::MapLookup, String::new);
        assert_eq!(unmodelled.unwrap().unwrap_err().raw_os_error(), Some(libc::ENOSYS));
        drop(k);
        assert!(!active());
        assert!(answer::<()>(Call::PerfIoctl, String::new).is_none());
    }
}
