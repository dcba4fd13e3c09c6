/// Why a domain operation refused its input. Messages are lowercase, say what was expected and
/// what was found, and are safe to show to the client that sent the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A field is missing or malformed.
    #[error("{field}: {message}")]
    Invalid {
        /// The field, dotted from the message root (for example `body.author.agency`).
        field: String,
        /// What was expected and what was found.
        message: String,
    },
    /// A signature does not verify, or a key is unusable.
    #[error("signature: {0}")]
    Signature(String),
    /// A Merkle proof or checkpoint does not verify.
    #[error("proof: {0}")]
    Proof(String),
}

impl Error {
    /// An `Invalid` error for `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid { field: field.into(), message: message.into() }
    }
}

/// `Result` with this crate's `Error`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
