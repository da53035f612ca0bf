//! `connector.mapping_needed`: after a run, what the MSP still has to map in Gradient — accounts
//! Gradient lists as not mapped, and services whose counts Gradient answered 404 for on an account
//! that is mapped — compared with what the console was last told. Only what is new is told; what
//! the MSP mapped is forgotten, so it is told again if it comes back.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

/// What needs mapping, as told (and remembered in the store).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unmapped {
    /// Account ids.
    pub accounts: BTreeSet<String>,
    /// Module ids.
    pub services: BTreeSet<String>,
}

/// What needs mapping now: `accounts` Gradient lists as unmapped, and the modules of unmapped
/// pairs (`(account, module)`) whose account is not among them. Pure.
pub fn unmapped_now(accounts: &[String], pairs: &[(String, String)]) -> Unmapped {
    let accounts: BTreeSet<String> = accounts.iter().cloned().collect();
    let services = pairs
        .iter()
        .filter(|(a, _)| !accounts.contains(a))
        .map(|(_, m)| m.clone())
        .collect();
    Unmapped { accounts, services }
}

/// What is in `now` and not in `told` (None when nothing is new). Pure.
pub fn news(told: &Unmapped, now: &Unmapped) -> Option<Unmapped> {
    let new = Unmapped {
        accounts: now.accounts.difference(&told.accounts).cloned().collect(),
        services: now.services.difference(&told.services).cloned().collect(),
    };
    (!new.accounts.is_empty() || !new.services.is_empty()).then_some(new)
}

/// The event's `data`: the connector, the run, and the new accounts (id and name) and services
/// (module and name).
pub fn event_data(
    connector: &str,
    run_id: i64,
    new: &Unmapped,
    account_names: &HashMap<String, String>,
    service_names: &HashMap<String, String>,
) -> serde_json::Value {
    serde_json::json!({
        "connector": connector,
        "run": run_id,
        "accounts": new.accounts.iter().map(|id| serde_json::json!({
            "id": id,
            "name": account_names.get(id),
        })).collect::<Vec<_>>(),
        "services": new.services.iter().map(|m| serde_json::json!({
            "module": m,
            "name": service_names.get(m).unwrap_or(m),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn an_unmapped_pair_on_a_mapped_account_is_its_service_and_only_news_are_told() {
        let pairs = vec![
            ("ws-2".to_string(), "edr".to_string()),
            ("ws-1".to_string(), "backup".to_string()),
        ];
        let now = unmapped_now(&s(&["ws-2"]), &pairs);
        assert_eq!(now.accounts, ["ws-2".to_string()].into());
        assert_eq!(
            now.services,
            ["backup".to_string()].into(),
            "ws-2's pair is its account's"
        );
        let first = news(&Unmapped::default(), &now).unwrap();
        assert_eq!(first, now);
        assert_eq!(news(&now, &now), None, "told already");
        // ws-2 was mapped, ws-3 is new: only ws-3 is told.
        let later = unmapped_now(&s(&["ws-3"]), &[]);
        let told = news(&now, &later).unwrap();
        assert_eq!(told.accounts, ["ws-3".to_string()].into());
        assert!(told.services.is_empty());
        let names = HashMap::from([("ws-3".to_string(), "Initech".to_string())]);
        let data = event_data("msp-a", 7, &told, &names, &HashMap::new());
        assert_eq!(
            data["accounts"][0],
            serde_json::json!({"id": "ws-3", "name": "Initech"})
        );
    }
}
