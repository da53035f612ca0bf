//! Webhook events (real binary ↔ gradient-sim ↔ a receiver in this test): what the console is
//! told after a paste, a run, a rotated key and a disconnect; signed the Standard Webhooks way (the
//! receiver checks every signature with its own HMAC, not the connector's signing code); delivered
//! at least once, across failures and a daemon restart, always with the same `webhook-id`.

use std::collections::{BTreeSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use base64::Engine;
use gradient_connector::domain::EventKind;
use gradient_connector_kit::{ConfigBuilder, Webhook};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

/// The receiver's secret: the Standard Webhooks specification's example.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    id: String,
    timestamp: i64,
    body: String,
    /// The signature verified with the secret, and the timestamp is within 5 minutes.
    verified: bool,
    content_type: String,
    /// What the receiver answered.
    answered: u16,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// A webhook receiver on 127.0.0.1: answers the statuses queued in `plan` (then 200), one request
/// per connection, and keeps every request.
#[derive(Clone)]
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Got>>>,
    plan: Arc<Mutex<VecDeque<u16>>>,
}

/// The receiver's own verification, as a console would write it: HMAC-SHA256 of
/// "{id}.{timestamp}.{body}" with the base64-decoded key after `whsec_`, compared in constant time
/// with each `v1,` signature of the header; the timestamp within 5 minutes of now.
fn verify(id: &str, timestamp: &str, body: &str, header: &str) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.strip_prefix("whsec_").unwrap())
        .unwrap();
    let Ok(ts) = timestamp.parse::<i64>() else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if (now - ts).abs() > 300 {
        return false;
    }
    header.split(' ').any(|sig| {
        let Some(b64) = sig.strip_prefix("v1,") else {
            return false;
        };
        let Ok(given) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            return false;
        };
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
        mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
        mac.verify_slice(&given).is_ok() // constant-time comparison
    })
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hooks/gradient", listener.local_addr().unwrap());
        let r = Receiver {
            url,
            got: Arc::default(),
            plan: Arc::default(),
        };
        let me = r.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let me = me.clone();
                std::thread::spawn(move || me.serve(stream));
            }
        });
        r
    }

    fn serve(&self, stream: std::net::TcpStream) {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut headers = Vec::new();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap(); // request line
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.trim_end().split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let len: usize = header("content-length").parse().unwrap_or(0);
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).unwrap();
        let body = String::from_utf8(body).unwrap();
        let (id, ts, sig) = (
            header("webhook-id"),
            header("webhook-timestamp"),
            header("webhook-signature"),
        );
        let status = self.plan.lock().unwrap().pop_front().unwrap_or(200);
        self.got.lock().unwrap().push(Got {
            verified: verify(&id, &ts, &body, &sig),
            id,
            timestamp: ts.parse().unwrap_or(0),
            body,
            content_type: header("content-type"),
            answered: status,
        });
        let mut stream = stream;
        let _ = write!(
            stream,
            "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Requests carrying events of `kind` (for `connector`, when given).
    fn of(&self, kind: &str, connector: Option<&str>) -> Vec<Got> {
        self.got()
            .into_iter()
            .filter(|g| {
                let j = g.json();
                j["type"] == kind && connector.is_none_or(|c| j["data"]["connector"] == c)
            })
            .collect()
    }

    fn wait_for(&self, kind: &str, connector: &str, n: usize) -> Vec<Got> {
        wait_for(
            &format!("{n} {kind} event(s) for {connector}"),
            || self.of(kind, Some(connector)).len() >= n,
            || format!("{:#?}", self.got()),
        );
        self.of(kind, Some(connector))
    }
}

/// A stand-in, a receiver, and the standard configuration with one webhook to it.
fn setup() -> (SimEnv, Receiver) {
    let rx = Receiver::start();
    let url = rx.url.clone();
    let e = SimEnv::with_config(|c: ConfigBuilder| c.webhook(Webhook::new(&url, "webhook-secret")));
    let secret = e.env.write("webhook-secret", &format!("{SECRET}\n"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    (e, rx)
}

/// (account, service name, count) of every count the stand-in accepted for `org` since `since`.
fn accepted(e: &SimEnv, org: &str, since: usize) -> BTreeSet<(String, String, u64)> {
    let snap = e.sim.snapshot();
    snap.pushes[since..]
        .iter()
        .filter(|p| p.org_id.as_deref() == Some(org) && p.status < 300)
        .map(|p| {
            let name = snap
                .services
                .iter()
                .find(|s| s.id == p.service_id)
                .map(|s| s.name.clone())
                .unwrap_or_default();
            (
                p.account_id.as_str().unwrap_or_default().to_string(),
                name,
                p.unit_count.as_f64().unwrap() as u64,
            )
        })
        .collect()
}

fn pushed_in(event: &Value) -> BTreeSet<(String, String, u64)> {
    event["data"]["pushed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["account"].as_str().unwrap().to_string(),
                p["service"].as_str().unwrap().to_string(),
                p["unit_count"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_console_hears_of_a_paste_a_run_a_rotated_key_and_a_disconnect() {
    let (e, rx) = setup();
    e.import(&two_msps(2, 3).to_jsonl());
    // Pastes by the CLI write their events into the outbox; only the daemon delivers them.
    e.connect("msp-a", "key-a");
    e.connect("msp-b", "key-b");
    assert!(rx.got().is_empty(), "commands do not deliver");
    assert_eq!(
        e.store()
            .events_of(EventKind::ConnectorConnected)
            .unwrap()
            .len(),
        2
    );
    let d = Daemon::start(&e, &[]);

    // connector.connected, signed, for each paste.
    let got = rx.wait_for("connector.connected", "msp-a", 1);
    let ev = got[0].json();
    assert_eq!(ev["data"]["organization_name"], "msp-a MSP");
    assert!(ev["timestamp"].as_str().unwrap().ends_with('Z'), "{ev}");
    assert!(got[0].id.starts_with("evt_"), "{:?}", got[0]);
    assert_eq!(got[0].content_type, "application/json");
    rx.wait_for("connector.connected", "msp-b", 1);

    // A run: one connector.synced per connector, whose `pushed` is what the stand-in accepted.
    let since = e.sim.snapshot().pushes.len();
    d.signal("USR1");
    let synced = rx.wait_for("connector.synced", "msp-a", 1)[0].json();
    rx.wait_for("connector.synced", "msp-b", 1);
    let data = &synced["data"];
    assert_eq!(data["outcome"], "ok", "{synced}");
    let run = data["run"].as_i64().unwrap();
    assert_eq!(Some(run), runs(&e).last().map(|r| r.0));
    let expected = accepted(&e, "msp-a", since);
    assert_eq!(expected.len(), 4, "2 workspaces × 2 services");
    assert_eq!(pushed_in(&synced), expected);
    assert_eq!(data["counts"]["pushed"], 4);
    for k in ["unmapped", "failed", "rejected", "skipped_disabled"] {
        assert_eq!(data["counts"][k], 0, "{k}: {synced}");
    }
    assert!(
        expected.iter().any(|(_, s, _)| s == "Endpoint Security"),
        "services by their configured name"
    );

    // The MSP generates a new key in Gradient: the next run is rejected, the console told once.
    e.sim.rotate_key("msp-a", "key-a-2");
    d.signal("USR1");
    let rejected = rx.wait_for("connector.token_rejected", "msp-a", 1);
    assert!(
        rejected[0].json()["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("401"),
        "{:?}",
        rejected[0]
    );
    let failed = rx.wait_for("connector.synced", "msp-a", 2)[1].json();
    assert_eq!(failed["data"]["outcome"], "failed", "{failed}");
    assert!(pushed_in(&failed).is_empty());
    d.signal("USR1");
    rx.wait_for("connector.synced", "msp-a", 3);
    // Verifying it again by hand: still rejected, so no new event either.
    let out = e.run(&["connector", "verify", "msp-a"]);
    assert!(
        stdout(&out).contains("rejected"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(
        e.store()
            .events_of(EventKind::ConnectorTokenRejected)
            .unwrap()
            .len(),
        1,
        "not again while it stays rejected"
    );
    assert_eq!(rx.of("connector.token_rejected", None).len(), 1);

    // A disconnect by the CLI while the daemon runs: delivered on the daemon's own timer.
    let out = e.run(&["connector", "disconnect", "msp-b"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    rx.wait_for("connector.disconnected", "msp-b", 1);

    // Every request verified; each event delivered once (the receiver always said 200); no
    // secret in the log.
    let all = rx.got();
    assert!(all.iter().all(|g| g.verified), "{all:#?}");
    let ids: BTreeSet<&str> = all.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(ids.len(), all.len(), "one delivery per event");
    let log = d.log();
    assert!(!log.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "{log}");
    // The last delivery is recorded just after the receiver answered it.
    wait_for(
        "every delivery recorded",
        || e.store().outbox_counts().unwrap().pending == 0,
        || d.log(),
    );
    let (code, _) = d.stop();
    assert_eq!(code, 0);
}

#[test]
fn a_failing_receiver_gets_the_event_after_a_retry_and_a_restart_with_one_id() {
    // The backoff schedule itself (5, 10, 20 s …) is the delivery loop's unit test under paused
    // time (`events::tests::the_loop_retries_after_5_10_and_20_s_then_delivers_and_counts_nothing_pending`);
    // here, the real binary: a failure, a restart, the retry with the same id and body.
    let (e, rx) = setup();
    e.import(&two_msps(2, 3).to_jsonl());
    rx.plan.lock().unwrap().extend([500]);
    e.connect("msp-a", "key-a");
    let d = Daemon::start(&e, &[]);
    wait_for(
        "the first attempt",
        || !rx.got().is_empty(),
        || format!("{:#?}", rx.got()),
    );
    let events = e.store().events_of(EventKind::ConnectorConnected).unwrap();
    assert_eq!(events.len(), 1);
    let (id, body) = events[0].clone();
    wait_for(
        "the failure recorded",
        || e.store().deliveries(&id).unwrap()[0].attempts == 1,
        || d.log(),
    );
    let log = d.log();
    let (code, _) = d.stop();
    assert_eq!(code, 0);
    let state = &e.store().deliveries(&id).unwrap()[0];
    assert_eq!(state.attempts, 1, "{state:?}");
    assert_eq!(state.delivered_at, None);
    assert_eq!(state.last_error.as_deref(), Some("HTTP 500"));
    assert!(
        log.contains("webhook delivery failed (HTTP 500); will retry"),
        "{log}"
    );

    let d = Daemon::start(&e, &[]);
    wait_for(
        "the event delivered after the restart",
        || rx.got().iter().any(|g| g.answered == 200),
        || format!("{:#?}\n{}", rx.got(), d.log()),
    );
    let got = rx.got();
    assert_eq!(
        got.iter().map(|g| g.answered).collect::<Vec<_>>(),
        vec![500, 200]
    );
    assert!(
        got.iter().all(|g| g.id == id),
        "the same webhook-id: {got:#?}"
    );
    assert!(got.iter().all(|g| g.body == body), "the same body");
    assert!(got.iter().all(|g| g.verified), "{got:#?}");
    // The retry waited for its time (5 s after the failure), restart or not.
    assert!(got[1].timestamp - got[0].timestamp >= 4, "{got:#?}");
    wait_for(
        "the delivery recorded",
        || e.store().deliveries(&id).unwrap()[0].delivered_at.is_some(),
        || d.log(),
    );
    assert_eq!(e.store().deliveries(&id).unwrap()[0].attempts, 2);
}

#[test]
fn a_bad_webhook_secret_stops_the_daemon_at_start_naming_the_key() {
    let (e, _rx) = setup();
    e.env.write("webhook-secret", "whsec_tooshort\n");
    // `run` would go on for ever if it accepted the secret: give it 20 s.
    let out = run_expecting_exit(&e.env.config, Duration::from_secs(20));
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("webhook[0].secret_file"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("tooshort"), "{}", stderr(&out));
}

/// `connector.synced` events of run `run` a receiver got.
fn synced_of_run(rx: &Receiver, run: i64) -> usize {
    rx.of("connector.synced", None)
        .iter()
        .filter(|g| g.json()["data"]["run"] == run)
        .count()
}

#[test]
fn a_reload_delivers_to_the_new_webhook_and_a_bad_new_secret_keeps_the_old_ones() {
    let (e, old_rx) = setup();
    e.import(&two_msps(2, 3).to_jsonl());
    e.connect("msp-a", "key-a");
    let d = Daemon::start(&e, &[]);
    d.signal("USR1");
    wait_for(
        "run 1's event at the first receiver",
        || synced_of_run(&old_rx, 1) == 1,
        || format!("{:#?}\n{}", old_rx.got(), d.log()),
    );

    // The console moved: a new receiver, the configuration names only it; SIGHUP.
    let new_rx = Receiver::start();
    let moved = e
        .env
        .config_builder()
        .without_webhooks()
        .webhook(Webhook::new(&new_rx.url, "webhook-secret"));
    e.env.write_config(&moved);
    d.signal("HUP");
    wait_for(
        "the reload",
        || d.log().contains("configuration read"),
        || d.log(),
    );
    d.signal("USR1");
    wait_for(
        "run 2's event at the new receiver",
        || synced_of_run(&new_rx, 2) == 1,
        || format!("{:#?}\n{}", new_rx.got(), d.log()),
    );
    assert!(
        new_rx.got().iter().all(|g| g.verified),
        "{:#?}",
        new_rx.got()
    );
    assert_eq!(
        synced_of_run(&old_rx, 2),
        0,
        "the old webhook is no longer configured"
    );

    // A reload naming a webhook whose secret is bad is refused as a whole: delivery stays with
    // the webhooks that were loaded.
    let third = Receiver::start();
    let bad = e.env.write("bad-secret", "whsec_tooshort\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
    e.env.write_config(
        &e.env
            .config_builder()
            .without_webhooks()
            .webhook(Webhook::new(&third.url, "bad-secret")),
    );
    d.signal("HUP");
    d.wait_log("keeping the old one");
    assert!(d.log().contains("webhook[0].secret_file"), "{}", d.log());
    d.signal("USR1");
    wait_for(
        "run 3's event at the receiver of the kept configuration",
        || synced_of_run(&new_rx, 3) == 1,
        || format!("{:#?}\n{}", new_rx.got(), d.log()),
    );
    assert!(third.got().is_empty(), "{:#?}", third.got());
    let (code, _) = d.stop();
    assert_eq!(code, 0);
}

#[test]
fn a_run_killed_mid_way_is_told_at_the_next_start_with_what_the_ledger_shows_pushed() {
    let (e, rx) = setup();
    e.import(&two_msps(60, 1).to_jsonl());
    e.connect("msp-a", "key-a");
    e.connect("msp-b", "key-b");
    // Catch-up off: what the restart tells must come from the crashed run, not a new one.
    e.env.write_config(
        &e.env
            .config_builder()
            .set("schedule", "catch_up", false)
            .set("gradient", "requests_per_second", 40),
    );
    e.sim.set_count_latency(Duration::from_millis(40));
    let d = Daemon::start(&e, &[]);
    d.signal("USR1");
    wait_for(
        "pushes under way",
        || e.sim.snapshot().pushes.len() > 30,
        String::new,
    );
    d.kill9();
    let crashed = runs(&e).last().unwrap().clone();
    assert_eq!(crashed.4, None, "the run was cut off: {crashed:?}");
    let before = rx.of("connector.synced", None).len();
    assert_eq!(before, 0);

    let took_part: BTreeSet<String> = e
        .store()
        .run_tally_by_connector(crashed.0)
        .unwrap()
        .into_keys()
        .collect();
    assert!(!took_part.is_empty());
    let d = Daemon::start(&e, &[]);
    for c in &took_part {
        let c = c.as_str();
        let ev = rx.wait_for("connector.synced", c, 1)[0].json();
        assert_eq!(ev["data"]["outcome"], "interrupted", "{ev}");
        assert_eq!(ev["data"]["run"], crashed.0, "{ev}");
        // `pushed` is what the ledger shows, and each was accepted by the stand-in.
        let told = pushed_in(&ev);
        let ledger: BTreeSet<(String, String, u64)> = e
            .store()
            .pushed_in_run(crashed.0)
            .unwrap()
            .into_iter()
            .filter(|(conn, ..)| conn == c)
            .map(|(_, account, module, n)| {
                let name = if module == "endpoint_security" {
                    "Endpoint Security"
                } else {
                    "Email Security"
                };
                (account, name.to_string(), n.whole_part())
            })
            .collect();
        assert_eq!(told, ledger, "{c}");
        assert!(told.is_subset(&accepted(&e, c, 0)), "{c}");
        assert_eq!(
            ev["data"]["counts"]["pushed"].as_u64(),
            Some(ledger.len() as u64)
        );
    }
    let closed = runs(&e).into_iter().find(|r| r.0 == crashed.0).unwrap();
    assert_eq!(closed.4.as_deref(), Some("interrupted"));
    d.stop();
}

/// The `data` of every `connector.mapping_needed` event in the outbox, oldest first.
fn mapping_events(e: &SimEnv) -> Vec<Value> {
    e.store()
        .events_of(EventKind::ConnectorMappingNeeded)
        .unwrap()
        .into_iter()
        .map(|(_, body)| serde_json::from_str::<Value>(&body).unwrap()["data"].clone())
        .collect()
}

#[test]
fn mapping_needed_tells_only_what_is_newly_unmapped() {
    let (e, _rx) = setup();
    e.import_inventory(&two_msps(2, 3));
    e.connect("msp-a", "key-a");
    let edr = e
        .sim
        .snapshot()
        .service_id("Endpoint Security")
        .unwrap()
        .to_string();
    // The MSP mapped ws1 and one service: ws2 is an account to map, Email Security a service.
    e.sim.set_mapping(
        "msp-a",
        gradient_sim::Mapping::Explicit {
            accounts: vec!["msp-a-ws1".into()],
            service_ids: vec![edr.clone()],
        },
    );
    assert_eq!(code(&e.run(&["sync"])), 0);
    let events = mapping_events(&e);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["connector"], "msp-a");
    assert_eq!(
        events[0]["accounts"],
        serde_json::json!([{"id": "msp-a-ws2", "name": "Customer msp-a-ws2"}]),
        "{}",
        events[0]
    );
    assert_eq!(
        events[0]["services"],
        serde_json::json!([{"module": "email_security", "name": "Email Security"}])
    );
    // Nothing new at the next run: nothing told.
    assert_eq!(code(&e.run(&["sync"])), 0);
    assert_eq!(mapping_events(&e).len(), 1);
    // The MSP maps everything, then unmaps ws1: only ws1 is told.
    e.sim.set_mapping("msp-a", gradient_sim::Mapping::All);
    assert_eq!(code(&e.run(&["sync"])), 0);
    assert_eq!(mapping_events(&e).len(), 1);
    e.sim.set_mapping(
        "msp-a",
        gradient_sim::Mapping::Explicit {
            accounts: vec!["msp-a-ws2".into()],
            service_ids: e
                .sim
                .snapshot()
                .services
                .iter()
                .map(|s| s.id.clone())
                .collect(),
        },
    );
    assert_eq!(code(&e.run(&["sync"])), 0);
    let events = mapping_events(&e);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1]["accounts"][0]["id"], "msp-a-ws1", "{}", events[1]);
    assert_eq!(events[1]["services"], serde_json::json!([]));
}
