//! Account reconciliation against the stand-in: creation in chunks of at most 100, and a 409 on a
//! chunk (another writer created one of its ids first) healed by reading again and creating only
//! what is still missing.

use std::collections::HashMap;
use std::time::Duration;

use gradient_connector::connector::ensure_accounts;
use gradient_connector::gradient::{ClientSettings, GradientClient, PartnerSession};
use gradient_connector::sim::{Sim, SimOptions, SimSnapshot};
use gradient_connector::store::ledger::WorkspaceRow;
use secrecy::SecretString;

const VENDOR: &str = "bulk-vendor-key";
const PARTNER: &str = "bulk-partner-key";
const ACCOUNTS: &str = "/api/vendor-api/organization/accounts";
/// `connector::accounts::MAX_CREATE_ROUNDS` (not re-exported by `connector`).
const MAX_CREATE_ROUNDS: usize = 3;

async fn setup() -> (Sim, PartnerSession) {
    let sim = Sim::start(SimOptions {
        vendor_key: VENDOR.into(),
        rate_limit_per_token: 0,
        port: 0,
    })
    .await
    .unwrap();
    sim.add_msp("org-1", "Acme IT", PARTNER);
    let c = GradientClient::new(
        ClientSettings {
            base_url: sim.base_url().parse().unwrap(),
            requests_per_second: 100,
            max_in_flight: 16,
            request_timeout: Duration::from_secs(5),
            max_attempts: 3,
            retry_initial_delay: Duration::from_millis(5),
            retry_max_delay: Duration::from_millis(50),
            max_list_body: gradient_connector::gradient::answer::DEFAULT_LIST_BODY_LIMIT,
            max_body: gradient_connector::gradient::answer::DEFAULT_BODY_LIMIT,
        },
        SecretString::from(VENDOR.to_string()),
    )
    .unwrap();
    let s = c.partner(&SecretString::from(PARTNER.to_string()));
    (sim, s)
}

fn workspaces(n: usize) -> Vec<WorkspaceRow> {
    (0..n)
        .map(|i| WorkspaceRow {
            id: format!("ws-{i:03}"),
            channel_id: "org-1".into(),
            name: format!("Workspace {i}"),
        })
        .collect()
}

/// How many times each id was sent in a bulk creation Gradient accepted (201).
fn created_per_id(snap: &SimSnapshot) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for r in snap
        .requests
        .iter()
        .filter(|r| r.method == "POST" && r.path == ACCOUNTS && r.status == 201)
    {
        for a in r.body.as_ref().and_then(|b| b.as_array()).unwrap() {
            *out.entry(a["id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    out
}

fn creations(snap: &SimSnapshot) -> Vec<(u16, usize)> {
    snap.requests
        .iter()
        .filter(|r| r.method == "POST" && r.path == ACCOUNTS)
        .map(|r| {
            let n = r
                .body
                .as_ref()
                .and_then(|b| b.as_array())
                .map_or(0, Vec::len);
            (r.status, n)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_409_on_a_chunk_rereads_and_creates_only_what_is_missing() {
    let (sim, s) = setup().await;
    let ws = workspaces(250);
    // Another writer creates ws-150 between our read and our creation: the second chunk
    // (ws-100..ws-199) is refused as a whole with 409.
    sim.add_account_before_next_create("org-1", "ws-150", "Workspace 150");
    let out = ensure_accounts(&s, "org-1", &ws).await.unwrap();
    let snap = sim.snapshot();
    let org = snap.org("org-1").unwrap();
    assert_eq!(org.accounts.len(), 250);
    for w in &ws {
        assert!(org.account(&w.id).is_some(), "{} is missing", w.id);
    }
    assert_eq!(
        creations(&snap),
        vec![(201, 100), (409, 100), (201, 50), (201, 99)],
        "chunks of at most 100; after the 409 only the 99 still missing"
    );
    let per_id = created_per_id(&snap);
    assert!(
        per_id.values().all(|&n| n == 1),
        "an account was created twice"
    );
    assert_eq!(per_id.len(), 249, "ws-150 was not ours to create");
    assert!(!per_id.contains_key("ws-150"));
    assert_eq!(out.created, 249);
    // A second reconciliation finds nothing to do.
    let again = ensure_accounts(&s, "org-1", &ws).await.unwrap();
    assert_eq!(again.created, 0);
    assert_eq!(creations(&sim.snapshot()).len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_409_that_never_clears_is_bounded() {
    let (sim, s) = setup().await;
    let ws = workspaces(3);
    // Every creation is refused with 409 while the list never shows the accounts.
    sim.add_fault(gradient_connector::sim::Fault {
        method: Some("POST".into()),
        path_prefix: Some(ACCOUNTS.into()),
        status: 409,
        count: 1000,
        retry_after_secs: None,
    });
    let out = tokio::time::timeout(Duration::from_secs(10), ensure_accounts(&s, "org-1", &ws))
        .await
        .expect("no endless loop")
        .unwrap();
    assert_eq!(out.created, 0);
    assert_eq!(creations(&sim.snapshot()).len(), MAX_CREATE_ROUNDS);
}
