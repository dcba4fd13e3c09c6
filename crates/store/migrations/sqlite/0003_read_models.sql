-- Read models (DESIGN.md §4): derived from the log by the projection runner, so unlike the log
-- tables they are rewritten as the log grows and can be dropped and rebuilt from zero. Each row is
-- one item of one read model held for one agency; `position` is the log position of the item's
-- latest change (subscriptions resume after it). `view_checkpoints` holds, per projection, the
-- first log position not yet applied; rows and checkpoint are written in one transaction.
CREATE TABLE view_items (
    model    TEXT    NOT NULL,
    agency   TEXT    NOT NULL,
    item_id  TEXT    NOT NULL,
    position INTEGER NOT NULL,
    doc      BLOB    NOT NULL,
    PRIMARY KEY (model, agency, item_id)
);
CREATE INDEX view_items_by_position ON view_items (model, agency, position);
CREATE TABLE view_checkpoints (
    projection TEXT    PRIMARY KEY,
    position   INTEGER NOT NULL
);
