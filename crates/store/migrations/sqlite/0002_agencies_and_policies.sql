-- Derived from registry events in the same transaction as the event: the agencies taking part
-- (their kind and whether their admins may adopt sharing policy decide what policy allows them)
-- and the positions of PolicyAdopted events (the policy in force at any position).
CREATE TABLE agencies (
    agency_id      TEXT    PRIMARY KEY,
    kind           TEXT    NOT NULL,
    governs_policy INTEGER NOT NULL,
    registered_at  INTEGER NOT NULL
);
CREATE TABLE policy_adoptions (
    position INTEGER PRIMARY KEY REFERENCES events (position)
);

CREATE TRIGGER agencies_no_update BEFORE UPDATE ON agencies
BEGIN SELECT RAISE(ABORT, 'accord log tables are append-only: UPDATE on agencies refused'); END;
CREATE TRIGGER agencies_no_delete BEFORE DELETE ON agencies
BEGIN SELECT RAISE(ABORT, 'accord log tables are append-only: DELETE on agencies refused'); END;
CREATE TRIGGER policy_adoptions_no_update BEFORE UPDATE ON policy_adoptions
BEGIN SELECT RAISE(ABORT, 'accord log tables are append-only: UPDATE on policy_adoptions refused'); END;
CREATE TRIGGER policy_adoptions_no_delete BEFORE DELETE ON policy_adoptions
BEGIN SELECT RAISE(ABORT, 'accord log tables are append-only: DELETE on policy_adoptions refused'); END;
