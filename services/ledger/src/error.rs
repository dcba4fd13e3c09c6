//! The one place Ledger errors become `tonic::Status`.

use tonic::{Code, Status};

/// Why a Ledger call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller could not be authenticated.
    #[error(transparent)]
    Auth(#[from] accord_auth::Error),
    /// Malformed input.
    #[error("{0}")]
    Invalid(String),
    /// Not allowed (agency, key, role or policy).
    #[error("{0}")]
    Denied(String),
    /// Refused by the sharing policy in force: the reason, the policy's version and the
    /// deciding policies (for the denial's access record).
    #[error("{reason}")]
    PolicyDenied {
        /// What was refused and why.
        reason: String,
        /// The version of the sharing policy that refused.
        policy_version: u64,
        /// The deciding policies.
        policy_ids: Vec<String>,
    },
    /// Refers to something the log's state does not allow (a withdrawn consent, an unknown
    /// notification).
    #[error("{0}")]
    Precondition(String),
    /// Over a size limit.
    #[error("{0}")]
    TooLarge(String),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] accord_store::Error),
}

impl From<accord_domain::Error> for Error {
    fn from(e: accord_domain::Error) -> Self {
        Error::Invalid(e.to_string())
    }
}

/// `Result` with this crate's `Error`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        use accord_store::Error as S;
        let code = match &e {
            Error::Auth(_) => Code::Unauthenticated,
            Error::Invalid(_) => Code::InvalidArgument,
            Error::Denied(_) | Error::PolicyDenied { .. } => Code::PermissionDenied,
            Error::TooLarge(_) => Code::ResourceExhausted,
            Error::Precondition(_) => Code::FailedPrecondition,
            Error::Store(s) => match s {
                S::Conflict(_) | S::PolicyChanged(_) => Code::Aborted,
                S::Duplicate(_) => Code::AlreadyExists,
                S::Invalid(_) => Code::InvalidArgument,
                S::KeyRefused(_) => Code::PermissionDenied,
                S::NotFound(_) => Code::NotFound,
                S::Unavailable(_) => Code::Unavailable,
                S::Corrupt(_) | S::Database { .. } => Code::Internal,
            },
        };
        if code == Code::Internal {
            // The cause chain is logged once, here; the client gets an opaque message.
            tracing::error!(error = %e, source = ?std::error::Error::source(&e), "internal error");
            return Status::internal("internal error; the server logged the cause");
        }
        if code == Code::PermissionDenied || code == Code::Unauthenticated {
            tracing::info!(code = ?code, reason = %e, "request refused");
        }
        Status::new(code, e.to_string())
    }
}
