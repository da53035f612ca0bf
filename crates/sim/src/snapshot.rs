//! What the stand-in shows of itself: the catalogue, each organisation's accounts and counts, the
//! pushes and requests it received (`Sim::snapshot`, `GET /_sim/state`).

use super::*;

/// A service in the catalogue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimService {
    /// Id (24 hex digits).
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Category.
    pub category: String,
    /// Subcategory.
    pub subcategory: String,
    /// Support article URL.
    #[serde(default)]
    pub support_article: Option<String>,
    /// Support contact.
    #[serde(default)]
    pub support_contact: Option<String>,
}

/// The vendor profile as the vendor PATCH left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimVendorProfile {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// What Gradient's "Open Vendor Portal" button opens.
    pub integration_portal_url: Option<String>,
    /// The vendor's support page.
    pub vendor_support_page_url: Option<String>,
}

impl Default for SimVendorProfile {
    fn default() -> Self {
        SimVendorProfile {
            name: "Sim Vendor".into(),
            description: "gradient-sim".into(),
            integration_portal_url: None,
            vendor_support_page_url: None,
        }
    }
}

/// The `lastSyncedAt` Gradient answers for an integration that never synced.
pub const NEVER_SYNCED: &str = "1900-01-01T00:00:00.000Z";

/// An account as the stand-in holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimAccount {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
}

/// The current value of one pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimCount {
    /// Account.
    pub account_id: String,
    /// Service.
    pub service_id: String,
    /// Value.
    pub unit_count: f64,
}

/// One MSP organisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimOrg {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Integration status.
    pub status: String,
    /// Every status it had, in order (set by the vendor or by Gradient).
    pub status_history: Vec<String>,
    /// Accounts in creation order.
    pub accounts: Vec<SimAccount>,
    /// Current values.
    pub counts: Vec<SimCount>,
    /// Accepted pushes without `no_build` (each triggers a rebuild).
    pub rebuilds: u64,
    /// Mapping.
    pub mapping: Mapping,
}

impl SimOrg {
    /// The current value of a pair.
    pub fn count(&self, account_id: &str, service_id: &str) -> Option<f64> {
        self.counts
            .iter()
            .find(|c| c.account_id == account_id && c.service_id == service_id)
            .map(|c| c.unit_count)
    }

    /// An account by id.
    pub fn account(&self, id: &str) -> Option<&SimAccount> {
        self.accounts.iter().find(|a| a.id == id)
    }
}

/// One set-unit-count call as received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceivedPush {
    /// The org whose token was used.
    pub org_id: Option<String>,
    /// `accountId` as sent.
    pub account_id: serde_json::Value,
    /// Service id from the path.
    pub service_id: String,
    /// `unitCount` as sent.
    pub unit_count: serde_json::Value,
    /// `no_build=true` was set.
    pub no_build: bool,
    /// The answer's status.
    pub status: u16,
    /// Milliseconds since the stand-in started.
    pub at_ms: u64,
}

/// One vendor-API request as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLogEntry {
    /// Arrival, in milliseconds since the stand-in started (monotonic).
    pub at_ms: u64,
    /// Method.
    pub method: String,
    /// Path without query.
    pub path: String,
    /// Query string.
    pub query: Option<String>,
    /// Status answered.
    pub status: u16,
    /// The org whose token was used, when it was valid.
    pub org_id: Option<String>,
    /// The request's body: its JSON, or its text when it is not JSON; None when empty.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
}

/// Everything the stand-in received and holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimSnapshot {
    /// The catalogue in creation order.
    pub services: Vec<SimService>,
    /// Organisations by id.
    pub orgs: Vec<SimOrg>,
    /// Every set-unit-count call.
    pub pushes: Vec<ReceivedPush>,
    /// Every vendor-API request.
    pub requests: Vec<RequestLogEntry>,
    /// The vendor profile.
    #[serde(default)]
    pub vendor: SimVendorProfile,
}

impl SimSnapshot {
    /// An org by id.
    pub fn org(&self, id: &str) -> Option<&SimOrg> {
        self.orgs.iter().find(|o| o.id == id)
    }

    /// The requests made with one org's token.
    pub fn requests_of(&self, org_id: &str) -> Vec<&RequestLogEntry> {
        self.requests
            .iter()
            .filter(|r| r.org_id.as_deref() == Some(org_id))
            .collect()
    }

    /// A service id by name (the first with that name).
    pub fn service_id(&self, name: &str) -> Option<&str> {
        self.services
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.id.as_str())
    }

    /// The most requests in any sliding one-second window.
    pub fn max_requests_per_second(&self) -> usize {
        // The log is in answer order; arrivals (at_ms) may interleave under latency.
        let mut times: Vec<u64> = self.requests.iter().map(|r| r.at_ms).collect();
        times.sort_unstable();
        let mut best = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end] - times[start] >= 1000 {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }
}
