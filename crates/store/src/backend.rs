//! The SQL of both backends. The query code is written once and instantiated for SQLite and for
//! PostgreSQL by `backend!`: the statements are identical (SQLite accepts `$N` parameters), and
//! only how a write transaction takes the log's lock differs. All `sqlx::Error`s become
//! `store::Error` through `error::db`.

use accord_domain::merkle::Hash;

use crate::{AgencyRecord, Error, KeyRecord, RecordedAccess, RecordedEvent, Result};

/// Which of the two Merkle logs a hash or checkpoint query is about. Both are stored alike (tlog
/// stored-hash indexes, one signed checkpoint per committed batch), in their own tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Log {
    /// The event log (`events`).
    Events,
    /// The access log (`access_log`).
    Access,
}

impl Log {
    fn hashes_table(self) -> &'static str {
        match self {
            Log::Events => "merkle_hashes",
            Log::Access => "access_merkle_hashes",
        }
    }

    fn checkpoints_table(self) -> &'static str {
        match self {
            Log::Events => "checkpoints",
            Log::Access => "access_checkpoints",
        }
    }
}

/// The committed head of the log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head {
    pub(crate) size: u64,
    pub(crate) last_recorded_at: i64,
    /// The position of the latest `PolicyAdopted` event.
    pub(crate) policy_version: Option<u64>,
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).expect("positions and sizes stay below 2^63")
}

pub(crate) fn to_u64(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::Corrupt(format!("negative {what}: {v}")))
}

pub(crate) fn to_hash(v: Vec<u8>, what: &str) -> Result<Hash> {
    let a: [u8; 32] =
        v.try_into().map_err(|v: Vec<u8>| Error::Corrupt(format!("{what} has {} bytes, not 32", v.len())))?;
    Ok(Hash(a))
}

const ACCESS_COLUMNS: &str = "position, access_id, at, agency, user_id, granted, record, leaf_hash";
const EVENT_COLUMNS: &str = "position, event_id, stream, stream_version, event_type, author_agency, key_id, recorded_at, body, signature, leaf_hash";
/// Rows per multi-row INSERT, within both databases' bind-parameter limits.
const INSERT_CHUNK: usize = 500;
/// How a changed read-model row replaces its stored version.
const VIEW_UPSERT: &str =
    " ON CONFLICT (model, agency, item_id) DO UPDATE SET position = excluded.position, doc = excluded.doc";

/// What writing read-model rows was doing, for its error.
fn view_rows_what(upsert: bool) -> &'static str {
    if upsert {
        "writing changed read-model rows"
    } else {
        "writing created read-model rows (a row already stored means the projection's state and its table disagree)"
    }
}
/// Values per IN (...) list.
const IN_CHUNK: usize = 500;
/// Up to this many values, a PostgreSQL lookup is an `IN ($1, …)` list (one prepared statement
/// per length); beyond it, one UNNEST + LATERAL statement.
const SMALL_LOOKUP: usize = 16;
/// The PostgreSQL advisory lock key that serialises appends across server processes.
pub(crate) const POSTGRES_LOG_LOCK: i64 = 0x6163_636f_7264_0001; // "accord" + 1
/// The PostgreSQL advisory lock key that serialises access-log writes across server processes
/// (distinct from [`POSTGRES_LOG_LOCK`]: access writes wait only on the appends that record their
/// own access, which take it after the event log's lock).
pub(crate) const POSTGRES_ACCESS_LOCK: i64 = 0x6163_636f_7264_0002; // "accord" + 2

macro_rules! backend {
    ($name:ident, $DB:ty, { $($specific:item)* }) => {
        pub(crate) mod $name {
            use std::collections::HashMap;

            use accord_domain::merkle::Hash;
            use accord_domain::{EventId, Timestamp};
            use sqlx::{Executor, QueryBuilder, Row};

            use super::*;
            use crate::error::db;
            use crate::{AccessFilter, Page, SignedCheckpoint, Visibility};

            type DB = $DB;
            pub(crate) type Conn = <DB as sqlx::Database>::Connection;
            type DbRow = <DB as sqlx::Database>::Row;

            /// Decodes rows into a vector sized once (a page of 2,000 events grown by doubling
            /// cost a rebuild 5 % of its time, most of it the kernel zeroing the fresh pages).
            fn events(rows: &[DbRow]) -> Result<Vec<RecordedEvent>> {
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    out.push(event(row)?);
                }
                Ok(out)
            }

            fn event(row: &DbRow) -> Result<RecordedEvent> {
                let get_i = |c: &str| row.try_get::<i64, _>(c).map_err(db("decoding an event row"));
                let get_s = |c: &str| row.try_get::<String, _>(c).map_err(db("decoding an event row"));
                let get_b = |c: &str| row.try_get::<Vec<u8>, _>(c).map_err(db("decoding an event row"));
                let id: [u8; 16] = get_b("event_id")?
                    .try_into()
                    .map_err(|_| Error::Corrupt("an event_id is not 16 bytes".into()))?;
                Ok(RecordedEvent {
                    position: to_u64(get_i("position")?, "position")?,
                    event_id: EventId::from_bytes(id),
                    stream: get_s("stream")?,
                    stream_version: to_u64(get_i("stream_version")?, "stream_version")?,
                    event_type: get_s("event_type")?,
                    author_agency: get_s("author_agency")?,
                    key_id: get_s("key_id")?,
                    recorded_at: Timestamp(get_i("recorded_at")?),
                    body: get_b("body")?,
                    signature: get_b("signature")?,
                    leaf_hash: to_hash(get_b("leaf_hash")?, "leaf_hash")?,
                })
            }

            fn key_record(row: &DbRow) -> Result<KeyRecord> {
                let d = db("decoding a key row");
                let pk: Vec<u8> = row.try_get("public_key").map_err(db("decoding a key row"))?;
                let pk: [u8; 32] = pk.try_into().map_err(|_| Error::Corrupt("a public key is not 32 bytes".into()))?;
                Ok(KeyRecord {
                    key_id: row.try_get("key_id").map_err(db("decoding a key row"))?,
                    agency: row.try_get("agency").map_err(db("decoding a key row"))?,
                    public_key: ed25519_dalek::VerifyingKey::from_bytes(&pk)
                        .map_err(|_| Error::Corrupt("a stored public key is not a valid point".into()))?,
                    registered_at: to_u64(row.try_get("registered_at").map_err(d)?, "registered_at")?,
                    revoked_at: row
                        .try_get::<Option<i64>, _>("revoked_at")
                        .map_err(db("decoding a key row"))?
                        .map(|v| to_u64(v, "revoked_at"))
                        .transpose()?,
                })
            }

            fn checkpoint(row: &DbRow) -> Result<SignedCheckpoint> {
                Ok(SignedCheckpoint {
                    tree_size: to_u64(row.try_get("tree_size").map_err(db("decoding a checkpoint"))?, "tree_size")?,
                    root: to_hash(row.try_get("root").map_err(db("decoding a checkpoint"))?, "root")?,
                    note: row.try_get("note").map_err(db("decoding a checkpoint"))?,
                    signed_at: Timestamp(row.try_get("signed_at").map_err(db("decoding a checkpoint"))?),
                })
            }

            pub(crate) async fn head<'c, E: Executor<'c, Database = DB>>(e: E) -> Result<Head> {
                let row = sqlx::query(
                    "SELECT position, recorded_at, (SELECT MAX(position) FROM policy_adoptions) \
                     FROM events ORDER BY position DESC LIMIT 1",
                )
                .fetch_optional(e)
                .await
                .map_err(db("reading the log head"))?;
                Ok(match row {
                    None => Head { size: 0, last_recorded_at: i64::MIN, policy_version: None },
                    Some(r) => Head {
                        size: to_u64(r.try_get::<i64, _>(0).map_err(db("reading the log head"))?, "position")? + 1,
                        last_recorded_at: r.try_get::<i64, _>(1).map_err(db("reading the log head"))?,
                        policy_version: r
                            .try_get::<Option<i64>, _>(2)
                            .map_err(db("reading the log head"))?
                            .map(|v| to_u64(v, "policy position"))
                            .transpose()?,
                    },
                })
            }

            fn push_visibility(qb: &mut QueryBuilder<'_, DB>, visibility: &Visibility) {
                if let Visibility::AuthoredBy(agency) = visibility {
                    qb.push(" AND (author_agency = ");
                    qb.push_bind(agency.as_str().to_owned());
                    qb.push(" OR author_agency = ");
                    qb.push_bind(accord_domain::SYSTEM_AGENCY);
                    qb.push(")");
                }
            }

            pub(crate) async fn read_all(pool: &sqlx::Pool<DB>, from: u64, limit: u32, visibility: &Visibility, size: Option<u64>) -> Result<Page> {
                let log_size = match size {
                    Some(s) => s,
                    None => head(pool).await?.size,
                };
                let mut qb = QueryBuilder::<DB>::new(format!("SELECT {EVENT_COLUMNS} FROM events WHERE position >= "));
                qb.push_bind(to_i64(from));
                qb.push(" AND position < ");
                qb.push_bind(to_i64(log_size));
                push_visibility(&mut qb, visibility);
                qb.push(" ORDER BY position LIMIT ");
                qb.push_bind(i64::from(limit));
                let rows = qb.build().fetch_all(pool).await.map_err(db("reading the log"))?;
                let events = events(&rows)?;
                let next = match events.last() {
                    Some(last) if events.len() == limit as usize => last.position + 1,
                    _ => log_size.max(from),
                };
                Ok(Page { events, log_size, next })
            }

            pub(crate) async fn read_stream(pool: &sqlx::Pool<DB>, stream: &str, from_version: u64, limit: u32, visibility: &Visibility, size: Option<u64>) -> Result<Page> {
                let log_size = match size {
                    Some(s) => s,
                    None => head(pool).await?.size,
                };
                let mut qb = QueryBuilder::<DB>::new(format!("SELECT {EVENT_COLUMNS} FROM events WHERE stream = "));
                qb.push_bind(stream.to_owned());
                qb.push(" AND stream_version >= ");
                qb.push_bind(to_i64(from_version));
                qb.push(" AND position < ");
                qb.push_bind(to_i64(log_size));
                push_visibility(&mut qb, visibility);
                qb.push(" ORDER BY stream_version LIMIT ");
                qb.push_bind(i64::from(limit));
                let rows = qb.build().fetch_all(pool).await.map_err(db("reading a stream"))?;
                let events = events(&rows)?;
                let next = events.last().map(|e| e.stream_version + 1).unwrap_or(from_version);
                Ok(Page { events, log_size, next })
            }

            /// The event log's stored hashes at `indexes` (those found).
            pub(crate) async fn hashes(conn: &mut Conn, indexes: &[u64]) -> Result<HashMap<u64, Hash>> {
                log_hashes(conn, Log::Events, indexes).await
            }

            /// `log`'s stored hashes at `indexes` (those found).
            pub(crate) async fn log_hashes(conn: &mut Conn, log: Log, indexes: &[u64]) -> Result<HashMap<u64, Hash>> {
                let idx: Vec<i64> = indexes.iter().map(|i| to_i64(*i)).collect();
                let head = format!("SELECT idx, hash FROM {} WHERE idx", log.hashes_table());
                let rows = lookup(conn, &head, "", &idx)
                    .await
                    .map_err(db("reading merkle hashes"))?;
                let mut out = HashMap::with_capacity(rows.len());
                for r in rows {
                    let idx = to_u64(r.try_get::<i64, _>(0).map_err(db("reading merkle hashes"))?, "idx")?;
                    out.insert(idx, to_hash(r.try_get(1).map_err(db("reading merkle hashes"))?, "merkle hash")?);
                }
                Ok(out)
            }

            pub(crate) async fn hash_range(pool: &sqlx::Pool<DB>, log: Log, from: u64, to: u64) -> Result<Vec<(u64, Hash)>> {
                let sql = format!("SELECT idx, hash FROM {} WHERE idx >= $1 AND idx < $2 ORDER BY idx", log.hashes_table());
                let rows = sqlx::query(&sql)
                    .bind(to_i64(from))
                    .bind(to_i64(to))
                    .fetch_all(pool)
                    .await
                    .map_err(db("reading merkle hashes"))?;
                rows.iter()
                    .map(|r| {
                        Ok((
                            to_u64(r.try_get::<i64, _>(0).map_err(db("reading merkle hashes"))?, "idx")?,
                            to_hash(r.try_get(1).map_err(db("reading merkle hashes"))?, "merkle hash")?,
                        ))
                    })
                    .collect()
            }

            pub(crate) async fn latest_checkpoint(pool: &sqlx::Pool<DB>, log: Log) -> Result<Option<SignedCheckpoint>> {
                let sql = format!(
                    "SELECT tree_size, root, note, signed_at FROM {} ORDER BY tree_size DESC LIMIT 1",
                    log.checkpoints_table()
                );
                sqlx::query(&sql)
                    .fetch_optional(pool)
                    .await
                    .map_err(db("reading the latest checkpoint"))?
                    .as_ref()
                    .map(checkpoint)
                    .transpose()
            }

            pub(crate) async fn checkpoints(pool: &sqlx::Pool<DB>, log: Log, from_size: u64, limit: u32) -> Result<Vec<SignedCheckpoint>> {
                let sql = format!(
                    "SELECT tree_size, root, note, signed_at FROM {} WHERE tree_size >= $1 ORDER BY tree_size LIMIT $2",
                    log.checkpoints_table()
                );
                sqlx::query(&sql)
                    .bind(to_i64(from_size))
                    .bind(i64::from(limit))
                    .fetch_all(pool)
                    .await
                    .map_err(db("reading checkpoints"))?
                    .iter()
                    .map(checkpoint)
                    .collect()
            }

            fn agency_record(row: &DbRow) -> Result<AgencyRecord> {
                let kind: String = row.try_get("kind").map_err(db("decoding an agency row"))?;
                Ok(AgencyRecord {
                    agency_id: row.try_get("agency_id").map_err(db("decoding an agency row"))?,
                    kind: accord_domain::payload::AgencyKind::parse(&kind)
                        .map_err(|_| Error::Corrupt(format!("unknown agency kind {kind:?}")))?,
                    governs_policy: row.try_get("governs_policy").map_err(db("decoding an agency row"))?,
                    registered_at: to_u64(
                        row.try_get("registered_at").map_err(db("decoding an agency row"))?,
                        "registered_at",
                    )?,
                })
            }

            pub(crate) async fn agency(pool: &sqlx::Pool<DB>, agency_id: &str) -> Result<Option<AgencyRecord>> {
                sqlx::query("SELECT agency_id, kind, governs_policy, registered_at FROM agencies WHERE agency_id = $1")
                    .bind(agency_id)
                    .fetch_optional(pool)
                    .await
                    .map_err(db("reading an agency"))?
                    .as_ref()
                    .map(agency_record)
                    .transpose()
            }

            pub(crate) async fn agencies(pool: &sqlx::Pool<DB>) -> Result<Vec<AgencyRecord>> {
                sqlx::query("SELECT agency_id, kind, governs_policy, registered_at FROM agencies ORDER BY registered_at")
                    .fetch_all(pool)
                    .await
                    .map_err(db("reading agencies"))?
                    .iter()
                    .map(agency_record)
                    .collect()
            }

            pub(crate) async fn policy_adoptions(pool: &sqlx::Pool<DB>, after: Option<u64>) -> Result<Vec<RecordedEvent>> {
                let cols = EVENT_COLUMNS.split(", ").map(|c| format!("e.{c}")).collect::<Vec<_>>().join(", ");
                sqlx::query(&format!(
                    "SELECT {cols} FROM policy_adoptions a JOIN events e ON e.position = a.position \
                     WHERE a.position > $1 ORDER BY a.position"
                ))
                .bind(after.map_or(-1, to_i64))
                .fetch_all(pool)
                .await
                .map_err(db("reading policy adoptions"))?
                .iter()
                .map(event)
                .collect()
            }

            const KEY_SELECT: &str = "SELECT k.key_id, k.agency, k.public_key, k.registered_at, r.revoked_at \
                 FROM signing_keys k LEFT JOIN key_revocations r ON r.key_id = k.key_id";

            pub(crate) async fn key(pool: &sqlx::Pool<DB>, key_id: &str) -> Result<Option<KeyRecord>> {
                sqlx::query(&format!("{KEY_SELECT} WHERE k.key_id = $1"))
                    .bind(key_id)
                    .fetch_optional(pool)
                    .await
                    .map_err(db("reading a signing key"))?
                    .as_ref()
                    .map(key_record)
                    .transpose()
            }

            pub(crate) async fn keys(pool: &sqlx::Pool<DB>) -> Result<Vec<KeyRecord>> {
                sqlx::query(&format!("{KEY_SELECT} ORDER BY k.registered_at"))
                    .fetch_all(pool)
                    .await
                    .map_err(db("reading signing keys"))?
                    .iter()
                    .map(key_record)
                    .collect()
            }

            // ---- the write path, inside the sequencer's transaction ----

            pub(crate) async fn existing_events(conn: &mut Conn, ids: &[EventId]) -> Result<Vec<RecordedEvent>> {
                let ids: Vec<Vec<u8>> = ids.iter().map(|i| i.as_bytes().to_vec()).collect();
                let head = format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_id");
                let rows = lookup(conn, &head, "", &ids).await.map_err(db("looking up event ids"))?;
                events(&rows)
            }

            pub(crate) async fn stream_heads(conn: &mut Conn, streams: &[&str]) -> Result<HashMap<String, u64>> {
                let streams: Vec<String> = streams.iter().map(|s| s.to_string()).collect();
                let rows = lookup(conn, "SELECT stream, MAX(stream_version) FROM events WHERE stream", " GROUP BY stream", &streams)
                    .await
                    .map_err(db("reading stream versions"))?;
                let mut out = HashMap::with_capacity(rows.len());
                for r in rows {
                    let v: i64 = r.try_get(1).map_err(db("reading stream versions"))?;
                    out.insert(r.try_get(0).map_err(db("reading stream versions"))?, to_u64(v, "stream_version")?);
                }
                Ok(out)
            }

            pub(crate) async fn key_states(conn: &mut Conn, key_ids: &[&str]) -> Result<HashMap<String, KeyRecord>> {
                let key_ids: Vec<String> = key_ids.iter().map(|s| s.to_string()).collect();
                let head = format!("{KEY_SELECT} WHERE k.key_id");
                let rows = lookup(conn, &head, "", &key_ids).await.map_err(db("reading signing keys"))?;
                let mut out = HashMap::with_capacity(rows.len());
                for r in rows {
                    let k = key_record(&r)?;
                    out.insert(k.key_id.clone(), k);
                }
                Ok(out)
            }

            pub(crate) async fn known_agencies(conn: &mut Conn, ids: &[&str]) -> Result<std::collections::HashSet<String>> {
                let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
                let rows = lookup(conn, "SELECT agency_id FROM agencies WHERE agency_id", "", &ids)
                    .await
                    .map_err(db("reading agencies"))?;
                rows.iter().map(|r| r.try_get::<String, _>(0).map_err(db("reading agencies"))).collect()
            }

            pub(crate) async fn insert(conn: &mut Conn, plan: &crate::sequencer::Plan, cp: &SignedCheckpoint) -> Result<()> {
                insert_rows(conn, plan).await?;
                for k in &plan.new_keys {
                    sqlx::query("INSERT INTO signing_keys (key_id, agency, public_key, registered_at) VALUES ($1, $2, $3, $4)")
                        .bind(k.key_id.clone())
                        .bind(k.agency.clone())
                        .bind(k.public_key.as_bytes().to_vec())
                        .bind(to_i64(k.registered_at))
                        .execute(&mut *conn)
                        .await
                        .map_err(db("registering a signing key"))?;
                }
                for a in &plan.new_agencies {
                    sqlx::query("INSERT INTO agencies (agency_id, kind, governs_policy, registered_at) VALUES ($1, $2, $3, $4)")
                        .bind(a.agency_id.clone())
                        .bind(a.kind.as_str())
                        .bind(a.governs_policy)
                        .bind(to_i64(a.registered_at))
                        .execute(&mut *conn)
                        .await
                        .map_err(db("registering an agency"))?;
                }
                for position in &plan.adoptions {
                    sqlx::query("INSERT INTO policy_adoptions (position) VALUES ($1)")
                        .bind(to_i64(*position))
                        .execute(&mut *conn)
                        .await
                        .map_err(db("recording a policy adoption"))?;
                }
                for (key_id, at) in &plan.revocations {
                    sqlx::query("INSERT INTO key_revocations (key_id, revoked_at) VALUES ($1, $2)")
                        .bind(key_id.clone())
                        .bind(to_i64(*at))
                        .execute(&mut *conn)
                        .await
                        .map_err(db("revoking a signing key"))?;
                }
                insert_checkpoint(conn, Log::Events, cp).await
            }

            async fn insert_checkpoint(conn: &mut Conn, log: Log, cp: &SignedCheckpoint) -> Result<()> {
                let sql = format!(
                    "INSERT INTO {} (tree_size, root, note, signed_at) VALUES ($1, $2, $3, $4)",
                    log.checkpoints_table()
                );
                sqlx::query(&sql)
                    .bind(to_i64(cp.tree_size))
                    .bind(cp.root.0.to_vec())
                    .bind(cp.note.clone())
                    .bind(cp.signed_at.micros())
                    .execute(&mut *conn)
                    .await
                    .map_err(db("storing the checkpoint"))?;
                Ok(())
            }

            fn access(row: &DbRow) -> Result<RecordedAccess> {
                let d = || db("decoding an access row");
                let id: Vec<u8> = row.try_get("access_id").map_err(d())?;
                Ok(RecordedAccess {
                    position: to_u64(row.try_get("position").map_err(d())?, "position")?,
                    access_id: id.try_into().map_err(|_| Error::Corrupt("an access_id is not 16 bytes".into()))?,
                    at: Timestamp(row.try_get("at").map_err(d())?),
                    agency: row.try_get("agency").map_err(d())?,
                    user: row.try_get("user_id").map_err(d())?,
                    granted: row.try_get("granted").map_err(d())?,
                    record: row.try_get("record").map_err(d())?,
                    leaf_hash: to_hash(row.try_get("leaf_hash").map_err(d())?, "leaf_hash")?,
                })
            }

            /// The committed size of the access log.
            pub(crate) async fn access_size<'c, E: Executor<'c, Database = DB>>(e: E) -> Result<u64> {
                let last: Option<i64> = sqlx::query_scalar("SELECT position FROM access_log ORDER BY position DESC LIMIT 1")
                    .fetch_optional(e)
                    .await
                    .map_err(db("reading the access log head"))?;
                last.map_or(Ok(0), |p| Ok(to_u64(p, "position")? + 1))
            }

            /// Of `ids`, those already recorded in the access log.
            pub(crate) async fn existing_access_ids(conn: &mut Conn, ids: &[Vec<u8>]) -> Result<Vec<Vec<u8>>> {
                let rows = lookup(conn, "SELECT access_id FROM access_log WHERE access_id", "", ids)
                    .await
                    .map_err(db("reading access ids"))?;
                rows.iter().map(|r| r.try_get::<Vec<u8>, _>(0).map_err(db("reading access ids"))).collect()
            }

            pub(crate) async fn accesses(pool: &sqlx::Pool<DB>, f: &AccessFilter, limit: u32) -> Result<Vec<RecordedAccess>> {
                let mut qb = QueryBuilder::<DB>::new(format!("SELECT {ACCESS_COLUMNS} FROM access_log WHERE TRUE"));
                if let Some(a) = &f.agency {
                    qb.push(" AND agency = ").push_bind(a.clone());
                }
                if let Some(u) = &f.user {
                    qb.push(" AND user_id = ").push_bind(u.clone());
                }
                if let Some(s) = &f.subject {
                    key_filter(&mut qb, crate::access::token("s", s));
                }
                for i in f.item.iter().chain(&f.party) {
                    key_filter(&mut qb, crate::access::token("i", i));
                }
                if f.denied_only {
                    // A literal, so the partial index `access_log_denied` applies.
                    qb.push(" AND granted = FALSE");
                }
                if let Some(t) = f.from {
                    qb.push(" AND at >= ").push_bind(t.micros());
                }
                if let Some(t) = f.to {
                    qb.push(" AND at < ").push_bind(t.micros());
                }
                if let Some(p) = f.after_position {
                    qb.push(" AND position > ").push_bind(to_i64(p));
                }
                qb.push(" ORDER BY position LIMIT ").push_bind(i64::from(limit));
                qb.build().fetch_all(pool).await.map_err(db("reading the access log"))?.iter().map(access).collect()
            }

            pub(crate) async fn access_by_id(pool: &sqlx::Pool<DB>, id: &[u8; 16]) -> Result<Option<RecordedAccess>> {
                sqlx::query(&format!("SELECT {ACCESS_COLUMNS} FROM access_log WHERE access_id = $1"))
                    .bind(id.to_vec())
                    .fetch_optional(pool)
                    .await
                    .map_err(db("reading the access log"))?
                    .as_ref()
                    .map(access)
                    .transpose()
            }

            pub(crate) async fn access_range(pool: &sqlx::Pool<DB>, from: u64, limit: u32) -> Result<Vec<RecordedAccess>> {
                sqlx::query(&format!("SELECT {ACCESS_COLUMNS} FROM access_log WHERE position >= $1 ORDER BY position LIMIT $2"))
                    .bind(to_i64(from))
                    .bind(i64::from(limit))
                    .fetch_all(pool)
                    .await
                    .map_err(db("reading the access log"))?
                    .iter()
                    .map(access)
                    .collect()
            }

            pub(crate) async fn access_index_rows(pool: &sqlx::Pool<DB>, from: u64, to: u64) -> Result<Vec<(u64, String, String)>> {
                let mut out = Vec::new();
                for (position, tokens) in index_tokens(pool, from, to).await? {
                    out.extend(tokens.iter().map(|t| {
                        let (kind, key) = crate::access::untoken(t);
                        (position, kind, key)
                    }));
                }
                // Sorted here, bytewise, so both backends give the same order whatever the
                // database's collation.
                out.sort_unstable();
                Ok(out)
            }

            fn view_row(row: &DbRow) -> Result<crate::ViewRow> {
                let d = || db("decoding a read-model row");
                Ok(crate::ViewRow {
                    model: row.try_get("model").map_err(d())?,
                    agency: row.try_get("agency").map_err(d())?,
                    item_id: row.try_get("item_id").map_err(d())?,
                    position: to_u64(row.try_get("position").map_err(d())?, "read-model position")?,
                    doc: row.try_get("doc").map_err(d())?,
                })
            }

            pub(crate) async fn view_checkpoint<'c, E: Executor<'c, Database = DB>>(e: E, projection: &str) -> Result<u64> {
                let v: Option<i64> = sqlx::query_scalar("SELECT position FROM view_checkpoints WHERE projection = $1")
                    .bind(projection)
                    .fetch_optional(e)
                    .await
                    .map_err(db("reading a projection checkpoint"))?;
                v.map_or(Ok(0), |v| to_u64(v, "projection checkpoint"))
            }

            pub(crate) async fn commit_views(pool: &sqlx::Pool<DB>, projection: &str, from: u64, to: u64, rows: crate::ViewChanges) -> Result<bool> {
                let mut tx = pool.begin().await.map_err(db("starting a read-model transaction"))?;
                // The checkpoint moves first: if another process applied this range already, the
                // compare fails and nothing is written.
                let moved = if from == 0 {
                    sqlx::query("INSERT INTO view_checkpoints (projection, position) VALUES ($1, $2) ON CONFLICT (projection) DO UPDATE SET position = excluded.position WHERE view_checkpoints.position = 0")
                        .bind(projection)
                        .bind(to_i64(to))
                        .execute(&mut *tx)
                        .await
                } else {
                    sqlx::query("UPDATE view_checkpoints SET position = $1 WHERE projection = $2 AND position = $3")
                        .bind(to_i64(to))
                        .bind(projection)
                        .bind(to_i64(from))
                        .execute(&mut *tx)
                        .await
                }
                .map_err(db("moving a projection checkpoint"))?
                .rows_affected() == 1;
                if !moved {
                    return Ok(false);
                }
                write_view_rows(&mut tx, rows.created, false).await?;
                write_view_rows(&mut tx, rows.changed, true).await?;
                tx.commit().await.map_err(db("committing read-model rows"))?;
                Ok(true)
            }

            pub(crate) async fn view_rows_page<'c, E: Executor<'c, Database = DB>>(e: E, after: Option<(&str, &str, &str)>, limit: u32) -> Result<Vec<crate::ViewRow>> {
                let (m, a, i) = after.unwrap_or(("", "", ""));
                sqlx::query("SELECT model, agency, item_id, position, doc FROM view_items \
                             WHERE (model, agency, item_id) > ($1, $2, $3) ORDER BY model, agency, item_id LIMIT $4")
                    .bind(m)
                    .bind(a)
                    .bind(i)
                    .bind(i64::from(limit))
                    .fetch_all(e)
                    .await
                    .map_err(db("reading the read models"))?
                    .iter()
                    .map(view_row)
                    .collect()
            }

            /// `projection`'s checkpoint and every read-model row, pages of `limit` handed to
            /// `on_page` in key order, all read in one snapshot ([`begin_snapshot`]); no rows
            /// when there is no checkpoint.
            pub(crate) async fn load_views(
                pool: &sqlx::Pool<DB>,
                projection: &str,
                limit: u32,
                on_page: &mut (dyn FnMut(Vec<crate::ViewRow>) -> Result<()> + Send),
            ) -> Result<u64> {
                let mut tx = begin_snapshot(pool).await?;
                let next = view_checkpoint(&mut *tx, projection).await?;
                let mut after: Option<(String, String, String)> = None;
                while next > 0 {
                    let page = view_rows_page(
                        &mut *tx,
                        after.as_ref().map(|(m, a, i)| (m.as_str(), a.as_str(), i.as_str())),
                        limit,
                    )
                    .await?;
                    let Some(last) = page.last() else { break };
                    after = Some((last.model.clone(), last.agency.clone(), last.item_id.clone()));
                    let full = page.len() >= limit as usize;
                    on_page(page)?;
                    if !full {
                        break;
                    }
                }
                tx.rollback().await.map_err(db("ending a read-model snapshot"))?;
                Ok(next)
            }

            pub(crate) async fn reset_views(pool: &sqlx::Pool<DB>, unless_started: Option<&str>) -> Result<bool> {
                let mut tx = begin_reset(pool).await?;
                if let Some(projection) = unless_started {
                    // Under the reset's lock no commit is in flight, so a checkpoint another
                    // process moved since the caller looked is seen here.
                    if view_checkpoint(&mut *tx, projection).await? > 0 {
                        tx.rollback().await.map_err(db("ending a read-model reset"))?;
                        return Ok(false);
                    }
                }
                sqlx::query("DELETE FROM view_items").execute(&mut *tx).await.map_err(db("dropping read models"))?;
                // Every projection's checkpoint goes with the rows: a checkpoint left behind (an
                // older projection name) would claim rows that no longer exist, and a rollback to
                // that version would resume over nothing.
                sqlx::query("DELETE FROM view_checkpoints")
                    .execute(&mut *tx)
                    .await
                    .map_err(db("dropping the projection checkpoints"))?;
                tx.commit().await.map_err(db("committing a read-model reset"))?;
                Ok(true)
            }

            $($specific)*
        }
    };
}

backend!(sqlite, sqlx::Sqlite, {
    // A read-model reset takes SQLite's write lock at once (`BEGIN IMMEDIATE`), so no other
    // process commits read models between its check and its deletes.
    use super::begin_snapshot_sqlite as begin_snapshot;
    use super::begin_sqlite as begin_reset;

    /// Read-model rows in multi-row INSERTs of [`INSERT_CHUNK`] rows, bound by value (the
    /// documents, up to a few MB, are not copied again). Without `upsert`, a stored row fails the
    /// statement.
    async fn write_view_rows(conn: &mut Conn, rows: Vec<crate::ViewRow>, upsert: bool) -> Result<()> {
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let mut qb = QueryBuilder::<DB>::new("INSERT INTO view_items (model, agency, item_id, position, doc) ");
            qb.push_values(rows.by_ref().take(INSERT_CHUNK), |mut b, r| {
                b.push_bind(r.model)
                    .push_bind(r.agency)
                    .push_bind(r.item_id)
                    .push_bind(to_i64(r.position))
                    .push_bind(r.doc);
            });
            if upsert {
                qb.push(VIEW_UPSERT);
            }
            qb.build().execute(&mut *conn).await.map_err(db(view_rows_what(upsert)))?;
        }
        Ok(())
    }

    /// `{head} IN (…){tail}`, in chunks: SQLite prepares statements in process, cheaply.
    async fn lookup<T>(conn: &mut Conn, head: &str, tail: &str, values: &[T]) -> Result<Vec<DbRow>, sqlx::Error>
    where
        T: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB> + Clone + Send + 'static,
    {
        let mut out = Vec::new();
        for chunk in values.chunks(IN_CHUNK) {
            let mut qb = QueryBuilder::<DB>::new(head);
            qb.push(" IN (");
            let mut sep = qb.separated(", ");
            for v in chunk {
                sep.push_bind(v.clone());
            }
            qb.push(")");
            qb.push(tail);
            out.extend(qb.build().fetch_all(&mut *conn).await?);
        }
        Ok(out)
    }

    /// Multi-row INSERTs within SQLite's bind-parameter limit.
    async fn insert_rows(conn: &mut Conn, plan: &crate::sequencer::Plan) -> Result<()> {
        for chunk in plan.events.chunks(INSERT_CHUNK) {
            let mut qb = QueryBuilder::<DB>::new(format!("INSERT INTO events ({EVENT_COLUMNS}) "));
            qb.push_values(chunk, |mut b, e| {
                b.push_bind(to_i64(e.position))
                    .push_bind(e.event_id.as_bytes().to_vec())
                    .push_bind(e.stream.clone())
                    .push_bind(to_i64(e.stream_version))
                    .push_bind(e.event_type.clone())
                    .push_bind(e.author_agency.clone())
                    .push_bind(e.key_id.clone())
                    .push_bind(e.recorded_at.micros())
                    .push_bind(e.body.clone())
                    .push_bind(e.signature.clone())
                    .push_bind(e.leaf_hash.0.to_vec());
            });
            qb.build().execute(&mut *conn).await.map_err(db("inserting events"))?;
        }
        for chunk in plan.hashes.chunks(INSERT_CHUNK * 4) {
            let mut qb = QueryBuilder::<DB>::new("INSERT INTO merkle_hashes (idx, hash) ");
            qb.push_values(chunk, |mut b, (i, h)| {
                b.push_bind(to_i64(*i)).push_bind(h.0.to_vec());
            });
            qb.build().execute(&mut *conn).await.map_err(db("inserting merkle hashes"))?;
        }
        Ok(())
    }

    /// Only records whose index row (full-text, `access_keys`) holds `token`.
    fn key_filter(qb: &mut QueryBuilder<'_, DB>, token: String) {
        // A quoted string: one token, matched exactly (tokens are hex, so nothing to escape).
        qb.push(" AND position IN (SELECT rowid FROM access_keys WHERE access_keys MATCH ")
            .push_bind(format!("\"{token}\""))
            .push(")");
    }

    /// The index rows of positions `from..to`: (position, tokens).
    async fn index_tokens(pool: &sqlx::Pool<DB>, from: u64, to: u64) -> Result<Vec<(u64, Vec<String>)>> {
        let rows = sqlx::query("SELECT rowid, k FROM access_keys WHERE rowid >= $1 AND rowid < $2")
            .bind(to_i64(from))
            .bind(to_i64(to))
            .fetch_all(pool)
            .await
            .map_err(db("reading the access index"))?;
        let d = || db("reading the access index");
        rows.iter()
            .map(|r| {
                let k: String = r.try_get(1).map_err(d())?;
                Ok((to_u64(r.try_get(0).map_err(d())?, "position")?, k.split(' ').map(str::to_owned).collect()))
            })
            .collect()
    }

    /// FTS5's own check that the full-text index says what its rows say.
    pub(crate) async fn access_index_integrity(pool: &sqlx::Pool<DB>) -> Result<()> {
        sqlx::query("INSERT INTO access_keys (access_keys) VALUES ('integrity-check')")
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(|e| {
                crate::Error::Corrupt(format!("the access log's full-text index fails its integrity check: {e}"))
            })
    }

    /// Writes a round of the access log: rows, index rows, hashes and the checkpoint.
    pub(crate) async fn insert_access(
        conn: &mut Conn,
        plan: &crate::access::Plan,
        cp: &SignedCheckpoint,
    ) -> Result<()> {
        write_access(conn, plan, cp, AccessTxn::Within).await
    }

    /// How [`write_access`] stands to the transaction it writes in.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub(crate) enum AccessTxn {
        /// Within the caller's transaction, which stays open.
        Within,
        /// Within a transaction the caller began, committed at the end.
        Commit,
        /// In a transaction of its own: `BEGIN IMMEDIATE` first, `COMMIT` at the end, and the
        /// round's first row written only if the log's head is still the one the round was
        /// planned on (see [`write_access`]).
        Own,
    }

    /// Writes a round of the access log — rows, index rows, hashes and the checkpoint — in the
    /// transaction `txn` says, as one multi-statement call: one trip to SQLite's worker thread
    /// instead of one per statement (each trip waited its turn on two busy cores; BENCHMARKS.md,
    /// 2026-12-02). Plain `?` placeholders, which sqlx binds in order across the statements; each
    /// statement stays within SQLite's bind-parameter limit. On an error the statements after
    /// the failing one (and the `COMMIT`) do not run; the caller rolls back.
    ///
    /// With [`AccessTxn::Own`] the round was planned on a head read before the write lock was
    /// taken (the tip this process last committed), so the first row checks it under the lock:
    /// its leaf hash is NULL, refused by `NOT NULL`, unless the log's last position is the one
    /// before the round's first. Together with the position's uniqueness (another writer's rows
    /// at the planned positions are refused) the round is written at the head or not at all.
    pub(crate) async fn write_access(
        conn: &mut Conn,
        plan: &crate::access::Plan,
        cp: &SignedCheckpoint,
        txn: AccessTxn,
    ) -> Result<()> {
        let mut qb = QueryBuilder::<DB>::new("");
        if txn == AccessTxn::Own {
            qb.push("BEGIN IMMEDIATE; ");
        }
        let first = plan.rows.first().map(|a| a.position);
        for chunk in plan.rows.chunks(INSERT_CHUNK) {
            qb.push(format_args!("INSERT INTO access_log ({ACCESS_COLUMNS}) "));
            qb.push_values(chunk, |mut b, a| {
                b.push_bind(to_i64(a.position))
                    .push_bind(a.access_id.as_slice())
                    .push_bind(a.at.micros())
                    .push_bind(a.agency.as_str())
                    .push_bind(a.user.as_str())
                    .push_bind(a.granted)
                    .push_bind(a.record.as_slice());
                if txn == AccessTxn::Own && Some(a.position) == first {
                    b.push("(SELECT CASE WHEN coalesce(max(position), -1) = ")
                        .push_bind_unseparated(to_i64(a.position) - 1)
                        .push_unseparated(" THEN ")
                        .push_bind_unseparated(a.leaf_hash.0.as_slice())
                        .push_unseparated(" END FROM access_log)");
                } else {
                    b.push_bind(a.leaf_hash.0.as_slice());
                }
            });
            qb.push("; ");
        }
        for chunk in plan.keys.chunks(INSERT_CHUNK * 4) {
            qb.push("INSERT INTO access_keys (rowid, k) ");
            qb.push_values(chunk, |mut b, (p, tokens)| {
                b.push_bind(to_i64(*p)).push_bind(tokens.join(" "));
            });
            qb.push("; ");
        }
        for chunk in plan.hashes.chunks(INSERT_CHUNK * 4) {
            qb.push("INSERT INTO access_merkle_hashes (idx, hash) ");
            qb.push_values(chunk, |mut b, (i, h)| {
                b.push_bind(to_i64(*i)).push_bind(h.0.as_slice());
            });
            qb.push("; ");
        }
        qb.push(format_args!("INSERT INTO {} (tree_size, root, note, signed_at) ", Log::Access.checkpoints_table()));
        qb.push_values([cp], |mut b, cp| {
            b.push_bind(to_i64(cp.tree_size))
                .push_bind(cp.root.0.as_slice())
                .push_bind(cp.note.as_str())
                .push_bind(cp.signed_at.micros());
        });
        if txn != AccessTxn::Within {
            qb.push("; COMMIT");
        }
        // Not kept prepared: the text varies with the round's row counts, and a cache of such
        // programs would mostly miss and hold large ones.
        qb.build().persistent(false).execute(&mut *conn).await.map_err(db("writing access records"))?;
        Ok(())
    }
});

backend!(postgres, sqlx::Postgres, {
    use super::begin_reset_postgres as begin_reset;
    use super::begin_snapshot_postgres as begin_snapshot;

    /// Read-model rows as one INSERT … SELECT FROM UNNEST of column arrays (a fixed statement,
    /// prepared once; multi-row VALUES of thousands of parameters were planned afresh each
    /// commit). Without `upsert`, a stored row fails the statement.
    async fn write_view_rows(conn: &mut Conn, rows: Vec<crate::ViewRow>, upsert: bool) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let n = rows.len();
        let (mut models, mut agencies, mut ids, mut positions, mut docs) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for r in rows {
            models.push(r.model);
            agencies.push(r.agency);
            ids.push(r.item_id);
            positions.push(to_i64(r.position));
            docs.push(r.doc);
        }
        let insert = "INSERT INTO view_items (model, agency, item_id, position, doc) \
                      SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::bytea[])";
        let sql = if upsert { format!("{insert}{VIEW_UPSERT}") } else { insert.to_owned() };
        sqlx::query(&sql)
            .bind(models)
            .bind(agencies)
            .bind(ids)
            .bind(positions)
            .bind(docs)
            .execute(&mut *conn)
            .await
            .map_err(db(view_rows_what(upsert)))?;
        Ok(())
    }

    /// `{head} = v{tail}` for each `v` of one array parameter, as a LATERAL join, so every value
    /// is one index probe whatever the table's size, and the statement text never varies (it is
    /// prepared once per connection). Neither `IN (…)` lists of varying length (re-prepared every
    /// round) nor `= ANY($1)` (a parameter array is compared linearly against every row) scale.
    async fn lookup<T>(conn: &mut Conn, head: &str, tail: &str, values: &[T]) -> Result<Vec<DbRow>, sqlx::Error>
    where
        T: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB> + Clone + Send + 'static,
        Vec<T>: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB> + Send + 'static,
    {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        if values.len() <= SMALL_LOOKUP {
            let mut qb = QueryBuilder::<DB>::new(head);
            qb.push(" IN (");
            let mut sep = qb.separated(", ");
            for v in values {
                sep.push_bind(v.clone());
            }
            qb.push(")");
            qb.push(tail);
            return qb.build().fetch_all(&mut *conn).await;
        }
        let sql = format!("SELECT x.* FROM UNNEST($1) AS q(v) CROSS JOIN LATERAL ({head} = q.v{tail}) AS x");
        sqlx::query(&sql).bind(values.to_vec()).fetch_all(&mut *conn).await
    }

    /// One INSERT … SELECT FROM UNNEST of column arrays per table: a fixed statement whatever the
    /// batch size (multi-row VALUES with thousands of parameters dominated the round's time).
    async fn insert_rows(conn: &mut Conn, plan: &crate::sequencer::Plan) -> Result<()> {
        let e = &plan.events;
        sqlx::query(
            "INSERT INTO events (position, event_id, stream, stream_version, event_type, author_agency, key_id, recorded_at, body, signature, leaf_hash) \
             SELECT * FROM UNNEST($1::int8[], $2::bytea[], $3::text[], $4::int8[], $5::text[], $6::text[], $7::text[], $8::int8[], $9::bytea[], $10::bytea[], $11::bytea[])",
        )
        .bind(e.iter().map(|e| to_i64(e.position)).collect::<Vec<_>>())
        .bind(e.iter().map(|e| e.event_id.as_bytes().to_vec()).collect::<Vec<_>>())
        .bind(e.iter().map(|e| e.stream.clone()).collect::<Vec<_>>())
        .bind(e.iter().map(|e| to_i64(e.stream_version)).collect::<Vec<_>>())
        .bind(e.iter().map(|e| e.event_type.clone()).collect::<Vec<_>>())
        .bind(e.iter().map(|e| e.author_agency.clone()).collect::<Vec<_>>())
        .bind(e.iter().map(|e| e.key_id.clone()).collect::<Vec<_>>())
        .bind(e.iter().map(|e| e.recorded_at.micros()).collect::<Vec<_>>())
        .bind(e.iter().map(|e| e.body.clone()).collect::<Vec<_>>())
        .bind(e.iter().map(|e| e.signature.clone()).collect::<Vec<_>>())
        .bind(e.iter().map(|e| e.leaf_hash.0.to_vec()).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await
        .map_err(db("inserting events"))?;
        sqlx::query("INSERT INTO merkle_hashes (idx, hash) SELECT * FROM UNNEST($1::int8[], $2::bytea[])")
            .bind(plan.hashes.iter().map(|(i, _)| to_i64(*i)).collect::<Vec<_>>())
            .bind(plan.hashes.iter().map(|(_, h)| h.0.to_vec()).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await
            .map_err(db("inserting merkle hashes"))?;
        Ok(())
    }

    /// Only records whose index row (`access_keys`, under a GIN index) holds `token`.
    fn key_filter(qb: &mut QueryBuilder<'_, DB>, token: String) {
        qb.push(" AND position IN (SELECT position FROM access_keys WHERE keys @> ARRAY[")
            .push_bind(token)
            .push("]::text[])");
    }

    /// The index rows of positions `from..to`: (position, tokens).
    async fn index_tokens(pool: &sqlx::Pool<DB>, from: u64, to: u64) -> Result<Vec<(u64, Vec<String>)>> {
        let rows = sqlx::query("SELECT position, keys FROM access_keys WHERE position >= $1 AND position < $2")
            .bind(to_i64(from))
            .bind(to_i64(to))
            .fetch_all(pool)
            .await
            .map_err(db("reading the access index"))?;
        let d = || db("reading the access index");
        rows.iter().map(|r| Ok((to_u64(r.try_get(0).map_err(d())?, "position")?, r.try_get(1).map_err(d())?))).collect()
    }

    /// PostgreSQL maintains the GIN index itself; the rows are checked against the records.
    pub(crate) async fn access_index_integrity(_pool: &sqlx::Pool<DB>) -> Result<()> {
        Ok(())
    }

    /// Writes a round of the access log in one statement: rows, index rows and hashes (an
    /// UNNEST of column arrays per table) as data-modifying CTEs, and the checkpoint (one round
    /// trip instead of four; every CTE runs, referenced or not).
    pub(crate) async fn insert_access(
        conn: &mut Conn,
        plan: &crate::access::Plan,
        cp: &SignedCheckpoint,
    ) -> Result<()> {
        // Rows of different lengths: each row's tokens travel as one string and are split in
        // the statement (tokens are hex, never holding a space).
        bind_access(
            sqlx::query(
                "WITH a AS (INSERT INTO access_log (position, access_id, at, agency, user_id, granted, record, leaf_hash) \
                     SELECT * FROM UNNEST($1::int8[], $2::bytea[], $3::int8[], $4::text[], $5::text[], $6::bool[], $7::bytea[], $8::bytea[])), \
                 k AS (INSERT INTO access_keys (position, keys) \
                     SELECT p, string_to_array(k, ' ') FROM UNNEST($9::int8[], $10::text[]) AS t(p, k)), \
                 h AS (INSERT INTO access_merkle_hashes (idx, hash) SELECT * FROM UNNEST($11::int8[], $12::bytea[])) \
                 INSERT INTO access_checkpoints (tree_size, root, note, signed_at) VALUES ($13, $14, $15, $16)",
            ),
            plan,
            cp,
        )
        .execute(&mut *conn)
        .await
        .map_err(db("writing access records"))?;
        Ok(())
    }

    /// Writes a round planned on the tip of size `expected` in one round trip, outside any
    /// transaction of ours: the call (migration 0007's `accord_access_write_at`) takes the
    /// access log's lock, checks the head and writes, and its own transaction commits when it
    /// returns. `false`, with nothing written, when the head is not `expected`.
    pub(crate) async fn write_access_at(
        pool: &sqlx::PgPool,
        expected: u64,
        plan: &crate::access::Plan,
        cp: &SignedCheckpoint,
    ) -> Result<bool> {
        let q = sqlx::query(
            "SELECT accord_access_write_at($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        )
        .bind(to_i64(expected))
        .bind(POSTGRES_ACCESS_LOCK);
        let row = bind_access(q, plan, cp).fetch_one(pool).await.map_err(db("writing access records"))?;
        row.try_get(0).map_err(db("writing access records"))
    }

    /// Binds a round's column arrays and checkpoint, in the order both writes take them.
    fn bind_access<'q>(
        q: sqlx::query::Query<'q, DB, sqlx::postgres::PgArguments>,
        plan: &crate::access::Plan,
        cp: &SignedCheckpoint,
    ) -> sqlx::query::Query<'q, DB, sqlx::postgres::PgArguments> {
        let a = &plan.rows;
        q.bind(a.iter().map(|a| to_i64(a.position)).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.access_id.to_vec()).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.at.micros()).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.agency.clone()).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.user.clone()).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.granted).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.record.clone()).collect::<Vec<_>>())
            .bind(a.iter().map(|a| a.leaf_hash.0.to_vec()).collect::<Vec<_>>())
            .bind(plan.keys.iter().map(|(p, _)| to_i64(*p)).collect::<Vec<_>>())
            .bind(plan.keys.iter().map(|(_, t)| t.join(" ")).collect::<Vec<_>>())
            .bind(plan.hashes.iter().map(|(i, _)| to_i64(*i)).collect::<Vec<_>>())
            .bind(plan.hashes.iter().map(|(_, h)| h.0.to_vec()).collect::<Vec<_>>())
            .bind(to_i64(cp.tree_size))
            .bind(cp.root.0.to_vec())
            .bind(cp.note.clone())
            .bind(cp.signed_at.micros())
    }
});

/// A read-only transaction on SQLite: its first read fixes the snapshot every later read of it
/// sees (WAL mode), whatever commits meanwhile.
async fn begin_snapshot_sqlite(pool: &sqlx::SqlitePool) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
    pool.begin().await.map_err(crate::error::db("starting a read-model snapshot"))
}

/// A read-only transaction on PostgreSQL in which every statement sees the snapshot of its first
/// (`REPEATABLE READ`; the default, `READ COMMITTED`, takes one per statement).
async fn begin_snapshot_postgres(pool: &sqlx::PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(crate::error::db("starting a read-model snapshot"))
}

/// A read-model reset on PostgreSQL: the checkpoint table locked against writers (a read-model
/// commit moves its row first) until the reset commits, after the commits in flight finish.
async fn begin_reset_postgres(pool: &sqlx::PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let mut tx = pool.begin().await.map_err(crate::error::db("starting a read-model reset"))?;
    sqlx::query("LOCK TABLE view_checkpoints IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .map_err(crate::error::db("locking the projection checkpoints"))?;
    Ok(tx)
}

/// Opens the write transaction that holds the log's lock until commit.
pub(crate) async fn begin_sqlite(pool: &sqlx::SqlitePool) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
    // IMMEDIATE takes SQLite's single write lock at once, so the head read below is the head the
    // batch is written after, even with other processes on the same file.
    pool.begin_with("BEGIN IMMEDIATE").await.map_err(crate::error::db("starting a write transaction"))
}

/// Opens the write transaction and takes the advisory lock that serialises appends across
/// PostgreSQL server processes (released at commit or rollback).
pub(crate) async fn begin_postgres(pool: &sqlx::PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    begin_postgres_locked(pool, POSTGRES_LOG_LOCK).await
}

/// Opens the access log's write transaction under its own advisory lock.
pub(crate) async fn begin_postgres_access(pool: &sqlx::PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    begin_postgres_locked(pool, POSTGRES_ACCESS_LOCK).await
}

async fn begin_postgres_locked(pool: &sqlx::PgPool, key: i64) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let mut tx = pool.begin().await.map_err(crate::error::db("starting a write transaction"))?;
    lock_postgres(&mut tx, key).await?;
    Ok(tx)
}

/// Takes the access log's lock in a transaction that already holds the event log's (the
/// sequencer, recording an append's access record): always in that order, so the two writers
/// never wait on each other in a cycle.
pub(crate) async fn lock_postgres_access(conn: &mut sqlx::PgConnection) -> Result<()> {
    lock_postgres(conn, POSTGRES_ACCESS_LOCK).await
}

async fn lock_postgres(conn: &mut sqlx::PgConnection, key: i64) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(key)
        .execute(conn)
        .await
        .map_err(crate::error::db("taking the log lock"))?;
    Ok(())
}
