-- Roles and tenant isolation: tenant A can neither read nor change tenant B's rows; the
-- publisher can only publish; the sender can claim and complete but never read a secret.
-- Which tenants a role acts for is hooks.tenant_grants, which no role changes for itself; the
-- session setting hooks.tenant_id only narrows it.
BEGIN;
INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, secret) VALUES
    ('A', 'a-all', '*', 'https://a.example/', 'secret-of-a-1'),
    ('B', 'b-all', '*', 'https://b.example/', 'secret-of-b-1');
SELECT hooks.publish('{"event": "x/y", "id": "a1", "data": {"tenantId": "A"}}') IS NOT NULL AS a,
       hooks.publish('{"event": "x/y", "id": "b1", "data": {"tenantId": "B"}}') IS NOT NULL AS b;
-- one of B's deliveries has failed (for retry_delivery and redeliver_failed to find)
SELECT hooks.publish('{"event": "x/y", "id": "b2", "data": {"tenantId": "B"}}') IS NOT NULL AS b2;
UPDATE hooks.deliveries SET status = 'failed' WHERE tenant_id = 'B' AND event_id = (SELECT max(event_id) FROM hooks.events);
SELECT w.webhook_id AS b_webhook, e.event_id AS b_event, o.delivery_id AS b_delivery
  FROM hooks.webhooks w JOIN hooks.outbox o USING (webhook_id) JOIN hooks.events e USING (event_id)
 WHERE w.tenant_id = 'B' AND e.event_key = 'b2' \gset
-- and B orders by key: a key's head, and one delivery waiting behind it
UPDATE hooks.webhooks SET ordering_key = 'data.k' WHERE tenant_id = 'B';
SELECT hooks.publish('{"event": "x/y", "id": "b3", "data": {"tenantId": "B", "k": "K"}}') IS NOT NULL AS b3,
       hooks.publish('{"event": "x/y", "id": "b4", "data": {"tenantId": "B", "k": "K"}}') IS NOT NULL AS b4;
SELECT o.delivery_id AS b_behind FROM hooks.outbox o JOIN hooks.events e USING (event_id)
 WHERE e.event_key = 'b4' \gset
CREATE FUNCTION pg_temp.b_rows() RETURNS text LANGUAGE sql AS $$
    SELECT md5(concat((SELECT string_agg(w::text, ',' ORDER BY webhook_id) FROM hooks.webhooks w WHERE tenant_id = 'B'),
                      (SELECT string_agg(e::text, ',' ORDER BY event_id) FROM hooks.events e WHERE tenant_id = 'B'),
                      (SELECT string_agg(d::text, ',' ORDER BY delivery_id) FROM hooks.deliveries d WHERE tenant_id = 'B')))
$$;
SELECT pg_temp.b_rows() AS b_before \gset
-- what a query returns, or its SQLSTATE
CREATE FUNCTION pg_temp.outcome(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    r text;
BEGIN
    EXECUTE q INTO r;
    RETURN coalesce(r, 'NULL');
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END
$$;
CREATE ROLE regress_hooks_app IN ROLE hooks_admin;
CREATE ROLE regress_publisher_a IN ROLE hooks_publisher;

-- before any grant, an admin acts for no tenant: it sees nothing and grants nothing
SET LOCAL ROLE regress_hooks_app;
SELECT count(*) AS webhooks_seen_without_a_grant FROM hooks.webhooks;
SELECT left(sqlstate_of($$SELECT hooks.grant_tenant('regress_hooks_app', 'A')$$), 5) AS grants_itself;
RESET ROLE;
SELECT hooks.grant_tenant('regress_hooks_app', 'A') AS granted, hooks.grant_tenant('regress_hooks_app', 'A') AS again;

-- the admin of tenant A: A's rows, whatever it sets hooks.tenant_id to
SET LOCAL ROLE regress_hooks_app;
SELECT tenant_id, webhook_name FROM hooks.webhooks ORDER BY 1;
SET LOCAL hooks.tenant_id = 'B';
SELECT (SELECT count(*) FROM hooks.webhooks) AS webhooks_of_b_by_setting,
       (SELECT count(*) FROM hooks.events) AS events_of_b_by_setting;
SET LOCAL hooks.tenant_id = 'A';
SELECT tenant_id, event_key FROM hooks.events ORDER BY 1;
SELECT tenant_id, webhook_name FROM hooks.delivery_log ORDER BY 1;
WITH u AS (UPDATE hooks.webhooks SET url = 'https://evil.example/' WHERE tenant_id = 'B' RETURNING 1),
     d AS (DELETE FROM hooks.deliveries WHERE tenant_id = 'B' RETURNING 1)
SELECT (SELECT count(*) FROM u) AS updated_b, (SELECT count(*) FROM d) AS deleted_b;
SELECT left(sqlstate_of($$INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url) VALUES ('B', 'sneaky', '*', 'https://evil.example/')$$), 5) AS insert_for_b,
       left(sqlstate_of($$UPDATE hooks.webhooks SET tenant_id = 'B' WHERE tenant_id = 'A'$$), 5) AS move_to_b,
       left(sqlstate_of($$SELECT hooks.publish('{"event": "x/y", "data": {"tenantId": "B"}}')$$), 5) AS publish_for_b;
-- every function that manages B's webhooks, events and deliveries, with and without the setting
RESET hooks.tenant_id;
SELECT regexp_replace(f, '[0-9]+', 'N', 'g') AS call_on_b, pg_temp.outcome(f) AS result
  FROM unnest(ARRAY[format('SELECT hooks.retry_delivery(%s)', :b_delivery),
                    format('SELECT hooks.skip_delivery(%s)', :b_behind),
                    format('SELECT hooks.replay_event(%s)', :b_event),
                    format('SELECT hooks.redeliver_failed(%s, now() - interval ''1 day'')', :b_webhook),
                    format('SELECT hooks.rotate_secret(%s)', :b_webhook),
                    format('SELECT hooks.test_webhook(%s)', :b_webhook),
                    format('SELECT hooks.update_webhook(%s, ''{"url": "https://evil.example/"}'')', :b_webhook),
                    format('SELECT hooks.disable_webhook(%s)', :b_webhook),
                    format('SELECT hooks.enable_webhook(%s)', :b_webhook),
                    format('SELECT hooks.delete_webhook(%s)', :b_webhook),
                    $$SELECT hooks.create_webhook('B', 'sneaky', '*', 'https://evil.example/')$$,
                    $$SELECT count(*) FROM hooks.match('x/y', 'B')$$,
                    $$SELECT count(*) FROM hooks.match('{"event": "x/y", "data": {"tenantId": "B"}}'::jsonb)$$,
                    $$SELECT count(*) FROM hooks.dead_letters WHERE tenant_id = 'B'$$,
                    $$SELECT count(*) FROM hooks.attempts WHERE tenant_id = 'B'$$,
                    $$SELECT count(*) FROM hooks.order_keys WHERE tenant_id = 'B'$$,
                    $$SELECT count(*) FROM hooks.blocked_keys WHERE tenant_id = 'B'$$]) AS f;
-- grants: A's admin grants A, not B and not every tenant, and sees the grants of A only
SELECT hooks.grant_tenant('regress_publisher_a', 'A') AS grants_a;
SELECT left(sqlstate_of($$SELECT hooks.grant_tenant('regress_publisher_a', 'B')$$), 5) AS grants_b,
       left(sqlstate_of($$SELECT hooks.grant_tenant('regress_hooks_app')$$), 5) AS grants_every_tenant,
       left(sqlstate_of($$SELECT hooks.grant_tenant('no_such_role', 'A')$$), 5) AS grants_no_role,
       left(sqlstate_of($$INSERT INTO hooks.tenant_grants (role_name, tenant_id, granted_by) VALUES ('regress_hooks_app', 'B', 'x')$$), 5) AS writes_the_table;
SELECT role_name, tenant_id, granted_by FROM hooks.tenant_grants ORDER BY 1, 2;
RESET ROLE;
SELECT pg_temp.b_rows() = :'b_before' AS b_unchanged,
       (SELECT count(*) FROM hooks.order_keys WHERE tenant_id = 'B') AS b_order_keys,
       (SELECT count(*) FROM hooks.dead_letters WHERE tenant_id = 'B') AS b_dead_letters,
       (SELECT count(*) FROM hooks.match('x/y', 'B')) AS b_matches;

-- the publisher of A: publishes for A, never for B, whatever it sets (the setting narrows only)
SET LOCAL ROLE regress_publisher_a;
SELECT hooks.publish('{"event": "x/y", "id": "a2", "data": {"tenantId": "A"}}') IS NOT NULL AS published;
SELECT sqlstate_of($$SELECT hooks.publish('{"event": "x/y", "id": "k1", "data": {"tenantId": "B"}}')$$) AS publish_for_b;
SET LOCAL hooks.tenant_id = 'B';
SELECT sqlstate_of($$SELECT hooks.publish('{"event": "x/y", "id": "k1", "data": {"tenantId": "B"}}')$$) AS publish_for_b_by_setting,
       sqlstate_of($$SELECT hooks.publish('{"event": "x/y", "id": "a3", "data": {"tenantId": "A"}}')$$) AS publish_for_a_narrowed_to_b;
RESET hooks.tenant_id;
SELECT left(sqlstate_of($$SELECT count(*) FROM hooks.events$$), 5) AS read_events,
       left(sqlstate_of($$SELECT count(*) FROM hooks.match('x/y', 'A')$$), 5) AS match,
       left(sqlstate_of($$SELECT * FROM hooks.claim('p', 1)$$), 5) AS claim,
       left(sqlstate_of($$SELECT hooks.disable_webhook(1)$$), 5) AS manage,
       left(sqlstate_of($$SELECT hooks.grant_tenant('regress_publisher_a', 'B')$$), 5) AS grants_itself,
       left(sqlstate_of($$SELECT hooks._publish('{"event": "x/y", "data": {"tenantId": "B"}}', 'postgres')$$), 5) AS publish_as_another_role;
SELECT role_name, tenant_id FROM hooks.tenant_grants ORDER BY 1, 2;
RESET ROLE;
SELECT count(*) AS events_of_b_by_a FROM hooks.events WHERE tenant_id = 'B' AND event_key = 'k1';

-- the sender: claim and complete, but no table, so no secret
SET LOCAL ROLE hooks_sender;
SELECT left(sqlstate_of($$SELECT secret FROM hooks.webhooks$$), 5) AS read_secret,
       left(sqlstate_of($$SELECT * FROM hooks.delivery_log$$), 5) AS read_log,
       left(sqlstate_of($$SELECT hooks.publish('{"event": "x/y", "data": {"tenantId": "A"}}')$$), 5) AS publish;
SELECT count(*) AS claimed, bool_and(headers ? 'X-Beema-Signature') AS signed FROM hooks.claim('s1', 10);
RESET ROLE;
SELECT (SELECT count(*) FROM hooks.deliveries WHERE status = 'in_flight') AS in_flight,
       (SELECT url FROM hooks.webhooks WHERE tenant_id = 'B') AS b_url;

-- a grant of every tenant: the admin sees both, until it is revoked
SELECT hooks.grant_tenant('regress_hooks_app') AS every_tenant;
SET LOCAL ROLE regress_hooks_app;
SELECT tenant_id, count(*) AS webhooks FROM hooks.webhooks GROUP BY 1 ORDER BY 1;
SELECT hooks.revoke_tenant('regress_publisher_a', 'A') AS revoked, hooks.revoke_tenant('regress_publisher_a', 'A') AS again;
RESET ROLE;
SELECT hooks.revoke_tenant('regress_hooks_app') AS revoked_every_tenant;
SET LOCAL ROLE regress_hooks_app;
SELECT tenant_id, count(*) AS webhooks FROM hooks.webhooks GROUP BY 1 ORDER BY 1;
RESET ROLE;
ROLLBACK;

-- hooks.current_tenant() (every policy's test) cannot be redirected through search_path: a
-- current_setting() planted in a schema searched before pg_catalog is not the one it calls.
BEGIN;
INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, secret) VALUES
    ('A', 'a-all', '*', 'https://a.example/', 'secret-of-a-1'),
    ('B', 'b-all', '*', 'https://b.example/', 'secret-of-b-1');
CREATE SCHEMA regress_planted;
CREATE FUNCTION regress_planted.current_setting(text, boolean) RETURNS text
LANGUAGE sql AS $$ SELECT 'B'::text $$;
GRANT USAGE ON SCHEMA regress_planted TO PUBLIC;
CREATE ROLE regress_hooks_scoped IN ROLE hooks_admin;
SELECT hooks.grant_tenant('regress_hooks_scoped', 'A') AS granted;
SET LOCAL ROLE regress_hooks_scoped;
SET LOCAL search_path = regress_planted, pg_catalog, public;
SET LOCAL hooks.tenant_id = 'A';
SELECT current_setting('x', true) AS planted_answer;
SELECT tenant_id, webhook_name FROM hooks.webhooks ORDER BY 1;
RESET ROLE;
ROLLBACK;

-- Settings for every session (hooks.settings): only an all-tenant admin writes them (a
-- tenant-scoped admin reads them and changes nothing), a row beats what a session SETs, values
-- are bounded (23514) and only the known settings may be set; publishers cannot read them.
BEGIN;
CREATE ROLE regress_settings_admin IN ROLE hooks_admin;
CREATE ROLE regress_settings_publisher IN ROLE hooks_publisher;
-- (an admin of every tenant, narrowed to one tenant by the setting, acts for that tenant only)
SELECT hooks.grant_tenant('regress_settings_admin') AS granted;
SET LOCAL ROLE regress_settings_admin;
SET LOCAL hooks.tenant_id = 'acme';
SELECT left(sqlstate_of($$INSERT INTO hooks.settings (name, value) VALUES ('hooks.breaker_failure_threshold', 2)$$), 5) AS scoped_admin_insert;
RESET hooks.tenant_id;
INSERT INTO hooks.settings (name, value) VALUES ('hooks.breaker_failure_threshold', 2);
SET LOCAL hooks.tenant_id = 'acme';
UPDATE hooks.settings SET value = 9;
DELETE FROM hooks.settings;
SELECT name, value FROM hooks.settings ORDER BY name;
RESET hooks.tenant_id;
SET LOCAL hooks.breaker_failure_threshold = 50;
SET LOCAL hooks.breaker_cooldown_ms = 1000;
SELECT hooks._setting_int('hooks.breaker_failure_threshold', 5) AS threshold_from_the_row,
       hooks._setting_int('hooks.breaker_cooldown_ms', 30000) AS cooldown_from_the_session,
       hooks._setting_int('hooks.breaker_max_cooldown_ms', 3600000) AS max_cooldown_default;
SELECT left(sqlstate_of($$INSERT INTO hooks.settings (name, value) VALUES ('hooks.max_in_flight_per_webhook', -1)$$), 5) AS out_of_range,
       left(sqlstate_of($$INSERT INTO hooks.settings (name, value) VALUES ('hooks.tenant_id', 1)$$), 5) AS unknown_setting;
-- the payload limit (1 MiB unless an admin's row says otherwise): a session cannot raise it,
-- an admin's row can, and a session can still lower it for itself
SET LOCAL hooks.max_payload_bytes = 67108864;
SELECT left(sqlstate_of(format($q$SELECT hooks.publish('{"event": "big/x", "data": {"tenantId": "acme", "x": "%s"}}')$q$,
                               repeat('y', 2000000))), 5) AS session_raises_the_limit;
INSERT INTO hooks.settings (name, value) VALUES ('hooks.max_payload_bytes', 4194304);
SELECT left(sqlstate_of(format($q$SELECT hooks.publish('{"event": "big/x", "data": {"tenantId": "acme", "x": "%s"}}')$q$,
                               repeat('y', 2000000))), 5) AS admin_raises_the_limit;
SET LOCAL hooks.max_payload_bytes = 2048;
SELECT left(sqlstate_of(format($q$SELECT hooks.publish('{"event": "big/x", "data": {"tenantId": "acme", "x": "%s"}}')$q$,
                               repeat('y', 3000))), 5) AS session_lowers_the_limit;
SET LOCAL ROLE regress_settings_publisher;
SELECT left(sqlstate_of($$SELECT count(*) FROM hooks.settings$$), 5) AS publisher_reads;
RESET ROLE;
ROLLBACK;

-- The tenant is part of the keys that tie a delivery to its webhook and its event: a delivery
-- pairing tenant A's webhook with tenant B's event cannot be written, whatever role writes it
-- (here the superuser, past row-level security), and a queue row naming another webhook or
-- tenant than its outbox row is never claimed.
BEGIN;
INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, secret) VALUES
    ('A', 'a-all', '*', 'https://a.example/', 'secret-of-a-1'),
    ('B', 'b-all', '*', 'https://b.example/', 'secret-of-b-1');
INSERT INTO hooks.events (tenant_id, event_type, event_key, body) VALUES
    ('B', 'x/y', 'b-secret-event', '{"secret": "of B"}');
SELECT left(sqlstate_of($$INSERT INTO hooks.outbox (webhook_id, event_id, tenant_id, event_type)
    SELECT w.webhook_id, e.event_id, 'A', 'x/y' FROM hooks.webhooks w, hooks.events e
     WHERE w.tenant_id = 'A' AND e.tenant_id = 'B'$$), 5) AS a_webhook_with_b_event,
       left(sqlstate_of($$INSERT INTO hooks.outbox (webhook_id, event_id, tenant_id, event_type)
    SELECT w.webhook_id, e.event_id, 'B', 'x/y' FROM hooks.webhooks w, hooks.events e
     WHERE w.tenant_id = 'A' AND e.tenant_id = 'B'$$), 5) AS claimed_as_b;
-- two deliveries of B's own; the queue row of the first is pointed at A's webhook
SELECT count(hooks.publish(format('{"event": "x/z", "id": "z%s", "data": {"tenantId": "B"}}', i)::jsonb))
  FROM generate_series(1, 2) i;
UPDATE hooks.queue SET webhook_id = (SELECT webhook_id FROM hooks.webhooks WHERE webhook_name = 'a-all'), tenant_id = 'A'
 WHERE delivery_id = (SELECT min(delivery_id) FROM hooks.outbox WHERE tenant_id = 'B');
SELECT w.webhook_name FROM hooks.claim('regress-sender', 10) c JOIN hooks.webhooks w USING (webhook_id);
ROLLBACK;
