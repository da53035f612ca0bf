//! The shapes of Gradient's requests and answers, decoded tolerantly: answers may be wrapped in
//! `{status, message, data}` or bare, optional fields may be missing, unknown fields are ignored,
//! `_id` stands in for a missing `id`, and ids that arrive as numbers become strings.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// Gradient's service categories (exact, case-sensitive).
pub const CATEGORIES: &[&str] = &[
    "security",
    "backup",
    "productivity",
    "infrastructure",
    "service delivery",
    "consulting",
    "other",
];

/// Gradient's service subcategories (exact, case-sensitive, including Gradient's own spelling).
pub const SUBCATEGORIES: &[&str] = &[
    "endpoint detection and response (EDR)",
    "email security",
    "virtual private network services (VPN)",
    "DNS filtering",
    "dark web monitoring",
    "password management",
    "single sign on (SSO)",
    "priviledged access and identity management (PAM/PIM)",
    "security information and event management (SIEM)",
    "mobile device management (MDM)",
    "application security",
    "mobile application management (MAM)",
    "multi factor authentication (MFA)",
    "cloud backup",
    "local backup",
    "desktop backup",
    "data archiving",
    "physical offsite storage",
    "business continuity",
    "hosted email",
    "video conferencing",
    "voice over IP services (VOIP)",
    "line of business application support",
    "unified communications as a service (UCaaS)",
    "customer relationship management",
    "cloud storage",
    "website hosting",
    "hardware as a service (HaaS)",
    "managed print services",
    "virtual desktop infrastructure (VDI)",
    "virtual server hosting",
    "infrastructure as a service (IaaS)",
    "end user support",
    "server management and support",
    "network management and support",
    "printer management and support",
    "desktop management and support",
    "hosted security operations centre (SOC)",
    "software development",
    "penetration testing",
    "project services",
    "governance and compliance",
    "business intelligence services / analytics",
    "phishing simulation",
    "privacy and security awareness training",
    "other",
];

/// An answer with its HTTP status and the attempts it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer<T> {
    /// The decoded value.
    pub value: T,
    /// HTTP status of the final answer.
    pub status: u16,
    /// Requests made (1 = no retry).
    pub attempts: u32,
}

/// The vendor object: our service catalogue.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct Vendor {
    /// Vendor id.
    #[serde(default, deserialize_with = "opt_id")]
    pub id: Option<String>,
    /// Vendor name.
    #[serde(default)]
    pub name: Option<String>,
    /// Vendor description.
    #[serde(default, deserialize_with = "opt_text")]
    pub description: Option<String>,
    /// What Gradient's "Open Vendor Portal" button opens.
    #[serde(
        default,
        rename = "integrationPortalUrl",
        deserialize_with = "opt_text"
    )]
    pub integration_portal_url: Option<String>,
    /// The vendor's support page.
    #[serde(
        default,
        rename = "vendorSupportPageUrl",
        deserialize_with = "opt_text"
    )]
    pub vendor_support_page_url: Option<String>,
    /// Our services.
    #[serde(default)]
    pub skus: Vec<Sku>,
}

/// Changes to the vendor profile (PATCH `/api/vendor-api`): only the fields that are set are sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VendorProfile {
    /// Vendor name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Vendor description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What Gradient's "Open Vendor Portal" button opens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integration_portal_url: Option<String>,
    /// The vendor's support page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor_support_page_url: Option<String>,
}

impl VendorProfile {
    /// Whether nothing would be sent.
    pub fn is_empty(&self) -> bool {
        *self == VendorProfile::default()
    }
}

/// The fields of `wanted` that differ from the vendor object read by GET (fields `wanted` leaves
/// unset are not managed and never appear). URLs compare as parsed URLs, so `https://x.example` and
/// `https://x.example/` are the same. An empty answer means no PATCH is needed.
pub fn profile_changes(current: &Vendor, wanted: &VendorProfile) -> VendorProfile {
    fn text(now: &Option<String>, want: &Option<String>) -> Option<String> {
        let want = want.as_ref()?;
        (now.as_deref() != Some(want.as_str())).then(|| want.clone())
    }
    fn link(now: &Option<String>, want: &Option<String>) -> Option<String> {
        let want = want.as_ref()?;
        let same = match (now.as_deref().map(url::Url::parse), url::Url::parse(want)) {
            (Some(Ok(a)), Ok(b)) => a == b,
            _ => now.as_deref() == Some(want.as_str()),
        };
        (!same).then(|| want.clone())
    }
    VendorProfile {
        name: text(&current.name, &wanted.name),
        description: text(&current.description, &wanted.description),
        integration_portal_url: link(
            &current.integration_portal_url,
            &wanted.integration_portal_url,
        ),
        vendor_support_page_url: link(
            &current.vendor_support_page_url,
            &wanted.vendor_support_page_url,
        ),
    }
}

/// One service (SKU) in the catalogue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sku {
    /// Gradient's id (from `id`, else the deprecated `_id`).
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Category.
    pub category: Option<String>,
    /// Subcategory.
    pub subcategory: Option<String>,
}

impl<'de> Deserialize<'de> for Sku {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default, deserialize_with = "opt_id")]
            id: Option<String>,
            #[serde(default, rename = "_id", deserialize_with = "opt_id")]
            legacy_id: Option<String>,
            #[serde(default)]
            name: Option<String>,
            #[serde(default)]
            description: Option<String>,
            #[serde(default)]
            category: Option<String>,
            #[serde(default)]
            subcategory: Option<String>,
        }
        let raw = Raw::deserialize(d)?;
        let id = raw
            .id
            .or(raw.legacy_id)
            .ok_or_else(|| serde::de::Error::missing_field("id"))?;
        Ok(Sku {
            id,
            name: raw.name.unwrap_or_default(),
            description: raw.description,
            category: raw.category,
            subcategory: raw.subcategory,
        })
    }
}

/// A service to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewService {
    /// Name (what we match on).
    pub name: String,
    /// Description.
    pub description: String,
    /// Category enum.
    pub category: String,
    /// Subcategory enum.
    pub subcategory: String,
    /// Support article URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub support_article: Option<String>,
    /// Support contact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub support_contact: Option<String>,
}

/// The partner's integration with us.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Integration {
    /// The MSP's organisation id.
    #[serde(default, deserialize_with = "opt_id")]
    pub organization_id: Option<String>,
    /// The MSP's name.
    #[serde(default)]
    pub name: Option<String>,
    /// Integration id.
    #[serde(default, deserialize_with = "opt_id")]
    pub integration_id: Option<String>,
    /// `inactive`, `pending`, `active`, ...
    #[serde(default)]
    pub status: Option<String>,
    /// When Gradient last saw a sync (ms since the epoch, UTC); None when it never did: Gradient
    /// answers a sentinel date in 1900 then (any year before 1970 reads as never), and an
    /// unreadable date reads as unknown.
    #[serde(default, deserialize_with = "synced_at")]
    pub last_synced_at: Option<crate::time::Millis>,
}

/// Integration statuses the vendor may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrationStatus {
    /// Not connected.
    Inactive,
    /// Key verified; Gradient's wizard can proceed.
    Pending,
    /// Receiving usage.
    Active,
    /// Disabled.
    Disabled,
    /// Error.
    Error,
}

impl IntegrationStatus {
    /// The exact path word.
    pub fn as_str(self) -> &'static str {
        match self {
            IntegrationStatus::Inactive => "inactive",
            IntegrationStatus::Pending => "pending",
            IntegrationStatus::Active => "active",
            IntegrationStatus::Disabled => "disabled",
            IntegrationStatus::Error => "error",
        }
    }
}

/// An account (one of our workspaces) as Gradient knows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    /// Our id.
    #[serde(deserialize_with = "id")]
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Whether the MSP mapped it (newer deployments; anything but a boolean reads as unknown).
    #[serde(default, deserialize_with = "opt_bool")]
    pub is_mapped: Option<bool>,
    /// Mapping id (newer deployments).
    #[serde(default, deserialize_with = "opt_id")]
    pub mapping_id: Option<String>,
}

/// An account to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewAccount {
    /// Our id (always a JSON string).
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Changes to an account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AccountUpdate {
    /// New name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The body of set-unit-count.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UnitCountBody<'a> {
    pub account_id: &'a str,
    pub unit_count: gradient_connector_domain::count::UnitCount,
}

/// Removes Gradient's `{status, message, data}` wrapper when present.
pub(crate) fn unwrap_data(v: Value) -> Value {
    match v {
        Value::Object(mut m)
            if m.contains_key("data")
                && (m.contains_key("status") || m.contains_key("message")) =>
        {
            m.remove("data").unwrap_or(Value::Null)
        }
        other => other,
    }
}

/// Accounts arrive as a bare array, wrapped, or (defensively) as `{accounts: [...]}`. A row with a
/// missing or null id (Gradient's SDK treats the id as optional), or one that cannot be read, is
/// skipped with a warning; only a list that is not a list fails.
pub(crate) fn account_list(v: Value) -> Result<Vec<Account>, serde_json::Error> {
    let rows: Vec<Value> = match unwrap_data(v) {
        Value::Object(mut m) if m.contains_key("accounts") => {
            serde_json::from_value(m.remove("accounts").unwrap_or(Value::Null))?
        }
        Value::Null => Vec::new(),
        other => serde_json::from_value(other)?,
    };
    Ok(account_rows(rows))
}

/// The readable rows of an account list; a row without an id, or that cannot be read, is skipped
/// with a warning.
pub(crate) fn account_rows(rows: Vec<Value>) -> Vec<Account> {
    let mut out = Vec::with_capacity(rows.len());
    for (row, v) in rows.into_iter().enumerate() {
        if v.get("id").is_none_or(Value::is_null) {
            tracing::warn!(row, "Gradient listed an account without an id; skipped");
            continue;
        }
        match serde_json::from_value::<Account>(v) {
            Ok(a) => out.push(a),
            Err(e) => {
                tracing::warn!(row, error = %e, "Gradient listed an account that cannot be read; skipped")
            }
        }
    }
    out
}

fn id_string(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?.and_then(id_string))
}

fn opt_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => Some(s),
        _ => None,
    })
}

fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?.and_then(|v| v.as_bool()))
}

/// `lastSyncedAt`: an RFC 3339 date; before 1970 (Gradient's 1900 "never" sentinel) or unreadable
/// → None.
fn synced_at<'de, D: Deserializer<'de>>(d: D) -> Result<Option<crate::time::Millis>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => crate::time::parse_rfc3339(&s).ok().filter(|ms| *ms >= 0),
        _ => None,
    })
}

fn id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    id_string(Value::deserialize(d)?).ok_or_else(|| serde::de::Error::custom("id is not a string"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn vendor_wrapped_or_bare_with_legacy_ids() {
        let wrapped = json!({"status": 200, "message": "ok", "data": {"id": "v1", "skus": [
            {"_id": "s1", "name": "A"}, {"id": "s2", "_id": "old", "name": "B", "extra": true}]}});
        let v: Vendor = serde_json::from_value(unwrap_data(wrapped)).unwrap();
        assert_eq!(v.skus[0].id, "s1");
        assert_eq!(v.skus[1].id, "s2");
        let bare = json!({"name": "Us", "skus": []});
        let v: Vendor = serde_json::from_value(unwrap_data(bare)).unwrap();
        assert_eq!(v.name.as_deref(), Some("Us"));
    }

    #[test]
    fn accounts_tolerate_numbers_and_optional_fields() {
        let v = json!([{"id": 7, "name": "Seven"}, {"id": "a", "name": "A", "isMapped": true, "mappingId": 3}]);
        let a = account_list(v).unwrap();
        assert_eq!(a[0].id, "7");
        assert_eq!(a[1].is_mapped, Some(true));
        assert_eq!(a[1].mapping_id.as_deref(), Some("3"));
        let wrapped = json!({"status": "ok", "message": "", "data": [{"id": "x", "name": "X"}]});
        assert_eq!(account_list(wrapped).unwrap().len(), 1);
    }

    #[test]
    fn account_rows_without_an_id_are_skipped_not_fatal() {
        let v = json!([{"id": "a", "name": "A"}, {"name": "no id"}, {"id": null, "name": "null id"},
                       {"id": "b", "name": "B", "isMapped": "yes", "mappingId": null},
                       {"id": {"odd": 1}, "name": "object id"}]);
        let a = account_list(v).unwrap();
        let ids: Vec<&str> = a.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        // isMapped / mappingId: decoded when present and readable, never required.
        assert_eq!((a[0].is_mapped, a[0].mapping_id.as_deref()), (None, None));
        assert_eq!((a[1].is_mapped, a[1].mapping_id.as_deref()), (None, None));
        // A list that is not a list still fails.
        assert!(account_list(json!("nope")).is_err());
    }

    #[test]
    fn skipped_account_rows_are_warned_about() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(sub, || {
            account_list(json!([{"id": null, "name": "X"}, {"id": "ok", "name": "Y"}])).unwrap();
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains("WARN") && text.contains("without an id"),
            "{text}"
        );
    }

    #[test]
    fn last_synced_at_reads_the_1900_sentinel_as_never() {
        let read = |v: Value| {
            serde_json::from_value::<Integration>(v)
                .unwrap()
                .last_synced_at
        };
        assert_eq!(
            read(json!({"lastSyncedAt": "1900-01-01T00:00:00.000Z"})),
            None
        );
        assert_eq!(read(json!({"lastSyncedAt": "1969-12-31T23:59:59Z"})), None);
        assert_eq!(read(json!({"lastSyncedAt": null})), None);
        assert_eq!(read(json!({"lastSyncedAt": "not a date"})), None);
        assert_eq!(read(json!({})), None);
        assert_eq!(
            read(json!({"lastSyncedAt": "2024-05-01T12:00:00.000Z"})),
            Some(crate::time::parse_rfc3339("2024-05-01T12:00:00Z").unwrap())
        );
    }

    #[test]
    fn vendor_profile_changes_name_only_what_differs() {
        let current: Vendor = serde_json::from_value(json!({"name": "Us", "description": "d",
            "integrationPortalUrl": "https://portal.example", "vendorSupportPageUrl": null, "skus": []}))
        .unwrap();
        assert_eq!(
            current.integration_portal_url.as_deref(),
            Some("https://portal.example")
        );
        let wanted = VendorProfile {
            name: None,
            description: Some("d".into()),
            integration_portal_url: Some("https://portal.example/".into()),
            vendor_support_page_url: Some("https://help.example/".into()),
        };
        let ch = profile_changes(&current, &wanted);
        assert_eq!(
            ch,
            VendorProfile {
                vendor_support_page_url: Some("https://help.example/".into()),
                ..VendorProfile::default()
            }
        );
        assert_eq!(
            serde_json::to_value(&ch).unwrap(),
            json!({"vendorSupportPageUrl": "https://help.example/"})
        );
        let moved = VendorProfile {
            integration_portal_url: Some("https://portal.example/new".into()),
            ..VendorProfile::default()
        };
        assert_eq!(profile_changes(&current, &moved), moved);
        assert!(profile_changes(&current, &VendorProfile::default()).is_empty());
    }

    #[test]
    fn unit_count_is_a_number_and_account_id_a_string() {
        let body = serde_json::to_string(&UnitCountBody {
            account_id: "123",
            unit_count: 5.into(),
        })
        .unwrap();
        assert_eq!(body, r#"{"accountId":"123","unitCount":5}"#);
    }
}
