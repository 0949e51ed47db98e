//! Fault injection for tests (feature `fault-injection`): make the n-th call of a
//! kind fail with a chosen errno, or (for calls that return nothing) succeed
//! without reaching the kernel, on the current thread.
//!
//! ```
//! # #[cfg(feature = "fault-injection")] {
//! use sonde::sys::{fault, Call};
//! let _guard = fault::inject(Call::PerfEventOpen, 2, libc::EMFILE);
//! // The second perf_event_open on this thread now fails with EMFILE.
//! # }
//! ```

use std::cell::RefCell;
use std::io;

use super::Call;

struct Fault {
    call: Call,
    remaining: usize,
    /// `None`: fake success.
    errno: Option<i32>,
}

/// What an injected fault makes of a call.
pub(crate) enum Outcome {
    /// Make the call.
    Run,
    /// Fail with this error.
    Fail(io::Error),
    /// Report success without making it.
    Succeed,
}

thread_local! {
    static FAULTS: RefCell<Vec<Fault>> = const { RefCell::new(Vec::new()) };
}

/// Removes this thread's injected faults when dropped.
#[must_use = "faults are removed when the guard drops"]
pub struct FaultGuard(());

impl Drop for FaultGuard {
    fn drop(&mut self) {
        FAULTS.with(|f| f.borrow_mut().clear());
    }
}

/// Makes the `nth` (1-based) call of kind `call` from now on, on this thread, fail
/// with `errno`; later calls succeed again.
pub fn inject(call: Call, nth: usize, errno: i32) -> FaultGuard {
    FAULTS.with(|f| {
        f.borrow_mut().push(Fault {
            call,
            remaining: nth.max(1),
            errno: Some(errno),
        })
    });
    FaultGuard(())
}

/// Makes the `nth` (1-based) call of kind `call` succeed without reaching the
/// kernel. Only calls that return nothing can be faked (perf ioctls, tracefs
/// writes); for others this never fires.
pub fn inject_success(call: Call, nth: usize) -> FaultGuard {
    FAULTS.with(|f| {
        f.borrow_mut().push(Fault {
            call,
            remaining: nth.max(1),
            errno: None,
        })
    });
    FaultGuard(())
}

pub(crate) fn check(call: Call) -> io::Result<()> {
    match outcome(call, false) {
        Outcome::Fail(e) => Err(e),
        _ => Ok(()),
    }
}

/// The outcome for `call`; fake successes count only where `fakeable`.
pub(crate) fn outcome(call: Call, fakeable: bool) -> Outcome {
    FAULTS.with(|f| {
        let mut faults = f.borrow_mut();
        for fault in faults
            .iter_mut()
            .filter(|x| x.call == call && x.remaining > 0 && (fakeable || x.errno.is_some()))
        {
            fault.remaining -= 1;
            if fault.remaining == 0 {
                return match fault.errno {
                    Some(e) => Outcome::Fail(io::Error::from_raw_os_error(e)),
                    None => Outcome::Succeed,
                };
            }
        }
        Outcome::Run
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fails_only_the_nth_call_until_the_guard_drops() {
        let g = inject(Call::ProgLoad, 2, libc::EPERM);
        assert!(check(Call::MapCreate).is_ok());
        assert!(check(Call::ProgLoad).is_ok());
        let e = check(Call::ProgLoad).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        assert!(check(Call::ProgLoad).is_ok());
        drop(g);
        let _g = inject(Call::LinkCreate, 1, libc::EINVAL);
        drop(_g);
        assert!(check(Call::LinkCreate).is_ok(), "guard removed the fault");
    }

    #[test]
    fn success_is_faked_only_where_a_call_can_be_skipped() {
        let _g = inject_success(Call::TracefsWrite, 2);
        let mut ran = 0;
        for _ in 0..3 {
            super::super::run_unit(Call::TracefsWrite, String::new, || {
                ran += 1;
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(ran, 2, "the second call never reached its operation");
        let _h = inject_success(Call::ProgLoad, 1);
        assert!(check(Call::ProgLoad).is_ok(), "a fake success does not fail a call");
    }
}
