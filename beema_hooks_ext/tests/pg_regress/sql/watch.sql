-- Webhooks on table changes: hooks.watch_table publishes each insert, update and delete of a
-- table's rows, in the changing transaction, with the supabase envelope's fields in data.
CREATE TABLE public.claims (id int PRIMARY KEY, tenant text NOT NULL, status text, secret_note text);
SELECT count(*) FROM hooks.create_webhook('acme', 'claims', 'claims/*', 'https://claims.example/', envelope => 'supabase');
SELECT table_name, operations, event_type, tenant_column
  FROM hooks.watch_table('public.claims', tenant_column => 'tenant', exclude_columns => ARRAY['secret_note']);
SELECT table_name, operations, event_type, tenant, columns, exclude_columns, condition, watched_by FROM hooks.watched;
CREATE FUNCTION pg_temp.events() RETURNS TABLE (event_type text, data jsonb) LANGUAGE sql AS $$
    SELECT e.event_type, e.body::jsonb->'data' FROM hooks.events e WHERE e.tenant_id = 'acme' ORDER BY e.event_id
$$;
-- one statement of three rows: three events, each queued for the webhook
INSERT INTO public.claims VALUES (1, 'acme', 'new', 'x'), (2, 'acme', 'new', 'y'), (3, 'acme', 'new', 'z');
UPDATE public.claims SET status = 'open' WHERE id = 1;
DELETE FROM public.claims WHERE id = 3;
SELECT * FROM pg_temp.events();
SELECT count(*) AS deliveries FROM hooks.outbox WHERE tenant_id = 'acme';
-- the body the receiver gets (supabase envelope), and the excluded column is nowhere
SELECT c.body FROM hooks.claim('watch-sender', 1) c;
SELECT count(*) AS with_secret_note FROM hooks.events WHERE body LIKE '%secret_note%';
-- a rolled-back statement, and a rolled-back savepoint, publish nothing
BEGIN;
INSERT INTO public.claims VALUES (10, 'acme', 'new', NULL);
ROLLBACK;
BEGIN;
SAVEPOINT s;
UPDATE public.claims SET status = 'closed';
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT count(*) AS events_after_rollbacks FROM hooks.events WHERE tenant_id = 'acme';
-- a condition on OLD and NEW: only status changes are published
SELECT hooks.unwatch_table('public.claims') AS unwatched;
SELECT count(*) AS triggers_left FROM pg_trigger WHERE tgrelid = 'public.claims'::regclass AND NOT tgisinternal;
SELECT event_type, operations, condition
  FROM hooks.watch_table('public.claims', tenant_id => 'acme', event_type => 'claim.{op}',
                         operations => ARRAY['update', 'insert'], columns => ARRAY['id', 'status'],
                         condition => 'OLD.status IS DISTINCT FROM NEW.status');
UPDATE public.claims SET secret_note = 'changed';          -- no status change: nothing
UPDATE public.claims SET status = 'closed' WHERE id = 2;   -- published
INSERT INTO public.claims VALUES (4, 'other', 'new', 'w');  -- insert: OLD is all NULL, status changed
DELETE FROM public.claims WHERE id = 4;                     -- deletes not watched
SELECT * FROM pg_temp.events() OFFSET 5;
-- errors
CREATE TABLE public.unwatched (id int, tenant text);
SELECT sqlstate_of(q) FROM (VALUES
    ($$SELECT hooks.watch_table('public.claims', tenant_id => 'acme')$$),
    ($$SELECT hooks.watch_table('public.unwatched', tenant_column => 'nope')$$),
    ($$SELECT hooks.watch_table('public.unwatched', columns => ARRAY['id', 'nope'], tenant_id => 'acme')$$),
    ($$SELECT hooks.watch_table('public.unwatched', tenant_column => 'tenant', tenant_id => 'acme')$$),
    ($$SELECT hooks.watch_table('public.unwatched', tenant_id => 'acme', operations => ARRAY['truncate'])$$),
    ($$SELECT hooks.watch_table('public.unwatched', tenant_id => 'acme', event_type => 'a/*/{op}')$$),
    ($$SELECT hooks.watch_table('public.unwatched', tenant_id => 'acme', event_type => '{table}//{op}')$$),
    ($$SELECT hooks.watch_table('public.unwatched', tenant_id => 'acme', condition => 'NEW.nope = 1')$$)
) AS t(q);
SELECT count(*) AS watches_of_unwatched FROM hooks.watched_tables WHERE table_name = 'public.unwatched'::regclass;
-- a dropped watched table takes its triggers; its watch goes at the next watch_table or purge
SELECT count(*) FROM hooks.watch_table('public.unwatched', tenant_id => 'acme');
DROP TABLE public.unwatched;
CALL hooks.purge(commit_each_batch => false);
SELECT count(*) AS watches_left FROM hooks.watched_tables;
SELECT hooks.unwatch_table('public.claims') AS unwatched, hooks.unwatch_table('public.claims') AS again;
DROP TABLE public.claims;
DELETE FROM hooks.webhooks WHERE tenant_id = 'acme';
DELETE FROM hooks.events WHERE tenant_id IN ('acme', 'other');

-- A table owner who is not a superuser watches its table; an application role that may only
-- write the table (no publish grant) publishes through the watch, with the owner's rights:
-- for the tenants the owner is granted only.
CREATE ROLE regress_watch_owner IN ROLE hooks_publisher;
CREATE ROLE regress_watch_app;
CREATE SCHEMA regress_app AUTHORIZATION regress_watch_owner;
GRANT USAGE ON SCHEMA regress_app TO regress_watch_app;
SELECT count(*) FROM hooks.create_webhook('acme', 'orders', 'orders/*', 'https://orders.example/');
SET ROLE regress_watch_owner;
CREATE TABLE regress_app.orders (id int PRIMARY KEY, amount numeric);
GRANT INSERT, UPDATE, DELETE ON regress_app.orders TO regress_watch_app;
SELECT left(sqlstate_of($$SELECT hooks.watch_table('regress_app.orders', tenant_id => 'acme')$$), 5) AS watch_before_the_grant;
RESET ROLE;
SELECT hooks.grant_tenant('regress_watch_owner', 'acme');
SET ROLE regress_watch_owner;
SELECT watched_by FROM hooks.watch_table('regress_app.orders', tenant_id => 'acme');
RESET ROLE;
SET ROLE regress_watch_app;
SELECT left(sqlstate_of($$SELECT hooks.publish('{"event": "x/y", "data": {"tenantId": "acme"}}')$$), 5) AS app_may_not_publish;
INSERT INTO regress_app.orders VALUES (1, 10.50), (2, 99);
RESET ROLE;
SELECT event_type, body::jsonb->'data'->'record' AS record FROM hooks.events WHERE event_type LIKE 'orders/%' ORDER BY event_id;
-- a tenant taken from a column: rows of the owner's tenant publish, a row of another tenant is
-- refused (42501) in the statement that writes it, whether inserted or updated to it
SET ROLE regress_watch_owner;
CREATE TABLE regress_app.tickets (id int PRIMARY KEY, tenant text NOT NULL);
GRANT INSERT, UPDATE ON regress_app.tickets TO regress_watch_app;
SELECT watched_by FROM hooks.watch_table('regress_app.tickets', tenant_column => 'tenant');
RESET ROLE;
SET ROLE regress_watch_app;
INSERT INTO regress_app.tickets VALUES (1, 'acme');
SELECT left(sqlstate_of($$INSERT INTO regress_app.tickets VALUES (2, 'other')$$), 5) AS insert_for_another_tenant,
       left(sqlstate_of($$UPDATE regress_app.tickets SET tenant = 'other' WHERE id = 1$$), 5) AS update_to_another_tenant;
RESET ROLE;
SELECT event_type, body::jsonb->'data'->>'tenantId' AS tenant FROM hooks.events WHERE event_type LIKE 'tickets/%' ORDER BY event_id;
SELECT hooks.unwatch_table('regress_app.tickets');
-- a trigger another publisher makes by hand on its own table, naming that watch, publishes nothing:
-- a watch publishes only the changes of its own table
CREATE ROLE regress_watch_other IN ROLE hooks_publisher;
CREATE TABLE public.regress_other (id int PRIMARY KEY, amount numeric);
ALTER TABLE public.regress_other OWNER TO regress_watch_other;
SELECT watch_id AS orders_watch FROM hooks.watched_tables WHERE table_name = 'regress_app.orders'::regclass \gset
SET ROLE regress_watch_other;
CREATE TRIGGER sneaky AFTER INSERT ON public.regress_other REFERENCING NEW TABLE AS hooks_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION hooks._watch_statement(:'orders_watch');
INSERT INTO public.regress_other VALUES (7, 700);
RESET ROLE;
SELECT count(*) AS published_by_the_sneaky_trigger FROM hooks.events WHERE body::jsonb #>> '{data,record,amount}' = '700';
DROP TABLE public.regress_other;
DROP ROLE regress_watch_other;
-- the owner loses the right to publish: changes fail (42501) rather than go unpublished
REVOKE hooks_publisher FROM regress_watch_owner;
SET ROLE regress_watch_app;
SELECT left(sqlstate_of($$INSERT INTO regress_app.orders VALUES (3, 1)$$), 5) AS insert_after_revoke;
RESET ROLE;
SELECT hooks.unwatch_table('regress_app.orders');
DROP SCHEMA regress_app CASCADE;
DROP ROLE regress_watch_app;
SELECT hooks.revoke_tenant('regress_watch_owner', 'acme');
DROP ROLE regress_watch_owner;
DELETE FROM hooks.webhooks WHERE tenant_id = 'acme';
DELETE FROM hooks.events WHERE tenant_id = 'acme';
