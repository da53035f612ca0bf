//! The core's rules under paused tokio time, with a fake driver that records what it was asked.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::*;

/// Wall time that follows tokio's (paused) clock from a fixed start.
struct TestClock {
    start_ms: Millis,
    start: tokio::time::Instant,
}

impl Clock for TestClock {
    fn now(&self) -> Millis {
        self.start_ms + self.start.elapsed().as_millis() as Millis
    }
}

/// What the fake driver does for each run it is asked to start, in order (then: `Ran` after 10 s).
#[derive(Clone, Copy)]
enum Script {
    /// Takes this long, honours stop.
    Ran(Duration),
    /// The run lock is held.
    LockHeld,
    /// Never finishes and ignores stop (only abort ends it).
    Stuck,
}

#[derive(Default)]
struct Seen {
    started: Vec<(RunRequest, Millis)>,
    abandoned: usize,
    next_slots: Vec<Option<Millis>>,
    reload_cron: Option<String>,
    /// How long each reload takes (a slow file system).
    reload_takes: Duration,
    /// Reloads started.
    reloads: usize,
}

struct FakeDriver {
    clock: Arc<TestClock>,
    script: VecDeque<Script>,
    seen: Arc<Mutex<Seen>>,
}

impl Driver for FakeDriver {
    fn start_run(&mut self, req: RunRequest, control: RunControl) -> RunFuture {
        self.seen
            .lock()
            .unwrap()
            .started
            .push((req, self.clock.now()));
        let step = self
            .script
            .pop_front()
            .unwrap_or(Script::Ran(Duration::from_secs(10)));
        Box::pin(async move {
            match step {
                Script::Ran(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = control.stop.cancelled() => {}
                    }
                    RunEnd::Ran(RunDone {
                        summary: "run ok".into(),
                        report: None,
                    })
                }
                Script::LockHeld => RunEnd::LockHeld,
                Script::Stuck => {
                    control.abort.cancelled().await;
                    std::future::pending::<RunEnd>().await
                }
            }
        })
    }

    fn reload(&mut self) -> ReloadFuture {
        let seen = self.seen.clone();
        Box::pin(async move {
            let takes = {
                let mut s = seen.lock().unwrap();
                s.reloads += 1;
                s.reload_takes
            };
            tokio::time::sleep(takes).await;
            // The file as it is at the end of the read.
            let cron = seen.lock().unwrap().reload_cron.clone();
            // Refused the way the reader refuses: an invalid file naming its key.
            let refused = |message: String| {
                ReloadError::Config(crate::config::ConfigError::Invalid {
                    path: "/etc/gradient-connector/config.toml".into(),
                    problems: vec![crate::config::Problem {
                        key: "schedule.cron".into(),
                        message,
                    }],
                })
            };
            match cron {
                Some(c) => Ok(Reloaded {
                    schedule: Schedule::new(&c, chrono_tz::UTC)
                        .map_err(|e| refused(e.to_string()))?,
                }),
                None => Err(refused("not set".into())),
            }
        })
    }

    fn next_slot_changed(&mut self, next: Option<Millis>) {
        self.seen.lock().unwrap().next_slots.push(next);
    }

    fn status(&mut self, _line: &str) {}

    fn abandoned(&mut self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        self.seen.lock().unwrap().abandoned += 1;
        // As with a store locked by another writer: recording never finishes.
        Box::pin(std::future::pending())
    }
}

/// 2026-11-02T01:59:00Z: one minute before a daily 02:00 UTC slot.
const START: Millis = 1_793_584_740_000;

struct Harness {
    events: mpsc::Sender<DaemonEvent>,
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
    clock: Arc<TestClock>,
}

fn harness(cron: &str, script: &[Script], first: Option<RunRequest>) -> Harness {
    let clock = Arc::new(TestClock {
        start_ms: START,
        start: tokio::time::Instant::now(),
    });
    let seen = Arc::new(Mutex::new(Seen::default()));
    let driver = FakeDriver {
        clock: clock.clone(),
        script: script.iter().copied().collect(),
        seen: seen.clone(),
    };
    let schedule = Schedule::new(cron, chrono_tz::UTC).unwrap();
    let core = Core::new(clock.clone(), driver, schedule);
    let (tx, rx) = mpsc::channel(16);
    let task = tokio::spawn(core.run(first, rx));
    Harness {
        events: tx,
        seen,
        task,
        clock,
    }
}

impl Harness {
    async fn send(&self, ev: DaemonEvent) {
        self.events.send(ev).await.unwrap();
    }

    async fn sync_now(&self) {
        self.send(DaemonEvent::SyncNow {
            trigger: Trigger::Signal,
            connector: None,
            done: None,
        })
        .await;
    }

    fn started(&self) -> Vec<(RunRequest, Millis)> {
        self.seen.lock().unwrap().started.clone()
    }

    /// Stops the core; returns how long the stop took (virtual time).
    async fn stop(self) -> Duration {
        let t = tokio::time::Instant::now();
        self.send(DaemonEvent::Shutdown).await;
        self.task.await.unwrap();
        t.elapsed()
    }
}

async fn pass(d: Duration) {
    tokio::time::sleep(d).await;
}

const NEVER: &str = "0 0 2 1 1 *"; // 1 January only: far from START

#[tokio::test(start_paused = true)]
async fn a_request_while_a_run_is_active_queues_exactly_one_more() {
    let h = harness(NEVER, &[], None);
    h.sync_now().await;
    pass(Duration::from_secs(1)).await;
    for _ in 0..5 {
        h.sync_now().await;
        pass(Duration::from_millis(100)).await;
    }
    // First run ends at 10 s, the queued one at 20 s; then nothing more.
    pass(Duration::from_secs(60)).await;
    let started = h.started();
    assert_eq!(started.len(), 2, "one run plus exactly one queued");
    assert!(
        started[1].1 - started[0].1 >= 10_000,
        "the second waited for the first"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_slot_fires_at_its_time_and_the_next_is_planned() {
    let h = harness("0 0 2 * * *", &[Script::Ran(Duration::from_secs(5))], None);
    pass(Duration::from_secs(61)).await;
    let started = h.started();
    assert_eq!(started.len(), 1);
    let slot = START + 60_000;
    assert_eq!(started[0].0.slot_at, Some(slot));
    assert_eq!(started[0].0.trigger, Trigger::Schedule);
    assert_eq!(started[0].1, slot, "started at the slot, not before");
    let next = h.seen.lock().unwrap().next_slots.last().copied().flatten();
    assert_eq!(next, Some(slot + 86_400_000));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_slot_that_finds_the_run_lock_held_runs_as_soon_as_it_is_free() {
    let h = harness(
        "0 0 2 * * *",
        &[Script::LockHeld, Script::LockHeld, Script::LockHeld],
        None,
    );
    pass(Duration::from_secs(60 + 30)).await;
    let started = h.started();
    assert_eq!(started.len(), 4, "three refusals, then the run");
    let slot = START + 60_000;
    assert!(
        started.iter().all(|(r, _)| r.slot_at == Some(slot)),
        "every try carries the slot"
    );
    // Backoff 1 s, 2 s, 4 s: the run starts 7 s after the slot.
    assert_eq!(started[3].1 - slot, 7_000);
    // A request arriving during the backoff is queued behind the slot, not instead of it.
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_manual_request_during_the_lock_backoff_does_not_replace_the_slot() {
    let h = harness("0 0 2 * * *", &[Script::LockHeld], None);
    pass(Duration::from_millis(60_500)).await;
    h.sync_now().await;
    pass(Duration::from_secs(30)).await;
    let started = h.started();
    assert_eq!(started[1].0.slot_at, Some(START + 60_000), "the slot ran");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_core_answers_the_watchdog_during_a_run_and_a_burst_of_signals() {
    let h = harness(NEVER, &[Script::Stuck], None);
    h.sync_now().await;
    for _ in 0..50 {
        h.sync_now().await;
        h.send(DaemonEvent::Reload).await;
        let (tx, rx) = oneshot::channel();
        h.send(DaemonEvent::Probe(tx)).await;
        tokio::time::timeout(Duration::from_millis(10), rx)
            .await
            .expect("probe answered within 10 ms")
            .unwrap();
        pass(Duration::from_millis(200)).await;
    }
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_reload_runs_off_the_loop_and_a_sighup_during_it_reads_the_file_once_more() {
    let h = harness("0 0 2 * * *", &[], None);
    {
        let mut s = h.seen.lock().unwrap();
        s.reload_takes = Duration::from_secs(30);
        s.reload_cron = Some("0 30 1 * * *".into());
    }
    h.send(DaemonEvent::Reload).await;
    pass(Duration::from_secs(1)).await;
    // Three more SIGHUPs while the file is read: one more read after it, not three.
    for _ in 0..3 {
        h.send(DaemonEvent::Reload).await;
    }
    for _ in 0..20 {
        let (tx, rx) = oneshot::channel();
        h.send(DaemonEvent::Probe(tx)).await;
        tokio::time::timeout(Duration::from_millis(10), rx)
            .await
            .expect("probe answered within 10 ms during a reload")
            .unwrap();
        pass(Duration::from_millis(500)).await;
    }
    assert_eq!(h.seen.lock().unwrap().reloads, 1, "one reload at a time");
    assert_eq!(
        h.seen.lock().unwrap().next_slots.len(),
        1,
        "nothing replanned before the read ends"
    );
    pass(Duration::from_secs(20)).await;
    assert_eq!(
        h.seen.lock().unwrap().reloads,
        2,
        "the SIGHUPs during it: one more read"
    );
    pass(Duration::from_secs(40)).await;
    assert_eq!(h.seen.lock().unwrap().reloads, 2);
    let slots = h.seen.lock().unwrap().next_slots.clone();
    assert_eq!(slots.len(), 3, "replanned after each read: {slots:?}");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_abandons_a_stuck_run_within_ten_seconds() {
    let h = harness(NEVER, &[Script::Stuck], None);
    h.sync_now().await;
    pass(Duration::from_secs(1)).await;
    let seen = h.seen.clone();
    let took = h.stop().await;
    // The runtime then waits at most RUNTIME_SHUTDOWN for blocking store work.
    let budget = took + crate::daemon::RUNTIME_SHUTDOWN;
    assert!(budget < Duration::from_secs(10), "stop took {budget:?}");
    assert!(took >= SHUTDOWN_GRACE, "in-flight requests got their grace");
    assert_eq!(seen.lock().unwrap().abandoned, 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_a_run_that_honours_stop_finish_without_abandoning() {
    let h = harness(NEVER, &[Script::Ran(Duration::from_secs(300))], None);
    h.sync_now().await;
    pass(Duration::from_secs(1)).await;
    let seen = h.seen.clone();
    let took = h.stop().await;
    assert!(took < Duration::from_secs(1), "stop took {took:?}");
    assert_eq!(seen.lock().unwrap().abandoned, 0);
}

#[tokio::test(start_paused = true)]
async fn reload_replans_the_next_slot_and_a_bad_one_keeps_the_old() {
    let h = harness("0 0 2 * * *", &[], None);
    h.send(DaemonEvent::Reload).await; // no cron set: invalid → keep
    pass(Duration::from_millis(10)).await;
    h.seen.lock().unwrap().reload_cron = Some("0 30 1 * * *".into());
    h.send(DaemonEvent::Reload).await;
    pass(Duration::from_millis(10)).await;
    let slots = h.seen.lock().unwrap().next_slots.clone();
    assert_eq!(
        slots.len(),
        2,
        "planned at start and after the good reload only"
    );
    // 01:30 tomorrow (today's 01:30 has passed at 01:59).
    assert_eq!(slots[1], Some(START - 29 * 60_000 + 86_400_000));
    let _ = h.clock.now();
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_first_request_starts_at_once() {
    let first = RunRequest {
        trigger: Trigger::CatchUp,
        connector: None,
        month: None,
        slot_at: Some(START - 86_400_000),
    };
    let h = harness(NEVER, &[], Some(first));
    pass(Duration::from_millis(1)).await;
    let started = h.started();
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].0.trigger, Trigger::CatchUp);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_waiting_request_is_told_when_the_run_that_serves_it_ends() {
    let h = harness(NEVER, &[], None);
    h.sync_now().await;
    pass(Duration::from_secs(1)).await;
    // Asked during the first run: served by the queued one, which ends at 20 s.
    let (tx, rx) = oneshot::channel();
    h.send(DaemonEvent::SyncNow {
        trigger: Trigger::Api,
        connector: None,
        done: Some(tx),
    })
    .await;
    let t = tokio::time::Instant::now();
    let end = rx.await.unwrap();
    assert!(matches!(end, RunEnd::Ran(_)));
    assert!(t.elapsed() >= Duration::from_secs(18), "{:?}", t.elapsed());
    assert_eq!(h.started().len(), 2);
    h.stop().await;
}

fn asked(trigger: Trigger, connector: Option<&str>, slot_at: Option<Millis>) -> RunRequest {
    RunRequest {
        trigger,
        connector: connector.map(ConnectorId::from),
        month: None,
        slot_at,
    }
}

#[test]
fn queued_requests_for_different_connectors_merge_into_a_run_of_all() {
    let a = asked(Trigger::Api, Some("a"), None);
    let b = asked(Trigger::Api, Some("b"), None);
    assert_eq!(merge(Some(a.clone()), b.clone()).connector, None);
    assert_eq!(
        merge(Some(a.clone()), a.clone()).connector.as_deref(),
        Some("a")
    );
    assert_eq!(merge(None, b.clone()).connector.as_deref(), Some("b"));
    // A run of all absorbs one connector, either way round.
    let all = asked(Trigger::Signal, None, None);
    assert_eq!(merge(Some(a.clone()), all.clone()).connector, None);
    assert_eq!(merge(Some(all), a.clone()).connector, None);
    // A slot keeps its trigger and slot, and its scope grows with the manual request's.
    let slot = asked(Trigger::Schedule, None, Some(START));
    let m = merge(Some(slot), b);
    assert_eq!(
        (m.trigger, m.slot_at, m.connector),
        (Trigger::Schedule, Some(START), None)
    );
}

#[tokio::test(start_paused = true)]
async fn queued_requests_for_two_connectors_run_both_and_each_waiter_is_told() {
    let h = harness(NEVER, &[], None);
    h.sync_now().await;
    pass(Duration::from_secs(1)).await;
    let mut told = Vec::new();
    for c in ["a", "b"] {
        let (tx, rx) = oneshot::channel();
        h.send(DaemonEvent::SyncNow {
            trigger: Trigger::Api,
            connector: Some(ConnectorId::from(c)),
            done: Some(tx),
        })
        .await;
        told.push(rx);
    }
    for rx in told {
        assert!(matches!(rx.await.unwrap(), RunEnd::Ran(_)));
    }
    let started = h.started();
    assert_eq!(started.len(), 2, "one run plus one queued");
    assert_eq!(
        started[1].0.connector, None,
        "the queued run serves a and b"
    );
    h.stop().await;
}
