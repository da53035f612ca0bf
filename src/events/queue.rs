//! The outbox's delivery loop, one for every channel: the webhooks (HTTP) and the mail (SMTP) read
//! their part of the one outbox the same way and record each attempt with the same rules. A
//! [`Channel`] says which deliveries are its own ([`Queue`]), how one attempt is made, and how the
//! log names its target; [`Deliverer`] does the rest: wait for the next due time (or a wake, or
//! [`POLL`] for rows other processes wrote), deliver a batch [`CONCURRENCY`] at a time, and record
//! each outcome (delivered, or failed with its [`next_attempt`], given up after [`RETRY_FOR`]). Old
//! events are pruned after each run ([`super::prune_events`]), not here: a daemon without any
//! channel prunes too, and two channels do not prune twice.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};

use super::{next_attempt, CONCURRENCY, POLL, RETRY_FOR};
use crate::store::outbox::{self, Due};
use crate::store::{Store, StoreError, StoreHandle};
use crate::time::{Clock, Millis};

/// Why one attempt failed (its whole chain of causes is recorded as the attempt's reason).
pub(crate) type AttemptError = Box<dyn std::error::Error + Send + Sync>;

/// One attempt: a boxed future borrowing its channel.
pub(crate) type Attempt<'a> = Pin<Box<dyn Future<Output = Result<(), AttemptError>> + Send + 'a>>;

/// An error with its causes, `a: b: c` (lettre's account of an SMTP conversation is in its causes).
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        // Some errors repeat their source's text in their own; say it once.
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// Which of the outbox's deliveries a channel sends.
#[derive(Debug, Clone)]
pub(crate) enum Queue {
    /// Those to these webhook urls.
    Webhooks(Vec<String>),
    /// The `mailto:` ones.
    Mail,
}

impl Queue {
    fn due(&self, s: &Store, now: Millis, limit: u32) -> Result<Vec<Due>, StoreError> {
        match self {
            Queue::Webhooks(urls) => s.due_deliveries(urls, now, limit),
            Queue::Mail => s.due_mail(now, limit),
        }
    }

    fn next_at(&self, s: &Store) -> Result<Option<Millis>, StoreError> {
        match self {
            Queue::Webhooks(urls) => s.next_delivery_at(urls),
            Queue::Mail => s.next_mail_at(),
        }
    }

    /// Resolves when this process enqueued something for the queue.
    async fn woken(&self) {
        match self {
            Queue::Webhooks(_) => outbox::woken().await,
            Queue::Mail => outbox::mail_woken().await,
        }
    }
}

/// How the log speaks of a channel's deliveries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Words {
    /// After a success, e.g. "mail sent".
    pub sent: &'static str,
    /// Before a failure's reason, e.g. "mail not sent".
    pub failed: &'static str,
    /// Whether a success is logged at `info` (else `debug`).
    pub sent_is_news: bool,
}

/// One way of delivering the outbox's events.
pub(crate) trait Channel: Send + Sync {
    /// Deliveries read per pass.
    const BATCH: u32;
    /// Which deliveries are this channel's.
    fn queue(&self) -> Queue;
    /// How the log speaks of them.
    fn words(&self) -> Words;
    /// Who a delivery goes to, as the log may show it (no credentials).
    fn shown(&self, due: &Due) -> String;
    /// One attempt: Ok when the receiver took it; the error is recorded as the attempt's reason.
    fn attempt<'a>(&'a self, store: &'a StoreHandle, due: &'a Due) -> Attempt<'a>;
    /// After each pass (the webhooks refresh the daemon's count of undelivered events).
    fn after_pass<'a>(
        &'a self,
        _store: &'a StoreHandle,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async {})
    }
}

/// The loop's state: where deliveries come from, how they go out, and what time it is.
pub(crate) struct Deliverer<C: Channel> {
    pub store: StoreHandle,
    pub channel: C,
    pub clock: Arc<dyn Clock>,
}

impl<C: Channel> Deliverer<C> {
    /// Runs until dropped.
    pub async fn run(self) {
        let queue = self.channel.queue();
        loop {
            let now = self.clock.now();
            let attempted = self.pass(&queue, now).await;
            self.channel.after_pass(&self.store).await;
            if attempted > 0 {
                continue; // there may be more due
            }
            let q = queue.clone();
            let next = self
                .store
                .read(move |s| q.next_at(s))
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cannot read the outbox; trying again later");
                    None
                });
            let wait = next
                .map(|at| Duration::from_millis(at.saturating_sub(self.clock.now()).max(0) as u64))
                .unwrap_or(POLL)
                .min(POLL);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = queue.woken() => {}
            }
        }
    }

    /// Delivers what is due now (at most a batch); returns how many deliveries were attempted.
    async fn pass(&self, queue: &Queue, now: Millis) -> usize {
        let q = queue.clone();
        let due = match self.store.read(move |s| q.due(s, now, C::BATCH)).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the outbox; trying again later");
                return 0;
            }
        };
        let n = due.len();
        stream::iter(due)
            .for_each_concurrent(CONCURRENCY, |d| self.deliver(d))
            .await;
        n
    }

    /// One attempt of one delivery, and its record.
    async fn deliver(&self, d: Due) {
        let result = self.channel.attempt(&self.store, &d).await;
        let now = self.clock.now();
        let words = self.channel.words();
        let to = self.channel.shown(&d);
        let (id, url) = (d.event_id.clone(), d.url.clone());
        let recorded = match result {
            Ok(()) => {
                if words.sent_is_news {
                    tracing::info!(event = %d.event_id, kind = %d.kind, to = %to, "{}", words.sent);
                } else {
                    tracing::debug!(event = %d.event_id, kind = %d.kind, to = %to, "{}", words.sent);
                }
                self.store
                    .write(move |s| s.mark_delivered(&id, &url, now))
                    .await
            }
            Err(error) => {
                let error = with_causes(error.as_ref());
                let failed = d.attempts + 1;
                let next = next_attempt(d.created_at, failed, now);
                match next {
                    Some(at) => tracing::warn!(
                        event = %d.event_id, kind = %d.kind, to = %to, attempt = failed,
                        retry_in_secs = (at - now) / 1000,
                        "{} ({error}); will retry", words.failed
                    ),
                    None => tracing::error!(
                        event = %d.event_id, kind = %d.kind, to = %to, attempts = failed,
                        "{} ({error}); given up after retrying for {} hours",
                        words.failed, RETRY_FOR.as_secs() / 3600
                    ),
                }
                self.store
                    .write(move |s| s.record_failed_attempt(&id, &url, &error, next, now))
                    .await
            }
        };
        if let Err(e) = recorded {
            tracing::error!(event = %d.event_id, to = %to, error = %e, "could not record a delivery attempt");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        source: Option<Box<Layer>>,
    }

    #[test]
    fn an_attempts_reason_carries_every_cause_once() {
        let io = Layer {
            text: "connection refused",
            source: None,
        };
        let repeated = Layer {
            text: "connect: connection refused",
            source: Some(Box::new(io)),
        };
        let top = Layer {
            text: "mail not accepted",
            source: Some(Box::new(repeated)),
        };
        assert_eq!(
            with_causes(&top),
            "mail not accepted: connect: connection refused"
        );
    }
}
