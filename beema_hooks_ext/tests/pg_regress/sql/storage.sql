-- Storage (README, "Storage"): every delivery is in hooks.outbox and in exactly one of
-- hooks.queue (live) and hooks.outcomes (final); the view hooks.deliveries reads and writes
-- them like the one table of 0.2.0; deleting deliveries takes their rows and attempts along.
BEGIN;
CREATE FUNCTION pg_temp.placement() RETURNS TABLE (delivery_id bigint, webhook text, event_type text, status text, in_queue boolean, in_outcomes boolean, attempts bigint)
LANGUAGE sql AS $$
    SELECT o.delivery_id, w.webhook_name, o.event_type, d.status,
           EXISTS (SELECT 1 FROM hooks.queue q WHERE q.delivery_id = o.delivery_id),
           EXISTS (SELECT 1 FROM hooks.outcomes f WHERE f.delivery_id = o.delivery_id),
           (SELECT count(*) FROM hooks.attempts a WHERE a.delivery_id = o.delivery_id)
      FROM hooks.outbox o JOIN hooks.deliveries d USING (delivery_id)
      JOIN hooks.webhooks w ON w.webhook_id = o.webhook_id
     ORDER BY o.event_type, w.webhook_name  -- (publish queues a match's deliveries in no set order)
$$;
SELECT count(*) FROM hooks.create_webhook('acme', 'a', 'x/*', 'https://a.example/');
SELECT count(*) FROM hooks.create_webhook('acme', 'b', '*', 'https://b.example/',
                                          retry_config => '{"maxAttempts": 1, "backoffMs": 0}');
SELECT hooks.publish('{"event": "x/y", "id": "s1", "data": {"tenantId": "acme"}}') AS event_id \gset
-- published: two live deliveries, pending
SELECT webhook, event_type, status, in_queue, in_outcomes, attempts FROM pg_temp.placement();
-- claimed and failed: a (3 attempts allowed) is retrying in the queue with its error; b (1
-- attempt) failed and moved to the outcomes
SELECT hooks.complete('s', (SELECT jsonb_agg(jsonb_build_object('delivery_id', delivery_id,
           'attempt_number', attempt_number, 'lease_token', lease_token, 'status_code', 503,
           'response_body', 'busy', 'duration_ms', 4)) FROM hooks.claim('s', 10))) AS applied;
SELECT p.webhook, p.status, p.in_queue, p.in_outcomes, p.attempts, d.status_code, d.error_message, d.response_body
  FROM pg_temp.placement() p JOIN hooks.deliveries d USING (delivery_id) ORDER BY p.event_type, p.webhook;
-- an UPDATE of the view moves a row through the state machine: final -> live and live -> final
UPDATE hooks.deliveries SET status = 'pending', attempt_number = 0
 WHERE webhook_id = (SELECT webhook_id FROM hooks.webhooks WHERE webhook_name = 'b');
UPDATE hooks.deliveries SET status = 'cancelled', error_message = 'by hand'
 WHERE webhook_id = (SELECT webhook_id FROM hooks.webhooks WHERE webhook_name = 'a');
SELECT p.webhook, p.status, p.in_queue, p.in_outcomes, p.attempts, d.error_message
  FROM pg_temp.placement() p JOIN hooks.deliveries d USING (delivery_id) ORDER BY p.event_type, p.webhook;
-- a delivery's id, webhook, event and tenant do not change
SELECT sqlstate_of($$UPDATE hooks.deliveries SET tenant_id = 'other'$$);
-- an INSERT into the view queues a live status and records a final one
INSERT INTO hooks.events (tenant_id, event_type, event_key, body)
VALUES ('acme', 'x/z', 'e-live', '{}'), ('acme', 'x/z', 'e-done', '{}');
INSERT INTO hooks.deliveries (webhook_id, event_id, tenant_id, event_type, status)
SELECT w.webhook_id, e.event_id, 'acme', 'x/z', v.s
  FROM (VALUES ('a', 'e-live', 'retrying'), ('b', 'e-done', 'success')) AS v(wh, key, s)
  JOIN hooks.webhooks w ON w.webhook_name = v.wh
  JOIN hooks.events e ON e.event_key = v.key;
SELECT webhook, event_type, status, in_queue, in_outcomes, attempts FROM pg_temp.placement();
-- a DELETE from the view, and deleting a webhook, take the deliveries' rows and attempts along
DELETE FROM hooks.deliveries WHERE status = 'success';
SELECT hooks.delete_webhook((SELECT webhook_id FROM hooks.webhooks WHERE webhook_name = 'b'));
SELECT webhook, event_type, status, in_queue, in_outcomes, attempts FROM pg_temp.placement();
SELECT (SELECT count(*) FROM hooks.queue) AS queue, (SELECT count(*) FROM hooks.outcomes) AS outcomes,
       (SELECT count(*) FROM hooks.attempts) AS attempts,
       (SELECT count(*) FROM hooks.queue q WHERE NOT EXISTS (SELECT 1 FROM hooks.outbox o WHERE o.delivery_id = q.delivery_id))
     + (SELECT count(*) FROM hooks.outcomes f WHERE NOT EXISTS (SELECT 1 FROM hooks.outbox o WHERE o.delivery_id = f.delivery_id))
     + (SELECT count(*) FROM hooks.attempts a WHERE NOT EXISTS (SELECT 1 FROM hooks.outbox o WHERE o.delivery_id = a.delivery_id))
       AS orphans;
ROLLBACK;
-- The attempt log (README, "Storage"): the attempt that ends a delivery is kept in its outcome
-- row, the others in hooks.attempt_log; hooks.attempts shows every attempt as one row, as the
-- table of 0.2.0 did, and keeps it when the delivery is queued again or edited.
BEGIN;
SELECT count(*) FROM hooks.create_webhook('acme', 'c', 'z/*', 'https://c.example/',
                                          retry_config => '{"maxAttempts": 5, "backoffMs": 0}');
SELECT hooks.publish('{"event": "z/1", "id": "t1", "data": {"tenantId": "acme"}}') IS NOT NULL AS published;
CREATE FUNCTION pg_temp.send(code integer, ms integer) RETURNS integer LANGUAGE sql AS $$
    SELECT hooks.complete('s', (SELECT jsonb_agg(jsonb_build_object('delivery_id', delivery_id,
               'attempt_number', attempt_number, 'lease_token', lease_token, 'status_code', code,
               'duration_ms', ms)) FROM hooks.claim('s', 10)))
$$;
CREATE FUNCTION pg_temp.attempts() RETURNS TABLE (attempt_number integer, sender_id text, outcome text,
                                                  status_code integer, error_message text, duration_ms integer)
LANGUAGE sql AS $$
    SELECT a.attempt_number, a.sender_id, a.outcome, a.status_code, a.error_message, a.duration_ms
      FROM hooks.attempts a ORDER BY a.attempt_id
$$;
CREATE FUNCTION pg_temp.where_kept(OUT in_log bigint, OUT in_outcome bigint) LANGUAGE sql AS $$
    SELECT (SELECT count(*) FROM hooks.attempt_log), (SELECT count(*) FROM hooks.outcomes WHERE attempt_id IS NOT NULL)
$$;
-- attempt 1 fails (the delivery retries: logged), attempt 2 succeeds (kept in the outcome row)
SELECT pg_temp.send(500, 7) AS applied;
SELECT pg_temp.send(200, 9) AS applied;
SELECT * FROM pg_temp.attempts();
SELECT * FROM pg_temp.where_kept();
-- one sequence of ids: the final attempt's comes after the ones before it
SELECT (SELECT attempt_id FROM hooks.outcomes) > (SELECT max(attempt_id) FROM hooks.attempt_log) AS final_id_last;
-- queued again (an UPDATE of hooks.deliveries; as redeliver and retry do): the final attempt
-- moves to the log as it was; the next attempt is kept in the next outcome row
UPDATE hooks.deliveries SET status = 'pending', attempt_number = 0 WHERE event_type = 'z/1';
SELECT * FROM pg_temp.where_kept();
SELECT pg_temp.send(201, 3) AS applied;
SELECT * FROM pg_temp.attempts();
-- editing a finished delivery changes the delivery, not its attempts
UPDATE hooks.deliveries SET status = 'failed', status_code = 599, error_message = 'by hand' WHERE event_type = 'z/1';
SELECT * FROM pg_temp.attempts();
SELECT * FROM pg_temp.where_kept();
-- an INSERT into the view goes into the log
INSERT INTO hooks.attempts (delivery_id, webhook_id, tenant_id, attempt_number, outcome, error_message)
SELECT delivery_id, webhook_id, tenant_id, 9, 'lease_expired', 'by hand' FROM hooks.outbox WHERE event_type = 'z/1'
RETURNING attempt_number, outcome, attempt_id > 0 AS has_id, created_at = now() AS stamped;
SELECT * FROM pg_temp.where_kept();
-- health counts every HTTP attempt of the last 24 hours
SELECT attempts_24h, successes_24h FROM hooks.webhook_health WHERE webhook_name = 'c';
ROLLBACK;

-- A claim's update of a queued row stays on the row's page: publish leaves half of each queue
-- page free (fillfactor 50), so the new version needs no other page, and no lock record of the
-- old one (BENCHMARKS.md, "The queue's fillfactor"). In one transaction, as here, no old version
-- can be pruned yet: 252 of 300 stay (84 %); with full pages (fillfactor 100) 33 did.
BEGIN;
SET LOCAL hooks.max_in_flight_per_webhook = 0;  -- (all 300 in one claim)
SELECT count(*) FROM hooks.create_webhook('acme', 'page', 'page/*', 'https://p.example/');
SELECT count(hooks.publish(format('{"event": "page/x", "id": "p%s", "data": {"tenantId": "acme"}}', i)::jsonb))
  FROM generate_series(1, 300) i;
CREATE TEMP TABLE before_claim AS
SELECT delivery_id, (ctid::text::point)[0]::integer AS page FROM hooks.queue;
SELECT count(*) AS claimed FROM hooks.claim('page-sender', 300);
SELECT count(*) AS claimed_rows,
       count(*) FILTER (WHERE (q.ctid::text::point)[0]::integer = b.page) * 4 / count(*) >= 3 AS three_in_four_on_their_page
  FROM hooks.queue q JOIN before_claim b USING (delivery_id)
 WHERE q.status = 'in_flight';
ROLLBACK;
