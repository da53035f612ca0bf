//! Account reconciliation: Gradient must hold one account per workspace of the MSP's channel, named
//! as in the inventory. [`account_changes`] plans it (pure); [`ensure_accounts`] reads Gradient's
//! accounts and applies the plan: re-read, then create what is missing. It runs when a token is
//! pasted and at the start of each run.
//!
//! Creation goes in bulk requests of at most [`MAX_ACCOUNTS_PER_REQUEST`]. Gradient refuses a whole
//! request with 409 when one of its ids already exists (another writer got there first); that is
//! not a failure: the accounts are read again and only what is still missing is created, for at
//! most [`MAX_CREATE_ROUNDS`] rounds. A creation is never repeated blindly: the client repeats it
//! only when it surely did not land (429, a refused connection); after a 5xx, a timeout or an
//! unreadable answer it may have landed, so the accounts are read again first and only what is
//! still missing is created. An account list that is not a list is an error, never "no accounts"
//! (`gradient::answer`), so nothing is created from it.

use std::collections::HashMap;

use crate::gradient::{
    Account, AccountUpdate, ErrorKind, GradientError, NewAccount, PartnerSession,
    MAX_ACCOUNTS_PER_REQUEST,
};

/// How many times [`ensure_accounts`] reads the accounts and creates what is missing when a
/// creation was refused with 409 (the bound that keeps a conflict from looping).
pub const MAX_CREATE_ROUNDS: usize = 3;
use crate::store::ledger::WorkspaceRow;

/// Whether a failed creation may still have reached Gradient (so the accounts must be read again
/// before creating): a 5xx, a timeout, a connection lost after sending, an unreadable or oversized
/// answer. A 429 or a refused connection would have been repeated by the client already.
pub fn may_have_landed(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::Server
            | ErrorKind::Timeout
            | ErrorKind::Network
            | ErrorKind::Decode
            | ErrorKind::TooLarge
            | ErrorKind::RateLimited
    )
}

/// Accounts to create (bulk) and rename so that Gradient holds every workspace of the channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountChanges {
    /// Missing accounts.
    pub create: Vec<NewAccount>,
    /// (account id, new name) for accounts whose name differs.
    pub rename: Vec<(String, String)>,
}

/// Compares the channel's workspaces with Gradient's accounts.
pub fn account_changes(
    connector_id: &str,
    workspaces: &[WorkspaceRow],
    existing: &[Account],
) -> AccountChanges {
    let by_id: HashMap<&str, &Account> = existing.iter().map(|a| (a.id.as_str(), a)).collect();
    let mut out = AccountChanges::default();
    for w in workspaces.iter().filter(|w| w.channel_id == connector_id) {
        match by_id.get(w.id.as_str()) {
            None => out.create.push(NewAccount {
                id: w.id.clone(),
                name: w.name.clone(),
                description: None,
            }),
            Some(a) if a.name != w.name => out.rename.push((w.id.clone(), w.name.clone())),
            Some(_) => {}
        }
    }
    out
}

/// Accounts reconciliation result.
#[derive(Debug, Clone, Default)]
pub struct AccountSync {
    /// Created.
    pub created: usize,
    /// Renamed.
    pub renamed: usize,
    /// Accounts of the channel that Gradient says are not mapped yet (`isMapped: false`); None when
    /// Gradient does not say.
    pub unmapped: Option<Vec<String>>,
}

/// The channel's accounts Gradient reports as not mapped (`isMapped: false`), sorted; None when no
/// account carries `isMapped` (older deployments).
pub fn unmapped_accounts(
    connector_id: &str,
    workspaces: &[WorkspaceRow],
    existing: &[Account],
) -> Option<Vec<String>> {
    if existing.iter().all(|a| a.is_mapped.is_none()) {
        return None;
    }
    let ours: std::collections::HashSet<&str> = workspaces
        .iter()
        .filter(|w| w.channel_id == connector_id)
        .map(|w| w.id.as_str())
        .collect();
    let mut out: Vec<String> = existing
        .iter()
        .filter(|a| a.is_mapped == Some(false) && ours.contains(a.id.as_str()))
        .map(|a| a.id.clone())
        .collect();
    out.sort();
    Some(out)
}

/// Reads the partner's accounts, creates the missing ones in bulk requests of at most
/// [`MAX_ACCOUNTS_PER_REQUEST`] (this also heals a disconnect in Gradient, which deletes our
/// accounts) and renames changed ones. A request refused with 409 (an id already exists) makes it
/// read the accounts again and create only what is still missing, for at most
/// [`MAX_CREATE_ROUNDS`] rounds. Errors only when the accounts cannot be read or the token is
/// rejected; other failures are logged.
pub async fn ensure_accounts(
    session: &PartnerSession,
    connector_id: &str,
    workspaces: &[WorkspaceRow],
) -> Result<AccountSync, GradientError> {
    let existing = session.get_accounts().await?.value;
    let changes = account_changes(connector_id, workspaces, &existing);
    let mut out = AccountSync {
        unmapped: unmapped_accounts(connector_id, workspaces, &existing),
        ..AccountSync::default()
    };
    let mut missing = changes.create;
    // An account created now cannot be mapped yet: it is unmapped as far as we know (when Gradient
    // reports `isMapped` at all, or when there was nothing to judge by).
    if out.unmapped.is_some() || existing.is_empty() {
        let list = out.unmapped.get_or_insert_with(Vec::new);
        list.extend(missing.iter().map(|a| a.id.clone()));
        list.sort();
        list.dedup();
    }
    for round in 1..=MAX_CREATE_ROUNDS {
        let mut read_again = false;
        for chunk in missing.chunks(MAX_ACCOUNTS_PER_REQUEST) {
            match session.create_accounts(chunk).await {
                Ok(_) => out.created += chunk.len(),
                Err(e) if e.kind == ErrorKind::Unauthorized => return Err(e),
                Err(e) if e.kind == ErrorKind::Conflict => {
                    read_again = true;
                    tracing::info!(connector = %connector_id, accounts = chunk.len(), round, "some accounts already exist in Gradient; reading them again");
                }
                Err(e) if may_have_landed(e.kind) => {
                    read_again = true;
                    tracing::warn!(connector = %connector_id, accounts = chunk.len(), round, error = %e, "the account creation may have reached Gradient; reading the accounts again before creating anything");
                }
                Err(e) => {
                    tracing::warn!(connector = %connector_id, accounts = chunk.len(), error = %e, "could not create accounts; their pairs will be reported unmapped")
                }
            }
        }
        if !read_again {
            break;
        }
        let existing = match session.get_accounts().await {
            Ok(a) => a.value,
            Err(e) if e.kind == ErrorKind::Unauthorized => return Err(e),
            Err(e) => {
                tracing::warn!(connector = %connector_id, error = %e, "the accounts could not be read again; nothing more is created this time");
                break;
            }
        };
        missing = account_changes(connector_id, workspaces, &existing).create;
        if missing.is_empty() {
            break;
        }
        if round == MAX_CREATE_ROUNDS {
            tracing::warn!(connector = %connector_id, accounts = missing.len(), rounds = round, "Gradient still does not list these accounts after repeated creations (refused as existing, or unanswered); their pairs will be reported unmapped");
        }
    }
    if out.created > 0 {
        tracing::info!(connector = %connector_id, created = out.created, "accounts created in Gradient");
    }
    for (id, name) in &changes.rename {
        let update = AccountUpdate {
            name: Some(name.clone()),
            description: None,
        };
        match session.update_account(id, &update).await {
            Ok(_) => out.renamed += 1,
            Err(e) if e.kind == ErrorKind::Unauthorized => return Err(e),
            Err(e) => {
                tracing::warn!(connector = %connector_id, account = %id, error = %e, "could not rename the account")
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(id: &str, channel: &str, name: &str) -> WorkspaceRow {
        WorkspaceRow {
            id: id.into(),
            channel_id: channel.into(),
            name: name.into(),
        }
    }

    #[test]
    fn account_changes_create_missing_and_rename_different() {
        let workspaces = vec![ws("a", "c", "A"), ws("b", "c", "B2"), ws("z", "other", "Z")];
        let existing = vec![Account {
            id: "b".into(),
            name: "B".into(),
            description: None,
            is_mapped: None,
            mapping_id: None,
        }];
        let ch = account_changes("c", &workspaces, &existing);
        assert_eq!(ch.create.len(), 1);
        assert_eq!(ch.create[0].id, "a");
        assert_eq!(ch.rename, vec![("b".to_string(), "B2".to_string())]);
    }
}
