-- beema_hooks security: three roles, privileges, and tenant isolation with row-level security.
-- Runs last. Roles are cluster-wide: they are created when missing and survive DROP EXTENSION.
--
--   hooks_publisher  may call hooks.publish, nothing else
--   hooks_sender     may call hooks.claim / complete / release, and cannot read any table
--                    (so never a secret)
--   hooks_admin      may read and manage everything, within the tenant named by the session
--                    setting hooks.tenant_id when it is set
--
-- Every other role sees, in webhooks, events, deliveries (outbox, queue, outcomes) and
-- attempts, only the rows of the
-- tenant in `hooks.tenant_id` (none when it is unset), given table privileges at all.

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['hooks_publisher', 'hooks_sender', 'hooks_admin'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$$;

-- The session's tenant, or NULL when none is set. Inlined into every policy, so it takes the
-- caller's search_path: pg_catalog is named, or a current_setting() of the caller's schemas,
-- searched before pg_catalog, would answer instead (pg_regress security).
CREATE FUNCTION hooks.current_tenant() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT nullif(pg_catalog.current_setting('hooks.tenant_id', true), '')
$$;

-- Functions that cross tenants or read secrets run as the extension's owner, with a pinned
-- search_path; only the roles meant to call them may.
ALTER FUNCTION hooks.publish(jsonb) SECURITY DEFINER SET search_path = pg_catalog, hooks;
ALTER FUNCTION hooks.claim(text, integer, interval, boolean) SECURITY DEFINER SET search_path = pg_catalog, hooks;
ALTER FUNCTION hooks.complete(text, jsonb) SECURITY DEFINER SET search_path = pg_catalog, hooks;
ALTER FUNCTION hooks.release(text, jsonb) SECURITY DEFINER SET search_path = pg_catalog, hooks;

REVOKE EXECUTE ON FUNCTION hooks.publish(jsonb), hooks.claim(text, integer, interval, boolean),
    hooks.complete(text, jsonb), hooks.release(text, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION hooks.create_webhook(text, text, text, text, text, jsonb, jsonb, integer, text, jsonb, jsonpath, text[], text),
    hooks.update_webhook(bigint, jsonb), hooks.enable_webhook(bigint), hooks.disable_webhook(bigint, text),
    hooks.delete_webhook(bigint), hooks.rotate_secret(bigint, text, interval),
    hooks.retry_delivery(bigint), hooks.replay_event(bigint, bigint),
    hooks.redeliver_failed(bigint, timestamptz), hooks.test_webhook(bigint), hooks.metrics()
    FROM PUBLIC;
REVOKE EXECUTE ON PROCEDURE hooks.purge(interval, integer, boolean, bigint) FROM PUBLIC;

GRANT USAGE ON SCHEMA hooks TO hooks_publisher, hooks_sender, hooks_admin;
GRANT EXECUTE ON FUNCTION hooks.publish(jsonb) TO hooks_publisher, hooks_admin;
GRANT EXECUTE ON FUNCTION hooks.claim(text, integer, interval, boolean), hooks.complete(text, jsonb),
    hooks.release(text, jsonb) TO hooks_sender;
GRANT EXECUTE ON FUNCTION hooks.create_webhook(text, text, text, text, text, jsonb, jsonb, integer, text, jsonb, jsonpath, text[], text),
    hooks.update_webhook(bigint, jsonb), hooks.enable_webhook(bigint), hooks.disable_webhook(bigint, text),
    hooks.delete_webhook(bigint), hooks.rotate_secret(bigint, text, interval),
    hooks.retry_delivery(bigint), hooks.replay_event(bigint, bigint),
    hooks.redeliver_failed(bigint, timestamptz), hooks.test_webhook(bigint), hooks.metrics()
    TO hooks_admin;
GRANT EXECUTE ON PROCEDURE hooks.purge(interval, integer, boolean, bigint) TO hooks_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON hooks.webhooks, hooks.events, hooks.outbox, hooks.queue,
    hooks.outcomes, hooks.attempts, hooks.senders TO hooks_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON hooks.deliveries TO hooks_admin;
GRANT SELECT ON hooks.delivery_log, hooks.dead_letters, hooks.webhook_health TO hooks_admin;
GRANT SELECT ON hooks.webhook_backlog TO hooks_admin;
-- settings: every admin reads them, only an all-tenant admin (and the owner) changes them
GRANT SELECT, INSERT, UPDATE, DELETE ON hooks.settings TO hooks_admin;
ALTER TABLE hooks.settings ENABLE ROW LEVEL SECURITY;
CREATE POLICY admins_read ON hooks.settings FOR SELECT TO hooks_admin USING (true);
CREATE POLICY all_tenant_admins_write ON hooks.settings TO hooks_admin
    USING (hooks.current_tenant() IS NULL) WITH CHECK (hooks.current_tenant() IS NULL);
ALTER VIEW hooks.webhook_backlog SET (security_invoker = true);
-- hooks.webhook_patterns is written by its trigger function only, as the extension's owner
GRANT SELECT ON hooks.webhook_patterns TO hooks_admin;
-- watching tables: publishers and admins; each sees and removes only its own watches (admins
-- all), and the trigger functions run as the extension's owner (they read the watches, publish)
GRANT SELECT, INSERT, DELETE ON hooks.watched_tables TO hooks_publisher, hooks_admin;
GRANT USAGE ON SEQUENCE hooks.watched_tables_watch_id_seq TO hooks_publisher;
GRANT SELECT ON hooks.watched TO hooks_publisher, hooks_admin;
ALTER VIEW hooks.watched SET (security_invoker = true);
ALTER TABLE hooks.watched_tables ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_watches ON hooks.watched_tables
    USING (watched_by = current_user OR pg_has_role(current_user, 'hooks_admin', 'MEMBER'))
    WITH CHECK (watched_by = current_user);
ALTER FUNCTION hooks._watch_statement() SECURITY DEFINER SET search_path = pg_catalog, hooks;
ALTER FUNCTION hooks._watch_row() SECURITY DEFINER SET search_path = pg_catalog, hooks;
-- the wake-up check at commit runs as the owner too: a role that only writes a watched table
-- commits events without any privilege on schema hooks
ALTER FUNCTION hooks._wake_sender() SECURITY DEFINER SET search_path = pg_catalog, hooks;
REVOKE EXECUTE ON FUNCTION hooks.watch_table(regclass, text, text, text, text[], text[], text[], text),
    hooks.unwatch_table(regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hooks.watch_table(regclass, text, text, text, text[], text[], text[], text),
    hooks.unwatch_table(regclass) TO hooks_publisher, hooks_admin;
ALTER FUNCTION hooks._webhook_patterns_sync() SECURITY DEFINER SET search_path = pg_catalog, hooks;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA hooks TO hooks_admin;

-- The views check privileges and policies as the caller, not as their owner.
ALTER VIEW hooks.delivery_log SET (security_invoker = true);
ALTER VIEW hooks.dead_letters SET (security_invoker = true);
ALTER VIEW hooks.webhook_health SET (security_invoker = true);

-- Tenant isolation. Policies of one table are OR-ed: a row is visible (and writable) when it is
-- the session's tenant, or to hooks_admin when the session names no tenant.
ALTER TABLE hooks.webhooks ENABLE ROW LEVEL SECURITY;
ALTER TABLE hooks.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE hooks.outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE hooks.queue ENABLE ROW LEVEL SECURITY;
ALTER TABLE hooks.outcomes ENABLE ROW LEVEL SECURITY;
ALTER TABLE hooks.attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE hooks.webhook_patterns ENABLE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON hooks.webhooks
    USING (tenant_id = hooks.current_tenant()) WITH CHECK (tenant_id = hooks.current_tenant());
CREATE POLICY tenant_isolation ON hooks.events
    USING (tenant_id = hooks.current_tenant()) WITH CHECK (tenant_id = hooks.current_tenant());
CREATE POLICY tenant_isolation ON hooks.outbox
    USING (tenant_id = hooks.current_tenant()) WITH CHECK (tenant_id = hooks.current_tenant());
CREATE POLICY tenant_isolation ON hooks.queue
    USING (tenant_id = hooks.current_tenant()) WITH CHECK (tenant_id = hooks.current_tenant());
CREATE POLICY tenant_isolation ON hooks.outcomes
    USING (tenant_id = hooks.current_tenant()) WITH CHECK (tenant_id = hooks.current_tenant());
CREATE POLICY tenant_isolation ON hooks.attempts
    USING (tenant_id = hooks.current_tenant()) WITH CHECK (tenant_id = hooks.current_tenant());
CREATE POLICY tenant_isolation ON hooks.webhook_patterns
    USING (tenant_id = hooks.current_tenant()) WITH CHECK (tenant_id = hooks.current_tenant());

CREATE POLICY admin_all_tenants ON hooks.webhooks TO hooks_admin
    USING (hooks.current_tenant() IS NULL) WITH CHECK (hooks.current_tenant() IS NULL);
CREATE POLICY admin_all_tenants ON hooks.events TO hooks_admin
    USING (hooks.current_tenant() IS NULL) WITH CHECK (hooks.current_tenant() IS NULL);
CREATE POLICY admin_all_tenants ON hooks.outbox TO hooks_admin
    USING (hooks.current_tenant() IS NULL) WITH CHECK (hooks.current_tenant() IS NULL);
CREATE POLICY admin_all_tenants ON hooks.queue TO hooks_admin
    USING (hooks.current_tenant() IS NULL) WITH CHECK (hooks.current_tenant() IS NULL);
CREATE POLICY admin_all_tenants ON hooks.outcomes TO hooks_admin
    USING (hooks.current_tenant() IS NULL) WITH CHECK (hooks.current_tenant() IS NULL);
CREATE POLICY admin_all_tenants ON hooks.attempts TO hooks_admin
    USING (hooks.current_tenant() IS NULL) WITH CHECK (hooks.current_tenant() IS NULL);
CREATE POLICY admin_all_tenants ON hooks.webhook_patterns TO hooks_admin
    USING (hooks.current_tenant() IS NULL) WITH CHECK (hooks.current_tenant() IS NULL);
