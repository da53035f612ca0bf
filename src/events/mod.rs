//! Events: the daemon tells the vendor's console what happened (`[[webhook]]`), the Standard
//! Webhooks way, at least once.
//!
//! Events are written to the store's outbox (`store::outbox`) by whoever changes the state they
//! report — the connector lifecycle, a run's close — in the same write, and only when a webhook
//! (or an MSP contact, see [`mail`]) wants them. The webhooks are one channel of the delivery loop
//! in `queue`, which both channels share: it reads due deliveries on its own
//! schedule (woken when this process enqueues, and every [`POLL`] for events written by other
//! processes such as `sync` or `connector add`), POSTs each one signed ([`sign`]), and records the
//! answer: 2xx → delivered; anything else → the next attempt by [`next_attempt`] (first retry within
//! 10 s, doubling, capped at 1 h), given up only after retrying for at least 24 hours. Delivery
//! never waits on a run, nor a run on delivery.
//!
//! Secrets are read from files (`config::WebhookSecret`), kept in a `SecretSlice`, and appear in no
//! log, error or `Debug`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use url::Url;

pub mod mail;
mod queue;

use queue::{Attempt, Channel, Deliverer, Queue, Words};

use crate::config::{Config, ConfigError, WebhookSecret};
use crate::store::outbox::Due;
use crate::store::StoreHandle;
use crate::time::{now_ms, Millis, SystemClock};

/// How often the outbox is read when nothing woke the task (events written by other processes).
pub const POLL: Duration = Duration::from_secs(10);
/// Per-request timeout of a delivery.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Deliveries in flight at once (per channel).
pub const CONCURRENCY: usize = 4;
/// The first retry's delay; each further retry doubles it.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);
/// The longest delay between two attempts.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);
/// Delivery is retried for at least this long after the event was written, then given up.
pub const RETRY_FOR: Duration = Duration::from_secs(24 * 3600);
/// Delivered (or given-up) events are kept this long, then pruned.
pub const KEEP_DONE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Any event is pruned after this long (a delivery to a webhook no longer configured, or written
/// by commands while no daemon ran).
pub const KEEP_ANY: Duration = Duration::from_secs(30 * 24 * 3600);

/// Prunes the outbox: delivered (or given-up) events older than [`KEEP_DONE`], and any event older
/// than [`KEEP_ANY`]. Run after each run (with the ledger's retention); a failure is logged.
pub async fn prune_events(store: &StoreHandle, now: Millis) {
    let done_before = now - KEEP_DONE.as_millis() as i64;
    let any_before = now - KEEP_ANY.as_millis() as i64;
    match store
        .write(move |s| s.prune_events(done_before, any_before))
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(events = n, "old outbox events pruned"),
        Err(e) => {
            tracing::warn!(error = %e, "could not prune old outbox events; the next run tries again")
        }
    }
}

/// A webhook ready to deliver to: its url and its decoded signing key.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Where events are POSTed (as configured: the outbox keys deliveries by it).
    pub url: Url,
    /// The signing key (Debug prints `[REDACTED]`).
    pub secret: WebhookSecret,
}

/// The configured webhooks with their secrets loaded: every secret problem, naming
/// `webhook[i].secret_file`, in one configuration error. (The daemon calls this at start.)
pub fn webhooks(config: &Config) -> Result<Vec<Webhook>, ConfigError> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (i, h) in config.webhooks.iter().enumerate() {
        match h.load_secret(i) {
            Ok(secret) => out.push(Webhook {
                url: h.url.clone(),
                secret,
            }),
            Err(p) => problems.push(p),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(ConfigError::Invalid {
            path: config.source.clone(),
            problems,
        })
    }
}

/// The `webhook-signature` header's value: `v1,` + base64 of HMAC-SHA256 of
/// `"{id}.{timestamp}.{body}"` keyed with `key` (the decoded secret).
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes a key of any size");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let tag = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag)
    )
}

/// The delay before the retry that follows `failed` failed attempts (1 → [`FIRST_RETRY`]),
/// doubling, capped at [`MAX_RETRY_DELAY`].
pub fn retry_delay(failed: u32) -> Duration {
    let doublings = failed.saturating_sub(1).min(20);
    FIRST_RETRY
        .saturating_mul(1u32 << doublings)
        .min(MAX_RETRY_DELAY)
}

/// When to try again after the `failed`-th failed attempt at `now`, for an event written at
/// `created_at`: None (give up) once the event has been retried for [`RETRY_FOR`].
pub fn next_attempt(created_at: Millis, failed: u32, now: Millis) -> Option<Millis> {
    if now.saturating_sub(created_at) >= RETRY_FOR.as_millis() as i64 {
        return None;
    }
    Some(now + retry_delay(failed).as_millis() as i64)
}

/// A url as logs show it: scheme, host, port and path (no credentials, no query).
pub fn url_for_logs(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default(),
            u.path()
        ),
        Err(_) => "(unparsable url)".into(),
    }
}

/// Why one delivery attempt failed. The receiver's URL is never in it (it may carry a secret).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// No answer: the connection failed or timed out.
    #[error("request failed: {0}")]
    Request(#[source] reqwest::Error),
    /// The receiver answered something other than 2xx.
    #[error("HTTP {status}")]
    Refused {
        /// Its status.
        status: u16,
    },
    /// The delivery task's HTTP client could not be built.
    #[error("webhook HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// The delivery task's HTTP client: rustls (ring), per-request timeout, no redirects.
fn client() -> Result<reqwest::Client, DeliveryError> {
    // Installing twice is harmless; reqwest needs a process-wide provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("gradient-connector/", env!("CARGO_PKG_VERSION")))
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(REQUEST_TIMEOUT.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(DeliveryError::Client)
}

/// Starts the delivery task: it runs until `stop` is cancelled (requests in flight are abandoned
/// then; they are tried again, with the same `webhook-id`, after a restart). With no webhook it
/// ends at once.
/// `pending` is kept at the number of events not delivered yet (for the daemon's `STATUS=` line),
/// refreshed after each pass; with no webhook there is nothing to deliver and nothing is polled.
pub fn spawn(
    store: StoreHandle,
    hooks: Vec<Webhook>,
    stop: CancellationToken,
    pending: Arc<AtomicU64>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if hooks.is_empty() {
            pending.store(0, Ordering::Relaxed);
            return;
        }
        let client = match client() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("{e}; webhook events are not delivered");
                return;
            }
        };
        tracing::info!(webhooks = hooks.len(), "webhook delivery started");
        let task = Deliverer {
            store,
            channel: Webhooks {
                hooks,
                transport: Http(client),
                pending,
            },
            clock: Arc::new(SystemClock),
        };
        tokio::select! {
            _ = task.run() => {}
            _ = stop.cancelled() => {}
        }
    })
}

/// How one delivery attempt reaches its webhook: HTTP in production ([`Http`]), a script in the
/// loop's tests.
trait Transport: Send + Sync {
    /// One attempt: Ok on 2xx; the error names the status or the network failure.
    fn post<'a>(
        &'a self,
        hook: &'a Webhook,
        due: &'a Due,
    ) -> Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>>;
}

/// The delivery task's HTTP client.
struct Http(reqwest::Client);

impl Transport for Http {
    fn post<'a>(
        &'a self,
        hook: &'a Webhook,
        due: &'a Due,
    ) -> Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>> {
        Box::pin(post(&self.0, hook, due))
    }
}

/// The webhooks as a delivery channel: the outbox rows to their urls, POSTed signed.
struct Webhooks<T: Transport> {
    hooks: Vec<Webhook>,
    transport: T,
    /// Events not delivered yet, for the daemon's `STATUS=` line.
    pending: Arc<AtomicU64>,
}

impl<T: Transport> Channel for Webhooks<T> {
    fn queue(&self) -> Queue {
        Queue::Webhooks(self.hooks.iter().map(|h| h.url.to_string()).collect())
    }

    const BATCH: u32 = 64;

    fn words(&self) -> Words {
        Words {
            sent: "webhook event delivered",
            failed: "webhook delivery failed",
            sent_is_news: false,
        }
    }

    fn shown(&self, due: &Due) -> String {
        url_for_logs(&due.url)
    }

    fn attempt<'a>(&'a self, _store: &'a StoreHandle, due: &'a Due) -> Attempt<'a> {
        Box::pin(async move {
            // A delivery to a webhook no longer configured is not this channel's (the queue
            // names only configured urls).
            let Some(hook) = self.hooks.iter().find(|h| h.url.as_str() == due.url) else {
                return Err("no such webhook is configured".into());
            };
            Ok(self.transport.post(hook, due).await?)
        })
    }

    fn after_pass<'a>(
        &'a self,
        store: &'a StoreHandle,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            if let Ok(c) = store.read(|s| s.outbox_counts()).await {
                self.pending.store(c.pending, Ordering::Relaxed);
            }
        })
    }
}

/// POSTs one event, signed; Ok on 2xx. The error names the status or the network failure,
/// never the url's credentials or the secret.
async fn post(client: &reqwest::Client, hook: &Webhook, d: &Due) -> Result<(), DeliveryError> {
    let ts = now_ms().div_euclid(1000);
    let signature = sign(hook.secret.key(), &d.event_id, ts, &d.body);
    let resp = client
        .post(hook.url.clone())
        .header("content-type", "application/json")
        .header("webhook-id", &d.event_id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(d.body.clone())
        .send()
        .await
        .map_err(|e| DeliveryError::Request(e.without_url()))?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(DeliveryError::Refused {
            status: status.as_u16(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Clock;

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The Standard Webhooks specification's example (also checked with Python's hmac module:
        // base64(hmac.new(b64decode(secret), b"msg_...1614265330.{...}", sha256).digest())).
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            sign(
                secret.key(),
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_are_whsec_base64_of_24_to_64_bytes_and_never_printed() {
        assert!(WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(WebhookSecret::parse("whsec_not base64!").is_err());
        let short = WebhookSecret::parse("whsec_c2hvcnQ=").unwrap_err();
        assert!(short.to_string().contains("24 to 64 bytes"), "{short}");
        let s = WebhookSecret::parse("  whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
        assert_eq!(format!("{s:?}"), "WebhookSecret([REDACTED])");
        let hook = Webhook {
            url: Url::parse("http://127.0.0.1:1/h").unwrap(),
            secret: s,
        };
        assert!(!format!("{hook:?}").contains("MfKQ"), "{hook:?}");
    }

    #[test]
    fn retries_start_within_10_s_double_cap_at_an_hour_and_last_a_day() {
        assert!(retry_delay(1) <= Duration::from_secs(10));
        assert_eq!(retry_delay(2), retry_delay(1) * 2);
        assert_eq!(retry_delay(3), retry_delay(1) * 4);
        assert_eq!(retry_delay(40), Duration::from_secs(3600));
        assert_eq!(retry_delay(u32::MAX), Duration::from_secs(3600));
        // A receiver that never answers 2xx: every failed attempt at the time it was due.
        let created = 1_000_000;
        let (mut now, mut failed, mut delays) = (created, 0u32, Vec::new());
        loop {
            failed += 1;
            match next_attempt(created, failed, now) {
                Some(at) => {
                    delays.push(at - now);
                    now = at;
                }
                None => break,
            }
        }
        assert!(delays[0] <= 10_000, "{delays:?}");
        assert!(delays.windows(2).all(|w| w[1] == (w[0] * 2).min(3_600_000)));
        assert!(delays.iter().all(|d| *d <= 3_600_000));
        assert!(
            now - created >= RETRY_FOR.as_millis() as i64,
            "retried for {} h only",
            (now - created) / 3_600_000
        );
        assert!(
            failed < 40,
            "about 34 attempts in a day, not a flood: {failed}"
        );
    }

    /// Wall time that follows tokio's (paused) clock from a fixed start.
    struct PausedClock {
        start_ms: Millis,
        start: tokio::time::Instant,
    }

    impl Clock for PausedClock {
        fn now(&self) -> Millis {
            self.start_ms + self.start.elapsed().as_millis() as Millis
        }
    }

    /// A receiver that answers from a script and notes when each attempt came.
    #[derive(Default)]
    struct Scripted {
        answers: std::sync::Mutex<std::collections::VecDeque<Result<(), DeliveryError>>>,
        came_at: std::sync::Mutex<Vec<tokio::time::Instant>>,
    }

    impl Transport for Arc<Scripted> {
        fn post<'a>(
            &'a self,
            _hook: &'a Webhook,
            _due: &'a Due,
        ) -> Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>> {
            self.came_at
                .lock()
                .unwrap()
                .push(tokio::time::Instant::now());
            let answer = self.answers.lock().unwrap().pop_front().unwrap_or(Ok(()));
            Box::pin(async move { answer })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_retries_after_5_10_and_20_s_then_delivers_and_counts_nothing_pending() {
        let dir = tempfile::tempdir().unwrap();
        let store = StoreHandle::new(&dir.path().join("s.db"), Duration::from_secs(1));
        let clock = Arc::new(PausedClock {
            start_ms: 1_800_000_000_000,
            start: tokio::time::Instant::now(),
        });
        let url = "http://127.0.0.1:9/hooks";
        let (targets, now) = (
            crate::domain::Targets::webhooks(vec![url.to_string()]),
            clock.now(),
        );
        store
            .write(move |s| {
                s.enqueue_event(
                    crate::domain::EventKind::ConnectorConnected,
                    &serde_json::json!({"connector": "c"}),
                    &targets,
                    now,
                )
            })
            .await
            .unwrap();
        let script = Arc::new(Scripted::default());
        script.answers.lock().unwrap().extend([
            Err(DeliveryError::Refused { status: 500 }),
            Err(DeliveryError::Refused { status: 500 }),
            Err(DeliveryError::Refused { status: 500 }),
            Ok(()),
        ]);
        let pending = Arc::new(AtomicU64::new(99));
        let loop_ = Deliverer {
            store: store.clone(),
            channel: Webhooks {
                hooks: vec![Webhook {
                    url: Url::parse(url).unwrap(),
                    secret: WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
                }],
                transport: script.clone(),
                pending: pending.clone(),
            },
            clock,
        };
        let started = tokio::time::Instant::now();
        let delivered = async {
            while script.came_at.lock().unwrap().len() < 4 || pending.load(Ordering::Relaxed) != 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::select! {
            _ = loop_.run() => panic!("the delivery loop ended"),
            _ = delivered => {}
            _ = tokio::time::sleep(Duration::from_secs(600)) => panic!("not delivered in 10 min"),
        }
        let came_at = script.came_at.lock().unwrap().clone();
        let offsets: Vec<u64> = came_at
            .iter()
            .map(|t| t.duration_since(started).as_millis() as u64)
            .collect();
        // 5, 10 and 20 s after each failure: never earlier (the exact schedule is
        // `next_attempt`'s, tested on its own above). How late is not asked: paused time jumps
        // ahead to the next timer whenever the store works on its own threads, by whole minutes
        // on a busy machine.
        let gaps: Vec<u64> = offsets.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(gaps.len(), 3, "attempts at {offsets:?} ms");
        for (gap, due) in gaps.iter().zip([5_000u64, 10_000, 20_000]) {
            assert!(gap >= &due, "attempts at {offsets:?} ms");
        }
        // (The first attempt's own time is not checked: paused time moves on while the store
        // works on its own threads.)
        let (id, _) = store
            .read(|s| s.events_of(crate::domain::EventKind::ConnectorConnected))
            .await
            .unwrap()
            .remove(0);
        let state = store
            .read(move |s| s.deliveries(&id))
            .await
            .unwrap()
            .remove(0);
        assert_eq!(state.attempts, 4);
        assert!(state.delivered_at.is_some());
    }

    #[test]
    fn logs_show_no_credentials_or_query() {
        assert_eq!(
            url_for_logs("https://user:pw@console.example:8443/hooks/g?token=abc"),
            "https://console.example:8443/hooks/g"
        );
    }
}
