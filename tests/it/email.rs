//! E-mail to the MSP through a real SMTP server: Debian's `python3-aiosmtpd`, started here on
//! 127.0.0.1 with its Maildir handler, and every received message parsed with Python's `email`
//! package (a real MIME parser). The daemon mails the connector's contacts *connected* and
//! *synced* (a text part, an HTML part, a CSV attachment whose rows equal the ledger), escapes
//! names in HTML, never carries a token, and retries a mail while the server is down. Under CI a
//! missing aiosmtpd fails the test; elsewhere it is skipped with a message. (The contacts of a
//! refused `connector add --notify` need no server.)

use std::process::{Child, Command, Stdio};

use crate::common::*;
use serde_json::Value;

const PYTHON: &str = "/usr/bin/python3";
const TOKEN: &str = "pt-mail-Zq8Xw3Lk9";

fn aiosmtpd() -> bool {
    let ok = Command::new(PYTHON)
        .args(["-c", "import aiosmtpd"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("python3-aiosmtpd is missing: .ci/services installs it");
        }
        eprintln!("skipped: no python3-aiosmtpd (apt-get install python3-aiosmtpd)");
    }
    ok
}

/// An SMTP server on `port` writing every message into the Maildir `dir`.
struct SmtpServer(Child);

impl SmtpServer {
    fn start(port: u16, dir: &std::path::Path) -> SmtpServer {
        let child = Command::new(PYTHON)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for(
            "the SMTP server",
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            String::new,
        );
        SmtpServer(child)
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every message of the Maildir, parsed by Python's `email` package: headers, the text and HTML
/// parts, the attachments (name, text), and the raw bytes.
fn received(dir: &std::path::Path) -> Vec<Value> {
    let script = r#"
import email, email.policy, json, mailbox, sys
out = []
for key, msg in sorted(mailbox.Maildir(sys.argv[1], create=False).items()):
    raw = msg.as_bytes()
    m = email.message_from_bytes(raw, policy=email.policy.default)
    parts = {"text": None, "html": None, "attachments": []}
    for part in m.walk():
        if part.is_multipart():
            continue
        if part.get_filename():
            parts["attachments"].append({"name": part.get_filename(), "type": part.get_content_type(), "text": part.get_content()})
        elif part.get_content_type() == "text/plain":
            parts["text"] = part.get_content()
        elif part.get_content_type() == "text/html":
            parts["html"] = part.get_content()
    out.append({"from": str(m["From"]), "to": str(m["To"]), "subject": str(m["Subject"]),
                "raw": raw.decode("utf-8", "replace"), **parts})
print(json.dumps(out))
"#;
    let out = Command::new(PYTHON)
        .args(["-c", script])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn wait_mails(dir: &std::path::Path, n: usize, d: &Daemon) -> Vec<Value> {
    let mut got = Vec::new();
    wait_for_secs(
        &format!("{n} mail(s)"),
        30,
        || {
            got = if dir.join("new").exists() {
                received(dir)
            } else {
                Vec::new()
            };
            got.len() >= n
        },
        || d.log(),
    );
    got
}

#[test]
fn the_msp_is_mailed_connected_and_synced_with_a_breakdown_equal_to_the_ledger() {
    if !aiosmtpd() {
        return;
    }
    let port = free_port();
    let maildir = tempfile::tempdir().unwrap();
    let e = SimEnv::with_config(|c| {
        c.set("email", "smtp_url", format!("smtp://127.0.0.1:{port}"))
            .set("email", "from", "Vendor Billing <billing@vendor.example>")
            .set("schedule", "catch_up", false)
    });
    e.import_inventory(&two_msps(2, 3));
    e.sim.add_msp("msp-a", "<script>x</script> Acme", TOKEN);
    // The server is down at first: the connected mail waits and is retried.
    let d = Daemon::start(&e, &[]);
    let token = e.env.write("token-a", &format!("{TOKEN}\n"));
    let out = e.run(&[
        "connector",
        "add",
        "msp-a",
        "--token-file",
        token.to_str().unwrap(),
        "--notify",
        "admin@msp.example",
        "--notify",
        "billing@msp.example",
    ]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    d.wait_log("mail not sent");
    let _server = SmtpServer::start(port, &maildir.path().join("mail"));
    let mail_dir = maildir.path().join("mail");
    let connected = wait_mails(&mail_dir, 2, &d);
    let to: Vec<&str> = connected
        .iter()
        .map(|m| m["to"].as_str().unwrap())
        .collect();
    assert!(
        to.contains(&"admin@msp.example") && to.contains(&"billing@msp.example"),
        "{to:?}"
    );
    for m in &connected {
        assert_eq!(m["from"], "Vendor Billing <billing@vendor.example>");
        assert!(
            m["subject"]
                .as_str()
                .unwrap()
                .contains("<script>x</script> Acme"),
            "{m}"
        );
        assert!(m["text"].is_string() && m["html"].is_string(), "{m}");
        assert!(
            m["html"].as_str().unwrap().contains("&lt;script&gt;"),
            "{m}"
        );
    }

    // A sync: one *synced* mail per contact, its CSV rows equal to the ledger's pushes.
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let all = wait_mails(&mail_dir, 4, &d);
    let synced: Vec<&Value> = all
        .iter()
        .filter(|m| m["attachments"].as_array().is_some_and(|a| !a.is_empty()))
        .collect();
    assert_eq!(synced.len(), 2, "{all:#?}");
    let csv = synced[0]["attachments"][0]["text"].as_str().unwrap();
    assert_eq!(synced[0]["attachments"][0]["type"], "text/csv");
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    let ledger = e.store().pushed_in_run(runs(&e).last().unwrap().0).unwrap();
    let pushed: Vec<_> = ledger.iter().filter(|(c, ..)| c == "msp-a").collect();
    assert_eq!(rows.len(), pushed.len(), "{csv}");
    for (_, account, module, n) in &pushed {
        let company = format!("Customer {account}");
        let service = if module == "endpoint_security" {
            "Endpoint Security"
        } else {
            "Email Security"
        };
        assert!(
            rows.iter()
                .any(|r| r.starts_with(&format!("{company},{service},{n},"))),
            "{company} {service} {n} not in\n{csv}"
        );
    }
    // Never a partner token in a mail.
    for m in &all {
        assert!(!m["raw"].as_str().unwrap().contains(TOKEN), "{m}");
    }
    let (code, _) = d.stop();
    assert_eq!(code, 0);
}

/// `connector add --notify` stores the contacts before the paste (the *connected* mail must reach
/// them); a paste Gradient refuses puts the previous contacts back — none for a new connector.
#[test]
fn a_refused_paste_puts_the_previous_contacts_back() {
    let e = SimEnv::new("", "");
    e.sim.add_msp("msp-a", "Acme", TOKEN);
    let good = e.env.write("token-good", &format!("{TOKEN}\n"));
    let bad = e.env.write("token-bad", "pt-not-a-key-Zq8\n");
    let contacts = |id: &str| e.store().contacts(id).unwrap();
    let add = |id: &str, token: &std::path::Path, email: &str| {
        e.run(&[
            "connector",
            "add",
            id,
            "--token-file",
            token.to_str().unwrap(),
            "--notify",
            email,
        ])
    };

    let out = add("msp-a", &good, "admin@msp.example");
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(contacts("msp-a"), ["admin@msp.example"]);

    let out = add("msp-a", &bad, "intruder@elsewhere.example");
    assert_ne!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(contacts("msp-a"), ["admin@msp.example"]);

    let out = add("msp-b", &bad, "someone@msp-b.example");
    assert_ne!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(contacts("msp-b").is_empty(), "{:?}", contacts("msp-b"));
}

#[test]
fn without_an_email_section_contacts_are_kept_and_no_mail_is_queued() {
    // Mail set up later must not send what happened before it: without `[email]` no `mailto:`
    // delivery is written, and the operator is told the contacts are not mailed yet.
    let e = SimEnv::new("", "");
    e.import_inventory(&two_msps(1, 3));
    e.sim.add_msp("msp-a", "Acme", TOKEN);
    let good = e.env.write("token-good", &format!("{TOKEN}\n"));
    let out = e.run(&[
        "connector",
        "add",
        "msp-a",
        "--token-file",
        good.to_str().unwrap(),
        "--notify",
        "admin@msp.example",
    ]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stderr(&out).contains("nothing is mailed until the configuration has an [email] section"),
        "{}",
        stderr(&out)
    );
    assert_eq!(e.store().contacts("msp-a").unwrap(), ["admin@msp.example"]);
    let out = e.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let c = rusqlite::Connection::open(e.env.store_path()).unwrap();
    let mails: i64 = c
        .query_row(
            "SELECT count(*) FROM event_deliveries WHERE url LIKE 'mailto:%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(mails, 0, "no mail delivery without [email]");
}
