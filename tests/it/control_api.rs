//! The control API from the outside (real binary `gradient-connector run` ↔ gradient-sim): every
//! route of the contract over the unix socket with its success and error codes, bearer tokens over
//! TCP, no secret in any answer or log line, the Prometheus series after a run, and the CLI going
//! through a running daemon. The HTTP/1.1 client is this file's own (std sockets, `Connection:
//! close`), so the test does not lean on the crate's `api::client`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use crate::common::*;
use gradient_connector::sim::Fault;
use gradient_connector_kit::{ConfigBuilder, Inventory, Units};
use serde_json::{json, Value};

/// Partner tokens the stand-in knows (org `msp-0` and `msp-1`), one it does not, and the API
/// token: distinctive, so that finding one in a body or the log means it leaked.
pub(crate) const TOKEN_A: &str = "pt-acme-5Qk2Lw9xR7vB";
const TOKEN_B: &str = "pt-beta-8Hn3Vc1zT4mQ";
const UNKNOWN: &str = "pt-nobody-4Jd8Ks2mP6";
const API_TOKEN: &str = "api-tok-Z3kP9qL2vX8wR5mN";

/// The services of `standard_services()`, by their Gradient names.
const SERVICE_NAMES: [&str; 2] = ["Endpoint Security", "Email Security"];

// ---------------------------------------------------------------------------------------------
// A tiny HTTP/1.1 client.

#[derive(Clone, Debug)]
enum Addr {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

/// One answer: status, headers (names lower-cased) and body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Asserts the status and returns the JSON body.
    pub(crate) fn expect(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", self.body);
        self.json()
    }

    /// Asserts an error answer: the status and `{"error": {"code", "message"}}`.
    fn expect_error(&self, status: u16, code: &str) -> Value {
        let v = self.expect(status);
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "an error has a message: {v}"
        );
        v
    }
}

/// Parses a whole `Connection: close` response.
fn parse_reply(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..split]).expect("headers are ASCII");
    let rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let status: u16 = parts.next().unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let find = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let body: Vec<u8> = if find("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        dechunk(rest)
    } else if let Some(len) = find("content-length") {
        let len: usize = len.parse().unwrap();
        assert!(rest.len() >= len, "short body: {} < {len}", rest.len());
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Reply {
        status,
        headers,
        body: String::from_utf8(body).expect("a UTF-8 body"),
    }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_text = std::str::from_utf8(&rest[..eol]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        rest = &rest[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn talk(mut s: impl Read + Write, request: &[u8]) -> Vec<u8> {
    s.write_all(request).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    raw
}

/// The daemon's API at one address; keeps every answer's text for the secret scan.
pub(crate) struct Api {
    addr: Addr,
    seen: Mutex<Vec<String>>,
}

impl Api {
    pub(crate) fn unix(e: &SimEnv) -> Api {
        Api {
            addr: Addr::Unix(e.env.path("api.sock")),
            seen: Mutex::default(),
        }
    }

    fn tcp(port: u16) -> Api {
        Api {
            addr: Addr::Tcp(SocketAddr::from(([127, 0, 0, 1], port))),
            seen: Mutex::default(),
        }
    }

    /// One request with `headers` and an optional (content type, body).
    pub(crate) fn call(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
    ) -> Reply {
        let mut req =
            format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        for (k, v) in headers {
            req += &format!("{k}: {v}\r\n");
        }
        let bytes = body.map(|(_, b)| b).unwrap_or_default();
        if let Some((ct, _)) = body {
            req += &format!("Content-Type: {ct}\r\n");
        }
        req += &format!("Content-Length: {}\r\n\r\n", bytes.len());
        let mut raw = req.into_bytes();
        raw.extend_from_slice(bytes);
        let timeout = Some(Duration::from_secs(30));
        let answer = match &self.addr {
            Addr::Unix(p) => {
                let s = UnixStream::connect(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                s.set_read_timeout(timeout).unwrap();
                talk(s, &raw)
            }
            Addr::Tcp(a) => {
                let s = TcpStream::connect(a).unwrap();
                s.set_read_timeout(timeout).unwrap();
                talk(s, &raw)
            }
        };
        let reply = parse_reply(&answer);
        // Every answer of these tests is one the OpenAPI document describes.
        openapi::check(
            method,
            target,
            reply.status,
            reply.header("content-type"),
            &reply.body,
        );
        self.seen
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(&answer).into_owned());
        reply
    }

    pub(crate) fn get(&self, target: &str) -> Reply {
        self.call("GET", target, &[], None)
    }

    pub(crate) fn send(&self, method: &str, target: &str, body: &Value) -> Reply {
        let bytes = serde_json::to_vec(body).unwrap();
        self.call(method, target, &[], Some(("application/json", &bytes)))
    }

    pub(crate) fn inventory(&self, jsonl: &str) -> Reply {
        self.call(
            "POST",
            "/v1/inventory",
            &[],
            Some(("application/x-ndjson", jsonl.as_bytes())),
        )
    }

    pub(crate) fn paste(&self, connector: &str, token: &str) -> Reply {
        self.send(
            "PUT",
            &format!("/v1/connectors/{connector}/token"),
            &json!({ "token": token }),
        )
    }

    fn runs(&self, limit: u32) -> Vec<Value> {
        let v = self.get(&format!("/v1/runs?limit={limit}")).expect(200);
        v["runs"].as_array().expect("runs is an array").clone()
    }

    /// Polls /v1/runs (bounded) until a run with `trigger` has finished; returns it.
    pub(crate) fn wait_finished_run(&self, trigger: &str) -> Value {
        let mut found = Value::Null;
        wait_for_secs(
            &format!("a finished {trigger} run"),
            20,
            || match self
                .runs(10)
                .into_iter()
                .find(|r| r["trigger"] == trigger && !r["outcome"].is_null())
            {
                Some(r) => {
                    found = r;
                    true
                }
                None => false,
            },
            || format!("{:#?}", self.runs(10)),
        );
        found
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Two MSPs (`msp-0`, `msp-1`) × 2 workspaces, both modules on, workspace k with k+1 devices and
/// k+2 users.
pub(crate) fn inventory() -> Inventory {
    Inventory::msps(2, 2, |k| Units {
        devices: k + 1,
        users: k + 2,
    })
}

/// The stand-in knows both MSPs, under their inventory ids.
pub(crate) fn add_msps(e: &SimEnv) {
    e.sim.add_msp("msp-0", "Acme IT", TOKEN_A);
    e.sim.add_msp("msp-1", "Beta Net", TOKEN_B);
}

/// A stand-in and a configuration without catch-up (no run but the ones a test asks for), logging
/// at debug (so that the secret scan covers every line the daemon can write).
pub(crate) fn sim_env(edit: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> SimEnv {
    SimEnv::with_config(|c| {
        edit(
            c.set("schedule", "catch_up", false)
                .set("log", "level", "debug"),
        )
    })
}

fn assert_rfc3339_utc(v: &Value, what: &str) {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"));
    chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{what} {s:?}: {e}"));
    assert!(s.ends_with('Z'), "{what} is UTC: {s:?}");
}

/// No partner token, vendor key or API token in any of `texts`.
fn assert_no_secrets(texts: &[String], what: &str) {
    for secret in [TOKEN_A, TOKEN_B, UNKNOWN, API_TOKEN, VENDOR_KEY] {
        for t in texts {
            assert!(
                !t.contains(secret),
                "{what} holds the secret {secret:?}:\n{t}"
            );
        }
    }
}

/// How many counts the stand-in accepted for `org`.
fn accepted_for(e: &SimEnv, org: &str) -> usize {
    e.sim
        .snapshot()
        .pushes
        .iter()
        .filter(|p| p.org_id.as_deref() == Some(org) && p.status < 300)
        .count()
}

/// Records applied by an import, over every type (the summary's `applied` is per type).
fn applied(summary: &Value) -> u64 {
    summary["applied"]
        .as_object()
        .unwrap_or_else(|| panic!("applied per type: {summary}"))
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum()
}

/// "METHOD path status" of every request the stand-in got after the first `since`.
fn sent_since(e: &SimEnv, since: usize) -> Vec<String> {
    e.sim.snapshot().requests[since..]
        .iter()
        .map(|r| format!("{} {} {}", r.method, r.path, r.status))
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn account_ids(e: &SimEnv, org: &str) -> Vec<String> {
    sorted(
        e.sim
            .snapshot()
            .org(org)
            .unwrap()
            .accounts
            .iter()
            .map(|a| a.id.clone())
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------------
// Prometheus text, parsed minimally: `name{label="value",…} value`.

struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|e| panic!("{line:?}: {e}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line:?}"));
                (name.to_string(), parse_labels(inner))
            }
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

fn parse_labels(mut s: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    while !s.is_empty() {
        let (key, rest) = s
            .split_once("=\"")
            .unwrap_or_else(|| panic!("labels {s:?}"));
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => {
                    if let Some((_, c)) = chars.next() {
                        value.push(match c {
                            'n' => '\n',
                            c => c,
                        });
                    }
                }
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {s:?}"),
            }
        };
        labels.insert(key.trim_start_matches(',').to_string(), value);
        s = rest[end + 1..].trim_start_matches(',');
    }
    labels
}

/// The value of the sample `name` whose labels include `with`.
fn sample(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && with
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

fn sum_of(samples: &[Sample], name: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .sum()
}

// ---------------------------------------------------------------------------------------------
// 1 (and 3). Every route over the unix socket.

#[expect(
    clippy::too_many_lines,
    reason = "one walk through every route, in the order a console uses them"
)]
#[test]
fn every_route_over_the_unix_socket_answers_with_the_contracts_codes() {
    let e = sim_env(|c| c.set("gradient", "max_attempts", 2));
    add_msps(&e);
    let d = Daemon::start(&e, &[]);
    let api = Api::unix(&e);

    // Health, readiness, metrics.
    assert_eq!(api.get("/healthz").expect(200), json!({"status": "ok"}));
    assert_eq!(api.get("/readyz").status, 200);
    let m = api.get("/metrics");
    assert_eq!(m.status, 200, "{}", m.body);
    assert!(
        m.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        m.headers
    );

    // Nothing known yet.
    assert_eq!(
        api.get("/v1/connectors").expect(200),
        json!({"connectors": []})
    );
    let st = api.get("/v1/status").expect(200);
    assert_eq!(st["connectors"], json!([]), "{st}");
    assert!(st["last_run"].is_null(), "{st}");
    api.get("/v1/connectors/msp-0")
        .expect_error(404, "unknown_connector");

    // The inventory: good JSON Lines are applied (and again change nothing).
    let inv = inventory();
    let n = inv.len() as u64;
    let r = api.inventory(&inv.to_jsonl()).expect(200);
    assert_eq!(r["lines"], n, "{r}");
    assert_eq!(applied(&r), n, "{r}");
    assert_eq!(r["applied"]["workspace"], 4, "{r}");
    assert_eq!(r["unchanged"], 0, "{r}");
    let r = api.inventory(&inv.to_jsonl()).expect(200);
    assert_eq!((applied(&r), r["unchanged"].clone()), (0, json!(n)), "{r}");
    assert_eq!(r["unreported_modules"], json!([]), "{r}");
    // A module id no [[service]] names is imported and listed, not silently dropped.
    let mut edr = Inventory::new();
    edr.module(&gradient_connector_kit::workspace_id(0, 0), "EDR", true);
    let r = api.inventory(&edr.to_jsonl()).expect(200);
    assert_eq!(
        r["unreported_modules"],
        json!([{"module": "EDR", "workspaces": 1}]),
        "{r}"
    );

    // Bad lines: 422 with each bad line, and nothing applied (not even the good first line).
    let mut good = Inventory::new();
    good.channel("msp-never", "Never Applied");
    let bad = format!(
        "{}this is not JSON\n{}\n",
        good.to_jsonl(),
        json!({"type": "gadget", "id": "g-1"})
    );
    let v = api.inventory(&bad).expect_error(422, "bad_import");
    let lines: Vec<u64> = v["error"]["lines"]
        .as_array()
        .unwrap_or_else(|| panic!("lines: {v}"))
        .iter()
        .map(|l| {
            assert!(l["reason"].as_str().is_some_and(|r| !r.is_empty()), "{l}");
            l["line"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(lines, vec![2, 3], "{v}");
    let r = api.inventory(&good.to_jsonl()).expect(200);
    assert_eq!(
        r["applied"]["channel"], 1,
        "the good line was not applied by the rejected import: {r}"
    );

    // A paste: connected, named; the stand-in has `pending`, the services and msp-0's accounts.
    let c = api.paste("msp-0", TOKEN_A).expect(200);
    assert_eq!(c["id"], "msp-0", "{c}");
    assert_eq!(c["state"], "connected", "{c}");
    assert_eq!(c["organization_name"], "Acme IT", "{c}");
    let snap = e.sim.snapshot();
    let org = snap.org("msp-0").unwrap();
    assert_eq!(org.status, "pending");
    let names: Vec<&str> = snap.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, SERVICE_NAMES);
    assert_eq!(account_ids(&e, "msp-0"), ["msp-0-w0", "msp-0-w1"]);
    let history_before = org.status_history.clone();
    let requests_before = snap.requests.len();

    // Bad tokens never reach Gradient.
    for t in ["", "   ", "\t", "pt-acme 5Qk2"] {
        api.paste("msp-0", t).expect_error(400, "bad_token");
    }
    assert_eq!(e.sim.snapshot().requests.len(), requests_before);

    // A key the stand-in does not know: 422, and the previous token stays.
    api.paste("msp-0", UNKNOWN)
        .expect_error(422, "token_rejected");
    assert_eq!(
        sent_since(&e, requests_before),
        ["GET /api/vendor-api/organization 401"],
        "nothing but the verification"
    );
    let c = api.get("/v1/connectors/msp-0").expect(200);
    assert_eq!(c["state"], "connected", "{c}");
    assert_eq!(c["organization_name"], "Acme IT", "{c}");
    assert_eq!(
        e.sim.snapshot().org("msp-0").unwrap().status_history,
        history_before
    );

    // Another MSP's token: 409, nothing changes (in Gradient: nothing but the verification).
    let since = e.sim.snapshot().requests.len();
    api.paste("msp-1", TOKEN_A)
        .expect_error(409, "organization_taken");
    assert_eq!(
        sent_since(&e, since),
        ["GET /api/vendor-api/organization 200"]
    );
    assert_eq!(
        e.sim.snapshot().org("msp-0").unwrap().status_history,
        history_before
    );
    api.get("/v1/connectors/msp-1")
        .expect_error(404, "unknown_connector");

    // Gradient answers 503 to the verification (every attempt): 502, nothing changes.
    let since = e.sim.snapshot().requests.len();
    e.sim.add_fault(Fault {
        method: Some("GET".into()),
        path_prefix: Some("/api/vendor-api/organization".into()),
        status: 503,
        count: 2, // = gradient.max_attempts
        retry_after_secs: None,
    });
    api.paste("msp-1", TOKEN_B)
        .expect_error(502, "gradient_unavailable");
    assert_eq!(
        sent_since(&e, since),
        [
            "GET /api/vendor-api/organization 503",
            "GET /api/vendor-api/organization 503"
        ],
        "both attempts got the fault (none left over), nothing else was sent"
    );
    let snap = e.sim.snapshot();
    api.get("/v1/connectors/msp-1")
        .expect_error(404, "unknown_connector");
    let org1 = snap.org("msp-1").unwrap();
    assert_eq!(org1.status, "inactive");
    assert!(org1.accounts.is_empty());
    let c = api.paste("msp-1", TOKEN_B).expect(200);
    assert_eq!(c["state"], "connected", "{c}");
    assert_eq!(c["organization_name"], "Beta Net", "{c}");

    // Sync: an unknown connector is 404 and queues nothing; `{}` queues a run.
    api.send("POST", "/v1/sync", &json!({"connector": "nope"}))
        .expect_error(404, "unknown_connector");
    // Slow counts, to see the run while it is going (outcome null).
    e.sim.set_count_latency(Duration::from_millis(150));
    assert_eq!(
        api.send("POST", "/v1/sync", &json!({})).expect(202),
        json!({"queued": true})
    );
    let mut going = Value::Null;
    wait_for_secs(
        "the API's run in /v1/runs",
        10,
        || match api.runs(5).into_iter().find(|r| r["trigger"] == "api") {
            Some(r) => {
                going = r;
                true
            }
            None => false,
        },
        || format!("{:#?}", api.runs(5)),
    );
    assert!(going["outcome"].is_null(), "a run still going: {going}");
    assert!(going["finished_at"].is_null(), "{going}");
    // The contract's status: a run still going has a null outcome (never a word outside the list).
    let st = api.get("/v1/status").expect(200);
    if st["last_run"]["finished_at"].is_null() {
        assert!(st["last_run"]["outcome"].is_null(), "{st}");
        assert_eq!(st["running"], true, "{st}");
    }
    assert_rfc3339_utc(&going["started_at"], "started_at");
    let run = api.wait_finished_run("api");
    e.sim.set_count_latency(Duration::ZERO);
    assert_eq!(run["outcome"], "ok", "{run}");
    assert_eq!(
        run["counts"],
        json!({"pushed": 8, "unmapped": 0, "failed": 0, "rejected": 0, "skipped_disabled": 0}),
        "{run}"
    );
    for k in ["started_at", "finished_at"] {
        assert_rfc3339_utc(&run[k], k);
    }
    assert_eq!(run["cadence"], "daily", "{run}");
    assert!(
        run["period"].as_str().is_some_and(|p| !p.is_empty()),
        "{run}"
    );
    let runs = api.runs(50);
    assert_eq!(runs.len(), 1, "only the API's run: {runs:#?}");
    assert_eq!(api.runs(1).len(), 1);
    // The token kept after the 422 is the one that pushed msp-0's counts.
    assert_eq!(accepted_for(&e, "msp-0"), 4);
    assert_eq!(accepted_for(&e, "msp-1"), 4);

    // The ledger, filtered.
    let run_id = run["id"].as_i64().unwrap();
    let h = api
        .get(&format!(
            "/v1/history?connector=msp-0&run={run_id}&changes=true&limit=100"
        ))
        .expect(200);
    let rows = h.as_array().unwrap_or_else(|| panic!("an array: {h}"));
    assert_eq!(rows.len(), 4, "{h}");
    for row in rows {
        assert_eq!(row["connector_id"], "msp-0", "{row}");
        assert_eq!(row["run_id"], run_id, "{row}");
        assert_eq!(row["outcome"], "pushed", "{row}");
        assert_rfc3339_utc(&row["at"], "history at");
    }
    let h = api.get("/v1/history?limit=3").expect(200);
    assert_eq!(h.as_array().unwrap().len(), 3, "{h}");
    let h = api
        .get(&format!("/v1/history?run={}", run_id + 1))
        .expect(200);
    assert_eq!(h, json!([]));

    // Status after the run: every time RFC 3339 UTC.
    let st = api.get("/v1/status").expect(200);
    assert_eq!(st["last_run"]["outcome"], "ok", "{st}");
    assert_eq!(st["last_run"]["id"], run["id"], "{st}");
    assert_rfc3339_utc(&st["next_scheduled_run"], "next_scheduled_run");
    for k in ["started_at", "finished_at"] {
        assert_rfc3339_utc(&st["last_run"][k], k);
    }
    for c in st["connectors"].as_array().unwrap() {
        for k in ["verified_at", "last_success_at"] {
            assert_rfc3339_utc(&c[k], k);
        }
    }
    let a = connector_in(&st, "msp-0");
    assert_eq!(a["state"], "connected");
    let known = a["last_known"].as_array().unwrap();
    assert_eq!(known.len(), 4, "{a}");
    for k in known {
        assert_rfc3339_utc(&k["pushed_at"], "pushed_at");
    }
    let all = api.get("/v1/connectors").expect(200);
    assert_eq!(all["connectors"].as_array().unwrap().len(), 2, "{all}");

    // Accounts: a new workspace (and a rename) imported through the API, then synced now.
    let mut more = Inventory::new();
    more.workspace("msp-0-w9", "msp-0", "Newco Ltd")
        .workspace("msp-0-w0", "msp-0", "Renamed Co");
    api.inventory(&more.to_jsonl()).expect(200);
    assert_eq!(
        api.send("POST", "/v1/connectors/msp-0/accounts/sync", &json!({}))
            .expect(200),
        json!({"created": 1, "renamed": 1})
    );
    assert_eq!(
        account_ids(&e, "msp-0"),
        ["msp-0-w0", "msp-0-w1", "msp-0-w9"]
    );
    let snap = e.sim.snapshot();
    let org = snap.org("msp-0").unwrap();
    assert_eq!(org.account("msp-0-w9").unwrap().name, "Newco Ltd");
    assert_eq!(org.account("msp-0-w0").unwrap().name, "Renamed Co");
    api.send("POST", "/v1/connectors/nope/accounts/sync", &json!({}))
        .expect_error(404, "unknown_connector");

    // Disconnect: `inactive` in the stand-in, the connector kept as disconnected.
    let c = api
        .call("DELETE", "/v1/connectors/msp-1", &[], None)
        .expect(200);
    assert_eq!(c["state"], "disconnected", "{c}");
    assert_eq!(e.sim.snapshot().org("msp-1").unwrap().status, "inactive");
    assert_eq!(
        api.get("/v1/connectors/msp-1").expect(200)["state"],
        "disconnected"
    );
    let h = api.get("/v1/history?connector=msp-1").expect(200);
    assert_eq!(h.as_array().unwrap().len(), 4, "the history is kept: {h}");
    api.call("DELETE", "/v1/connectors/nope", &[], None)
        .expect_error(404, "unknown_connector");

    // 3. No secret in any answer or in the daemon's (debug) log.
    let (code, _) = d.stop();
    assert_eq!(code, 0);
    assert_no_secrets(&api.seen(), "an API answer");
    assert_no_secrets(&[daemon_logs(&e)], "the daemon's log");
}

/// Every daemon log file in the environment's directory, concatenated.
fn daemon_logs(e: &SimEnv) -> String {
    let all = daemon_logs_of(e);
    assert!(
        all.contains(" DEBUG "),
        "the scan covers debug lines: {all}"
    );
    all
}

// ---------------------------------------------------------------------------------------------
// 2. TCP with a bearer token.

#[test]
fn over_tcp_every_route_but_the_health_checks_needs_the_bearer_token() {
    let port = free_port();
    let e = sim_env(|c| {
        c.set("api", "listen", format!("127.0.0.1:{port}"))
            .set("api", "token_file", "api-token")
    });
    let f = e.env.write("api-token", &format!("{API_TOKEN}\n"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let d = Daemon::start(&e, &[]);
    let api = Api::tcp(port);

    let unauthorized = |r: Reply| {
        r.expect_error(401, "unauthorized");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer"),
            "{:?}",
            r.headers
        );
    };
    let right = format!("Bearer {API_TOKEN}");
    let wrong = [
        "Bearer not-the-api-token-at-all".to_string(),
        format!("Bearer {API_TOKEN}x"),
        format!("Bearer {}", &API_TOKEN[..API_TOKEN.len() - 1]),
        "Bearer ".to_string(),
        format!("Basic {API_TOKEN}"),
        API_TOKEN.to_string(),
    ];
    for target in [
        "/v1/status",
        "/v1/connectors",
        "/v1/connectors/msp-0",
        "/v1/runs?limit=1",
        "/v1/history",
        "/metrics",
    ] {
        unauthorized(api.get(target));
        for w in &wrong {
            unauthorized(api.call("GET", target, &[("Authorization", w)], None));
        }
        let sep = if target.contains('?') { '&' } else { '?' };
        for q in ["access_token", "token"] {
            unauthorized(api.get(&format!("{target}{sep}{q}={API_TOKEN}")));
        }
        let ok = api.call("GET", target, &[("Authorization", &right)], None);
        let want = if target == "/v1/connectors/msp-0" {
            404
        } else {
            200
        };
        assert_eq!(ok.status, want, "{target}: {}", ok.body);
    }
    // Writes without the token change nothing.
    unauthorized(api.send("POST", "/v1/sync", &json!({})));
    unauthorized(api.paste("msp-0", TOKEN_A));
    unauthorized(api.inventory(&inventory().to_jsonl()));
    unauthorized(api.call(
        "POST",
        &format!("/v1/sync?access_token={API_TOKEN}"),
        &[],
        Some(("application/json", b"{}")),
    ));
    let authed =
        |method: &str, target: &str| api.call(method, target, &[("Authorization", &right)], None);
    let runs = authed("GET", "/v1/runs?limit=10").expect(200);
    assert_eq!(runs["runs"], json!([]), "nothing was queued: {runs}");
    let st = authed("GET", "/v1/status").expect(200);
    assert_eq!(st["connectors"], json!([]), "{st}");
    let m = authed("GET", "/metrics");
    assert!(
        m.body.contains("gradient_connector_connectors"),
        "{}",
        m.body
    );

    // Health checks need no token.
    assert_eq!(api.get("/healthz").expect(200), json!({"status": "ok"}));
    assert_eq!(api.get("/readyz").status, 200);

    let (code, _) = d.stop();
    assert_eq!(code, 0);
    assert_no_secrets(&api.seen(), "an API answer");
    assert_no_secrets(&[daemon_logs(&e)], "the daemon's log");
}

#[test]
fn a_non_loopback_listen_without_tls_files_is_refused_naming_the_key() {
    let env = Env::with_config(
        standard_config("http://127.0.0.1:9")
            .set("api", "listen", "0.0.0.0:18443")
            .set("api", "token_file", "api-token"),
    );
    env.write("api-token", &format!("{API_TOKEN}\n"));
    let out = env.run(&["check-config"], None);
    assert_eq!(code(&out), 78, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stderr(&out).contains("api.tls_cert_file"),
        "{}",
        stderr(&out)
    );

    // `run` refuses too (it would serve for ever if it accepted: give it 20 s).
    let out = run_expecting_exit(&env.config, Duration::from_secs(20));
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("api.tls_cert_file"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(API_TOKEN));
}

// ---------------------------------------------------------------------------------------------
// 4. Metrics after a run.

#[expect(
    clippy::too_many_lines,
    reason = "one run, then every series it should have moved"
)]
#[test]
fn metrics_after_a_run_count_what_the_stand_in_accepted() {
    let e = sim_env(|c| c);
    e.import_inventory(&inventory());
    add_msps(&e);
    let d = Daemon::start(&e, &[]);
    let api = Api::unix(&e);
    let started = chrono::Utc::now().timestamp() as f64;
    api.paste("msp-0", TOKEN_A).expect(200);
    api.paste("msp-1", TOKEN_B).expect(200);
    // One 401 from Gradient, to see a second status label.
    api.paste("msp-1", UNKNOWN)
        .expect_error(422, "token_rejected");
    api.send("POST", "/v1/sync", &json!({})).expect(202);
    let run = api.wait_finished_run("api");
    assert_eq!(run["outcome"], "ok", "{run}");
    // The run's counter is bumped right after the run is recorded: poll briefly.
    let last = std::cell::RefCell::new(String::new());
    wait_for_secs(
        "runs_total after the run",
        5,
        || {
            *last.borrow_mut() = api.get("/metrics").body;
            let s = parse_metrics(&last.borrow());
            sample(&s, "gradient_connector_runs_total", &[("outcome", "ok")]) == Some(1.0)
        },
        || last.borrow().clone(),
    );
    let text = last.into_inner();
    let s = parse_metrics(&text);
    let ctx = || text.clone();

    // Connectors by state.
    for (state, n) in [
        ("connected", 2.0),
        ("token_rejected", 0.0),
        ("disconnected", 0.0),
        ("unverified", 0.0),
    ] {
        assert_eq!(
            sample(&s, "gradient_connector_connectors", &[("state", state)]),
            Some(n),
            "{state}\n{}",
            ctx()
        );
    }
    // Pushes: as many as the stand-in accepted.
    let accepted = e
        .sim
        .snapshot()
        .pushes
        .iter()
        .filter(|p| p.status < 300)
        .count();
    assert_eq!(accepted, 8);
    assert_eq!(
        sample(
            &s,
            "gradient_connector_pushes_total",
            &[("outcome", "pushed")]
        ),
        Some(accepted as f64),
        "{}",
        ctx()
    );
    assert_eq!(
        sample(
            &s,
            "gradient_connector_runs_total",
            &[("outcome", "failed")]
        )
        .unwrap_or(0.0),
        0.0
    );
    // Last success per connector: the run's end, in unix seconds.
    let now = chrono::Utc::now().timestamp() as f64;
    for c in ["msp-0", "msp-1"] {
        let at = sample(
            &s,
            "gradient_connector_last_success_timestamp_seconds",
            &[("connector", c)],
        )
        .unwrap_or_else(|| panic!("last success of {c}\n{}", ctx()));
        assert!(
            at >= started - 1.0 && at <= now + 1.0,
            "{c}: {at} not in [{started}, {now}]"
        );
    }
    // Requests to Gradient by status: every request the stand-in logged (all came from the daemon).
    let requests = e.sim.snapshot().requests;
    let by_status = |code: u16| requests.iter().filter(|r| r.status == code).count() as f64;
    let total = sum_of(&s, "gradient_connector_gradient_requests_total");
    assert_eq!(total, requests.len() as f64, "{}", ctx());
    assert_eq!(
        sample(
            &s,
            "gradient_connector_gradient_requests_total",
            &[("status", "401")]
        ),
        Some(by_status(401)),
        "{}",
        ctx()
    );
    assert_eq!(by_status(401), 1.0);
    let ok2xx: f64 = s
        .iter()
        .filter(|x| {
            x.name == "gradient_connector_gradient_requests_total"
                && x.labels.get("status").is_some_and(|c| c.starts_with('2'))
        })
        .map(|x| x.value)
        .sum();
    assert_eq!(
        ok2xx,
        requests.iter().filter(|r| r.status < 300).count() as f64,
        "{}",
        ctx()
    );
    // The duration histogram: one observation per request, cumulative buckets.
    let h = "gradient_connector_gradient_request_duration_seconds";
    assert_eq!(
        sample(&s, &format!("{h}_count"), &[]),
        Some(total),
        "{}",
        ctx()
    );
    let mut buckets: Vec<(f64, f64)> = s
        .iter()
        .filter(|x| x.name == format!("{h}_bucket"))
        .map(|x| {
            let le = x.labels["le"].as_str();
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            (le, x.value)
        })
        .collect();
    assert!(buckets.len() >= 2, "{}", ctx());
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, total));
    assert!(sample(&s, &format!("{h}_sum"), &[]).is_some_and(|v| v > 0.0));

    let (code, _) = d.stop();
    assert_eq!(code, 0);
    assert_no_secrets(&api.seen(), "an API answer");
    assert_no_secrets(&[daemon_logs(&e)], "the daemon's log");
}

// ---------------------------------------------------------------------------------------------
// 5. The CLI through a running daemon.

#[test]
fn the_cli_goes_through_a_running_daemon() {
    let e = sim_env(|c| c);
    e.import_inventory(&inventory());
    add_msps(&e);
    let d = Daemon::start(&e, &[]);
    let api = Api::unix(&e);
    let mut outputs = Vec::new();
    let mut add = |id: &str, token: &str, expect: i32| {
        let f = e.env.write(&format!("token-{id}"), &format!("{token}\n"));
        let out = e.run(&["connector", "add", id, "--token-file", f.to_str().unwrap()]);
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert_eq!(code(&out), expect, "connector add {id}: {text}");
        outputs.push(text.clone());
        text
    };
    let text = add("msp-0", TOKEN_A, 0);
    assert!(text.contains("through the running daemon"), "{text}");
    let text = add("msp-1", UNKNOWN, 1);
    assert!(text.contains("token_rejected"), "{text}");
    api.get("/v1/connectors/msp-1")
        .expect_error(404, "unknown_connector");
    add("msp-1", TOKEN_B, 0);
    assert_eq!(
        api.get("/v1/connectors/msp-1").expect(200)["state"],
        "connected"
    );
    assert_eq!(e.sim.snapshot().org("msp-1").unwrap().status, "pending");

    // `sync`: the daemon runs it (trigger api), the CLI reports it and exits 0.
    let out = e.run(&["sync", "--json"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    outputs.push(format!("{}{}", stdout(&out), stderr(&out)));
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)));
    let run_id = report["run_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("{report}"));
    let runs = api.runs(10);
    assert_eq!(runs.len(), 1, "one run, the daemon's: {runs:#?}");
    assert_eq!(runs[0]["id"], run_id);
    assert_eq!(runs[0]["trigger"], "api", "{runs:#?}");
    assert_eq!(runs[0]["outcome"], "ok", "{runs:#?}");
    assert_eq!(runs[0]["counts"]["pushed"], 8, "{runs:#?}");

    let (code, _) = d.stop();
    assert_eq!(code, 0);
    assert_no_secrets(&outputs, "the CLI's output");
    assert_no_secrets(&api.seen(), "an API answer");
    assert_no_secrets(&[daemon_logs(&e)], "the daemon's log");
}

#[test]
fn a_snapshot_posted_to_the_api_is_refused_422_when_it_shrinks_too_far_and_taken_with_allow_shrink()
{
    let e = sim_env(|c| c);
    let d = Daemon::start(&e, &[]);
    let api = Api::unix(&e);
    api.inventory(&inventory().to_jsonl()).expect(200);
    // msp-0's export names its channel and nothing else: its 2 workspaces and every unit would go.
    let now = gradient_connector::time::format_ms(gradient_connector::time::now_ms());
    let mut snap = Inventory::snapshot(&now);
    snap.channel("msp-0", "Acme IT");
    let body = snap.to_jsonl();
    let post = |target: &str| {
        api.call(
            "POST",
            target,
            &[],
            Some(("application/x-ndjson", body.as_bytes())),
        )
    };
    let refused = post("/v1/inventory?snapshot=true").expect_error(422, "snapshot_shrink");
    assert_eq!(
        refused["error"]["channels"][0]["channel"], "msp-0",
        "{refused}"
    );
    assert_eq!(
        refused["error"]["channels"][0]["workspaces_dropped"], 2,
        "{refused}"
    );
    post("/v1/inventory?allow_shrink=true").expect_error(400, "bad_request");
    post("/v1/inventory?snapshot=maybe").expect_error(400, "bad_request");
    let taken = post("/v1/inventory?snapshot=true&allow_shrink=true").expect(200);
    assert_eq!(taken["snapshot"]["removed"], 2, "{taken}");
    // Only msp-1's workspaces are left: it was not named.
    let left: Vec<String> = e
        .store()
        .workspaces()
        .unwrap()
        .into_iter()
        .map(|w| w.channel_id)
        .collect();
    assert_eq!(left, ["msp-1", "msp-1"]);
    drop(d);
}

#[test]
fn test_connection_rechecks_the_token_and_a_disconnected_connector_can_be_removed() {
    let e = sim_env(|c| c.set("gradient", "max_attempts", 2));
    add_msps(&e);
    let d = Daemon::start(&e, &[]);
    let api = Api::unix(&e);
    api.inventory(&inventory().to_jsonl()).expect(200);
    api.paste("msp-0", TOKEN_A).expect(200);

    // "Test connection": Gradient accepts the stored token.
    let since = e.sim.snapshot().requests.len();
    let v = api
        .send("POST", "/v1/connectors/msp-0/verify", &json!({}))
        .expect(200);
    assert_eq!(v["verified"]["state"], "connected", "{v}");
    assert_eq!(v["state"], "connected", "{v}");
    assert_eq!(
        sent_since(&e, since),
        ["GET /api/vendor-api/organization 200"],
        "a read, nothing written"
    );
    // Gradient unreachable: 502, the state unchanged.
    e.sim.add_fault(Fault {
        method: Some("GET".into()),
        path_prefix: Some("/api/vendor-api/organization".into()),
        status: 503,
        count: 2,
        retry_after_secs: None,
    });
    api.send("POST", "/v1/connectors/msp-0/verify", &json!({}))
        .expect_error(502, "gradient_unavailable");
    assert_eq!(
        api.get("/v1/connectors/msp-0").expect(200)["state"],
        "connected"
    );
    // The MSP generated a new key: the test says so, and the connector is rejected.
    e.sim.rotate_key("msp-0", "pt-acme-newer-key-123");
    let v = api
        .send("POST", "/v1/connectors/msp-0/verify", &json!({}))
        .expect(200);
    assert_eq!(v["verified"]["state"], "token_rejected", "{v}");
    assert_eq!(v["state"], "token_rejected", "{v}");
    api.send("POST", "/v1/connectors/nobody/verify", &json!({}))
        .expect_error(404, "unknown_connector");

    // Remove: only a disconnected connector; its history stays.
    api.call("DELETE", "/v1/connectors/msp-0?forget=true", &[], None)
        .expect_error(409, "not_disconnected");
    api.call("DELETE", "/v1/connectors/msp-0?forget=maybe", &[], None)
        .expect_error(400, "bad_request");
    api.call("DELETE", "/v1/connectors/msp-0", &[], None)
        .expect(200);
    api.send("POST", "/v1/connectors/msp-0/verify", &json!({}))
        .expect_error(409, "not_connected");
    let removed = api
        .call("DELETE", "/v1/connectors/msp-0?forget=true", &[], None)
        .expect(200);
    assert_eq!(removed, json!({"id": "msp-0", "removed": true}));
    assert_eq!(
        api.get("/v1/connectors").expect(200),
        json!({"connectors": []})
    );
    api.get("/v1/connectors/msp-0")
        .expect_error(404, "unknown_connector");
    api.call("DELETE", "/v1/connectors/msp-0?forget=true", &[], None)
        .expect_error(404, "unknown_connector");
    // A new paste under the id is a new connector (any organization).
    api.paste("msp-0", "pt-acme-newer-key-123").expect(200);
    assert_eq!(
        api.get("/v1/connectors/msp-0").expect(200)["state"],
        "connected"
    );
    drop(d);
}

#[test]
fn every_labelled_series_is_there_at_zero_before_anything_happens() {
    let e = sim_env(|c| c);
    let d = Daemon::start(&e, &[]);
    let api = Api::unix(&e);
    let text = api.get("/metrics").body;
    let s = parse_metrics(&text);
    for outcome in [
        "pushed",
        "unmapped",
        "failed",
        "rejected",
        "skipped_disabled",
    ] {
        assert_eq!(
            sample(
                &s,
                "gradient_connector_pushes_total",
                &[("outcome", outcome)]
            ),
            Some(0.0),
            "pushes_total{{outcome={outcome}}}\n{text}"
        );
    }
    for outcome in ["ok", "partial", "failed", "interrupted"] {
        assert_eq!(
            sample(&s, "gradient_connector_runs_total", &[("outcome", outcome)]),
            Some(0.0),
            "runs_total{{outcome={outcome}}}\n{text}"
        );
    }
    for name in [
        "gradient_connector_store_write_failures_total",
        "gradient_connector_api_connections_refused_total",
    ] {
        assert_eq!(sample(&s, name, &[]), Some(0.0), "{name}\n{text}");
    }
    drop(d);
}
