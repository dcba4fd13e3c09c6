//! Accord's domain: the event envelope and its validation, DSSE signing and verification, the
//! Merkle log maths (RFC 9162 leaf and tree hashing, inclusion and consistency proofs) and signed
//! checkpoints (C2SP tlog-checkpoint / signed-note).
//!
//! This crate does no I/O and knows nothing of gRPC, protobuf-generated types, SQL or tokio: the
//! service crates convert wire messages into these types, and the store persists what these
//! functions compute. Everything here is deterministic and tested without a database.

pub mod checkpoint;
mod error;
pub mod event;
pub mod ids;
pub mod merkle;
pub mod payload;
pub mod signing;

pub use error::{Error, Result};
pub use event::{
    Author, Classification, EventBody, ExpectedVersion, LegalBasis, Regime, SensitivityTag, Subject, Timestamp,
};
pub use ids::{AgencyId, EventId, EventType, KeyId, Role, StreamId, UserId};

/// The agency id under which the server itself authors registry records.
pub const SYSTEM_AGENCY: &str = "accord";
/// The role under which the server itself authors registry records.
pub const SYSTEM_ROLE: &str = "system";
