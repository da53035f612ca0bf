//! gradient-sim: a stand-in for Gradient's vendor API ("Synthesize") for the demo, tests and
//! benchmarks. It binds 127.0.0.1 only and never talks to the real service.
//!
//! It holds several MSP organisations (partner keys, accounts, mappings, received counts), the
//! vendor-wide service catalogue, a log of every request, and fault injection (targeted errors, a
//! ratio of 429s, latency, a per-token rate limit) including a hostile Gradient ([`Hostile`]:
//! malformed successes, requests that land and then fail or hang, silence, huge streamed bodies).
//! Where docs/gradient-api.md says *we assume*, it picks the
//! strict reading. Drive it from Rust through [`Sim`], or as a process through the `/_sim/` admin API.
//! It is independent of the daemon's modules.
//!
//! It answers as a client generated from Gradient's newer spec expects: a bulk account creation
//! holding an id that already exists is refused as a whole with 409; a service needs a
//! `description`; `supportArticle`/`supportContact` are kept; the vendor PATCH stores the profile;
//! `lastSyncedAt` is a 1900 sentinel until the first accepted count; the status update's `data` is a
//! string; a count never changes an integration's status (the vendor sets `active`, as Gradient's newer spec says).

use gradient_connector_domain::time;
use gradient_vendor_api as gradient;

mod cli;
mod newer;
mod server;
mod snapshot;

pub use cli::main;
pub use snapshot::*;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How the stand-in starts.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The vendor API key it accepts.
    pub vendor_key: String,
    /// Requests per second per partner token before 429 (0 = unlimited).
    pub rate_limit_per_token: u32,
    /// Port on 127.0.0.1 (0 = ephemeral).
    pub port: u16,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            vendor_key: "sim-vendor-key".into(),
            rate_limit_per_token: 100,
            port: 0,
        }
    }
}

/// Which (account, service) pairs an MSP has mapped in its PSA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mapping {
    /// Everything is mapped.
    All,
    /// Only these accounts and these services; a pair is mapped iff both are.
    Explicit {
        /// Mapped account ids.
        accounts: Vec<String>,
        /// Mapped service ids.
        service_ids: Vec<String>,
    },
}

/// An injected fault: the next `count` matching vendor-API requests get `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// Only this method (e.g. "GET"), or any.
    pub method: Option<String>,
    /// Only paths starting with this (e.g. "/api/vendor-api/service"), or any.
    pub path_prefix: Option<String>,
    /// The status to answer.
    pub status: u16,
    /// How many requests.
    pub count: u32,
    /// A `Retry-After` header to send, in seconds.
    pub retry_after_secs: Option<u64>,
}

/// A hostile Gradient: the next `count` vendor-API requests matching `method` and `path_prefix`
/// get `behaviour` (checked after authentication, before [`Fault`]s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hostile {
    /// Only this method (e.g. "GET"), or any.
    #[serde(default)]
    pub method: Option<String>,
    /// Only this exact path (e.g. "/api/vendor-api" for the catalogue alone), or any.
    #[serde(default)]
    pub path: Option<String>,
    /// Only paths starting with this (e.g. "/api/vendor-api/organization/accounts"), or any.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// How many requests.
    pub count: u32,
    /// What they get.
    pub behaviour: Behaviour,
}

/// What a [`Hostile`] answer does. In `/_sim/state` a request that got no answer is logged with
/// status 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Behaviour {
    /// Answers `status` with exactly this body text (as `application/json`, whatever it holds);
    /// the request does not land.
    Body {
        /// Status.
        status: u16,
        /// Body text.
        body: String,
    },
    /// The request lands (the route runs: e.g. accounts are created), then `status` with `body`
    /// is answered instead of the route's answer.
    LandsThen {
        /// Status.
        status: u16,
        /// Body text.
        body: String,
    },
    /// The request lands, then no answer ever comes (the connection stays open).
    LandsThenSilent,
    /// The request is accepted and never answered, and does not land.
    Silent,
    /// Answers `status` with a JSON body of `bytes` bytes (a catalogue with ever more skus),
    /// streamed without a `Content-Length`; the request does not land.
    Huge {
        /// Status.
        status: u16,
        /// Body size in bytes.
        bytes: u64,
    },
}

struct Org {
    name: String,
    status: String,
    status_history: Vec<String>,
    accounts: Vec<SimAccount>,
    counts: BTreeMap<(String, String), f64>,
    rebuilds: u64,
    mapping: Mapping,
    last_synced_at: Option<String>,
    /// Accounts another writer creates just before the next bulk creation arrives (a race).
    racing: Vec<SimAccount>,
}

pub(crate) struct State {
    vendor_key: String,
    rate_limit: u32,
    throttle_ratio: f64,
    throttle_retry_after: Option<u64>,
    latency: Duration,
    /// Each request's latency is `latency` ± up to this (uniform): a real network's jitter.
    latency_spread: Duration,
    count_latency: Duration,
    outage_until: Option<Instant>,
    faults: Vec<Fault>,
    hostile: Vec<Hostile>,
    services: Vec<SimService>,
    orgs: BTreeMap<String, Org>,
    keys: HashMap<String, String>,
    windows: HashMap<String, VecDeque<Instant>>,
    /// Organization-scoped services of the newer spec, by organization: id → the service.
    org_services: HashMap<String, BTreeMap<String, serde_json::Value>>,
    pushes: Vec<ReceivedPush>,
    requests: Vec<RequestLogEntry>,
    vendor: SimVendorProfile,
    next_id: u64,
    origin: Instant,
}

pub(crate) type Shared = Arc<Mutex<State>>;

pub(crate) fn lock(s: &Shared) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves plain data behind: keep serving.
    s.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    fn new(opts: &SimOptions) -> State {
        State {
            vendor_key: opts.vendor_key.clone(),
            rate_limit: opts.rate_limit_per_token,
            throttle_ratio: 0.0,
            throttle_retry_after: None,
            latency: Duration::ZERO,
            latency_spread: Duration::ZERO,
            count_latency: Duration::ZERO,
            outage_until: None,
            faults: Vec::new(),
            hostile: Vec::new(),
            services: Vec::new(),
            orgs: BTreeMap::new(),
            keys: HashMap::new(),
            windows: HashMap::new(),
            org_services: HashMap::new(),
            pushes: Vec::new(),
            requests: Vec::new(),
            vendor: SimVendorProfile::default(),
            next_id: 1,
            origin: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("{:024x}", 0x5e1d_0000_0000u64 + self.next_id)
    }

    fn add_msp(&mut self, id: &str, name: &str, key: &str) {
        self.keys.retain(|_, org| org != id);
        self.keys.insert(key.to_string(), id.to_string());
        self.orgs.entry(id.to_string()).or_insert_with(|| Org {
            name: name.to_string(),
            status: "inactive".into(),
            status_history: Vec::new(),
            accounts: Vec::new(),
            counts: BTreeMap::new(),
            rebuilds: 0,
            mapping: Mapping::All,
            last_synced_at: None,
            racing: Vec::new(),
        });
    }

    /// False when the org is unknown (nothing changes).
    fn rotate(&mut self, id: &str, key: &str) -> bool {
        if !self.orgs.contains_key(id) {
            return false;
        }
        self.keys.retain(|_, org| org != id);
        self.keys.insert(key.to_string(), id.to_string());
        true
    }

    /// False when the org is unknown.
    fn disconnect(&mut self, id: &str) -> bool {
        let Some(o) = self.orgs.get_mut(id) else {
            return false;
        };
        self.keys.retain(|_, org| org != id);
        o.accounts.clear();
        o.counts.clear();
        o.status = "inactive".into();
        o.status_history.push("inactive".into());
        true
    }

    fn snapshot(&self) -> SimSnapshot {
        SimSnapshot {
            services: self.services.clone(),
            orgs: self
                .orgs
                .iter()
                .map(|(id, o)| SimOrg {
                    id: id.clone(),
                    name: o.name.clone(),
                    status: o.status.clone(),
                    status_history: o.status_history.clone(),
                    accounts: o.accounts.clone(),
                    counts: o
                        .counts
                        .iter()
                        .map(|((a, s), v)| SimCount {
                            account_id: a.clone(),
                            service_id: s.clone(),
                            unit_count: *v,
                        })
                        .collect(),
                    rebuilds: o.rebuilds,
                    mapping: o.mapping.clone(),
                })
                .collect(),
            pushes: self.pushes.clone(),
            requests: self.requests.clone(),
            vendor: self.vendor.clone(),
        }
    }
}

/// A running stand-in. Dropping it stops the server.
pub struct Sim {
    addr: SocketAddr,
    state: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sim {
    /// Starts the stand-in on 127.0.0.1.
    pub async fn start(opts: SimOptions) -> std::io::Result<Sim> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.port)).await?;
        let addr = listener.local_addr()?;
        let state: Shared = Arc::new(Mutex::new(State::new(&opts)));
        let app = server::router(state.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "gradient-sim stopped");
            }
        });
        Ok(Sim {
            addr,
            state,
            stop: Some(stop),
            task,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds an MSP (status `inactive`, everything mapped) with its partner key.
    pub fn add_msp(&self, org_id: &str, name: &str, partner_key: &str) {
        lock(&self.state).add_msp(org_id, name, partner_key);
    }

    /// The MSP generates a new key: the old one gets 401 from now on; accounts survive.
    pub fn rotate_key(&self, org_id: &str, new_key: &str) {
        lock(&self.state).rotate(org_id, new_key);
    }

    /// The MSP disconnects in Gradient: all accounts deleted, key invalid, status inactive.
    pub fn disconnect(&self, org_id: &str) {
        lock(&self.state).disconnect(org_id);
    }

    /// Gradient shows the integration in `status` (as if changed on Gradient's side), without a
    /// request of ours.
    pub fn set_status(&self, org_id: &str, status: &str) {
        if let Some(o) = lock(&self.state).orgs.get_mut(org_id) {
            o.status = status.to_string();
            o.status_history.push(status.to_string());
        }
    }

    /// The MSP connects again with a new key (no accounts).
    pub fn reconnect(&self, org_id: &str, new_key: &str) {
        lock(&self.state).rotate(org_id, new_key);
    }

    /// An account that already exists in the MSP's organisation (created earlier by the vendor).
    pub fn add_account(&self, org_id: &str, id: &str, name: &str) {
        if let Some(o) = lock(&self.state).orgs.get_mut(org_id) {
            if o.accounts.iter().all(|a| a.id != id) {
                o.accounts.push(SimAccount {
                    id: id.into(),
                    name: name.into(),
                    description: None,
                });
            }
        }
    }

    /// A race: another writer creates this account just before the next bulk account creation for
    /// the org arrives (so that creation, if it holds the id, is refused with 409).
    pub fn add_account_before_next_create(&self, org_id: &str, id: &str, name: &str) {
        if let Some(o) = lock(&self.state).orgs.get_mut(org_id) {
            o.racing.push(SimAccount {
                id: id.into(),
                name: name.into(),
                description: None,
            });
        }
    }

    /// Sets which pairs the MSP has mapped.
    pub fn set_mapping(&self, org_id: &str, mapping: Mapping) {
        if let Some(o) = lock(&self.state).orgs.get_mut(org_id) {
            o.mapping = mapping;
        }
    }

    /// Adds a targeted fault.
    pub fn add_fault(&self, fault: Fault) {
        lock(&self.state).faults.push(fault);
    }

    /// Adds a hostile behaviour (malformed or huge answers, requests that land then fail or hang,
    /// silence).
    pub fn add_hostile(&self, hostile: Hostile) {
        lock(&self.state).hostile.push(hostile);
    }

    /// Answers this fraction of vendor-API requests with 429 (and `Retry-After` when given).
    pub fn set_throttle(&self, ratio_429: f64, retry_after_secs: Option<u64>) {
        let mut s = lock(&self.state);
        s.throttle_ratio = ratio_429.clamp(0.0, 1.0);
        s.throttle_retry_after = retry_after_secs;
    }

    /// Delays every vendor-API answer.
    pub fn set_latency(&self, latency: Duration) {
        let mut s = lock(&self.state);
        s.latency = latency;
        s.latency_spread = Duration::ZERO;
    }

    /// Answers every request after `latency` ± up to `spread` (uniform), as a real network does.
    pub fn set_latency_jitter(&self, latency: Duration, spread: Duration) {
        let mut s = lock(&self.state);
        s.latency = latency;
        s.latency_spread = spread;
    }

    /// Delays only set-unit-count answers (the catalogue and accounts stay fast).
    pub fn set_count_latency(&self, latency: Duration) {
        lock(&self.state).count_latency = latency;
    }

    /// Answers every vendor-API request with 503 for `duration` from now.
    pub fn set_outage(&self, duration: Duration) {
        lock(&self.state).outage_until = Some(Instant::now() + duration);
    }

    /// Sets the per-token rate limit (0 = unlimited).
    pub fn set_rate_limit(&self, per_second: u32) {
        lock(&self.state).rate_limit = per_second;
    }

    /// Everything received so far.
    pub fn snapshot(&self) -> SimSnapshot {
        lock(&self.state).snapshot()
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.abort();
    }
}
