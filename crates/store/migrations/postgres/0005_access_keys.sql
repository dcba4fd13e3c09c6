-- The access log's query index as one row per record with its keys in an array under a GIN index
-- (pending-list inserts), instead of one B-tree row per subject and per item: issue 5's benchmark
-- found ~50 random-key index rows per inbox read costing the access log's writer three quarters
-- of its time. Each key is the upper-case hex of `s:<subject>` or `i:<item>`, as in SQLite's
-- `access_keys`. Records with no keys have no row. Append-only like every access-log table.
CREATE TABLE access_keys (
    position BIGINT PRIMARY KEY,
    keys     TEXT[] NOT NULL
);
CREATE INDEX access_keys_by_key ON access_keys USING GIN (keys) WITH (fastupdate = on);

INSERT INTO access_keys (position, keys)
SELECT position, array_agg(token ORDER BY token)
FROM (
    SELECT position, upper(encode(convert_to('s:' || subject, 'UTF8'), 'hex')) AS token FROM access_subjects
    UNION ALL
    SELECT position, upper(encode(convert_to('i:' || item, 'UTF8'), 'hex')) FROM access_items
) AS t
GROUP BY position;

CREATE TRIGGER access_keys_immutable BEFORE UPDATE OR DELETE ON access_keys
    FOR EACH ROW EXECUTE FUNCTION accord_refuse_change();
CREATE TRIGGER access_keys_no_truncate BEFORE TRUNCATE ON access_keys
    FOR EACH STATEMENT EXECUTE FUNCTION accord_refuse_change();

DROP TABLE access_subjects;
DROP TABLE access_items;
