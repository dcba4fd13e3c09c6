//! `accord audit …`: an auditor's command line over the Audit service. Everything goes through
//! the gRPC API with the auditor's own token and stated purpose, so the auditor's queries are
//! recorded in the access log like any other read.

use std::fmt::Write as _;

use accord_client::Client;
use accord_domain::Timestamp;
use accord_proto::v1 as pb;
use anyhow::{Context, bail};

/// Parses `YYYY-MM-DD` (midnight UTC) or `YYYY-MM-DDTHH:MM:SSZ`.
pub fn parse_time(field: &str, s: &str) -> anyhow::Result<Timestamp> {
    let date = accord_domain::payload::Date::parse(field, s.get(..10).unwrap_or(s))?;
    let mut secs = date.days_since_epoch() * 86_400;
    match s.get(10..) {
        None | Some("") => {}
        Some(rest) => {
            let b = rest.as_bytes();
            if b.len() != 10 || b[0] != b'T' || b[3] != b':' || b[6] != b':' || b[9] != b'Z' {
                bail!("{field}: must be YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ, found {s:?}");
            }
            let num = |r: std::ops::Range<usize>, max: i64| -> anyhow::Result<i64> {
                let v: i64 = rest[r].parse().with_context(|| format!("{field}: {s:?}"))?;
                if v > max {
                    bail!("{field}: {s:?} is not a time of day");
                }
                Ok(v)
            };
            secs += num(1..3, 23)? * 3600 + num(4..6, 59)? * 60 + num(7..9, 59)?;
        }
    }
    Ok(Timestamp(secs * 1_000_000))
}

fn ts(t: Option<prost_types::Timestamp>) -> String {
    t.and_then(|t| accord_ledger::convert::timestamp("at", Some(t)).ok())
        .map_or_else(|| "-".into(), Timestamp::to_rfc3339)
}

fn action_name(a: i32) -> &'static str {
    match pb::AccessAction::try_from(a) {
        Ok(pb::AccessAction::Collection) => "collection",
        Ok(pb::AccessAction::Alteration) => "alteration",
        Ok(pb::AccessAction::Consultation) => "consultation",
        Ok(pb::AccessAction::Disclosure) => "disclosure",
        Ok(pb::AccessAction::Combination) => "combination",
        Ok(pb::AccessAction::Erasure) => "erasure",
        _ => "unspecified",
    }
}

/// One access record as a block of text for a person.
pub fn describe(e: &pb::AccessEntry) -> String {
    let Some(r) = &e.record else { return format!("#{} (no record)\n", e.access_position) };
    let who = r.who.as_ref().map_or_else(
        || "(unauthenticated)".to_owned(),
        |w| format!("{}/{} [{}]", w.agency, w.user, w.roles.join(", ")),
    );
    let outcome = if r.outcome == pb::AccessOutcome::Granted as i32 {
        "granted".to_owned()
    } else {
        format!("DENIED {}: {}", r.denial_code, r.denial_reason)
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "#{} {} {} {}/{} by {who}: {outcome}",
        e.access_position,
        r.access_id,
        ts(r.at),
        r.service,
        r.method
    );
    let actions: Vec<_> = r.actions.iter().map(|a| action_name(*a)).collect();
    let _ = writeln!(
        out,
        "    actions: {}; purpose: {:?}; legal basis: {:?}",
        actions.join(", "),
        r.purpose,
        r.legal_basis
    );
    if !r.subjects.is_empty() {
        let s: Vec<_> = r.subjects.iter().map(|s| format!("{}:{}", s.kind, s.id)).collect();
        let _ = writeln!(out, "    subjects: {}", s.join(", "));
    }
    if !r.records.is_empty() {
        let s: Vec<_> = r
            .records
            .iter()
            .map(|x| {
                if x.item_id.is_empty() {
                    format!("@{}", x.position)
                } else {
                    format!("{}/{}@{}", x.model, x.item_id, x.position)
                }
            })
            .collect();
        let _ = writeln!(out, "    records: {}", s.join(", "));
    }
    if !r.recipients.is_empty() {
        let _ = writeln!(out, "    recipients: {}", r.recipients.join(", "));
    }
    if !r.client_certificate.is_empty() {
        let _ = writeln!(out, "    client certificate (x5t#S256): {}", r.client_certificate);
    }
    let _ = writeln!(
        out,
        "    log size {}; policy version {} {:?}; request {}; client {}; response sha256 {}",
        r.log_size,
        r.policy_version,
        r.policy_ids,
        r.request_id,
        r.client_address,
        hex::encode(&r.response_sha256)
    );
    out
}

/// A client that states `purpose` for its reads.
pub async fn connect(endpoint: &str, token: &str, purpose: &str) -> anyhow::Result<Client> {
    let c = Client::connect(endpoint, token).await?;
    c.set_purpose(Some(purpose))?;
    Ok(c)
}

/// Streams the access records matching `req` into `each`; returns how many.
pub async fn list(
    c: &mut Client,
    req: pb::ListAccessesRequest,
    mut each: impl FnMut(&pb::AccessEntry),
) -> anyhow::Result<u64> {
    let mut stream = c.audit().list_accesses(req).await?.into_inner();
    let mut n = 0;
    while let Some(e) = stream.message().await? {
        each(&e);
        n += 1;
    }
    Ok(n)
}

/// Replays one access and describes the outcome.
pub async fn replay(c: &mut Client, access_id: &str, investigation_id: &str) -> anyhow::Result<(bool, String)> {
    let req =
        pb::ReplayAccessRequest { access_id: access_id.to_owned(), investigation_id: investigation_id.to_owned() };
    let r = c.audit().replay_access(req).await?.into_inner();
    let mut out = r.access.as_ref().map(describe).unwrap_or_default();
    let recorded =
        r.access.as_ref().and_then(|a| a.record.as_ref()).map(|x| hex::encode(&x.response_sha256)).unwrap_or_default();
    if r.withheld.is_empty() {
        let _ = writeln!(out, "replayed {} ({} bytes)", r.response_type, r.response.len());
    } else {
        let _ = writeln!(out, "replayed {}; content withheld: {}", r.response_type, r.withheld);
    }
    let _ = writeln!(out, "recorded digest: {recorded}");
    let _ = writeln!(out, "replayed digest: {}", hex::encode(&r.response_sha256));
    let _ = writeln!(
        out,
        "{}",
        if r.digest_matches {
            "MATCH: the replayed answer is exactly what was shown"
        } else {
            "MISMATCH: the replayed answer differs from what was recorded"
        }
    );
    Ok((r.digest_matches, out))
}

/// The latest signed checkpoint of the event log or the access log.
pub async fn checkpoint(c: &mut Client, access_log: bool) -> anyhow::Result<pb::Checkpoint> {
    let log = if access_log { pb::Log::Access } else { pb::Log::Events };
    Ok(c.ledger().get_checkpoint(pb::GetCheckpointRequest { log: log as i32 }).await?.into_inner())
}
