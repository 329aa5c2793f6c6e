-- hooks.purge removes exactly the old finished rows (100,000 of them here) and nothing else.
BEGIN;
INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, secret)
SELECT 'acme', 'w' || i, '*', 'https://r.example/' || i, 'secret-000' || i FROM generate_series(1, 10) i;
-- 10,000 old events with 10 deliveries each: 100,000 old finished deliveries
INSERT INTO hooks.events (tenant_id, event_type, event_key, body, created_at)
SELECT 'acme', 'a/b', 'old' || i, '{}', now() - interval '40 days' FROM generate_series(1, 10000) i;
WITH o AS (
    INSERT INTO hooks.outbox (webhook_id, event_id, tenant_id, event_type, created_at)
    SELECT w.webhook_id, e.event_id, 'acme', 'a/b', now() - interval '40 days'
      FROM hooks.events e CROSS JOIN hooks.webhooks w
    RETURNING delivery_id, webhook_id, event_id)
INSERT INTO hooks.outcomes (delivery_id, webhook_id, tenant_id, status, attempt_number, updated_at)
SELECT o.delivery_id, o.webhook_id, 'acme', (ARRAY['success', 'failed', 'cancelled'])[1 + o.event_id % 3], 1,
       now() - interval '40 days'
  FROM o;
INSERT INTO hooks.attempts (delivery_id, webhook_id, tenant_id, attempt_number, outcome, created_at)
SELECT delivery_id, webhook_id, tenant_id, 1, 'success', now() - interval '40 days' FROM hooks.outbox;
-- kept: old but unfinished, finished but recent, and an old event that still has a delivery
INSERT INTO hooks.events (tenant_id, event_type, event_key, body, created_at)
VALUES ('acme', 'a/b', 'old-pending', '{}', now() - interval '40 days'),
       ('acme', 'a/b', 'recent', '{}', now());
INSERT INTO hooks.deliveries (webhook_id, event_id, tenant_id, event_type, status, updated_at)
SELECT (SELECT min(webhook_id) FROM hooks.webhooks), e.event_id, 'acme', 'a/b',
       CASE e.event_key WHEN 'old-pending' THEN 'retrying' ELSE 'success' END,
       CASE e.event_key WHEN 'old-pending' THEN now() - interval '40 days' ELSE now() END
  FROM hooks.events e WHERE e.event_key IN ('old-pending', 'recent');
ANALYZE hooks.events, hooks.outbox, hooks.queue, hooks.outcomes, hooks.attempt_log;

SELECT (SELECT count(*) FROM hooks.deliveries) AS deliveries, (SELECT count(*) FROM hooks.attempts) AS attempts,
       (SELECT count(*) FROM hooks.events) AS events;
CALL hooks.purge('30 days', 20000, false);
SELECT (SELECT count(*) FROM hooks.deliveries) AS deliveries, (SELECT count(*) FROM hooks.attempts) AS attempts,
       (SELECT count(*) FROM hooks.events) AS events;
SELECT e.event_key, d.status FROM hooks.deliveries d JOIN hooks.events e USING (event_id) ORDER BY 1;
SELECT sqlstate_of($$CALL hooks.purge('-1 day')$$);
ROLLBACK;
