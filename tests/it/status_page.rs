//! The status page in a real browser: Debian's headless Chromium driven through chromedriver's
//! WebDriver protocol (JSON over HTTP, spoken here with `reqwest`), against the real daemon over
//! TCP with its API token. Signing in sets an `HttpOnly`, `SameSite=Strict` cookie (not `Secure`
//! on loopback) that never holds the token; the pages load with no console error; the DOM shows
//! what the store holds; "Sync now" queues a run; names from the inventory and from Gradient stay
//! text. A screenshot of each page is written under `target/screenshots/`. Under CI a missing
//! Chromium fails the test; elsewhere it is skipped with a message.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;
use gradient_connector_kit::Inventory;
use serde_json::{json, Value};

const API_TOKEN: &str = "page-tok-Q7wE2rT9yU4i";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn chromium() -> Option<(&'static str, &'static str)> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromedriver"]
        .iter()
        .all(|p| std::path::Path::new(p).exists());
    match found {
        true => Some(("/usr/bin/chromium", "/usr/bin/chromedriver")),
        false if std::env::var_os("CI").is_some() => {
            panic!("Chromium is missing: .ci/run installs Debian's chromium and chromium-driver")
        }
        false => {
            eprintln!("skipped: no Chromium (apt-get install chromium chromium-driver)");
            None
        }
    }
}

/// An HTTP client (rustls with ring, as the product's).
fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A WebDriver session on a chromedriver child.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Browser {
    fn start(binary: &str, driver: &str) -> Browser {
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let http = client();
        let base = format!("http://127.0.0.1:{port}");
        wait_for(
            "chromedriver",
            || {
                rt.block_on(http.get(format!("{base}/status")).send())
                    .is_ok()
            },
            String::new,
        );
        let mut b = Browser {
            driver: child,
            base,
            session: String::new(),
            http,
            rt,
        };
        let v = b.call(
            "POST",
            "/session",
            json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": binary, "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,1000"]},
                "goog:loggingPrefs": {"browser": "ALL"}
            }}}),
        );
        b.session = v["sessionId"].as_str().unwrap().to_string();
        // A form's answer may still be loading when the next element is looked up: lookups wait
        // for it (every lookup here expects its element).
        b.call(
            "POST",
            &b.s("/timeouts"),
            json!({"implicit": 10_000, "pageLoad": 30_000}),
        );
        b
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self.http.post(&url).json(&body),
        };
        let v: Value = self
            .rt
            .block_on(async { req.send().await?.json::<Value>().await })
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!(v["value"]["error"].is_null(), "{method} {path}: {v}");
        v["value"].clone()
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    fn go(&self, url: &str) {
        self.call("POST", &self.s("/url"), json!({ "url": url }));
    }

    fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            &self.s("/element"),
            json!({"using": "css selector", "value": css}),
        );
        v[ELEMENT].as_str().unwrap().to_string()
    }

    fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.call("GET", &self.s(&format!("/element/{e}/text")), Value::Null)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.call("POST", &self.s(&format!("/element/{e}/click")), json!({}));
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &self.s(&format!("/element/{e}/value")),
            json!({ "text": text }),
        );
    }

    fn source(&self) -> String {
        self.call("GET", &self.s("/source"), Value::Null)
            .as_str()
            .unwrap()
            .to_string()
    }

    fn url(&self) -> String {
        self.call("GET", &self.s("/url"), Value::Null)
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The browser console's messages at level SEVERE (errors) since the last call.
    fn console_errors(&self) -> Vec<String> {
        let v = self.call("POST", &self.s("/se/log"), json!({"type": "browser"}));
        v.as_array()
            .unwrap()
            .iter()
            .filter(|m| m["level"] == "SEVERE")
            .map(|m| m["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    fn screenshot(&self, name: &str) {
        use base64::Engine;
        let png = self.call("GET", &self.s("/screenshot"), Value::Null);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.rt.block_on(
                self.http
                    .delete(format!("{}/session/{}", self.base, self.session))
                    .send(),
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one browser session walks the page's whole story, in order"
)]
fn the_status_page_signs_in_shows_the_store_and_its_sync_button_queues_a_run() {
    let Some((binary, driver)) = chromium() else {
        return;
    };
    let port = free_port();
    let e = SimEnv::with_config(|c| {
        c.set("api", "listen", format!("127.0.0.1:{port}"))
            .set("api", "token_file", "api-token")
            .set("schedule", "catch_up", false)
    });
    let f = e.env.write("api-token", &format!("{API_TOKEN}\n"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Names that would be markup if they were not escaped: Gradient's and the inventory's.
    e.import_inventory(&two_msps(2, 3));
    let mut renamed = Inventory::new();
    renamed
        .undated()
        .workspace("msp-a-ws1", "msp-a", "<b>Bold</b> & Co");
    e.import_inventory(&renamed);
    e.sim
        .add_msp("msp-a", "<script>alert(1)</script> IT", "key-a");
    e.add_token("msp-a", "key-a", 0);
    assert_eq!(code(&e.run(&["sync"])), 0);
    let mut later = Inventory::new();
    later
        .at("2026-11-02T00:00:00Z")
        .user("msp-a-ws2", "msp-a-ws2-u0", false);
    e.import_inventory(&later);
    assert_eq!(code(&e.run(&["sync"])), 0);
    let d = Daemon::start(&e, &[]);
    let site = format!("http://127.0.0.1:{port}");

    let b = Browser::start(binary, driver);
    // Not signed in: the page sends the browser to the form.
    b.go(&format!("{site}/"));
    assert!(b.url().ends_with("/login"), "{}", b.url());
    b.type_into("#token", "not-the-token");
    b.click("#sign-in");
    assert!(b.text("#login-error").contains("not the API token"));
    // That answer was a 401 on purpose; the console's errors are counted from here.
    let _ = b.console_errors();
    b.type_into("#token", API_TOKEN);
    b.click("#sign-in");
    wait_for(
        "the signed-in page",
        || b.url() == format!("{site}/"),
        || b.url(),
    );
    b.screenshot("index");
    let cookies = b.call("GET", &b.s("/cookie"), Value::Null);
    let cookie = cookies
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "gc_session")
        .unwrap_or_else(|| panic!("{cookies}"))
        .clone();
    assert_eq!(cookie["httpOnly"], true, "{cookie}");
    assert_eq!(cookie["sameSite"], "Strict", "{cookie}");
    assert_eq!(cookie["secure"], false, "loopback: {cookie}");
    assert!(!cookie["value"].as_str().unwrap().contains(API_TOKEN));

    // The overview shows the connector, escaped, and the runs.
    let html = b.source();
    assert!(html.contains("msp-a"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt; IT"),
        "{html}"
    );
    assert_eq!(b.text("#runs tr:nth-child(2) td:nth-child(5)"), "ok");

    // The connector's page: companies × services as the ledger says, a chart per pair.
    b.go(&format!("{site}/connectors/msp-a"));
    b.screenshot("connector");
    let html = b.source();
    assert!(
        html.contains("&lt;b&gt;Bold&lt;/b&gt; &amp;amp; Co")
            || html.contains("&lt;b&gt;Bold&lt;/b&gt; &amp; Co"),
        "{html}"
    );
    let known = e.store().last_known(Some("msp-a")).unwrap();
    assert!(!known.is_empty());
    for k in &known {
        let row = format!(
            "#pairs tr[data-account=\"{}\"][data-module=\"{}\"] .count",
            k.account, k.service
        );
        assert_eq!(b.text(&row), k.unit_count.to_string(), "{row}");
    }
    assert_eq!(html.matches("<svg class=\"chart\"").count(), known.len());
    let changed = b.text(
        "#pairs tr[data-account=\"msp-a-ws2\"][data-module=\"email_security\"] td:nth-child(4)",
    );
    assert_eq!(changed, "-1");

    // Sync now: the button posts with the cookie, the daemon queues a run.
    let runs_before = finished_runs(&e);
    b.click("#sync-now");
    wait_for(
        "the button's answer",
        || b.text("#answer-sync").starts_with("202"),
        || b.text("#answer-sync"),
    );
    wait_for(
        "the queued run",
        || finished_runs(&e) > runs_before,
        || d.log(),
    );
    b.click("#test-connection");
    wait_for(
        "Test connection",
        || b.text("#answer-verify").starts_with("200"),
        || b.text("#answer-verify"),
    );
    let errors = b.console_errors();
    assert!(errors.is_empty(), "{errors:?}");

    // The cookie opens the page and its buttons, not the rest of the API.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let with_cookie = |path: &str| -> u16 {
        let c = client();
        rt.block_on(
            c.get(format!("{site}{path}"))
                .header(
                    "cookie",
                    format!("gc_session={}", cookie["value"].as_str().unwrap()),
                )
                .send(),
        )
        .unwrap()
        .status()
        .as_u16()
    };
    assert_eq!(with_cookie("/"), 200);
    assert_eq!(with_cookie("/v1/status"), 401);
    assert_eq!(with_cookie("/v1/history"), 401);
    // Signing out clears it: the page sends the browser to the form again.
    b.go(&format!("{site}/"));
    b.call(
        "POST",
        &b.s("/execute/sync"),
        json!({"script": "document.querySelector('header form').submit()", "args": []}),
    );
    std::thread::sleep(Duration::from_millis(300));
    b.go(&format!("{site}/"));
    assert!(b.url().ends_with("/login"), "{}", b.url());
    b.screenshot("login");
    drop(b);
    let (code, _) = d.stop();
    assert_eq!(code, 0);
}
