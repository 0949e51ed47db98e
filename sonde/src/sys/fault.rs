//! Fault injection for tests (feature `fault-injection`): make the n-th call of a
//! kind fail with a chosen errno, on the current thread.
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
    errno: i32,
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
            errno,
        })
    });
    FaultGuard(())
}

pub(crate) fn check(call: Call) -> io::Result<()> {
    FAULTS.with(|f| {
        let mut faults = f.borrow_mut();
        for fault in faults.iter_mut().filter(|x| x.call == call && x.remaining > 0) {
            fault.remaining -= 1;
            if fault.remaining == 0 {
                return Err(io::Error::from_raw_os_error(fault.errno));
            }
        }
        Ok(())
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
}
