//! The event envelope (DESIGN.md §2, DOMAIN.md §4): what every event says besides its payload.

use crate::ids::{AgencyId, EventId, EventType, Role, StreamId, UserId};
use crate::{Error, Result};

/// A point in time: microseconds since the Unix epoch (UTC). Microseconds because the recorded
/// time is committed to in the Merkle leaf and must round-trip exactly through both databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Timestamp(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
    }

    /// Microseconds since the epoch.
    pub fn micros(self) -> i64 {
        self.0
    }

    /// From seconds and nanoseconds (as in `google.protobuf.Timestamp`), truncated to µs.
    pub fn from_parts(field: &str, seconds: i64, nanos: i32) -> Result<Self> {
        if !(0..1_000_000_000).contains(&nanos) {
            return Err(Error::invalid(field, format!("nanos must be 0 to 999999999, found {nanos}")));
        }
        // 0001-01-01 to 9999-12-31, as google.protobuf.Timestamp allows.
        if !(-62_135_596_800..=253_402_300_799).contains(&seconds) {
            return Err(Error::invalid(field, format!("seconds out of range: {seconds}")));
        }
        Ok(Timestamp(seconds * 1_000_000 + i64::from(nanos / 1000)))
    }

    /// RFC 3339 in UTC with seconds, e.g. `2026-11-23T08:30:00Z` (fractions dropped).
    pub fn to_rfc3339(self) -> String {
        let secs = self.0.div_euclid(1_000_000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
    }

    /// Seconds and nanoseconds.
    pub fn parts(self) -> (i64, i32) {
        let secs = self.0.div_euclid(1_000_000);
        let micros = self.0.rem_euclid(1_000_000);
        (secs, (micros * 1000) as i32)
    }
}

#[cfg(test)]
mod timestamp_tests {
    use super::Timestamp;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(Timestamp(1_795_305_600_000_000 + 8 * 3_600_000_000 + 1).to_rfc3339(), "2026-11-22T08:00:00Z");
        assert_eq!(Timestamp(951_782_400_000_000).to_rfc3339(), "2000-02-29T00:00:00Z");
    }
}

/// The optimistic-concurrency condition of an event. Stream versions count from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No condition.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have exactly this version.
    Exact(u64),
}

impl ExpectedVersion {
    /// Checks the condition against a stream's current version (`None`: no stream).
    /// The error message says what was expected and what was found.
    pub fn check(self, current: Option<u64>) -> std::result::Result<(), String> {
        let found = || match current {
            None => "stream does not exist".to_owned(),
            Some(v) => format!("stream is at {v}"),
        };
        match (self, current) {
            (ExpectedVersion::Any, _) => Ok(()),
            (ExpectedVersion::NoStream, None) => Ok(()),
            (ExpectedVersion::NoStream, Some(_)) => Err(format!("expected no stream, {}", found())),
            (ExpectedVersion::Exact(n), Some(v)) if n == v => Ok(()),
            (ExpectedVersion::Exact(n), _) => Err(format!("expected stream version {n}, {}", found())),
        }
    }
}

/// Who wrote an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    /// The agency: the data controller.
    pub agency: AgencyId,
    /// The user within the agency.
    pub user: UserId,
    /// The role the user acted in.
    pub role: Role,
}

/// The legal basis for recording and sharing an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegalBasis {
    /// Statute or condition code, 1 to 100 characters.
    pub statute: String,
    /// The purpose, 1 to 1000 characters.
    pub purpose: String,
}

impl LegalBasis {
    /// Validates both parts.
    pub fn parse(statute: String, purpose: String) -> Result<Self> {
        bounded_text("legal_basis.statute", &statute, 100)?;
        bounded_text("legal_basis.purpose", &purpose, 1000)?;
        Ok(Self { statute, purpose })
    }
}

/// Checks that `value` is non-blank and at most `max` characters.
pub fn bounded_text(field: &str, value: &str, max: usize) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    let n = value.chars().count();
    if n > max {
        return Err(Error::invalid(field, format!("must be at most {max} characters, found {n}")));
    }
    Ok(())
}

/// The kinds of data subject an event may name.
pub const SUBJECT_KINDS: &[&str] = &["nominal", "victim", "child", "applicant", "person", "agency", "user", "key"];

/// A data subject an event concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// One of [`SUBJECT_KINDS`].
    pub kind: String,
    /// The subject's id in Accord.
    pub id: String,
}

impl Subject {
    /// Validates kind and id.
    pub fn parse(field: &str, kind: String, id: String) -> Result<Self> {
        if !SUBJECT_KINDS.contains(&kind.as_str()) {
            return Err(Error::invalid(
                format!("{field}.kind"),
                format!("must be one of {}, found {kind:?}", SUBJECT_KINDS.join(", ")),
            ));
        }
        bounded_text(&format!("{field}.id"), &id, 200)?;
        Ok(Self { kind, id })
    }
}

/// The data-protection regime (DOMAIN.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regime {
    /// DPA 2018 Part 3 (law enforcement).
    Part3,
    /// UK GDPR.
    UkGdpr,
    /// Accord's own registry records.
    System,
}

/// Government Security Classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classification {
    /// OFFICIAL.
    Official,
    /// OFFICIAL-SENSITIVE.
    OfficialSensitive,
}

/// Sensitivity tags that sharing policy keys on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SensitivityTag {
    /// Where a victim lives or can be found.
    VictimLocation,
    /// Health data.
    Health,
    /// Sex life.
    SexLife,
    /// About a child.
    Child,
    /// Police intelligence.
    Intelligence,
}

impl SensitivityTag {
    /// Every tag.
    pub const ALL: [SensitivityTag; 5] = [
        SensitivityTag::VictimLocation,
        SensitivityTag::Health,
        SensitivityTag::SexLife,
        SensitivityTag::Child,
        SensitivityTag::Intelligence,
    ];

    /// The tag's name, as policies write it.
    pub fn as_str(self) -> &'static str {
        match self {
            SensitivityTag::VictimLocation => "victim_location",
            SensitivityTag::Health => "health",
            SensitivityTag::SexLife => "sex_life",
            SensitivityTag::Child => "child",
            SensitivityTag::Intelligence => "intelligence",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// A decoded, validated event body. Built only through validation (see the service crates'
/// `convert.rs`), so holding one means the envelope is well-formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBody {
    /// Idempotency key.
    pub event_id: EventId,
    /// The aggregate.
    pub stream: StreamId,
    /// Concurrency condition.
    pub expected_version: ExpectedVersion,
    /// Payload type.
    pub event_type: EventType,
    /// Payload schema version (1 today).
    pub schema_version: u32,
    /// Encoded payload.
    pub payload: Vec<u8>,
    /// Who wrote it.
    pub author: Author,
    /// When it happened.
    pub occurred_at: Timestamp,
    /// Lawful basis.
    pub legal_basis: LegalBasis,
    /// Data subjects.
    pub subjects: Vec<Subject>,
    /// Agencies it is sent to.
    pub addressees: Vec<AgencyId>,
    /// Optional correlation id.
    pub correlation_id: Option<uuid::Uuid>,
    /// Optional causing event.
    pub causation_id: Option<EventId>,
    /// Regime.
    pub regime: Regime,
    /// Classification.
    pub classification: Classification,
    /// Sensitivity tags.
    pub sensitivity: Vec<SensitivityTag>,
    /// The event this one supersedes, for a correction.
    pub supersedes: Option<EventId>,
}

/// The largest payload accepted, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 512 * 1024;
/// The most subjects an event may name.
pub const MAX_SUBJECTS: usize = 100;
/// The most addressees an event may name.
pub const MAX_ADDRESSEES: usize = 100;

impl EventBody {
    /// Cross-field rules of the envelope, checked after each field parsed on its own.
    pub fn check_envelope(&self) -> Result<()> {
        if self.schema_version == 0 {
            return Err(Error::invalid("schema_version", "must be 1 or more, found 0"));
        }
        if self.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(Error::invalid(
                "payload",
                format!("must be at most {MAX_PAYLOAD_BYTES} bytes, found {}", self.payload.len()),
            ));
        }
        if self.subjects.len() > MAX_SUBJECTS {
            return Err(Error::invalid("subjects", format!("at most {MAX_SUBJECTS}, found {}", self.subjects.len())));
        }
        if self.addressees.len() > MAX_ADDRESSEES {
            return Err(Error::invalid(
                "addressees",
                format!("at most {MAX_ADDRESSEES}, found {}", self.addressees.len()),
            ));
        }
        // Who may author as the system is an authorisation question (the Ledger refuses the
        // reserved agency); here only the marking must not be borrowed by an agency.
        if self.regime == Regime::System && self.author.agency.as_str() != crate::SYSTEM_AGENCY {
            return Err(Error::invalid("regime", "REGIME_SYSTEM is for the server's own registry records only"));
        }
        if self.supersedes == Some(self.event_id) {
            return Err(Error::invalid("supersedes", "an event cannot supersede itself"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_version_messages_say_expected_and_found() {
        let cases = [
            (ExpectedVersion::Any, None, Ok(())),
            (ExpectedVersion::Any, Some(3), Ok(())),
            (ExpectedVersion::NoStream, None, Ok(())),
            (ExpectedVersion::NoStream, Some(3), Err("expected no stream, stream is at 3")),
            (ExpectedVersion::Exact(4), Some(4), Ok(())),
            (ExpectedVersion::Exact(4), Some(6), Err("expected stream version 4, stream is at 6")),
            (ExpectedVersion::Exact(0), None, Err("expected stream version 0, stream does not exist")),
        ];
        for (expected, current, want) in cases {
            assert_eq!(expected.check(current), want.map_err(str::to_owned), "{expected:?} {current:?}");
        }
    }

    #[test]
    fn timestamps_round_trip_through_parts() {
        for micros in [0, 1, -1, 1_700_000_000_123_456, -62_135_596_800_000_000] {
            let (s, n) = Timestamp(micros).parts();
            assert_eq!(Timestamp::from_parts("t", s, n).unwrap(), Timestamp(micros));
        }
        assert!(Timestamp::from_parts("t", 0, 1_000_000_000).is_err());
        assert!(Timestamp::from_parts("t", 0, -1).is_err());
    }
}
