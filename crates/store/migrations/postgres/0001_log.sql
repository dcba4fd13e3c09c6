-- The event log and its Merkle tree (DESIGN.md §3). Append-only: triggers refuse UPDATE, DELETE
-- and TRUNCATE on every table here. Positions are assigned by the sequencer under a transaction-
-- scoped advisory lock, never by a sequence, so they are gap-free and committed in order.

CREATE TABLE events (
    position       BIGINT PRIMARY KEY,
    event_id       BYTEA  NOT NULL UNIQUE,
    stream         TEXT   NOT NULL,
    stream_version BIGINT NOT NULL,
    event_type     TEXT   NOT NULL,
    author_agency  TEXT   NOT NULL,
    key_id         TEXT   NOT NULL,
    recorded_at    BIGINT NOT NULL,
    body           BYTEA  NOT NULL,
    signature      BYTEA  NOT NULL,
    leaf_hash      BYTEA  NOT NULL,
    UNIQUE (stream, stream_version)
);
CREATE INDEX events_by_author ON events (author_agency, position);

CREATE TABLE merkle_hashes (
    idx  BIGINT PRIMARY KEY,
    hash BYTEA  NOT NULL
);

CREATE TABLE checkpoints (
    tree_size BIGINT PRIMARY KEY,
    root      BYTEA  NOT NULL,
    note      TEXT   NOT NULL,
    signed_at BIGINT NOT NULL
);

CREATE TABLE signing_keys (
    key_id        TEXT   PRIMARY KEY,
    agency        TEXT   NOT NULL,
    public_key    BYTEA  NOT NULL,
    registered_at BIGINT NOT NULL
);
CREATE TABLE key_revocations (
    key_id     TEXT   PRIMARY KEY REFERENCES signing_keys (key_id),
    revoked_at BIGINT NOT NULL
);

CREATE FUNCTION accord_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'accord log tables are append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = '55000';
END
$$;

DO $$
DECLARE t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['events', 'merkle_hashes', 'checkpoints', 'signing_keys', 'key_revocations'] LOOP
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON %I FOR EACH ROW EXECUTE FUNCTION accord_refuse_change()', t || '_immutable', t);
        EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I FOR EACH STATEMENT EXECUTE FUNCTION accord_refuse_change()', t || '_no_truncate', t);
    END LOOP;
END
$$;
