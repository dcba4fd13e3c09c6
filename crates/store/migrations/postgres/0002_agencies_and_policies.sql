-- Derived from registry events in the same transaction as the event: the agencies taking part
-- (their kind and whether their admins may adopt sharing policy decide what policy allows them)
-- and the positions of PolicyAdopted events (the policy in force at any position).
CREATE TABLE agencies (
    agency_id      TEXT    PRIMARY KEY,
    kind           TEXT    NOT NULL,
    governs_policy BOOLEAN NOT NULL,
    registered_at  BIGINT  NOT NULL
);
CREATE TABLE policy_adoptions (
    position BIGINT PRIMARY KEY REFERENCES events (position)
);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['agencies', 'policy_adoptions'] LOOP
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON %I FOR EACH ROW EXECUTE FUNCTION accord_refuse_change()', t || '_immutable', t);
        EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I FOR EACH STATEMENT EXECUTE FUNCTION accord_refuse_change()', t || '_no_truncate', t);
    END LOOP;
END $$;
