//! Cookies with stable ids: each function of a job keeps its cookie for as long
//! as it is attached; a cookie freed by a removal is reused only after every
//! fresh one is taken, and the job clears its map slots before reuse.

/// Hands out cookies `0..capacity`.
#[derive(Debug, Clone)]
pub struct CookieRegistry {
    capacity: u64,
    next: u64,
    free: Vec<u64>,
    live: u64,
}

/// The registry is full: the maps indexed by cookie hold `capacity` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the job holds at most {capacity} functions ({live} attached, {wanted} more asked): give it a larger capacity")]
pub struct RegistryFull {
    /// The capacity.
    pub capacity: u64,
    /// Cookies in use.
    pub live: u64,
    /// Cookies asked for.
    pub wanted: u64,
}

impl CookieRegistry {
    /// A registry of `capacity` cookies.
    pub fn new(capacity: u64) -> Self {
        CookieRegistry {
            capacity,
            next: 0,
            free: Vec::new(),
            live: 0,
        }
    }

    /// `n` cookies, all or none; the second value lists the reused ones (whose
    /// map slots the caller must clear).
    pub fn take(&mut self, n: u64) -> Result<(Vec<u64>, Vec<u64>), RegistryFull> {
        let fresh = (self.capacity - self.next).min(n);
        if fresh + (self.free.len() as u64) < n {
            return Err(RegistryFull {
                capacity: self.capacity,
                live: self.live,
                wanted: n,
            });
        }
        let mut out: Vec<u64> = (self.next..self.next + fresh).collect();
        self.next += fresh;
        let reused: Vec<u64> = self.free.drain(..(n - fresh) as usize).collect();
        out.extend_from_slice(&reused);
        self.live += n;
        Ok((out, reused))
    }

    /// Gives cookies back.
    pub fn give_back(&mut self, cookies: &[u64]) {
        self.free.extend_from_slice(cookies);
        self.live -= cookies.len() as u64;
    }

    /// Cookies in use.
    pub fn live(&self) -> u64 {
        self.live
    }

    /// The most cookies it hands out.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_stay_stable_and_freed_ones_come_back_last() {
        let mut r = CookieRegistry::new(5);
        assert_eq!(r.take(2).unwrap(), (vec![0, 1], vec![]));
        assert_eq!(r.take(2).unwrap(), (vec![2, 3], vec![]));
        r.give_back(&[0, 1]);
        assert_eq!(r.live(), 2);
        // Fresh first, then reused (to be cleared).
        assert_eq!(r.take(2).unwrap(), (vec![4, 0], vec![0]));
        assert!(r.take(2).is_err(), "only cookie 1 is left");
        assert_eq!(r.take(1).unwrap(), (vec![1], vec![1]));
        assert_eq!(r.live(), 5);
    }
}
