//! The daemon-wide request pacing every request to Gradient passes: requests leave one at a time,
//! evenly spaced at the current rate less [`SLACK`], with at most `max_in_flight` waiting for
//! answers. It is GCRA (the rule behind governor) with a [`TOLERANCE`] under the slack: a request
//! may leave up to that much before its theoretical time, so a timer waking a little late costs no
//! rate, and any second holds at most the rate. Each departure is decided when it happens, one
//! request at a time: a runtime that stalls (a busy machine) sends the requests it held back spaced
//! as usual, never in a clump that would pack more than the rate into the next second.
//!
//! The rate adapts the way congestion control does (AIMD): it starts at the configured
//! `requests_per_second`; each 429 multiplies it by [`DECREASE`] (never below [`FLOOR`] per
//! second) and, when Gradient sends `Retry-After`, holds every request until then; each answer that
//! is not a 429 adds back [`CLIMB`] of the configured rate per second of clean answers (a little on
//! each answer), up to the configured rate. A 429 from jittered arrivals or a neighbour sharing the
//! vendor's limit costs about half a second of 5% less, not half a run.
//!
//! Time is tokio's, so the rule is tested under paused time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// Each 429 multiplies the rate by this.
pub const DECREASE: f64 = 0.9;
/// The slowest the pace goes, in requests per second.
pub const FLOOR: f64 = 1.0;
/// While answers are clean, the rate climbs by this share of the configured rate per second.
pub const CLIMB: f64 = 0.1;
/// Each interval is this much longer than `1 / rate` (at 100/s, 5 ms of slack per second): room
/// for [`TOLERANCE`].
pub const SLACK: f64 = 0.005;
/// How much before its theoretical time a request may leave (absorbs a timer's lateness). Any
/// second then holds at most `floor((1 s + TOLERANCE) / interval) + 1` requests, which is the rate
/// as long as this stays under `SLACK` × 1 s.
pub const TOLERANCE: Duration = Duration::from_millis(4);

/// Pacing shared by every request of one daemon.
#[derive(Debug)]
pub struct Pacer {
    state: Mutex<Pace>,
    in_flight: Arc<Semaphore>,
    /// The one request waiting for its departure (the others queue here, first come first served).
    turn: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct Pace {
    /// The configured rate, requests per second (changed by a reload).
    configured: f64,
    /// Requests per second now.
    rate: f64,
    /// The next request's theoretical departure (GCRA's TAT): it may leave [`TOLERANCE`] sooner.
    next: Instant,
    /// No request leaves before this (Gradient's `Retry-After`, honoured to the letter).
    hold: Instant,
    /// The configured requests in flight (changed by a reload).
    max_in_flight: usize,
}

impl Pacer {
    /// A pacer at `per_second` requests per second with at most `max_in_flight` at once.
    pub fn new(per_second: u32, max_in_flight: usize) -> Pacer {
        let configured = f64::from(per_second.max(1));
        Pacer {
            state: Mutex::new(Pace {
                configured,
                rate: configured,
                next: Instant::now(),
                hold: Instant::now(),
                max_in_flight: max_in_flight.max(1),
            }),
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// A reload's new settings, for the same pacer: the rate in force keeps what 429s taught it
    /// (never above the new configured rate), more places in flight open at once, and fewer take
    /// effect as requests in flight finish (a task holds back the difference; must run inside the
    /// runtime).
    pub fn reconfigure(&self, per_second: u32, max_in_flight: usize) {
        let configured = f64::from(per_second.max(1));
        let wanted = max_in_flight.max(1);
        let had = {
            let mut p = self.pace();
            p.rate = p.rate.min(configured);
            if p.configured < configured && p.rate >= p.configured {
                p.rate = configured;
            }
            p.configured = configured;
            std::mem::replace(&mut p.max_in_flight, wanted)
        };
        if wanted > had {
            self.in_flight.add_permits(wanted - had);
        } else if wanted < had {
            let fewer = u32::try_from(had - wanted).unwrap_or(u32::MAX);
            let sem = self.in_flight.clone();
            tokio::spawn(async move {
                if let Ok(p) = sem.acquire_many(fewer).await {
                    p.forget();
                }
            });
        }
    }

    fn pace(&self) -> std::sync::MutexGuard<'_, Pace> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a place among the requests in flight, then for its turn, then for its time in
    /// the pace. The order matters: taking a time first would let callers queued on the semaphore
    /// bank it and leave together after a stall, bursting above the rate; and the time is taken
    /// when the request leaves, so one that wakes late pushes the ones after it back.
    pub async fn admit(&self) -> SemaphorePermit<'_> {
        // The semaphore is never closed, so acquire cannot fail; wait again if it ever did.
        let permit = loop {
            if let Ok(p) = self.in_flight.acquire().await {
                break p;
            }
            tokio::task::yield_now().await;
        };
        let _turn = self.turn.lock().await;
        loop {
            // Read again after each wait: a 429's Retry-After may have moved it.
            let due = {
                let p = self.pace();
                p.next.checked_sub(TOLERANCE).unwrap_or(p.next).max(p.hold)
            };
            if Instant::now() >= due {
                break;
            }
            tokio::time::sleep_until(due).await;
        }
        let mut p = self.pace();
        p.next = p.next.max(Instant::now()) + interval(p.rate);
        permit
    }

    /// Gradient answered 429: slow down, and hold every request until `retry_after` has passed.
    pub fn throttled(&self, retry_after: Option<Duration>) {
        let mut p = self.pace();
        p.rate = (p.rate * DECREASE).max(FLOOR);
        let now = Instant::now();
        let resume = now + retry_after.unwrap_or(Duration::ZERO);
        p.hold = p.hold.max(resume);
        p.next = p.next.max(resume).max(now + interval(p.rate));
        metrics::gauge!("gradient_connector_gradient_pace_per_second").set(p.rate);
    }

    /// Gradient answered something other than 429: climb back towards the configured rate.
    pub fn answered(&self) {
        let mut p = self.pace();
        if p.rate < p.configured {
            // `rate` answers come per second: each adds its share of CLIMB × configured.
            p.rate = (p.rate + CLIMB * p.configured / p.rate).min(p.configured);
            metrics::gauge!("gradient_connector_gradient_pace_per_second").set(p.rate);
        }
    }

    /// Requests per second now.
    pub fn rate(&self) -> f64 {
        self.pace().rate
    }

    /// Whether the pace is below the configured rate (after 429s).
    pub fn is_slowed(&self) -> bool {
        let p = self.pace();
        p.rate < p.configured
    }
}

fn interval(rate: f64) -> Duration {
    Duration::from_secs_f64((1.0 + SLACK) / rate.max(FLOOR))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn admit_n(p: &Pacer, n: usize) -> Duration {
        let t = Instant::now();
        for _ in 0..n {
            drop(p.admit().await);
        }
        t.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn requests_leave_evenly_at_the_rate() {
        let p = Pacer::new(10, 4);
        // 51 requests at 10/s: the first at once, the last 5 s (and the slack) later — never
        // sooner.
        let took = admit_n(&p, 51).await;
        assert!(
            (Duration::from_millis(5000)..Duration::from_millis(5100)).contains(&took),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_held_back_by_a_stalled_runtime_leave_spaced_not_in_a_clump() {
        let p = Arc::new(Pacer::new(100, 64));
        let left = Arc::new(Mutex::new(Vec::new()));
        for _ in 0..40 {
            let (p, left) = (p.clone(), left.clone());
            tokio::spawn(async move {
                drop(p.admit().await);
                left.lock().unwrap().push(Instant::now());
            });
        }
        let step = |ms| async move {
            tokio::time::advance(Duration::from_millis(ms)).await;
            for _ in 0..50 {
                tokio::task::yield_now().await;
            }
        };
        for _ in 0..50 {
            step(1).await;
        }
        // The runtime stalls for 100 ms: every timer due meanwhile fires at once.
        step(100).await;
        for _ in 0..400 {
            step(1).await;
        }
        let left = left.lock().unwrap().clone();
        assert_eq!(left.len(), 40);
        let gap = interval(100.0) - TOLERANCE;
        for w in left.windows(2) {
            assert!(w[1] - w[0] >= gap, "{:?} apart", w[1] - w[0]);
        }
    }

    #[test]
    fn the_tolerance_fits_in_the_slack_of_a_second() {
        for rate in [1.0, 10.0, 90.0, 100.0] {
            let t = interval(rate).as_secs_f64();
            let most = ((1.0 + TOLERANCE.as_secs_f64()) / t).floor() + 1.0;
            assert!(most <= rate, "{rate}/s: {most} in a second");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_banks_no_burst() {
        let p = Pacer::new(10, 4);
        admit_n(&p, 3).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        // After ten idle seconds, 11 requests still take a second.
        let took = admit_n(&p, 11).await;
        assert!(took >= Duration::from_millis(990), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn each_429_costs_a_tenth_and_clean_answers_climb_back() {
        let p = Pacer::new(100, 8);
        p.throttled(None);
        assert!((p.rate() - 90.0).abs() < 1e-9, "{}", p.rate());
        for _ in 0..4 {
            p.throttled(None);
        }
        assert!(
            (p.rate() - 100.0 * 0.9f64.powi(5)).abs() < 1e-9,
            "{}",
            p.rate()
        );
        // The floor.
        for _ in 0..200 {
            p.throttled(None);
        }
        assert!((p.rate() - FLOOR).abs() < 1e-9, "{}", p.rate());
        // Additive climb: 10% of the configured rate per second of clean answers.
        let p = Pacer::new(100, 8);
        p.throttled(None);
        let mut answers = 0;
        while p.is_slowed() {
            drop(p.admit().await);
            p.answered();
            answers += 1;
        }
        // From 90/s back to 100/s: ~95 clean answers (about a second of them), not one.
        assert!((80..120).contains(&answers), "{answers}");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_holds_every_request_until_it_passes() {
        let p = Pacer::new(50, 8);
        drop(p.admit().await);
        p.throttled(Some(Duration::from_secs(3)));
        let t = Instant::now();
        drop(p.admit().await);
        assert!(t.elapsed() >= Duration::from_secs(3), "{:?}", t.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_changes_the_rate_and_the_places_in_flight_of_the_same_pacer() {
        let p = Pacer::new(10, 2);
        // 10/s: 20 requests take ~2 s.
        let t = admit_n(&p, 20).await;
        assert!(t >= Duration::from_millis(1900), "{t:?}");
        p.reconfigure(100, 4);
        assert!((p.rate() - 100.0).abs() < 1e-9);
        let t = admit_n(&p, 20).await;
        assert!(t < Duration::from_millis(300), "{t:?}");
        // Four places now: a fifth request waits for one of them.
        let held: Vec<_> = futures_util_join(&p, 4).await;
        assert_eq!(held.len(), 4);
        assert!(
            tokio::time::timeout(Duration::from_secs(5), p.admit())
                .await
                .is_err(),
            "a fifth request got a place"
        );
        drop(held);
        // Fewer places take effect as requests finish: back to one.
        p.reconfigure(100, 1);
        tokio::task::yield_now().await;
        let one = p.admit().await;
        assert!(
            tokio::time::timeout(Duration::from_secs(5), p.admit())
                .await
                .is_err(),
            "a second request got a place after the reload to one"
        );
        drop(one);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_keeps_what_429s_taught_the_pacer() {
        let p = Pacer::new(100, 8);
        p.throttled(None);
        let slowed = p.rate();
        assert!(slowed < 100.0);
        p.reconfigure(100, 8);
        assert!((p.rate() - slowed).abs() < 1e-9, "a reload forgot the 429");
        assert!(p.is_slowed());
        p.reconfigure(50, 8);
        assert!(p.rate() <= 50.0);
    }

    async fn futures_util_join(p: &Pacer, n: usize) -> Vec<SemaphorePermit<'_>> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(p.admit().await);
        }
        v
    }
}
