-- Read-model rows keep one index, their primary key. `view_items_by_position` served a lookup of
-- one model's rows by position that nothing calls (queries and subscriptions are answered from
-- the projection's state in memory; a restore pages by primary key), and every row written paid
-- for a second B-tree insert.
DROP INDEX view_items_by_position;
