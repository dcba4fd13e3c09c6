-- Read-model rows keep one index, their primary key. `view_items_by_position` served a lookup of
-- one model's rows by position that nothing calls (queries and subscriptions are answered from
-- the projection's state in memory; a restore pages by primary key), and every row written paid
-- for a second B-tree insert (without it, a changed row's update can also be a heap-only update).
DROP INDEX view_items_by_position;
-- The key columns compare bytewise ("C"), as SQLite's do: in a database created with a libc
-- locale (even C.UTF-8 on PostgreSQL 15) every key comparison went through strcoll. The only
-- reader of this order is a restore paging by primary key, which compares in the same
-- collation; the primary key is rebuilt once.
ALTER TABLE view_items
    ALTER COLUMN model TYPE TEXT COLLATE "C",
    ALTER COLUMN agency TYPE TEXT COLLATE "C",
    ALTER COLUMN item_id TYPE TEXT COLLATE "C";
