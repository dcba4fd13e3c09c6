//! Validating newtypes: an instance of one of these is always well-formed.

use std::fmt;

use crate::{Error, Result};

fn check_chars(
    field: &str,
    value: &str,
    max: usize,
    first_letter: bool,
    allowed: impl Fn(char) -> bool,
    describe: &str,
) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(Error::invalid(field, format!("must be at most {max} bytes, found {}", value.len())));
    }
    if first_letter && !value.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(Error::invalid(field, format!("must start with a letter, found {value:?}")));
    }
    if let Some(c) = value.chars().find(|c| !allowed(*c)) {
        return Err(Error::invalid(field, format!("may contain only {describe}, found {c:?} in {value:?}")));
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $max:expr, $first_letter:expr, $allowed:expr, $describe:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Parses `value`, naming `field` in the error.
            pub fn parse_field(field: &str, value: impl Into<String>) -> Result<Self> {
                let value = value.into();
                check_chars(field, &value, $max, $first_letter, $allowed, $describe)?;
                Ok(Self(value))
            }

            /// Parses `value`.
            pub fn parse(value: impl Into<String>) -> Result<Self> {
                Self::parse_field(stringify!($name), value)
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// An agency id: 1 to 64 characters of `[a-z0-9-]`, starting with a letter.
    AgencyId, 64, true, |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-',
    "lowercase letters, digits and '-'"
);
string_id!(
    /// A user id within an agency: 1 to 128 printable ASCII characters without spaces.
    UserId, 128, false, |c: char| c.is_ascii_graphic(), "printable ASCII without spaces"
);
string_id!(
    /// A role name such as `offender_manager`: 1 to 64 characters of `[a-z0-9_]`.
    Role, 64, true, |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_',
    "lowercase letters, digits and '_'"
);
string_id!(
    /// A signing key id: 1 to 128 characters of `[A-Za-z0-9._:-]`.
    KeyId, 128, false, |c: char| c.is_ascii_alphanumeric() || "._:-".contains(c),
    "letters, digits, '.', '_', ':' and '-'"
);
string_id!(
    /// A stream (aggregate) id such as `nominal-<uuid>`: 1 to 200 characters of `[a-z0-9._-]`,
    /// starting with a letter.
    StreamId, 200, true,
    |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c),
    "lowercase letters, digits, '.', '_' and '-'"
);

/// A fully qualified event type such as `accord.v1.NominalRegistered`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventType(String);

impl EventType {
    /// Parses `value`: dot-separated identifiers, at least a package and a name, at most 200 bytes.
    pub fn parse_field(field: &str, value: impl Into<String>) -> Result<Self> {
        let value = value.into();
        check_chars(
            field,
            &value,
            200,
            true,
            |c| c.is_ascii_alphanumeric() || c == '.' || c == '_',
            "letters, digits, '.' and '_'",
        )?;
        if !value.contains('.') || value.split('.').any(str::is_empty) {
            return Err(Error::invalid(
                field,
                format!("must be a fully qualified message name like accord.v1.NominalRegistered, found {value:?}"),
            ));
        }
        Ok(Self(value))
    }

    /// Parses `value`.
    pub fn parse(value: impl Into<String>) -> Result<Self> {
        Self::parse_field("event_type", value)
    }

    /// The type name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client-chosen event id: a UUIDv7 (RFC 9562), the idempotency key of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(uuid::Uuid);

impl EventId {
    /// A fresh UUIDv7.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    /// Parses the hyphenated text form of a UUIDv7, naming `field` in the error.
    pub fn parse_field(field: &str, value: &str) -> Result<Self> {
        let id = uuid::Uuid::try_parse(value)
            .map_err(|e| Error::invalid(field, format!("must be a UUID, found {value:?} ({e})")))?;
        if id.get_version_num() != 7 {
            return Err(Error::invalid(
                field,
                format!("must be a UUIDv7, found version {} in {value:?}", id.get_version_num()),
            ));
        }
        Ok(Self(id))
    }

    /// Parses the hyphenated text form of a UUIDv7.
    pub fn parse(value: &str) -> Result<Self> {
        Self::parse_field("event_id", value)
    }

    /// The UUID.
    pub fn uuid(&self) -> uuid::Uuid {
        self.0
    }

    /// From raw bytes as stored.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(uuid::Uuid::from_bytes(bytes))
    }

    /// The 16 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_good_and_refuse_bad_input() {
        let cases: &[(&str, bool)] =
            &[("met-police", true), ("a", true), ("", false), ("Met", false), ("1met", false), ("met police", false)];
        for (value, ok) in cases {
            assert_eq!(AgencyId::parse(*value).is_ok(), *ok, "{value:?}");
        }
        assert!(StreamId::parse("nominal-0190f5c2-aaaa").is_ok());
        assert!(StreamId::parse("Nominal-1").is_err());
        assert!(EventType::parse("accord.v1.NominalRegistered").is_ok());
        assert!(EventType::parse("NominalRegistered").is_err());
        assert!(EventType::parse("accord..X").is_err());
        assert!(Role::parse("offender_manager").is_ok());
        assert!(Role::parse("offender-manager").is_err());
    }

    #[test]
    fn event_id_must_be_uuid_v7() {
        let v7 = EventId::new().to_string();
        assert_eq!(EventId::parse(&v7).unwrap().to_string(), v7);
        let err = EventId::parse("6ba7b810-9dad-11d1-80b4-00c04fd430c8").unwrap_err();
        assert_eq!(
            err.to_string(),
            "event_id: must be a UUIDv7, found version 1 in \"6ba7b810-9dad-11d1-80b4-00c04fd430c8\""
        );
        assert!(EventId::parse("not-a-uuid").is_err());
    }
}
