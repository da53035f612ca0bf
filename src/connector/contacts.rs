//! A connector's contacts: the MSP's addresses that get its mails (`[email]`). Checked here (plain
//! addresses only, at most [`MAX_CONTACTS`]), stored by `store::contacts`.

use super::error::ContactProblem;
use super::ConnectorError;
use crate::domain::ConnectorId;
use crate::mail::smtp::valid_recipient;
use crate::store::StoreHandle;

/// The most addresses one connector may have.
pub const MAX_CONTACTS: usize = 20;

/// The addresses checked, deduplicated and sorted; the error names the first bad one.
pub fn check_contacts(emails: Vec<String>) -> Result<Vec<String>, ConnectorError> {
    if emails.len() > MAX_CONTACTS {
        return Err(ConnectorError::BadContact(ContactProblem::TooMany {
            given: emails.len(),
            max: MAX_CONTACTS,
        }));
    }
    let mut out = Vec::with_capacity(emails.len());
    for e in emails {
        if !valid_recipient(&e) {
            return Err(ConnectorError::BadContact(ContactProblem::NotAnAddress(
                crate::domain::escape(&e),
            )));
        }
        out.push(e);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Replaces connector `id`'s contacts; returns them as stored.
pub async fn set_contacts(
    store: &StoreHandle,
    id: &ConnectorId,
    emails: Vec<String>,
) -> Result<Vec<String>, ConnectorError> {
    let emails = check_contacts(emails)?;
    let cid = id.to_string();
    let stored = emails.clone();
    store.write(move |s| s.set_contacts(&cid, &stored)).await?;
    Ok(emails)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_sorted_and_deduplicated() {
        let ok = check_contacts(vec![
            "b@msp.example".into(),
            "a@msp.example".into(),
            "b@msp.example".into(),
        ])
        .unwrap();
        assert_eq!(ok, ["a@msp.example", "b@msp.example"]);
        let e = check_contacts(vec!["a@msp.example".into(), "not-an-address".into()]).unwrap_err();
        assert!(e.to_string().contains("not-an-address"), "{e}");
        assert!(check_contacts(vec!["x@y.example".into(); MAX_CONTACTS + 1]).is_err());
    }
}
