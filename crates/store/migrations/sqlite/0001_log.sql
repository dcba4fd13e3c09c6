-- The event log and its Merkle tree (DESIGN.md §3). Append-only: triggers refuse UPDATE and
-- DELETE on every table here (SQLite has no TRUNCATE; DELETE without WHERE hits the trigger).

CREATE TABLE events (
    position       INTEGER PRIMARY KEY,          -- global, gap-free, from 0 (= Merkle leaf index)
    event_id       BLOB    NOT NULL UNIQUE,      -- 16 bytes (UUIDv7)
    stream         TEXT    NOT NULL,
    stream_version INTEGER NOT NULL,
    event_type     TEXT    NOT NULL,
    author_agency  TEXT    NOT NULL,
    key_id         TEXT    NOT NULL,
    recorded_at    INTEGER NOT NULL,             -- µs since the Unix epoch
    body           BLOB    NOT NULL,             -- the signed EventBody bytes, verbatim
    signature      BLOB    NOT NULL,
    leaf_hash      BLOB    NOT NULL,
    UNIQUE (stream, stream_version)
);
CREATE INDEX events_by_author ON events (author_agency, position);

-- Every stored hash of the tree (tlog stored-hash indexes: ~2 per event).
CREATE TABLE merkle_hashes (
    idx  INTEGER PRIMARY KEY,
    hash BLOB    NOT NULL
);

-- A signed checkpoint for every committed batch.
CREATE TABLE checkpoints (
    tree_size INTEGER PRIMARY KEY,
    root      BLOB    NOT NULL,
    note      TEXT    NOT NULL,
    signed_at INTEGER NOT NULL
);

-- Derived from registry events in the same transaction as the event (positions refer to it).
CREATE TABLE signing_keys (
    key_id        TEXT    PRIMARY KEY,
    agency        TEXT    NOT NULL,
    public_key    BLOB    NOT NULL,
    registered_at INTEGER NOT NULL
);
CREATE TABLE key_revocations (
    key_id     TEXT    PRIMARY KEY REFERENCES signing_keys (key_id),
    revoked_at INTEGER NOT NULL
);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'accord log tables are append-only: UPDATE on events refused'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'accord log tables are append-only: DELETE on events refused'); END;
CREATE TRIGGER merkle_hashes_no_update BEFORE UPDATE ON merkle_hashes
BEGIN SELECT RAISE(ABORT, 'accord log tables are append-only: UPDATE on merkle_hashes refused'); END;
CREATE TRIGGER merkle_hashes_no_delete BEFORE DELETE ON merkle_hashes
BEGIN SELECT RAISE(ABORT, 'accord log tables are append-only: DELETE on merkle_hashes refused'); END;
CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'accord log tables are append-only: UPDATE on checkpoints refused'); END;
CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'accord log tables are append-only: DELETE on checkpoints refused'); END;
CREATE TRIGGER signing_keys_no_update BEFORE UPDATE ON signing_keys
BEGIN SELECT RAISE(ABORT, 'accord log tables are append-only: UPDATE on signing_keys refused'); END;
CREATE TRIGGER signing_keys_no_delete BEFORE DELETE ON signing_keys
BEGIN SELECT RAISE(ABORT, 'accord log tables are append-only: DELETE on signing_keys refused'); END;
CREATE TRIGGER key_revocations_no_update BEFORE UPDATE ON key_revocations
BEGIN SELECT RAISE(ABORT, 'accord log tables are append-only: UPDATE on key_revocations refused'); END;
CREATE TRIGGER key_revocations_no_delete BEFORE DELETE ON key_revocations
BEGIN SELECT RAISE(ABORT, 'accord log tables are append-only: DELETE on key_revocations refused'); END;
