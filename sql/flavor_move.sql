-- Moving a database between flavors (README, "Moving between flavors"), run by
-- scripts/move_flavor.sh inside the one transaction that also renamed the old install's schema
-- hooks to hooks_moving and installed the other flavor into a new schema hooks. Not part of
-- either flavor's install script.
--
-- Copies every row of every table of hooks_moving into the table of the same name in hooks
-- (the columns both have, generated ones left to compute themselves), with triggers off
-- (session_replication_role = replica: the rows are copied as they are, foreign keys included,
-- and no trigger rewrites them); sets every sequence of hooks to where its namesake was;
-- attaches the watched tables' triggers to the new functions. The old install is dropped by
-- scripts/move_flavor.sh afterwards (its extension, or its schema). Needs a superuser.
DO $move$
DECLARE
    t     record;
    cols  text;
    n     bigint;
    moved text[] := '{}';
BEGIN
    IF pg_catalog.to_regnamespace('hooks_moving') IS NULL OR pg_catalog.to_regnamespace('hooks') IS NULL THEN
        RAISE EXCEPTION 'flavor_move.sql: expected the old install in schema hooks_moving and the new one in hooks'
            USING ERRCODE = 'invalid_schema_name';
    END IF;
    SET LOCAL session_replication_role = replica;
    FOR t IN SELECT c.relname FROM pg_catalog.pg_class c
              WHERE c.relnamespace = 'hooks_moving'::regnamespace AND c.relkind = 'r'
              ORDER BY c.relname LOOP
        IF pg_catalog.to_regclass(format('hooks.%I', t.relname)) IS NULL THEN
            RAISE EXCEPTION 'flavor_move.sql: the new install has no table hooks.%', t.relname
                USING ERRCODE = 'undefined_table';
        END IF;
        SELECT string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum) INTO cols
          FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = format('hooks.%I', t.relname)::regclass AND a.attnum > 0
           AND NOT a.attisdropped AND a.attgenerated = ''
           AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute o
                        WHERE o.attrelid = format('hooks_moving.%I', t.relname)::regclass
                          AND o.attname = a.attname AND NOT o.attisdropped);
        EXECUTE format('INSERT INTO hooks.%1$I (%2$s) SELECT %2$s FROM hooks_moving.%1$I', t.relname, cols);
        GET DIAGNOSTICS n = ROW_COUNT;
        moved := moved || format('%s %s', t.relname, n);
    END LOOP;
    FOR t IN SELECT c.relname FROM pg_catalog.pg_class c
              WHERE c.relnamespace = 'hooks_moving'::regnamespace AND c.relkind = 'S' LOOP
        EXECUTE format('SELECT pg_catalog.setval(%L, last_value, is_called) FROM hooks_moving.%I',
                       format('hooks.%I', t.relname), t.relname);
    END LOOP;
    SET LOCAL session_replication_role = origin;
    -- the watched tables' triggers call the old install's functions, which go with it
    FOR t IN SELECT g.tgrelid::regclass AS rel, g.tgname FROM pg_catalog.pg_trigger g
              JOIN pg_catalog.pg_proc p ON p.oid = g.tgfoid
             WHERE p.pronamespace = 'hooks_moving'::regnamespace
               AND g.tgname IN ('hooks_watch_insert', 'hooks_watch_update', 'hooks_watch_delete') LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', t.tgname, t.rel);
    END LOOP;
    PERFORM hooks._watch_attach(w) FROM hooks.watched_tables w;
    -- The old install's owner acted for every tenant as its owner (README, "Tenants bound to
    -- roles"); when the new install has another owner, it keeps that by an explicit grant.
    IF to_regclass('hooks.tenant_grants') IS NOT NULL THEN
        FOR t IN SELECT r.rolname FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner
                  WHERE n.nspname = 'hooks_moving'
                    AND NOT pg_catalog.pg_has_role(r.oid, (SELECT h.nspowner FROM pg_catalog.pg_namespace h
                                                             WHERE h.nspname = 'hooks'), 'MEMBER') LOOP
            INSERT INTO hooks.tenant_grants (role_name, tenant_id, granted_by)
            VALUES (t.rolname, NULL, current_user) ON CONFLICT DO NOTHING;
            RAISE NOTICE 'beema_hooks: % owned the old install and acts for every tenant by a grant now (hooks.revoke_tenant(%L) takes it back)',
                         t.rolname, t.rolname;
        END LOOP;
    END IF;
    RAISE NOTICE 'beema_hooks: rows moved: %', array_to_string(moved, ', ');
END
$move$;
