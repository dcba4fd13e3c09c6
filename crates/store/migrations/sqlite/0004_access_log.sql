-- The access log (DESIGN.md: "two logs share one implementation"): who asked for what and
-- whether it was granted, as a second append-only Merkle log beside the event log, written by its
-- own group-commit writer. `record` is the encoded AccessRecord, verbatim; the other columns and
-- the subject and item indexes are copies of some of its fields, for queries. Append-only like
-- 0001: triggers refuse UPDATE and DELETE on every table here.

CREATE TABLE access_log (
    position  INTEGER PRIMARY KEY,               -- gap-free, from 0 (= Merkle leaf index)
    access_id BLOB    NOT NULL UNIQUE,           -- 16 bytes (UUIDv7)
    at        INTEGER NOT NULL,                  -- µs since the Unix epoch, when answered
    agency    TEXT    NOT NULL,                  -- '' when unauthenticated
    user_id   TEXT    NOT NULL,                  -- '' when unauthenticated
    granted   INTEGER NOT NULL,                  -- 0 or 1
    record    BLOB    NOT NULL,
    leaf_hash BLOB    NOT NULL
);
-- Queries page by position, so the per-caller indexes end with it.
CREATE INDEX access_log_by_agency ON access_log (agency, position);
CREATE INDEX access_log_by_user ON access_log (user_id, position);
CREATE INDEX access_log_by_at ON access_log (at);
CREATE INDEX access_log_denied ON access_log (position) WHERE granted = FALSE;

CREATE TABLE access_subjects (
    subject  TEXT    NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (subject, position)
);
CREATE INDEX access_subjects_by_position ON access_subjects (position);
CREATE TABLE access_items (
    item     TEXT    NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (item, position)
);
CREATE INDEX access_items_by_position ON access_items (position);

-- Every stored hash of the access tree (tlog stored-hash indexes, as merkle_hashes).
CREATE TABLE access_merkle_hashes (
    idx  INTEGER PRIMARY KEY,
    hash BLOB    NOT NULL
);

-- A signed checkpoint (the access log's own origin) for every committed batch.
CREATE TABLE access_checkpoints (
    tree_size INTEGER PRIMARY KEY,
    root      BLOB    NOT NULL,
    note      TEXT    NOT NULL,
    signed_at INTEGER NOT NULL
);

CREATE TRIGGER access_log_no_update BEFORE UPDATE ON access_log
BEGIN SELECT RAISE(ABORT, 'accord log tables are append-only: UPDATE on access_log refused'); END;
CREATE TRIGGER access_log_no_delete BEFORE DELETE ON access_log
BEGIN SELECT RAISE(ABORT, 'accord log tables are append-only: DELETE on access_log refused'); END;
CREATE TRIGGER access_subjects_no_update BEFORE UPDATE ON access_subjects
BEGIN SELECT RAISE(ABORT, 'accord log tables are append-only: UPDATE on access_subjects refused'); END;
CREATE TRIGGER access_subjects_no_delete BEFORE DELETE ON access_subjects
BEGIN SELECT RAISE(ABORT, 'accord log tables are append-only: DELETE on access_subjects refused'); END;
CREATE TRIGGER access_items_no_update BEFORE UPDATE ON access_items
BEGIN SELECT RAISE(ABORT, 'accord log tables are append-only: UPDATE on access_items refused'); END;
CREATE TRIGGER access_items_no_delete BEFORE DELETE ON access_items
BEGIN SELECT RAISE(ABORT, 'accord log tables are append-only: DELETE on access_items refused'); END;
CREATE TRIGGER access_merkle_hashes_no_update BEFORE UPDATE ON access_merkle_hashes
BEGIN SELECT RAISE(ABORT, 'accord log tables are append-only: UPDATE on access_merkle_hashes refused'); END;
CREATE TRIGGER access_merkle_hashes_no_delete BEFORE DELETE ON access_merkle_hashes
BEGIN SELECT RAISE(ABORT, 'accord log tables are append-only: DELETE on access_merkle_hashes refused'); END;
CREATE TRIGGER access_checkpoints_no_update BEFORE UPDATE ON access_checkpoints
BEGIN SELECT RAISE(ABORT, 'accord log tables are append-only: UPDATE on access_checkpoints refused'); END;
CREATE TRIGGER access_checkpoints_no_delete BEFORE DELETE ON access_checkpoints
BEGIN SELECT RAISE(ABORT, 'accord log tables are append-only: DELETE on access_checkpoints refused'); END;
