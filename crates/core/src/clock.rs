//! Time as Runnel's components read it, injected so that tests can control it (Kafka
//! passes `Time` into its components for the same reason): a session or rebalance
//! timeout then runs in milliseconds of test time, not in seconds of sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of time. Implementations are thread-safe.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Monotonic time, for timeouts and deadlines.
    fn now(&self) -> Instant;
    /// Wall-clock milliseconds since the Unix epoch, for timestamps that are stored or
    /// sent.
    fn now_ms(&self) -> i64;
}

/// The machine's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

/// The machine's wall clock in milliseconds since the Unix epoch (`SystemClock::now_ms`),
/// for code that has no injected clock.
pub fn now_ms() -> i64 {
    SystemClock.now_ms()
}

/// A clock that moves only when told to (`advance`): for tests.
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    start_ms: i64,
    elapsed_us: AtomicU64,
}

impl ManualClock {
    /// Starts at the machine's current time.
    pub fn new() -> Self {
        ManualClock {
            start: Instant::now(),
            start_ms: SystemClock.now_ms(),
            elapsed_us: AtomicU64::new(0),
        }
    }

    /// Moves time forward by `d` (both the monotonic and the wall clock).
    pub fn advance(&self, d: Duration) {
        self.elapsed_us
            .fetch_add(d.as_micros() as u64, Ordering::SeqCst);
    }

    fn elapsed(&self) -> Duration {
        Duration::from_micros(self.elapsed_us.load(Ordering::SeqCst))
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + self.elapsed()
    }

    fn now_ms(&self) -> i64 {
        self.start_ms + self.elapsed().as_millis() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let c = ManualClock::new();
        let (t0, ms0) = (c.now(), c.now_ms());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!((c.now(), c.now_ms()), (t0, ms0));
        c.advance(Duration::from_millis(1500));
        assert_eq!(c.now() - t0, Duration::from_millis(1500));
        assert_eq!(c.now_ms() - ms0, 1500);
        assert!(SystemClock.now() >= t0);
    }
}
