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
    /// Our services.
    #[serde(default)]
    pub skus: Vec<Sku>,
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
    /// When Gradient last saw a sync.
    #[serde(default)]
    pub last_synced_at: Option<String>,
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
    /// Whether the MSP mapped it (newer deployments).
    #[serde(default)]
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
    pub unit_count: u64,
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

/// Accounts arrive as a bare array, wrapped, or (defensively) as `{accounts: [...]}`.
pub(crate) fn account_list(v: Value) -> Result<Vec<Account>, serde_json::Error> {
    match unwrap_data(v) {
        Value::Object(mut m) if m.contains_key("accounts") => {
            serde_json::from_value(m.remove("accounts").unwrap_or(Value::Null))
        }
        Value::Null => Ok(Vec::new()),
        other => serde_json::from_value(other),
    }
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
    fn unit_count_is_a_number_and_account_id_a_string() {
        let body = serde_json::to_string(&UnitCountBody {
            account_id: "123",
            unit_count: 5,
        })
        .unwrap();
        assert_eq!(body, r#"{"accountId":"123","unitCount":5}"#);
    }
}
