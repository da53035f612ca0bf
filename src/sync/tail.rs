//! The rebuilding tail of one connector's pushes. Gradient must rebuild the MSP's billing view
//! after a run's counts, so a run's last call to the count route carries no `no_build`, and it may
//! leave only once every count sent with `no_build` was answered — or it could reach Gradient
//! before them. Waiting for that drain costs one round trip in which the pacer idles.
//!
//! So the pushes that leave within about one round trip of the end rebuild as well (Gradient
//! debounces rebuilds): the pace never pauses, and the last push finds the drain already over.
//! The tail's length is the pushes one round trip holds — `requests_per_second` × a round trip (a
//! quarter more for jitter), at most the requests in flight — and only when the smoothed round
//! trip is [`TAIL_FROM`] or longer: at a nearby Gradient the tail is the one last push, as
//! GRADIENT_API.md's rule has it. The round trip is estimated the way TCP does (RFC 6298: a
//! smoothed mean, and for the length the mean plus twice the mean deviation) from [`SAMPLES`]
//! answers on, so a few slow answers on a busy machine do not turn a nearby Gradient's run into
//! many rebuilding calls.
//!
//! The rule, decided under one lock as each push leaves the pacer ([`Leg`]'s [`BuildChoice`]):
//! - a push leaves with `no_build` while more pushes than the tail's length are still unsent;
//!   after that every push rebuilds (once one has, the length only grows, so `no_build` never
//!   follows a rebuilding push);
//! - the connector's last push waits until every other push has left and every `no_build` push
//!   was answered ([`Tail::drained`]);
//! - a rebuilding push that left after every `no_build` push was answered and that Gradient
//!   accepted **seals** the run ([`Tail::sealed`]); a connector's run without a seal re-pushes one
//!   accepted pair, rebuilding.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::gradient::BuildChoice;

/// Round trips shorter than this keep the tail at the one last push: the drain idles the pacer
/// for less than this, which is not worth more rebuilding calls.
pub const TAIL_FROM: Duration = Duration::from_millis(100);

/// Answers seen before the round trip is trusted (until then the tail is the last push alone).
pub const SAMPLES: u32 = 8;

/// The tail's length for a round trip: 1 while the `smoothed` round trip is under [`TAIL_FROM`];
/// otherwise the pushes that leave during an `upper` round trip at `per_second` (a quarter more,
/// for jitter), at most `max_in_flight` and a quarter (no more can leave while one round trip is
/// open). Pure.
pub fn tail_length(
    per_second: u32,
    smoothed: Duration,
    upper: Duration,
    max_in_flight: usize,
) -> usize {
    if smoothed < TAIL_FROM {
        return 1;
    }
    let during = f64::from(per_second.max(1)) * upper.max(smoothed).as_secs_f64() * 1.25;
    let most = max_in_flight.max(1) + max_in_flight.max(1) / 4 + 1;
    // A finite, non-negative figure, capped: the cast cannot wrap.
    (during.ceil() as usize).clamp(1, most)
}

/// A round trip's estimate: smoothed mean and mean deviation (RFC 6298's SRTT and RTTVAR).
#[derive(Debug, Default, Clone, Copy)]
struct RoundTrip {
    samples: u32,
    smoothed: Duration,
    deviation: Duration,
}

impl RoundTrip {
    /// Adds one answer's round trip; from [`SAMPLES`] answers on, the smoothed mean and the upper
    /// estimate (the mean plus twice the deviation).
    fn sample(&mut self, r: Duration) -> Option<(Duration, Duration)> {
        if self.samples == 0 {
            self.smoothed = r;
            self.deviation = r / 2;
        } else {
            let off = self.smoothed.abs_diff(r);
            self.deviation = self.deviation * 3 / 4 + off / 4;
            self.smoothed = self.smoothed * 7 / 8 + r / 8;
        }
        self.samples = self.samples.saturating_add(1);
        (self.samples >= SAMPLES).then(|| (self.smoothed, self.smoothed + self.deviation * 2))
    }
}

/// One connector's pushes as they leave and are answered.
#[derive(Debug)]
pub struct Tail {
    state: Mutex<State>,
    changed: Notify,
    per_second: u32,
    max_in_flight: usize,
}

#[derive(Debug)]
struct State {
    /// Pushes that have not left (nor settled without leaving).
    unsent: usize,
    /// Pushes that left with `no_build` and are not answered yet.
    open: usize,
    /// The tail's length (only grows once a push left rebuilding).
    length: usize,
    /// A push left rebuilding: from then on no push may leave with `no_build`.
    rebuilding: bool,
    /// The round trip's estimate.
    round_trip: RoundTrip,
    /// A rebuilding push that left after the drain was accepted.
    sealed: bool,
}

impl Tail {
    /// A connector's `pushes` at the client's rate and bound.
    pub fn new(pushes: usize, per_second: u32, max_in_flight: usize) -> Tail {
        Tail {
            state: Mutex::new(State {
                unsent: pushes,
                open: 0,
                length: 1,
                rebuilding: false,
                round_trip: RoundTrip::default(),
                sealed: false,
            }),
            changed: Notify::new(),
            per_second,
            max_in_flight,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a rebuilding push that left after the drain was accepted.
    pub fn sealed(&self) -> bool {
        self.state().sealed
    }

    /// Waits until every other push has left and every `no_build` push was answered (the caller
    /// is the last push, still unsent).
    pub async fn drained(&self) {
        loop {
            let wake = self.changed.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            {
                let s = self.state();
                if s.unsent <= 1 && s.open == 0 {
                    return;
                }
            }
            wake.await;
        }
    }

    /// The leaving of one push.
    pub fn leg(&self) -> Leg<'_> {
        Leg {
            tail: self,
            left: Mutex::new(None),
            settled: AtomicBool::new(false),
        }
    }
}

/// One push: decides `no_build` as it leaves, and settles when answered (or dropped).
#[derive(Debug)]
pub struct Leg<'t> {
    tail: &'t Tail,
    left: Mutex<Option<Departure>>,
    settled: AtomicBool,
}

#[derive(Debug, Clone, Copy)]
struct Departure {
    at: Instant,
    /// When its answer came, if it settles later (an early count waits for the set-up's).
    answered: Option<Instant>,
    rebuilding: bool,
    /// Left after every `no_build` push was answered.
    after_drain: bool,
}

impl BuildChoice for Leg<'_> {
    fn no_build(&self) -> bool {
        let mut s = self.tail.state();
        s.unsent = s.unsent.saturating_sub(1);
        let rebuilding = s.unsent < s.length;
        let after_drain = s.open == 0;
        if rebuilding {
            s.rebuilding = true;
        } else {
            s.open += 1;
        }
        *self.left.lock().unwrap_or_else(|p| p.into_inner()) = Some(Departure {
            at: Instant::now(),
            answered: None,
            rebuilding,
            after_drain,
        });
        drop(s);
        self.tail.changed.notify_waiters();
        !rebuilding
    }
}

impl Leg<'_> {
    /// Whether the push left with `no_build` (false before it left).
    pub fn left_with_no_build(&self) -> bool {
        self.left
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|d| !d.rebuilding)
    }

    /// The push's answer came now, though it settles later: its round trip ends here.
    pub fn answered(&self) {
        if let Some(d) = self.left.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            d.answered.get_or_insert_with(Instant::now);
        }
    }

    /// The push was answered (`accepted`: Gradient took the count; `attempts`: requests made), or
    /// ended without leaving.
    pub fn settle(&self, accepted: bool, attempts: u32) {
        if self.settled.swap(true, Ordering::Relaxed) {
            return;
        }
        let left = *self.left.lock().unwrap_or_else(|p| p.into_inner());
        let mut s = self.tail.state();
        match left {
            None => s.unsent = s.unsent.saturating_sub(1),
            Some(d) => {
                if d.rebuilding {
                    s.sealed |= accepted && d.after_drain;
                } else {
                    s.open = s.open.saturating_sub(1);
                }
                // One attempt: the time from leaving to the answer is a round trip.
                if attempts == 1 {
                    if let Some((smoothed, upper)) = s
                        .round_trip
                        .sample(d.answered.unwrap_or_else(Instant::now) - d.at)
                    {
                        let t = self.tail;
                        let wanted = tail_length(t.per_second, smoothed, upper, t.max_in_flight);
                        // Once a push left rebuilding, a shorter tail could put a `no_build`
                        // push after it.
                        s.length = if s.rebuilding {
                            s.length.max(wanted)
                        } else {
                            wanted
                        };
                    }
                }
            }
        }
        drop(s);
        self.tail.changed.notify_waiters();
    }
}

impl Drop for Leg<'_> {
    /// A push dropped unanswered (the run aborted) no longer holds the drain open.
    fn drop(&mut self) {
        self.settle(false, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn the_tail_is_one_round_trip_of_pushes_from_a_tenth_of_a_second() {
        assert_eq!(tail_length(100, MS(0), MS(0), 64), 1);
        assert_eq!(tail_length(100, MS(99), MS(300), 64), 1);
        assert_eq!(tail_length(100, MS(100), MS(100), 64), 13);
        assert_eq!(tail_length(100, MS(500), MS(500), 64), 63);
        // Jitter: the length covers the upper estimate.
        assert_eq!(tail_length(100, MS(400), MS(600), 64), 75);
        // No more than the requests in flight can leave during one round trip.
        assert_eq!(tail_length(100, MS(5000), MS(5000), 64), 81);
        assert_eq!(tail_length(10, MS(400), MS(400), 64), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn at_a_nearby_gradient_only_the_last_push_rebuilds_after_the_drain() {
        let tail = Tail::new(3, 100, 64);
        let (a, b, c) = (tail.leg(), tail.leg(), tail.leg());
        assert!(a.no_build() && b.no_build());
        // The last push waits for the answers.
        let wait = tail.drained();
        tokio::pin!(wait);
        assert!(futures::poll!(wait.as_mut()).is_pending());
        tokio::time::advance(MS(20)).await;
        a.settle(true, 1);
        assert!(futures::poll!(wait.as_mut()).is_pending());
        b.settle(true, 1);
        assert!(futures::poll!(wait.as_mut()).is_ready());
        assert!(!c.no_build(), "the last push rebuilds");
        assert!(!tail.sealed());
        c.settle(true, 1);
        assert!(tail.sealed());
    }

    #[tokio::test(start_paused = true)]
    async fn at_half_a_second_the_pushes_of_the_last_round_trip_rebuild() {
        let tail = Tail::new(200, 100, 64);
        let legs: Vec<Leg> = (0..200).map(|_| tail.leg()).collect();
        let mut flags = Vec::new();
        // 10 ms apart, each answered 500 ms after it left.
        for (i, l) in legs.iter().enumerate() {
            if i >= 50 {
                legs[i - 50].settle(true, 1);
            }
            flags.push(l.no_build());
            tokio::time::advance(MS(10)).await;
        }
        let rebuilding = flags.iter().filter(|f| !**f).count();
        assert_eq!(rebuilding, 63, "one round trip and a quarter of pushes");
        assert!(flags[..137].iter().all(|f| *f) && flags[137..].iter().all(|f| !*f));
        // The last `no_build` push (the 137th) is answered 50 pushes later; those after it seal.
        for l in &legs[150..] {
            l.settle(true, 1);
        }
        assert!(tail.sealed());
    }

    #[test]
    fn slow_answers_among_quick_ones_keep_the_tail_at_the_last_push() {
        let mut rt = RoundTrip::default();
        for i in 0..40 {
            // 2 ms answers, two of them 300 ms (a busy machine).
            let slow = (20..22).contains(&i);
            let estimate = rt.sample(MS(if slow { 300 } else { 2 }));
            if i >= 7 {
                let (smoothed, upper) = estimate.unwrap();
                assert!(smoothed < TAIL_FROM, "answer {i}: {smoothed:?}");
                assert_eq!(tail_length(100, smoothed, upper, 64), 1);
            }
        }
        // Too few answers to trust: no estimate yet.
        let mut rt = RoundTrip::default();
        assert!((1..SAMPLES).all(|_| rt.sample(MS(500)).is_none()));
        assert!(rt
            .sample(MS(500))
            .is_some_and(|(s, u)| s == MS(500) && u >= MS(500)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rebuilding_push_that_left_before_the_drain_does_not_seal() {
        let tail = Tail::new(2, 100, 64);
        let (a, b) = (tail.leg(), tail.leg());
        assert!(a.no_build());
        // b leaves while a is unanswered: it rebuilds, but may reach Gradient first.
        assert!(!b.no_build());
        b.settle(true, 1);
        a.settle(true, 1);
        assert!(!tail.sealed());
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_settled_later_counts_its_round_trip_to_the_answer() {
        // Early counts settle once the set-up has answered, which may be long after their own.
        let tail = Tail::new(200, 100, 64);
        let legs: Vec<Leg> = (0..8).map(|_| tail.leg()).collect();
        assert!(legs.iter().all(|l| l.no_build()));
        tokio::time::advance(MS(500)).await;
        legs.iter().for_each(Leg::answered);
        tokio::time::advance(MS(1500)).await;
        legs.iter().for_each(|l| l.settle(true, 1));
        let length = tail.state().length;
        // Two seconds would give the cap (81).
        assert!((63..81).contains(&length), "{length}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_push_that_never_left_or_was_dropped_releases_the_drain() {
        let tail = Tail::new(3, 100, 64);
        let a = tail.leg();
        assert!(a.no_build());
        let b = tail.leg();
        b.settle(false, 0);
        let wait = tail.drained();
        tokio::pin!(wait);
        assert!(futures::poll!(wait.as_mut()).is_pending());
        drop(a);
        assert!(futures::poll!(wait.as_mut()).is_ready());
    }
}
