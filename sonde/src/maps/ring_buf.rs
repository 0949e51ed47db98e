use std::ops::Deref;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::{Map, MapError, Pod, BPF_MAP_TYPE_RINGBUF};
use crate::sys::ring::{self, Mapping};

const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;
const HEADER: usize = 8;

/// The consumer of a `BPF_MAP_TYPE_RINGBUF` map (Linux 5.8): records in the order
/// they were submitted, across CPUs, read from shared memory without copies.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let object: sonde::Object = unimplemented!();
/// use std::time::Duration;
/// let mut events = sonde::maps::RingBuf::new(object.map("EVENTS")?)?;
/// while events.wait(Some(Duration::from_millis(100)))? {
///     while let Some(record) = events.next() {
///         println!("{} bytes", record.len());
///     }
/// }
/// # Ok(()) }
/// ```
pub struct RingBuf {
    map: Map,
    consumer: Mapping,
    producer: Mapping,
    page: usize,
    mask: u64,
    epoll: OwnedFd,
    /// The process [`RingBuf::until_exit`] watches.
    exit: Option<crate::command::ProcessWatch>,
}

// SAFETY: the mappings are owned and only read/written through atomics or while
// holding `&mut self`.
unsafe impl Send for RingBuf {}

impl RingBuf {
    /// Maps the ring buffer's pages; fails if the map is not a ring buffer.
    pub fn new(map: Map) -> Result<Self, MapError> {
        map.check(&[BPF_MAP_TYPE_RINGBUF], 0, 0, "a ring buffer")?;
        let page = ring::page_size();
        let size = map.def().max_entries as usize;
        let fd = map.as_fd();
        let consumer = Mapping::shared(fd, page, 0, true).map_err(|e| map.err(e))?;
        // The data area is mapped twice back to back, so a record that wraps is
        // still contiguous in memory.
        let producer = Mapping::shared(fd, page + 2 * size, page, false).map_err(|e| map.err(e))?;
        let epoll = ring::epoll_watching(fd).map_err(|e| map.err(e))?;
        Ok(RingBuf {
            map,
            consumer,
            producer,
            page,
            mask: size as u64 - 1,
            epoll,
            exit: None,
        })
    }

    fn consumer_pos(&self) -> &AtomicU64 {
        // SAFETY: the first word of the consumer page, 8-aligned, lives as long as self.
        unsafe { &*(self.consumer.ptr() as *const AtomicU64) }
    }

    fn producer_pos(&self) -> &AtomicU64 {
        // SAFETY: the first word of the producer page.
        unsafe { &*(self.producer.ptr() as *const AtomicU64) }
    }

    /// The next record, or `None` when the buffer is empty now. The record is
    /// released (its space returned to the kernel) when the item drops.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<RingBufItem<'_>> {
        loop {
            let cons = self.consumer_pos().load(Ordering::Acquire);
            let prod = self.producer_pos().load(Ordering::Acquire);
            if cons >= prod {
                return None;
            }
            let off = self.page + (cons & self.mask) as usize;
            // SAFETY: `off` is inside the producer mapping; the header is 8-aligned.
            let header = unsafe { &*((self.producer.ptr() as *const u8).add(off) as *const AtomicU32) };
            let len = header.load(Ordering::Acquire);
            if len & BUSY != 0 {
                // Reserved but not yet submitted: later records wait behind it.
                return None;
            }
            let data_len = (len & !(BUSY | DISCARD)) as usize;
            let next = cons + (data_len + HEADER).div_ceil(8) as u64 * 8;
            if len & DISCARD != 0 {
                self.consumer_pos().store(next, Ordering::Release);
                continue;
            }
            // SAFETY: the record lies within the double-mapped data area.
            let data =
                unsafe { std::slice::from_raw_parts((self.producer.ptr() as *const u8).add(off + HEADER), data_len) };
            return Some(RingBufItem {
                data,
                consumer: self.consumer_pos(),
                next,
                map: &self.map,
            });
        }
    }

    /// The next record read as a `T` (released at once), or `None` when the
    /// buffer is empty now.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let object: sonde::Object = unimplemented!();
    /// use sonde::Pod;
    /// #[derive(Clone, Copy, Pod)]
    /// #[repr(C)]
    /// struct Event { pid: u32, cookie: u32, ts_ns: u64 }
    ///
    /// let mut ring = sonde::maps::RingBuf::new(object.map("EVENTS")?)?;
    /// while let Some(event) = ring.next_as::<Event>() {
    ///     let event = event?;
    ///     println!("{} {} {}", event.pid, event.cookie, event.ts_ns);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn next_as<T: Pod>(&mut self) -> Option<Result<T, MapError>> {
        self.next().map(|item| item.read())
    }

    /// Waits until a record may be ready or `timeout` passes (`None`: forever).
    /// Returns whether the buffer signalled; interrupted waits return `Ok(false)`.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool, MapError> {
        ring::epoll_wait(self.epoll.as_fd(), timeout).map_err(|e| self.map.err(e))
    }

    /// Also wakes [`RingBuf::wait`] when process `pid` exits (through its pidfd,
    /// Linux 5.3; where pidfds are missing, [`RingBuf::read_until_exit`] checks
    /// every 100 ms), so an event loop ends with the traced command.
    pub fn until_exit(&mut self, pid: u32) -> Result<(), MapError> {
        let watch = crate::command::ProcessWatch::new(pid);
        if let Some(fd) = watch.pidfd() {
            ring::epoll_add(self.epoll.as_fd(), fd).map_err(|e| self.map.err(e))?;
        }
        self.exit = Some(watch);
        Ok(())
    }

    /// Whether the process of [`RingBuf::until_exit`] has exited (`false`
    /// when none is watched).
    pub fn process_exited(&self) -> bool {
        self.exit.as_ref().is_some_and(|w| w.exited())
    }

    /// Hands every record to `each` as it arrives, until the process of
    /// [`RingBuf::until_exit`] exits, then the records it left; without one,
    /// until `each` returns `false`. Returns when `each` returns `false` too.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let object: sonde::Object = unimplemented!();
    /// # let mut command: sonde::command::HeldCommand = unimplemented!();
    /// let mut events = sonde::maps::RingBuf::new(object.map("EVENTS")?)?;
    /// events.until_exit(command.pid())?;
    /// command.release()?;
    /// events.read_until_exit(|record| {
    ///     println!("{} bytes", record.len());
    ///     true
    /// })?;
    /// let status = command.wait();
    /// # Ok(()) }
    /// ```
    pub fn read_until_exit(&mut self, mut each: impl FnMut(RingBufItem<'_>) -> bool) -> Result<(), MapError> {
        let poll = match &self.exit {
            Some(w) if w.pidfd().is_none() => Some(Duration::from_millis(100)),
            _ => None,
        };
        loop {
            // Checked before draining: what the process wrote before it
            // exited is in the buffer by then, and read below.
            let exited = self.process_exited();
            while let Some(record) = self.next() {
                if !each(record) {
                    return Ok(());
                }
            }
            if exited {
                return Ok(());
            }
            self.wait(poll)?;
        }
    }

    /// `e` as this map's error.
    #[cfg(feature = "tokio")]
    pub(crate) fn map_error(&self, e: std::io::Error) -> MapError {
        self.map.err(crate::sys::SyscallError::new(crate::sys::Call::Epoll, e))
    }

    /// The epoll descriptor that becomes readable when records arrive, for an event
    /// loop of the caller's.
    pub fn as_poll_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.epoll.as_fd()
    }
}

/// One ring-buffer record; its space goes back to the kernel on drop.
pub struct RingBufItem<'a> {
    data: &'a [u8],
    consumer: &'a AtomicU64,
    next: u64,
    map: &'a Map,
}

impl RingBufItem<'_> {
    /// The record as a `T` (the type the program reserved or output); an error
    /// if the record is shorter than `T`.
    pub fn read<T: Pod>(&self) -> Result<T, MapError> {
        if self.data.len() < std::mem::size_of::<T>() {
            return Err(MapError::RecordSize {
                name: self.map.name().to_string(),
                len: self.data.len(),
                wanted: std::any::type_name::<T>(),
                size: std::mem::size_of::<T>(),
            });
        }
        Ok(super::from_bytes(self.data))
    }
}

impl Deref for RingBufItem<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.data
    }
}

impl Drop for RingBufItem<'_> {
    fn drop(&mut self) {
        self.consumer.store(self.next, Ordering::Release);
    }
}
