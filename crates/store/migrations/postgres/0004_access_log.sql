-- The access log (DESIGN.md: "two logs share one implementation"): who asked for what and
-- whether it was granted, as a second append-only Merkle log beside the event log, written by its
-- own group-commit writer under its own advisory lock. `record` is the encoded AccessRecord,
-- verbatim; the other columns and the subject and item indexes are copies of some of its fields,
-- for queries. Append-only like 0001: triggers refuse UPDATE, DELETE and TRUNCATE.

CREATE TABLE access_log (
    position  BIGINT  PRIMARY KEY,
    access_id BYTEA   NOT NULL UNIQUE,
    at        BIGINT  NOT NULL,
    agency    TEXT    NOT NULL,
    user_id   TEXT    NOT NULL,
    granted   BOOLEAN NOT NULL,
    record    BYTEA   NOT NULL,
    leaf_hash BYTEA   NOT NULL
);
-- Queries page by position, so the per-caller indexes end with it.
CREATE INDEX access_log_by_agency ON access_log (agency, position);
CREATE INDEX access_log_by_user ON access_log (user_id, position);
CREATE INDEX access_log_by_at ON access_log (at);
CREATE INDEX access_log_denied ON access_log (position) WHERE granted = FALSE;

CREATE TABLE access_subjects (
    subject  TEXT   NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (subject, position)
);
CREATE INDEX access_subjects_by_position ON access_subjects (position);
CREATE TABLE access_items (
    item     TEXT   NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (item, position)
);
CREATE INDEX access_items_by_position ON access_items (position);

CREATE TABLE access_merkle_hashes (
    idx  BIGINT PRIMARY KEY,
    hash BYTEA  NOT NULL
);

CREATE TABLE access_checkpoints (
    tree_size BIGINT PRIMARY KEY,
    root      BYTEA  NOT NULL,
    note      TEXT   NOT NULL,
    signed_at BIGINT NOT NULL
);

DO $$
DECLARE t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['access_log', 'access_subjects', 'access_items', 'access_merkle_hashes', 'access_checkpoints'] LOOP
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON %I FOR EACH ROW EXECUTE FUNCTION accord_refuse_change()', t || '_immutable', t);
        EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I FOR EACH STATEMENT EXECUTE FUNCTION accord_refuse_change()', t || '_no_truncate', t);
    END LOOP;
END
$$;
