//! The connector lifecycle's errors ([`ConnectorError`]): each names the connector and says what to
//! do; none carries a token.

use crate::domain::ConnectorState;
use crate::gradient::GradientError;
use crate::store::StoreError;

/// Errors of this module. None of them carries a token.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The token (or its file) is unusable.
    #[error("the token {0}")]
    BadToken(#[source] TokenProblem),
    /// No such connector.
    #[error("there is no connector {0:?}; `gradient-connector connector list` shows them")]
    Unknown(String),
    /// A contact is not a plain e-mail address (or there are too many).
    #[error(transparent)]
    BadContact(ContactProblem),
    /// Gradient answered 401 to the pasted token: nothing changed.
    #[error("connector {id}: Gradient rejected this token (HTTP 401); nothing was changed (the previous token, if any, is kept). Either it is not the MSP's current partner API key — ask the MSP to generate one in Gradient and paste it again — or our vendor key is wrong: check gradient.vendor_api_key_file (or the vendor-api-key credential), then `gradient-connector connector verify --all`")]
    TokenRejected {
        /// Connector.
        id: String,
    },
    /// Gradient could not be asked (network, 5xx, 429, or an answer we cannot use): nothing changed.
    #[error("connector {id}: the token could not be verified, so nothing was changed: {source}")]
    GradientUnavailable {
        /// Connector.
        id: String,
        /// Gradient's failure.
        source: GradientError,
        /// Whether trying again later may work.
        transient: bool,
    },
    /// Gradient's answer names no organization for the token: it cannot be checked against the
    /// other connectors, so nothing was changed.
    #[error("connector {id}: the token could not be verified, so nothing was changed: Gradient's answer names no organization for this token, so it cannot be checked against the other connectors")]
    NoOrganization {
        /// Connector.
        id: String,
    },
    /// Another connector holds the token's Gradient organization: nothing was sent or changed.
    #[error("connector {id}: this token belongs to Gradient organization {organization:?}, which connector {holder} already holds; nothing was sent or changed. Check that the token was pasted for the right MSP (or disconnect {holder} first)")]
    OrganizationTaken {
        /// Connector.
        id: String,
        /// The connector holding the organization.
        holder: String,
        /// The organization's name (or id).
        organization: String,
    },
    /// The token belongs to another organization than the connector's: needs `--new-organization`.
    #[error("connector {id}: this token belongs to Gradient organization {organization:?}, not to the one this connector was connected to; nothing was changed. If the MSP really moved to another Gradient organization, paste again with --new-organization")]
    OtherOrganization {
        /// Connector.
        id: String,
        /// The new organization's name (or id).
        organization: String,
    },
    /// The connector has no token (disconnected).
    #[error("connector {id} is {state}: paste the MSP's token first")]
    NotConnected {
        /// Connector.
        id: String,
        /// Its state.
        state: ConnectorState,
    },
    /// Only a disconnected connector can be removed.
    #[error("connector {id} is {state}: disconnect it first (`gradient-connector connector disconnect {id}`), then remove it")]
    NotDisconnected {
        /// Connector.
        id: String,
        /// Its state.
        state: ConnectorState,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ConnectorError {
    /// Whether trying again later may work (Gradient unreachable, store busy).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ConnectorError::GradientUnavailable {
                transient: true,
                ..
            } | ConnectorError::Store(StoreError::Busy)
        )
    }
}

/// Why a pasted token is refused. Its text never contains the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenProblem {
    /// Its file (or standard input) could not be read.
    #[error("file {} cannot be read: {source}", .path.display())]
    Unreadable {
        /// The file (`-`: standard input).
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not UTF-8.
    #[error("is not UTF-8 text")]
    NotText,
    /// Longer than any partner API key.
    #[error("is longer than {max} bytes; paste only the partner API key")]
    TooLong {
        /// The longest accepted.
        max: usize,
    },
    /// Nothing but white space.
    #[error("is empty; paste the partner API key the MSP generated in Gradient")]
    Empty,
    /// White space or control characters inside.
    #[error(
        "contains white space or control characters; paste the partner API key alone, on one line"
    )]
    NotOneWord,
}

/// Why a connector's contacts are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContactProblem {
    /// More than a connector may have.
    #[error("{given} contacts given; at most {max} per connector")]
    TooMany {
        /// How many were given.
        given: usize,
        /// The most allowed.
        max: usize,
    },
    /// Not a plain address (shown escaped).
    #[error("{0:?} is not a plain e-mail address such as admin@msp.example")]
    NotAnAddress(String),
}
