-- beema_hooks security: three roles, privileges, and tenant isolation with row-level security.
-- Runs last. Roles are cluster-wide: they are created when missing and survive DROP EXTENSION.
--
--   hooks_publisher  may call hooks.publish, nothing else
--   hooks_sender     may call hooks.claim / complete / release, and cannot read any table
--                    (so never a secret)
--   hooks_admin      may read and manage everything of the tenants it acts for
--
-- Which tenants a role acts for is hooks.tenant_grants (hooks.grant_tenant, revoke_tenant),
-- which no role changes for itself; the session setting hooks.tenant_id narrows it to one
-- tenant, never widens it. Every role sees and writes, in webhooks, events, deliveries (outbox,
-- queue, outcomes) and attempts, only the rows of the tenants it acts for, given table
-- privileges at all; hooks.publish publishes only for them (hooks._tenant_scope).

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

-- The session's tenant setting, or NULL when none is set (as in 0.2.0; which tenants a role
-- acts for is hooks._tenant_scope). Inlined where it is used, so it takes the caller's
-- search_path: pg_catalog is named, or a current_setting() of the caller's schemas, searched
-- before pg_catalog, would answer instead (pg_regress security).
CREATE FUNCTION hooks.current_tenant() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT nullif(pg_catalog.current_setting('hooks.tenant_id', true), '')
$$;

-- Functions that cross tenants or read secrets run as the extension's owner, with a pinned
-- search_path; only the roles meant to call them may.
ALTER FUNCTION hooks.publish(jsonb) SECURITY DEFINER SET search_path = pg_catalog, hooks;
ALTER FUNCTION hooks.grant_tenant(name, text) SECURITY DEFINER SET search_path = pg_catalog, hooks;
ALTER FUNCTION hooks.revoke_tenant(name, text) SECURITY DEFINER SET search_path = pg_catalog, hooks;
ALTER FUNCTION hooks._session_scope() SECURITY DEFINER SET search_path = pg_catalog, hooks;
REVOKE EXECUTE ON FUNCTION hooks._publish(jsonb, name), hooks._publish_many(jsonb[], name),
    hooks._session_scope() FROM PUBLIC;
ALTER FUNCTION hooks.claim(text, integer, interval, boolean, bigint) SECURITY DEFINER SET search_path = pg_catalog, hooks;
ALTER FUNCTION hooks.complete(text, jsonb) SECURITY DEFINER SET search_path = pg_catalog, hooks;
ALTER FUNCTION hooks.release(text, jsonb) SECURITY DEFINER SET search_path = pg_catalog, hooks;
ALTER FUNCTION hooks.sender_metrics() SECURITY DEFINER SET search_path = pg_catalog, hooks;
REVOKE EXECUTE ON FUNCTION hooks.sender_metrics() FROM PUBLIC;
-- (only the senders: it reads every tenant; admins have hooks.webhook_backlog, under row-level security)
GRANT EXECUTE ON FUNCTION hooks.sender_metrics() TO hooks_sender;

REVOKE EXECUTE ON FUNCTION hooks.publish(jsonb), hooks.claim(text, integer, interval, boolean, bigint),
    hooks.complete(text, jsonb), hooks.release(text, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION hooks.create_webhook(text, text, text, text, text, jsonb, jsonb, integer, text, jsonb, jsonpath, text[], text, text, text),
    hooks.update_webhook(bigint, jsonb), hooks.enable_webhook(bigint), hooks.disable_webhook(bigint, text, boolean),
    hooks.delete_webhook(bigint), hooks.rotate_secret(bigint, text, interval),
    hooks.rotate_signing_key(bigint, text, interval),
    hooks.retry_delivery(bigint), hooks.skip_delivery(bigint, text), hooks.replay_event(bigint, bigint),
    hooks.redeliver_failed(bigint, timestamptz), hooks.test_webhook(bigint), hooks.metrics()
    FROM PUBLIC;
REVOKE EXECUTE ON PROCEDURE hooks.purge(interval, integer, boolean, bigint) FROM PUBLIC;

GRANT USAGE ON SCHEMA hooks TO hooks_publisher, hooks_sender, hooks_admin;
GRANT EXECUTE ON FUNCTION hooks.publish(jsonb) TO hooks_publisher, hooks_admin;
GRANT EXECUTE ON FUNCTION hooks.claim(text, integer, interval, boolean, bigint), hooks.complete(text, jsonb),
    hooks.release(text, jsonb) TO hooks_sender;
GRANT EXECUTE ON FUNCTION hooks.create_webhook(text, text, text, text, text, jsonb, jsonb, integer, text, jsonb, jsonpath, text[], text, text, text),
    hooks.update_webhook(bigint, jsonb), hooks.enable_webhook(bigint), hooks.disable_webhook(bigint, text, boolean),
    hooks.delete_webhook(bigint), hooks.rotate_secret(bigint, text, interval),
    hooks.rotate_signing_key(bigint, text, interval),
    hooks.retry_delivery(bigint), hooks.skip_delivery(bigint, text), hooks.replay_event(bigint, bigint),
    hooks.redeliver_failed(bigint, timestamptz), hooks.test_webhook(bigint), hooks.metrics()
    TO hooks_admin;
GRANT EXECUTE ON PROCEDURE hooks.purge(interval, integer, boolean, bigint) TO hooks_admin;
REVOKE EXECUTE ON FUNCTION hooks.grant_tenant(name, text), hooks.revoke_tenant(name, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hooks.grant_tenant(name, text), hooks.revoke_tenant(name, text),
    hooks._session_scope() TO hooks_admin;
-- tenant grants: every role reads the grants of the roles it is a member of (hooks._tenant_scope
-- reads them as the caller), admins those of the tenants they act for; hooks.grant_tenant and
-- hooks.revoke_tenant write them, as the extension's owner
GRANT SELECT ON hooks.tenant_grants TO PUBLIC;
ALTER TABLE hooks.tenant_grants ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_grants ON hooks.tenant_grants FOR SELECT
    USING (EXISTS (SELECT 1 FROM pg_catalog.pg_roles ro
                    WHERE ro.rolname = role_name AND pg_catalog.pg_has_role(current_user, ro.oid, 'MEMBER')));
CREATE POLICY admins_read ON hooks.tenant_grants FOR SELECT TO hooks_admin
    USING (CASE WHEN (SELECT hooks._session_scope()) IS NULL THEN true
                ELSE tenant_id = ANY ((SELECT hooks._session_scope())::text[]) END);
GRANT SELECT, INSERT, UPDATE, DELETE ON hooks.webhooks, hooks.events, hooks.outbox, hooks.queue,
    hooks.outcomes, hooks.attempt_log, hooks.senders, hooks.order_keys, hooks.order_pending TO hooks_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON hooks.deliveries TO hooks_admin;
GRANT SELECT, INSERT ON hooks.attempts TO hooks_admin;
GRANT SELECT ON hooks.delivery_log, hooks.dead_letters, hooks.webhook_health, hooks.blocked_keys TO hooks_admin;
GRANT SELECT ON hooks.webhook_backlog TO hooks_admin;
-- settings: every admin reads them, only an all-tenant admin (and the owner) changes them
GRANT SELECT, INSERT, UPDATE, DELETE ON hooks.settings TO hooks_admin;
ALTER TABLE hooks.settings ENABLE ROW LEVEL SECURITY;
CREATE POLICY admins_read ON hooks.settings FOR SELECT TO hooks_admin USING (true);
CREATE POLICY all_tenant_admins_write ON hooks.settings TO hooks_admin
    USING ((SELECT hooks._tenant_scope(current_user)) IS NULL)
    WITH CHECK ((SELECT hooks._tenant_scope(current_user)) IS NULL);
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
ALTER VIEW hooks.blocked_keys SET (security_invoker = true);

-- Tenant isolation: a row is visible and writable when its tenant is one the role acts for
-- (hooks._tenant_scope, asked once per query; NULL: every tenant).
ALTER TABLE hooks.webhooks ENABLE ROW LEVEL SECURITY;
ALTER TABLE hooks.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE hooks.outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE hooks.queue ENABLE ROW LEVEL SECURITY;
ALTER TABLE hooks.outcomes ENABLE ROW LEVEL SECURITY;
ALTER TABLE hooks.attempt_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE hooks.webhook_patterns ENABLE ROW LEVEL SECURITY;
ALTER TABLE hooks.order_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE hooks.order_pending ENABLE ROW LEVEL SECURITY;

CREATE POLICY tenant_scope ON hooks.webhooks
    USING (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])))
    WITH CHECK (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])));
CREATE POLICY tenant_scope ON hooks.events
    USING (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])))
    WITH CHECK (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])));
CREATE POLICY tenant_scope ON hooks.outbox
    USING (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])))
    WITH CHECK (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])));
CREATE POLICY tenant_scope ON hooks.queue
    USING (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])))
    WITH CHECK (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])));
CREATE POLICY tenant_scope ON hooks.outcomes
    USING (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])))
    WITH CHECK (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])));
CREATE POLICY tenant_scope ON hooks.attempt_log
    USING (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])))
    WITH CHECK (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])));
CREATE POLICY tenant_scope ON hooks.webhook_patterns
    USING (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])))
    WITH CHECK (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])));
CREATE POLICY tenant_scope ON hooks.order_keys
    USING (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])))
    WITH CHECK (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])));
CREATE POLICY tenant_scope ON hooks.order_pending
    USING (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])))
    WITH CHECK (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])));
