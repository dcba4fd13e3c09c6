use std::sync::Arc;

/// Why the store refused or failed an operation. Every refusal means nothing was written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// An expected-version condition failed (retry at a higher level after re-reading).
    #[error("{0}")]
    Conflict(String),
    /// An event id is already recorded with other bytes.
    #[error("{0}")]
    Duplicate(String),
    /// The request is malformed in a way only the store can see (e.g. an id twice in a batch).
    #[error("{0}")]
    Invalid(String),
    /// The signing key is unknown, revoked, or not the author's agency's.
    #[error("{0}")]
    KeyRefused(String),
    /// Another sharing policy was adopted after the request was checked; check it again under
    /// the policy now in force.
    #[error("{0}")]
    PolicyChanged(String),
    /// Nothing at that position, size or id.
    #[error("{0}")]
    NotFound(String),
    /// The store is shutting down or was opened read-only.
    #[error("{0}")]
    Unavailable(String),
    /// Stored data contradicts itself (tampering or corruption).
    #[error("stored log is inconsistent: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("database error while {context}: {source}")]
    Database {
        /// What the store was doing.
        context: &'static str,
        /// The driver's error.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
}

/// `Result` with this crate's `Error`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The one place `sqlx::Error` becomes `store::Error`.
pub(crate) fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            Error::Duplicate(format!("already recorded ({context}): {}", d.message()))
        }
        // The database went away: the outcome of a commit in flight is unknown, and a retry of
        // the same signed events is safe (appends are idempotent), so say so.
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            tracing::warn!(error = %e, context, "database unavailable");
            Error::Unavailable(format!(
                "the database is unavailable while {context}; retry (a resent append is idempotent)"
            ))
        }
        _ => Error::Database { context, source: Arc::new(e) },
    }
}

impl From<accord_domain::Error> for Error {
    fn from(e: accord_domain::Error) -> Self {
        match e {
            accord_domain::Error::Invalid { .. } => Error::Invalid(e.to_string()),
            other => Error::Corrupt(other.to_string()),
        }
    }
}
