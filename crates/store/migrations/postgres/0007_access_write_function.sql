-- An access-log round in one round trip (issue 5). The writer plans a round on the tip it last
-- committed and calls this function outside any explicit transaction: it takes the access log's
-- advisory lock, then (with a snapshot taken after the lock, as every statement of a PL/pgSQL
-- function in READ COMMITTED) checks that the log's head is still that tip, and writes the rows,
-- index rows, hashes and checkpoint; the call's own transaction commits them when it returns.
-- FALSE, writing nothing, when the head has moved (another process wrote since): the writer
-- then decides the round again from the head, in a transaction of its own. Any error rolls the
-- whole call back. The same inserts as the writer's statement of data-modifying CTEs.
CREATE FUNCTION accord_access_write_at(
    p_expected_size BIGINT,
    p_lock_key      BIGINT,
    p_positions     BIGINT[],
    p_access_ids    BYTEA[],
    p_ats           BIGINT[],
    p_agencies      TEXT[],
    p_users         TEXT[],
    p_granted       BOOLEAN[],
    p_records       BYTEA[],
    p_leaf_hashes   BYTEA[],
    p_key_positions BIGINT[],
    p_keys          TEXT[],
    p_hash_indexes  BIGINT[],
    p_hashes        BYTEA[],
    p_tree_size     BIGINT,
    p_root          BYTEA,
    p_note          TEXT,
    p_signed_at     BIGINT
) RETURNS BOOLEAN LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock_key);
    IF COALESCE((SELECT a.position + 1 FROM access_log a ORDER BY a.position DESC LIMIT 1), 0) <> p_expected_size THEN
        RETURN FALSE;
    END IF;
    INSERT INTO access_log (position, access_id, at, agency, user_id, granted, record, leaf_hash)
        SELECT * FROM UNNEST(p_positions, p_access_ids, p_ats, p_agencies, p_users, p_granted, p_records, p_leaf_hashes);
    -- Each row's tokens travel as one string (hex tokens never hold a space).
    INSERT INTO access_keys (position, keys)
        SELECT t.p, string_to_array(t.k, ' ') FROM UNNEST(p_key_positions, p_keys) AS t(p, k);
    INSERT INTO access_merkle_hashes (idx, hash) SELECT * FROM UNNEST(p_hash_indexes, p_hashes);
    INSERT INTO access_checkpoints (tree_size, root, note, signed_at) VALUES (p_tree_size, p_root, p_note, p_signed_at);
    RETURN TRUE;
END
$$;
