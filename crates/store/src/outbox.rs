//! The outbox of webhook events: an event is written here — in the same write as the state change
//! it reports, where practical — before anything is sent, and the daemon's delivery task
//! (the `events` module) sends it from here, so a crash or a restart never loses one.
//!
//! One `events` row per event (its body is stored as sent: the same bytes on every attempt) and one
//! `event_deliveries` row per (event, webhook url), each with its attempts, its next attempt, and
//! when it was delivered or given up. Events are written only for the webhooks configured (and
//! subscribed to the event's kind) when they happen; none configured, nothing is written.

use rusqlite::{params, OptionalExtension, TransactionBehavior};
use tokio::sync::Notify;

use super::{Store, StoreError};
use crate::domain::{EventKind, Targets};
use crate::time::{format_ms, Millis};

/// Wakes this process's delivery task after an event was enqueued (see [`wake`]).
static WAKE: Notify = Notify::const_new();

/// Wakes this process's mail delivery task (see [`wake`]).
static MAIL_WAKE: Notify = Notify::const_new();

/// Tells this process's delivery tasks (webhooks and mail) that the outbox changed. Call it after
/// the write that enqueued an event has committed (the delivery tasks also look on their own
/// timer, which is how events written by another process — a `sync` or `connector add` command —
/// are found).
pub fn wake() {
    WAKE.notify_one();
    MAIL_WAKE.notify_one();
}

/// Resolves at the next [`wake`] (or at once when one happened since the last wait).
pub async fn woken() {
    WAKE.notified().await;
}

/// The mail task's [`woken`].
pub async fn mail_woken() {
    MAIL_WAKE.notified().await;
}

/// The webhooks' targets: `url` is one of the JSON array `?1`.
const TO_URLS: &str = "url IN (SELECT value FROM json_each(?1))";

/// A delivery whose time has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The event's id (the `webhook-id` header: the same on every attempt).
    pub event_id: String,
    /// The webhook it goes to.
    pub url: String,
    /// The event's kind, as stored.
    pub kind: String,
    /// The body, exactly as it is sent.
    pub body: String,
    /// When the event was written.
    pub created_at: Millis,
    /// Attempts made so far.
    pub attempts: u32,
}

/// One delivery's state (for tests and reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The webhook.
    pub url: String,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due.
    pub next_attempt_at: Millis,
    /// When the receiver answered 2xx.
    pub delivered_at: Option<Millis>,
    /// When delivery was given up.
    pub failed_at: Option<Millis>,
    /// The last failure (status or network error; never a secret).
    pub last_error: Option<String>,
}

/// What the outbox holds, for `status` and sd_notify.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutboxCounts {
    /// Deliveries still to be made (not delivered, not given up).
    pub pending: u64,
    /// Deliveries given up (after retrying for at least 24 hours) and not yet pruned.
    pub failed: u64,
    /// When the oldest event with a pending delivery was written.
    #[serde(serialize_with = "crate::time::serialize_rfc3339_opt")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub oldest_pending_at: Option<Millis>,
}

/// A new event id: `evt_` and 32 random hex digits.
fn new_event_id() -> String {
    format!("evt_{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// The body of an event as sent: `{"type", "timestamp" (RFC 3339 UTC), "data"}`.
pub fn event_body(kind: EventKind, data: &serde_json::Value, now: Millis) -> String {
    serde_json::json!({
        "type": kind.as_str(),
        "timestamp": format_ms(now),
        "data": data,
    })
    .to_string()
}

impl Store {
    /// Runs `f` in one immediate transaction: the state change and the event reporting it are
    /// written together or not at all.
    pub fn atomically<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let tx = rusqlite::Transaction::new_unchecked(self.conn(), TransactionBehavior::Immediate)?;
        let out = f(self)?;
        tx.commit()?;
        Ok(out)
    }

    /// Writes an event for each webhook url of `targets` (those configured for its kind); returns
    /// its id, or None when there is no target (nothing is written). The first attempt is due now.
    ///
    /// Mail (when `targets.mail`): for `connector.connected`, `connector.synced` and
    /// `connector.token_rejected` the contacts of `data.connector` get a delivery each too (keyed
    /// `mailto:ADDRESS`, see [`crate::contacts`]), so an event is written when it has webhooks or
    /// recipients.
    pub fn enqueue_event(
        &self,
        kind: EventKind,
        data: &serde_json::Value,
        targets: &Targets,
        now: Millis,
    ) -> Result<Option<String>, StoreError> {
        let recipients = if targets.mail {
            self.mail_targets(kind, data)?
        } else {
            Vec::new()
        };
        let targets: Vec<String> = targets.webhooks.iter().cloned().chain(recipients).collect();
        if targets.is_empty() {
            return Ok(None);
        }
        let id = new_event_id();
        let body = event_body(kind, data, now);
        // Inside a caller's transaction (`atomically`) write in that one; else in one of our own.
        let tx = if self.conn().is_autocommit() {
            Some(rusqlite::Transaction::new_unchecked(
                self.conn(),
                TransactionBehavior::Immediate,
            )?)
        } else {
            None
        };
        self.conn().execute(
            "INSERT INTO events (id, kind, body, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![id, kind.as_str(), body, now],
        )?;
        {
            let mut ins = self.conn().prepare_cached(
                "INSERT OR IGNORE INTO event_deliveries (event_id, url, next_attempt_at) VALUES (?1, ?2, ?3)",
            )?;
            for url in &targets {
                ins.execute(params![id, url, now])?;
            }
        }
        if let Some(tx) = tx {
            tx.commit()?;
        }
        Ok(Some(id))
    }

    /// Deliveries due at `now` to one of `urls` (the webhooks configured now), oldest event first.
    pub fn due_deliveries(
        &self,
        urls: &[String],
        now: Millis,
        limit: u32,
    ) -> Result<Vec<Due>, StoreError> {
        let urls = serde_json::to_string(urls).unwrap_or_else(|_| "[]".into());
        self.due_where(TO_URLS, &urls, now, limit)
    }

    /// When the next pending delivery to one of `urls` is due (None: nothing pending).
    pub fn next_delivery_at(&self, urls: &[String]) -> Result<Option<Millis>, StoreError> {
        let urls = serde_json::to_string(urls).unwrap_or_else(|_| "[]".into());
        self.next_due_where(TO_URLS, &urls)
    }

    /// Deliveries due at `now` whose target matches `target` (an SQL condition on `url` with the
    /// one parameter `?1`, e.g. [`TO_URLS`] or `url LIKE ?1`), oldest event first: the webhooks'
    /// and the mail's queues are one table read the same way.
    pub(crate) fn due_where(
        &self,
        target: &str,
        param: &str,
        now: Millis,
        limit: u32,
    ) -> Result<Vec<Due>, StoreError> {
        let mut st = self.conn().prepare_cached(&format!(
            "SELECT d.event_id, d.url, e.kind, e.body, e.created_at, d.attempts
             FROM event_deliveries d JOIN events e ON e.id = d.event_id
             WHERE d.delivered_at IS NULL AND d.failed_at IS NULL AND d.next_attempt_at <= ?2
               AND d.{target}
             ORDER BY e.created_at, d.event_id, d.url LIMIT ?3"
        ))?;
        let rows = st.query_map(params![param, now, limit], |r| {
            Ok(Due {
                event_id: r.get(0)?,
                url: r.get(1)?,
                kind: r.get(2)?,
                body: r.get(3)?,
                created_at: r.get(4)?,
                attempts: r.get::<_, i64>(5)?.max(0) as u32,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// When the next pending delivery whose target matches `target` is due (see [`Store::due_where`]).
    pub(crate) fn next_due_where(
        &self,
        target: &str,
        param: &str,
    ) -> Result<Option<Millis>, StoreError> {
        Ok(self.conn().query_row(
            &format!(
                "SELECT MIN(next_attempt_at) FROM event_deliveries
                 WHERE delivered_at IS NULL AND failed_at IS NULL AND {target}"
            ),
            [param],
            |r| r.get(0),
        )?)
    }

    pub fn mark_delivered(&self, event_id: &str, url: &str, now: Millis) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE event_deliveries SET delivered_at = ?3, attempts = attempts + 1, last_error = NULL
             WHERE event_id = ?1 AND url = ?2",
            params![event_id, url, now],
        )?;
        Ok(())
    }

    /// Records a failed attempt: the next one is due at `next`, or (None) delivery is given up.
    pub fn record_failed_attempt(
        &self,
        event_id: &str,
        url: &str,
        error: &str,
        next: Option<Millis>,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE event_deliveries SET attempts = attempts + 1, last_error = ?3,
                next_attempt_at = COALESCE(?4, next_attempt_at),
                failed_at = CASE WHEN ?4 IS NULL THEN ?5 ELSE NULL END
             WHERE event_id = ?1 AND url = ?2",
            params![event_id, url, error, next, now],
        )?;
        Ok(())
    }

    /// Pending and given-up deliveries (every webhook url).
    pub fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        Ok(self.conn().query_row(
            "SELECT
                (SELECT count(*) FROM event_deliveries WHERE delivered_at IS NULL AND failed_at IS NULL),
                (SELECT count(*) FROM event_deliveries WHERE failed_at IS NOT NULL),
                (SELECT MIN(e.created_at) FROM events e JOIN event_deliveries d ON d.event_id = e.id
                   WHERE d.delivered_at IS NULL AND d.failed_at IS NULL)",
            [],
            |r| {
                Ok(OutboxCounts {
                    pending: r.get::<_, i64>(0)?.max(0) as u64,
                    failed: r.get::<_, i64>(1)?.max(0) as u64,
                    oldest_pending_at: r.get(2)?,
                })
            },
        )?)
    }

    /// Deletes events whose every delivery is done (delivered or given up) and that were written
    /// before `done_before`, and any event written before `any_before` (a delivery still pending
    /// that long goes to a webhook no longer configured, or no daemon ever ran). Returns how many.
    pub fn prune_events(
        &self,
        done_before: Millis,
        any_before: Millis,
    ) -> Result<usize, StoreError> {
        let n = self.conn().execute(
            "DELETE FROM events WHERE created_at < ?2 OR (created_at < ?1 AND NOT EXISTS (
                SELECT 1 FROM event_deliveries d WHERE d.event_id = events.id
                  AND d.delivered_at IS NULL AND d.failed_at IS NULL))",
            params![done_before, any_before],
        )?;
        Ok(n)
    }

    /// Every event of `kind` (id, body), oldest first — for tests and inspection.
    pub fn events_of(&self, kind: EventKind) -> Result<Vec<(String, String)>, StoreError> {
        let mut st = self
            .conn()
            .prepare("SELECT id, body FROM events WHERE kind = ?1 ORDER BY created_at, rowid")?;
        let rows = st.query_map([kind.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The deliveries of one event.
    pub fn deliveries(&self, event_id: &str) -> Result<Vec<Delivery>, StoreError> {
        let mut st = self.conn().prepare(
            "SELECT url, attempts, next_attempt_at, delivered_at, failed_at, last_error
             FROM event_deliveries WHERE event_id = ?1 ORDER BY url",
        )?;
        let rows = st.query_map([event_id], |r| {
            Ok(Delivery {
                url: r.get(0)?,
                attempts: r.get::<_, i64>(1)?.max(0) as u32,
                next_attempt_at: r.get(2)?,
                delivered_at: r.get(3)?,
                failed_at: r.get(4)?,
                last_error: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One event's body, if it is still in the outbox.
    pub fn event_body(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT body FROM events WHERE id = ?1", [id], |r| r.get(0))
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::temp_store;

    fn urls(u: &[&str]) -> Vec<String> {
        u.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn nothing_is_written_without_a_target() {
        let (_d, s) = temp_store();
        let id = s
            .enqueue_event(
                EventKind::ConnectorConnected,
                &serde_json::json!({}),
                &Targets::default(),
                1,
            )
            .unwrap();
        assert_eq!(id, None);
        assert_eq!(s.outbox_counts().unwrap(), OutboxCounts::default());
    }

    #[test]
    fn an_event_is_due_per_webhook_until_delivered_or_given_up() {
        let (_d, s) = temp_store();
        let hooks = urls(&["http://127.0.0.1:1/a", "http://127.0.0.1:1/b"]);
        let data = serde_json::json!({"connector": "msp-1", "organization_name": "Acme"});
        let id = s
            .enqueue_event(
                EventKind::ConnectorConnected,
                &data,
                &Targets::webhooks(hooks.clone()),
                1_000,
            )
            .unwrap()
            .unwrap();
        assert!(id.starts_with("evt_") && id.len() == 36, "{id}");
        let body: serde_json::Value =
            serde_json::from_str(&s.event_body(&id).unwrap().unwrap()).unwrap();
        assert_eq!(body["type"], "connector.connected");
        assert_eq!(body["timestamp"], "1970-01-01T00:00:01Z");
        assert_eq!(body["data"], data);

        // Due now, for both webhooks; only for the webhooks configured now.
        assert_eq!(s.due_deliveries(&hooks, 1_000, 10).unwrap().len(), 2);
        assert_eq!(s.due_deliveries(&hooks[..1], 1_000, 10).unwrap().len(), 1);
        assert_eq!(s.due_deliveries(&hooks, 999, 10).unwrap().len(), 0);
        assert_eq!(s.outbox_counts().unwrap().pending, 2);

        s.mark_delivered(&id, &hooks[0], 1_100).unwrap();
        s.record_failed_attempt(&id, &hooks[1], "HTTP 500", Some(5_000), 1_100)
            .unwrap();
        assert!(s.due_deliveries(&hooks, 4_999, 10).unwrap().is_empty());
        assert_eq!(s.next_delivery_at(&hooks).unwrap(), Some(5_000));
        let due = s.due_deliveries(&hooks, 5_000, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].url.as_str(), due[0].attempts),
            (hooks[1].as_str(), 1)
        );
        assert_eq!(due[0].event_id, id, "the same id on every attempt");

        // Given up: no longer due, counted as failed.
        s.record_failed_attempt(&id, &hooks[1], "HTTP 500", None, 6_000)
            .unwrap();
        assert!(s.due_deliveries(&hooks, i64::MAX, 10).unwrap().is_empty());
        assert_eq!(s.next_delivery_at(&hooks).unwrap(), None);
        let c = s.outbox_counts().unwrap();
        assert_eq!((c.pending, c.failed, c.oldest_pending_at), (0, 1, None));
        let d = s.deliveries(&id).unwrap();
        assert_eq!(d[0].delivered_at, Some(1_100));
        assert_eq!(d[1].failed_at, Some(6_000));
        assert_eq!(d[1].attempts, 2);
        assert_eq!(d[1].last_error.as_deref(), Some("HTTP 500"));
    }

    #[test]
    fn pruning_keeps_pending_events_and_drops_done_ones() {
        let (_d, s) = temp_store();
        let hooks = urls(&["http://127.0.0.1:1/a"]);
        let j = serde_json::json!({});
        let done = s
            .enqueue_event(
                EventKind::ConnectorSynced,
                &j,
                &Targets::webhooks(hooks.clone()),
                10,
            )
            .unwrap()
            .unwrap();
        let pending = s
            .enqueue_event(
                EventKind::ConnectorSynced,
                &j,
                &Targets::webhooks(hooks.clone()),
                10,
            )
            .unwrap()
            .unwrap();
        let recent = s
            .enqueue_event(
                EventKind::ConnectorSynced,
                &j,
                &Targets::webhooks(hooks.clone()),
                100,
            )
            .unwrap()
            .unwrap();
        s.mark_delivered(&done, &hooks[0], 11).unwrap();
        s.mark_delivered(&recent, &hooks[0], 101).unwrap();
        assert_eq!(s.prune_events(50, 0).unwrap(), 1);
        assert!(s.event_body(&done).unwrap().is_none());
        assert!(s.deliveries(&done).unwrap().is_empty(), "deliveries go too");
        assert!(s.event_body(&pending).unwrap().is_some(), "still pending");
        assert!(s.event_body(&recent).unwrap().is_some(), "too recent");
        // Past the hard limit even a pending one goes.
        assert_eq!(s.prune_events(50, 50).unwrap(), 1);
        assert!(s.event_body(&pending).unwrap().is_none());
    }

    #[test]
    fn atomically_writes_the_event_with_the_change_or_neither() {
        let (_d, s) = temp_store();
        let hooks = urls(&["http://127.0.0.1:1/a"]);
        let r: Result<(), StoreError> = s.atomically(|s| {
            s.enqueue_event(
                EventKind::ConnectorDisconnected,
                &serde_json::json!({}),
                &Targets::webhooks(hooks.clone()),
                1,
            )?;
            Err(StoreError::Damaged("the state change failed".into()))
        });
        assert!(r.is_err());
        assert_eq!(s.outbox_counts().unwrap().pending, 0, "rolled back");
        s.atomically(|s| {
            s.enqueue_event(
                EventKind::ConnectorDisconnected,
                &serde_json::json!({}),
                &Targets::webhooks(hooks.clone()),
                1,
            )
        })
        .unwrap();
        assert_eq!(s.outbox_counts().unwrap().pending, 1);
    }
}
