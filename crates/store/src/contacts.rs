//! Who at the MSP is mailed about a connector (`connector_contacts`), and the mail side of the
//! outbox: a mail is a delivery of an outbox event whose target is `mailto:ADDRESS` — one per
//! (event, recipient), with the webhooks' attempts, schedule and give-up — so mail needs no event
//! of its own. The *synced* mail's breakdown is read here from the ledger.

use rusqlite::params;

use super::outbox::Due;
use super::{Store, StoreError};
use crate::count::UnitCount;
use crate::domain::EventKind;
use crate::time::Millis;

/// The prefix of a mail delivery's target.
pub const MAILTO: &str = "mailto:";

/// Mail's targets in the deliveries table.
const MAIL_TARGETS: &str = "url LIKE ?1";

/// The event kinds that are mailed.
pub const MAILED: [EventKind; 3] = [
    EventKind::ConnectorConnected,
    EventKind::ConnectorSynced,
    EventKind::ConnectorTokenRejected,
];

/// One pushed pair of a run, for the *synced* mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedPair {
    /// The account (workspace) id.
    pub account_id: String,
    /// Its name (the id when the inventory no longer has it).
    pub account_name: String,
    /// The module.
    pub module: String,
    /// The count Gradient accepted.
    pub count: UnitCount,
    /// The same pair's previous pushed count (None: the first push).
    pub previous: Option<UnitCount>,
}

impl Store {
    /// Replaces a connector's contacts (addresses checked by the caller).
    pub fn set_contacts(&self, connector: &str, emails: &[String]) -> Result<(), StoreError> {
        self.atomically(|s| {
            s.conn().execute(
                "DELETE FROM connector_contacts WHERE connector_id = ?1",
                [connector],
            )?;
            let mut ins = s.conn().prepare_cached(
                "INSERT OR IGNORE INTO connector_contacts (connector_id, email) VALUES (?1, ?2)",
            )?;
            for e in emails {
                ins.execute(params![connector, e])?;
            }
            Ok(())
        })
    }

    /// A connector's contacts, sorted.
    pub fn contacts(&self, connector: &str) -> Result<Vec<String>, StoreError> {
        let mut st = self.conn().prepare_cached(
            "SELECT email FROM connector_contacts WHERE connector_id = ?1 ORDER BY email",
        )?;
        let rows = st.query_map([connector], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The mail targets of an event: `mailto:` + each contact of `data.connector` when `kind` is
    /// mailed.
    pub(crate) fn mail_targets(
        &self,
        kind: EventKind,
        data: &serde_json::Value,
    ) -> Result<Vec<String>, StoreError> {
        let Some(connector) = data.get("connector").and_then(|c| c.as_str()) else {
            return Ok(Vec::new());
        };
        if !MAILED.contains(&kind) {
            return Ok(Vec::new());
        }
        Ok(self
            .contacts(connector)?
            .into_iter()
            .map(|e| format!("{MAILTO}{e}"))
            .collect())
    }

    /// Mail deliveries due at `now`, oldest event first.
    pub fn due_mail(&self, now: Millis, limit: u32) -> Result<Vec<Due>, StoreError> {
        self.due_where(MAIL_TARGETS, &format!("{MAILTO}%"), now, limit)
    }

    /// When the next pending mail is due (None: none pending).
    pub fn next_mail_at(&self) -> Result<Option<Millis>, StoreError> {
        self.next_due_where(MAIL_TARGETS, &format!("{MAILTO}%"))
    }

    /// What one connector pushed in one run — the ledger's `pushed` rows, by account name and
    /// module — each with the same pair's previous pushed count.
    pub fn pushed_pairs(
        &self,
        run_id: i64,
        connector: &str,
    ) -> Result<Vec<PushedPair>, StoreError> {
        let mut st = self.conn().prepare(
            "SELECT l.account_id, COALESCE(w.name, l.account_id), l.module, l.unit_count,
                    (SELECT p.unit_count FROM ledger p
                     WHERE p.connector_id = l.connector_id AND p.account_id = l.account_id
                       AND p.module = l.module AND p.id < l.id AND p.outcome = 'pushed'
                       AND p.unit_count IS NOT NULL
                     ORDER BY p.id DESC LIMIT 1)
             FROM ledger l LEFT JOIN workspaces w ON w.id = l.account_id
             WHERE l.run_id = ?1 AND l.connector_id = ?2 AND l.outcome = 'pushed'
               AND l.unit_count IS NOT NULL
             ORDER BY COALESCE(w.name, l.account_id), l.account_id, l.module",
        )?;
        let rows = st.query_map(params![run_id, connector], |r| {
            Ok(PushedPair {
                account_id: r.get(0)?,
                account_name: r.get(1)?,
                module: r.get(2)?,
                count: r.get(3)?,
                previous: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Targets;
    use crate::temp_store;

    #[test]
    fn contacts_get_a_mail_delivery_of_the_mailed_kinds_only() {
        let (_d, s) = temp_store();
        s.set_contacts("msp-1", &["b@msp.example".into(), "a@msp.example".into()])
            .unwrap();
        assert_eq!(
            s.contacts("msp-1").unwrap(),
            ["a@msp.example", "b@msp.example"]
        );
        let data = serde_json::json!({"connector": "msp-1"});
        // No webhook, but recipients: the event is written, with one delivery per address.
        let mail = Targets::default().mailing(true);
        let id = s
            .enqueue_event(EventKind::ConnectorConnected, &data, &mail, 1_000)
            .unwrap()
            .unwrap();
        let due = s.due_mail(1_000, 10).unwrap();
        assert_eq!(due.len(), 2);
        assert_eq!(due[0].url, "mailto:a@msp.example");
        assert_eq!(due[0].event_id, id);
        // The webhook task sees none of them; disconnection and other connectors are not mailed.
        assert!(s
            .due_deliveries(&["http://127.0.0.1:1/a".into()], 1_000, 10)
            .unwrap()
            .is_empty());
        assert_eq!(
            s.enqueue_event(EventKind::ConnectorDisconnected, &data, &mail, 1_000)
                .unwrap(),
            None
        );
        let other = serde_json::json!({"connector": "msp-2"});
        assert_eq!(
            s.enqueue_event(EventKind::ConnectorSynced, &other, &mail, 1_000)
                .unwrap(),
            None
        );
        s.record_failed_attempt(&id, "mailto:a@msp.example", "down", Some(9_000), 1_100)
            .unwrap();
        s.mark_delivered(&id, "mailto:b@msp.example", 1_100)
            .unwrap();
        assert!(s.due_mail(8_999, 10).unwrap().is_empty());
        assert_eq!(s.next_mail_at().unwrap(), Some(9_000));
        s.set_contacts("msp-1", &[]).unwrap();
        assert!(s.contacts("msp-1").unwrap().is_empty());
    }

    #[test]
    fn without_mail_configured_no_contact_gets_a_delivery() {
        let (_d, s) = temp_store();
        s.set_contacts("msp-1", &["a@msp.example".to_string()])
            .unwrap();
        let data = serde_json::json!({"connector": "msp-1"});
        // No webhook and no mail: nothing is written at all.
        assert_eq!(
            s.enqueue_event(
                EventKind::ConnectorConnected,
                &data,
                &Targets::default(),
                1_000
            )
            .unwrap(),
            None
        );
        let hooks = Targets::webhooks(vec!["http://127.0.0.1:1/a".into()]);
        s.enqueue_event(EventKind::ConnectorConnected, &data, &hooks, 1_000)
            .unwrap()
            .unwrap();
        assert!(s.due_mail(1_000, 10).unwrap().is_empty());
        assert_eq!(s.next_mail_at().unwrap(), None);
    }
}
