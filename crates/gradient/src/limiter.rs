//! The daemon-wide request pacing every request to Gradient passes: a rate limiter at
//! `requests_per_second` (no bursts, so no one-second window exceeds the rate by more than one
//! request), a bound on requests in flight, and a slow-down after a 429.
//!
//! Slow-down rule: after any 429, for [`SLOW_DOWN_FOR`] every request must also pass a second limiter
//! at half the configured rate (at least 1/s); each further 429 extends the period.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{Semaphore, SemaphorePermit};

/// How long the slower pace lasts after a 429.
pub const SLOW_DOWN_FOR: Duration = Duration::from_secs(30);

/// Pacing shared by every request of one daemon.
#[derive(Debug)]
pub struct Pacer {
    normal: DefaultDirectRateLimiter,
    slow: DefaultDirectRateLimiter,
    in_flight: Semaphore,
    origin: Instant,
    /// Milliseconds since `origin` until which the slow limiter applies (0 = never).
    slow_until_ms: AtomicU64,
}

impl Pacer {
    /// A pacer at `per_second` requests per second with at most `max_in_flight` at once.
    pub fn new(per_second: u32, max_in_flight: usize) -> Pacer {
        let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let half = NonZeroU32::new((per_second / 2).max(1)).unwrap_or(NonZeroU32::MIN);
        Pacer {
            normal: RateLimiter::direct(Quota::per_second(rate).allow_burst(NonZeroU32::MIN)),
            slow: RateLimiter::direct(Quota::per_second(half).allow_burst(NonZeroU32::MIN)),
            in_flight: Semaphore::new(max_in_flight.max(1)),
            origin: Instant::now(),
            slow_until_ms: AtomicU64::new(0),
        }
    }

    /// Waits for a place among the requests in flight, then for a slot in the rate. The order
    /// matters: taking rate slots first would let callers queued on the semaphore bank their slots
    /// and leave together after a stall, bursting above the rate.
    pub async fn admit(&self) -> SemaphorePermit<'_> {
        // The semaphore is never closed, so acquire cannot fail; wait again if it ever did.
        let permit = loop {
            if let Ok(p) = self.in_flight.acquire().await {
                break p;
            }
            tokio::task::yield_now().await;
        };
        self.normal.until_ready().await;
        if self.is_slowed() {
            self.slow.until_ready().await;
        }
        permit
    }

    /// Records a 429: slow down for a while.
    pub fn throttled(&self) {
        let until = self.now_ms() + SLOW_DOWN_FOR.as_millis() as u64;
        self.slow_until_ms.fetch_max(until, Ordering::Relaxed);
    }

    /// Whether the slower pace applies now.
    pub fn is_slowed(&self) -> bool {
        self.slow_until_ms.load(Ordering::Relaxed) > self.now_ms()
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_429_slows_requests_down_for_a_while() {
        let p = Pacer::new(100, 4);
        assert!(!p.is_slowed());
        p.throttled();
        assert!(p.is_slowed());
        // The window is SLOW_DOWN_FOR long from the 429.
        let until = p.slow_until_ms.load(Ordering::Relaxed);
        assert!(until >= SLOW_DOWN_FOR.as_millis() as u64);
    }

    #[tokio::test]
    async fn slowed_pacing_halves_the_rate() {
        let p = Pacer::new(40, 4);
        p.throttled();
        let t = Instant::now();
        for _ in 0..6 {
            drop(p.admit().await);
        }
        // 6 requests at 20/s (half of 40/s) need at least ~250 ms after the first.
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
    }
}
