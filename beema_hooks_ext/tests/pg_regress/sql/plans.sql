-- Matching among 10,000 webhooks of 100 tenants, and finding due rows among 200,000 finished
-- deliveries, stay index lookups.
BEGIN;
INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, secret)
SELECT 't' || (i % 100), 'w' || i,
       CASE WHEN i % 10 = 0 THEN 'claim/*' ELSE 'type' || (i % 997) || '/done' END,
       'https://receiver.example/' || i, 'secret-' || i
  FROM generate_series(1, 10000) i;
INSERT INTO hooks.events (tenant_id, event_type, event_key, body)
SELECT 't1', 'x/y', 'k' || i, '{}' FROM generate_series(1, 20) i;
WITH o AS (
    INSERT INTO hooks.outbox (webhook_id, event_id, tenant_id, event_type)
    SELECT w.webhook_id, e.event_id, w.tenant_id, 'x/y' FROM hooks.webhooks w CROSS JOIN hooks.events e
    RETURNING delivery_id, webhook_id, tenant_id)
INSERT INTO hooks.outcomes (delivery_id, webhook_id, tenant_id, status, attempt_number, updated_at)
SELECT o.delivery_id, o.webhook_id, o.tenant_id, 'success', 1, now() - interval '1 day' FROM o;
ANALYZE hooks.webhooks;
ANALYZE hooks.outbox, hooks.queue, hooks.outcomes;

-- hooks.match is inlined: one probe of each partial index
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
