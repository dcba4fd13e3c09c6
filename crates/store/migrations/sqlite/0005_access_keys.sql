-- The access log's query index as one full-text row per record instead of one B-tree row per
-- subject and per item (issue 5's benchmark: ~50 random-key index rows per inbox read cost the
-- access log's writer three quarters of its time). `k` holds the record's keys as tokens, each
-- the upper-case hex of `s:<subject>` or `i:<item>` (so any character in a key is safe and a
-- token matches exactly); `rowid` is the record's access-log position. Records with no keys (an
-- unauthenticated refusal) have no row. The index is derived from the records: `accord verify`
-- recomputes every row from its record and runs FTS5's integrity check, so a deleted or altered
-- row is named there (an FTS5 table cannot carry the append-only triggers).
CREATE VIRTUAL TABLE access_keys USING fts5(k, detail = none);

INSERT INTO access_keys (rowid, k)
SELECT position, group_concat(token, ' ')
FROM (
    SELECT position, hex('s:' || subject) AS token FROM access_subjects
    UNION ALL
    SELECT position, hex('i:' || item) AS token FROM access_items
    ORDER BY position, token
)
GROUP BY position;

DROP TABLE access_subjects;
DROP TABLE access_items;
