-- Matching among 10,000 webhooks of 100 tenants, and finding due rows among 200,000 finished
-- deliveries, stay index lookups.
BEGIN;
INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, secret, event_types)
SELECT 't' || (i % 100), 'w' || i,
       CASE WHEN i % 10 = 0 THEN 'claim/*' ELSE 'type' || (i % 997) || '/done' END,
       'https://receiver.example/' || i, 'secret-' || i,
       CASE WHEN i % 50 = 0 THEN ARRAY['more' || (i % 13) || '/*', 'more/x' || i] END
  FROM generate_series(1, 10000) i;
-- (20 events per tenant, each delivered to every webhook of its tenant: 200,000 deliveries)
INSERT INTO hooks.events (tenant_id, event_type, event_key, body)
SELECT 't' || t, 'x/y', 'k' || i, '{}' FROM generate_series(0, 99) t, generate_series(1, 20) i;
WITH o AS (
    INSERT INTO hooks.outbox (webhook_id, event_id, tenant_id, event_type)
    SELECT w.webhook_id, e.event_id, w.tenant_id, 'x/y' FROM hooks.webhooks w JOIN hooks.events e USING (tenant_id)
    RETURNING delivery_id, webhook_id, tenant_id)
INSERT INTO hooks.outcomes (delivery_id, webhook_id, tenant_id, status, attempt_number, updated_at)
SELECT o.delivery_id, o.webhook_id, o.tenant_id, 'success', 1, now() - interval '1 day' FROM o;
ANALYZE hooks.webhooks, hooks.webhook_patterns;
ANALYZE hooks.outbox, hooks.queue, hooks.outcomes;

-- hooks.match is inlined: one probe of each partial index (of hooks.webhooks for event_type,
-- of hooks.webhook_patterns for the further patterns of event_types)
EXPLAIN (COSTS OFF) SELECT webhook_id FROM hooks.match('type5/done', 't5');
SELECT count(*) FROM hooks.match('type5/done', 't5');

-- the due-row scan of hooks.claim (the same predicate and order as in sql/api.sql, which runs
-- it with sequential scans off): the finished deliveries are not in hooks.queue at all
SET LOCAL enable_seqscan = off;
EXPLAIN (COSTS OFF)
SELECT q.delivery_id FROM hooks.queue q
 WHERE q.next_attempt_at <= now()
 ORDER BY q.next_attempt_at LIMIT 10 FOR UPDATE SKIP LOCKED;
ROLLBACK;

-- claim, complete and release plan only index lookups and nested loops, once per session
-- (generic plans), and never JIT-compile:
-- a plan that still scans (the lease token sequence) is priced at 10^10 with sequential scans
-- disabled, far above jit_above_cost, and compiling it cost 19 ms per call (BENCHMARKS.md, COST)
SELECT p.proname, p.proconfig
  FROM pg_proc p
 WHERE p.pronamespace = 'hooks'::regnamespace AND p.proname IN ('claim', 'complete', 'release')
 ORDER BY p.proname;

-- every advisory lock key a function of hooks names is one of hooks._lock_key's (a misspelt
-- name would give NULL: no lock taken, and no error)
SELECT DISTINCT m[1] AS key_name, hooks._lock_key(m[1]) IS NOT NULL AS known
  FROM pg_proc p CROSS JOIN LATERAL regexp_matches(p.prosrc, '_lock_key\(''(\w+)''\)', 'g') AS m
 WHERE p.pronamespace = 'hooks'::regnamespace
 ORDER BY 1;

-- A claim reads the rows it claims, not the whole backlog; a batch of results reads its own
-- rows, not every lease its sender holds. The plans are generic (made at a session's first
-- call, from the statistics of then, here: 20,000 due rows whose due times are not in the
-- table's order, as retries and expired leases leave them, and none in flight), so these count
-- the rows hooks.queue gave to the calls (idx_tup_fetch: rows fetched through its indexes).
CREATE FUNCTION pg_temp.queue_rows_fetched() RETURNS bigint LANGUAGE sql AS $$
    SELECT idx_tup_fetch + coalesce(seq_tup_read, 0) FROM pg_stat_user_tables
     WHERE relid = 'hooks.queue'::regclass
$$;
SET stats_fetch_consistency = none;
SET hooks.max_in_flight_per_webhook = 0;
INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, secret)
VALUES ('backlog', 'backlog', 'backlog/item', 'https://receiver.example/backlog', 'backlog-secret');
INSERT INTO hooks.events (tenant_id, event_type, event_key, body)
SELECT 'backlog', 'backlog/item', 'b' || i, '{"event":"backlog/item"}' FROM generate_series(1, 20000) i;
WITH o AS (
    INSERT INTO hooks.outbox (webhook_id, event_id, tenant_id, event_type)
    SELECT w.webhook_id, e.event_id, 'backlog', 'backlog/item'
      FROM hooks.webhooks w JOIN hooks.events e ON e.tenant_id = w.tenant_id
     WHERE w.tenant_id = 'backlog'
     ORDER BY e.event_id
    RETURNING delivery_id, webhook_id, tenant_id, created_at)
INSERT INTO hooks.queue (delivery_id, webhook_id, tenant_id, status, next_attempt_at)
SELECT o.delivery_id, o.webhook_id, o.tenant_id, 'pending', o.created_at - random() * interval '1 hour' FROM o;
ANALYZE hooks.outbox, hooks.queue, hooks.outcomes, hooks.events;
SELECT pg_stat_force_next_flush();
SELECT pg_temp.queue_rows_fetched() AS before \gset
SELECT count(*) AS claimed FROM hooks.claim('plans-sender', 10);
SELECT pg_stat_force_next_flush();
SELECT pg_temp.queue_rows_fetched() - :before < 200 AS claim_read_under_200_rows;
-- 1,000 more leases for the same sender, then 10 results that lead to retries
SELECT count(*) AS claimed FROM hooks.claim('plans-sender', 1000);
SELECT jsonb_agg(jsonb_build_object('delivery_id', q.delivery_id, 'attempt_number', q.attempt_number,
                                    'lease_token', q.lease_token, 'status_code', 500,
                                    'error', NULL, 'response_body', 'down', 'duration_ms', 5)) AS results
  FROM (SELECT * FROM hooks.queue WHERE lease_owner = 'plans-sender' ORDER BY delivery_id LIMIT 10) q \gset
SELECT pg_stat_force_next_flush();
SELECT pg_temp.queue_rows_fetched() AS before \gset
SELECT hooks.complete('plans-sender', :'results') AS applied;
SELECT pg_stat_force_next_flush();
SELECT pg_temp.queue_rows_fetched() - :before < 200 AS results_read_under_200_rows;
SELECT status, count(*) FROM hooks.queue WHERE tenant_id = 'backlog' GROUP BY status ORDER BY status;
-- Under an in-flight cap, a claim counts each webhook's requests in flight once, not again for
-- every row it claims (50 rows x 1,000 in flight).
-- (the 10 failures above opened the webhook's breaker: closed again by hand)
UPDATE hooks.webhooks SET consecutive_failures = 0, failing_since = NULL, paused_until = NULL
 WHERE tenant_id = 'backlog';
SET hooks.max_in_flight_per_webhook = 5000;
SELECT pg_stat_force_next_flush();
SELECT pg_temp.queue_rows_fetched() AS before \gset
SELECT count(*) AS claimed_under_cap FROM hooks.claim('plans-sender', 50);
SELECT pg_stat_force_next_flush();
SELECT pg_temp.queue_rows_fetched() - :before < 3000 AS claim_under_cap_read_under_3000_rows;
-- A claim that finds nothing because the webhook of every due row is at the in-flight cap reads
-- a window of the oldest due rows, not the whole backlog (BENCHMARKS.md, "Claims at the cap").
-- (The first such claim of a second reads everything once, so that rows further behind are
-- found; the second reads only windows.)
SET hooks.max_in_flight_per_webhook = 1000;
SELECT count(*) AS claimed_at_cap FROM hooks.claim('plans-sender', 10);
SELECT pg_stat_force_next_flush();
SELECT pg_temp.queue_rows_fetched() AS before \gset
SELECT count(*) AS claimed_at_cap FROM hooks.claim('plans-sender', 10);
SELECT pg_stat_force_next_flush();
SELECT pg_temp.queue_rows_fetched() - :before < 10000 AS empty_claim_read_under_10000_rows;  -- (41,980 before)
-- A claim through the window locks the rows it claims, oldest first, without reading every
-- row of the window again: 500 rows of a second webhook, older than all the others, are the
-- first half of the window. (Most of what it reads is the cap check: 1,050 rows in flight,
-- counted twice, hooks._webhooks_at_cap.)
INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, secret)
VALUES ('backlog', 'backlog-2', 'backlog/other', 'https://receiver.example/backlog-2', 'backlog-secret');
WITH o AS (
    INSERT INTO hooks.outbox (webhook_id, event_id, tenant_id, event_type)
    SELECT w.webhook_id, e.event_id, 'backlog', 'backlog/other'
      FROM hooks.webhooks w JOIN hooks.events e ON e.tenant_id = w.tenant_id
     WHERE w.webhook_name = 'backlog-2'
     ORDER BY e.event_id LIMIT 500
    RETURNING delivery_id, webhook_id, tenant_id)
INSERT INTO hooks.queue (delivery_id, webhook_id, tenant_id, status, next_attempt_at)
SELECT o.delivery_id, o.webhook_id, o.tenant_id, 'pending', now() - interval '2 hours' FROM o;
SELECT pg_stat_force_next_flush();
SELECT pg_temp.queue_rows_fetched() AS before \gset
SELECT count(*) AS claimed_through_window FROM hooks.claim('plans-sender', 10);
SELECT pg_stat_force_next_flush();
SELECT pg_temp.queue_rows_fetched() - :before < 2600 AS window_claim_read_under_2600_rows;  -- (3,580 before)
RESET hooks.max_in_flight_per_webhook;
RESET stats_fetch_consistency;
DELETE FROM hooks.webhooks WHERE tenant_id = 'backlog';
DELETE FROM hooks.events WHERE tenant_id = 'backlog';

-- hooks.purge reads about the rows it deletes: 5,000 old finished deliveries among 10,000,
-- deleted in batches of 100. (The time index of hooks.outcomes is a BRIN index, which finds the
-- old pages but gives no order: taking the oldest first, each batch sorted every old row left,
-- over 100,000 rows read here; now under 40,000: the old rows found once (through the index or
-- a scan of the table), then each batch its own rows and their outcome rows. BENCHMARKS.md,
-- "The outcomes' time index".)
BEGIN;
INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, secret)
SELECT 'purge', 'p' || i, '*', 'https://p.example/' || i, 'secret-p' || i FROM generate_series(1, 5) i;
INSERT INTO hooks.events (tenant_id, event_type, event_key, body)
SELECT 'purge', 'p/x', 'p' || i, '{}' FROM generate_series(1, 2000) i;
WITH o AS (
    INSERT INTO hooks.outbox (webhook_id, event_id, tenant_id, event_type)
    SELECT w.webhook_id, e.event_id, 'purge', 'p/x'
      FROM hooks.events e CROSS JOIN hooks.webhooks w
     WHERE e.tenant_id = 'purge' AND w.tenant_id = 'purge'
     ORDER BY e.event_id, w.webhook_id
    RETURNING delivery_id, webhook_id)
INSERT INTO hooks.outcomes (delivery_id, webhook_id, tenant_id, status, attempt_number, updated_at)
SELECT o.delivery_id, o.webhook_id, 'purge', 'success', 1,
       CASE WHEN row_number() OVER (ORDER BY o.delivery_id) <= 5000 THEN now() - interval '40 days' ELSE now() END
  FROM o ORDER BY o.delivery_id;
ANALYZE hooks.outbox, hooks.outcomes, hooks.events;
-- (the new pages summarized, as autovacuum does: autosummarize is on)
SELECT brin_summarize_new_values('hooks.outcomes_updated_idx') > 0 AS summarized;
SELECT idx_tup_fetch + coalesce(seq_tup_read, 0) AS before FROM pg_stat_xact_user_tables
 WHERE relid = 'hooks.outcomes'::regclass \gset
CALL hooks.purge('30 days', 100, false);
SELECT count(*) AS finished_left FROM hooks.outcomes WHERE tenant_id = 'purge';
SELECT idx_tup_fetch + coalesce(seq_tup_read, 0) - :before < 40000 AS purge_read_under_40000_rows
  FROM pg_stat_xact_user_tables WHERE relid = 'hooks.outcomes'::regclass;
ROLLBACK;
