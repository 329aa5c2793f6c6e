-- Management functions, views and metrics.
BEGIN;
SELECT webhook_name, event_type, enabled, left(secret, 6) AS secret_prefix, timeout_ms
  FROM hooks.create_webhook('acme', 'crm', 'claim/*', 'https://crm.example/hooks');
SELECT webhook_name, url, headers, retry_config
  FROM hooks.update_webhook((SELECT webhook_id FROM hooks.webhooks WHERE webhook_name = 'crm'),
                            '{"url": "https://crm.example/v2", "headers": {"Authorization": "Bearer t"},
                              "retry_config": {"maxAttempts": 2, "backoffMs": 0}}');
SELECT sqlstate_of($$SELECT hooks.update_webhook((SELECT webhook_id FROM hooks.webhooks WHERE webhook_name = 'crm'), '{"secret": "x"}')$$);
SELECT sqlstate_of($$SELECT hooks.update_webhook(-1, '{}')$$);
SELECT sqlstate_of($$SELECT hooks.update_webhook((SELECT webhook_id FROM hooks.webhooks WHERE webhook_name = 'crm'), '{"url": "ftp://x"}')$$);

-- rotation: the old secret keeps signing webhook-signature during the grace period
UPDATE hooks.webhooks SET secret = 'old-secret-1234' WHERE webhook_name = 'crm';
SELECT hooks.rotate_secret((SELECT webhook_id FROM hooks.webhooks WHERE webhook_name = 'crm'), 'new-secret-5678', '1 hour');
SELECT hooks.publish('{"event": "claim/opened", "id": "e1", "data": {"tenantId": "acme"}}') IS NOT NULL AS published;
SELECT c.delivery_id IS NOT NULL AS claimed,
       hooks.verify(c.body, 'new-secret-5678', c.headers->>'X-Beema-Signature') AS beema_new,
       hooks.verify_standard(c.headers->>'webhook-id', (c.headers->>'webhook-timestamp')::bigint, c.body,
                             'old-secret-1234', c.headers->>'webhook-signature') AS standard_old,
       hooks.verify_standard(c.headers->>'webhook-id', (c.headers->>'webhook-timestamp')::bigint, c.body,
                             'new-secret-5678', c.headers->>'webhook-signature') AS standard_new,
       c.headers->>'Authorization' AS custom_header
  FROM hooks.claim('s1', 10) c;

-- exhaust the attempts: the delivery becomes a dead letter, then is retried
SELECT hooks.complete('s1', jsonb_build_array(jsonb_build_object('delivery_id', delivery_id, 'attempt_number', 1, 'status_code', 500)))
  FROM hooks.deliveries;
SELECT count(*) AS claimed_again FROM hooks.claim('s1', 10);
SELECT hooks.complete('s1', jsonb_build_array(jsonb_build_object('delivery_id', delivery_id, 'attempt_number', 2,
                                                                 'error', 'timeout after 10000 ms')))
  FROM hooks.deliveries;
SELECT webhook_name, event_type, event_key, attempts, status_code, error_message FROM hooks.dead_letters;
SELECT outcome, status_code, error_message FROM hooks.attempts ORDER BY attempt_id;
SELECT status, attempt_number FROM hooks.retry_delivery((SELECT delivery_id FROM hooks.dead_letters));
SELECT count(*) AS dead_letters FROM hooks.dead_letters;
SELECT pending, retrying, in_flight, due_now FROM hooks.metrics();

-- replay: to every webhook matching now, with a new delivery uuid
SELECT (hooks.create_webhook('acme', 'all', '*', 'https://all.example/')).webhook_name AS created;
SELECT delivery_uuid AS old_uuid FROM hooks.deliveries \gset
SELECT hooks.replay_event((SELECT event_id FROM hooks.events WHERE event_key = 'e1'));
SELECT w.webhook_name, d.status, d.delivery_uuid <> :'old_uuid' AS new_uuid
  FROM hooks.deliveries d JOIN hooks.webhooks w USING (webhook_id) ORDER BY w.webhook_name;

-- redeliver failures since a time, set-based
UPDATE hooks.deliveries SET status = 'failed';
SELECT hooks.redeliver_failed((SELECT webhook_id FROM hooks.webhooks WHERE webhook_name = 'all'), now() - interval '1 hour');
SELECT w.webhook_name, d.status FROM hooks.deliveries d JOIN hooks.webhooks w USING (webhook_id) ORDER BY 1;

-- webhook.test goes through the normal path
SELECT hooks.test_webhook(webhook_id) AS test_delivery FROM hooks.webhooks WHERE webhook_name = 'crm' \gset
SELECT d.event_type, d.status, e.body::jsonb->'data'->>'webhookName' AS webhook
  FROM hooks.deliveries d JOIN hooks.events e USING (event_id)
 WHERE d.delivery_id = :test_delivery;

-- disable: queued deliveries are cancelled; enable; delete
SELECT enabled, disabled_reason FROM hooks.disable_webhook((SELECT webhook_id FROM hooks.webhooks WHERE webhook_name = 'crm'), 'maintenance');
SELECT w.webhook_name, d.status, d.error_message FROM hooks.deliveries d JOIN hooks.webhooks w USING (webhook_id)
 WHERE w.webhook_name = 'crm' ORDER BY d.delivery_id;
SELECT left(sqlstate_of($$SELECT hooks.retry_delivery((SELECT min(delivery_id) FROM hooks.deliveries d JOIN hooks.webhooks w USING (webhook_id) WHERE w.webhook_name = 'crm'))$$), 5) AS sqlstate;
SELECT webhook_name, state, disabled_reason, attempts_24h, successes_24h FROM hooks.webhook_health ORDER BY webhook_name;
SELECT enabled, disabled_reason FROM hooks.enable_webhook((SELECT webhook_id FROM hooks.webhooks WHERE webhook_name = 'crm'));
SELECT hooks.delete_webhook((SELECT webhook_id FROM hooks.webhooks WHERE webhook_name = 'crm')) AS deleted,
       hooks.delete_webhook(-1) AS deleted_missing;
SELECT sqlstate_of($$SELECT hooks.retry_delivery(-1)$$), sqlstate_of($$SELECT hooks.replay_event(-1)$$);
ROLLBACK;

-- Disabled webhooks (README, "Disabled webhooks"): a 410 disables the webhook and holds its
-- queued deliveries instead of cancelling them; claims set them aside, a request that was in
-- flight and failed waits too; enable_webhook makes them all due again. An admin's disable
-- cancels unless it asks to hold; hooks.purge cancels what was held past its retention window.
BEGIN;
SET LOCAL hooks.max_in_flight_per_webhook = 0;
SELECT count(*) FROM hooks.create_webhook('acme', 'gone', 'g/*', 'https://gone.example/',
                                          retry_config => '{"maxAttempts": 5, "backoffMs": 0}');
SELECT webhook_id AS gone FROM hooks.webhooks WHERE webhook_name = 'gone' \gset
SELECT count(hooks.publish(format('{"event": "g/x", "id": "g%s", "data": {"tenantId": "acme"}}', i)::jsonb))
  FROM generate_series(1, 5) i;
CREATE TEMP TABLE in_flight AS SELECT delivery_id, attempt_number FROM hooks.claim('s1', 2);
CREATE FUNCTION pg_temp.result(nth integer, code integer) RETURNS integer LANGUAGE sql AS $$
    SELECT hooks.complete('s1', (SELECT jsonb_agg(jsonb_build_object('delivery_id', delivery_id,
                                                                     'attempt_number', attempt_number, 'status_code', code))
                                   FROM (SELECT * FROM in_flight ORDER BY delivery_id OFFSET nth - 1 LIMIT 1) x))
$$;
SELECT pg_temp.result(1, 410) AS gone_410;
SELECT enabled, disabled_holds_queue, disabled_reason LIKE '410 Gone at %' AS reason_recorded
  FROM hooks.webhooks WHERE webhook_id = :gone;
SELECT pg_temp.result(2, 500) AS failed_after_disabling;
SELECT status, attempt_number, count(*) FROM hooks.deliveries WHERE webhook_id = :gone GROUP BY 1, 2 ORDER BY 1, 2;
-- claims set the held deliveries aside: neither sent nor cancelled
UPDATE hooks.queue SET next_attempt_at = now() - interval '1 second' WHERE webhook_id = :gone;
SELECT count(*) AS claimed_while_disabled FROM hooks.claim('s1', 10);
SELECT status, next_attempt_at = 'infinity' AS set_aside, count(*) FROM hooks.deliveries
 WHERE webhook_id = :gone AND status <> 'failed' GROUP BY 1, 2 ORDER BY 1, 2;
-- enabled again: every held delivery is due, and claimed
SELECT enabled, disabled_holds_queue FROM hooks.enable_webhook(:gone);
SELECT count(*) AS claimed_after_enable FROM hooks.claim('s1', 10);
SELECT hooks.complete('s1', (SELECT jsonb_agg(jsonb_build_object('delivery_id', delivery_id, 'attempt_number', attempt_number, 'status_code', 200))
                              FROM hooks.deliveries WHERE webhook_id = :gone AND status = 'in_flight')) AS delivered;
-- an admin's disable: held when it asks, cancelled by default (also what an earlier one held)
SELECT count(hooks.publish(format('{"event": "g/x", "id": "h%s", "data": {"tenantId": "acme"}}', i)::jsonb))
  FROM generate_series(1, 2) i;
SELECT enabled, disabled_holds_queue, disabled_reason FROM hooks.disable_webhook(:gone, 'moving hosts', cancel_queued => false);
SELECT status, count(*) FROM hooks.deliveries WHERE webhook_id = :gone GROUP BY 1 ORDER BY 1;
SELECT enabled, disabled_holds_queue FROM hooks.disable_webhook(:gone, 'gone for good');
SELECT status, error_message, count(*) FROM hooks.deliveries WHERE webhook_id = :gone GROUP BY 1, 2 ORDER BY 1, 2;
-- purge cancels deliveries held past the retention window, saying why, and keeps newer ones
SELECT enabled FROM hooks.enable_webhook(:gone);
SELECT count(hooks.publish(format('{"event": "g/x", "id": "k%s", "data": {"tenantId": "acme"}}', i)::jsonb))
  FROM generate_series(1, 3) i;
SELECT enabled FROM hooks.disable_webhook(:gone, 'receiver down', cancel_queued => false);
UPDATE hooks.outbox o SET created_at = now() - interval '2 days'
  FROM hooks.events e WHERE e.event_id = o.event_id AND e.event_key IN ('k1', 'k2');
CALL hooks.purge('1 day', commit_each_batch => false);
SELECT e.event_key, d.status, d.error_message FROM hooks.deliveries d JOIN hooks.events e USING (event_id)
 WHERE e.event_key LIKE 'k%' ORDER BY 1;
ROLLBACK;

-- A rotated-out secret is forgotten after its grace period: by the webhook's next result
-- (hooks.complete), or by hooks.purge for a webhook with no traffic; purge also forgets
-- senders not seen for older_than.
BEGIN;
SET LOCAL hooks.max_in_flight_per_webhook = 0;
SELECT count(*) FROM hooks.create_webhook('acme', 'busy', 'x/*', 'https://busy.example/', 'secret-busy-1');
SELECT count(*) FROM hooks.create_webhook('acme', 'idle', 'y/*', 'https://idle.example/', 'secret-idle-1');
SELECT hooks.rotate_secret(webhook_id, 'secret-' || webhook_name || '-2', '1 hour') FROM hooks.webhooks ORDER BY webhook_name;
SELECT webhook_name, previous_secret FROM hooks.webhooks ORDER BY webhook_name;
-- an hour later (moved back instead of waited for)
UPDATE hooks.webhooks SET previous_secret_expires_at = now() - interval '1 second';
SELECT hooks.publish('{"event": "x/z", "data": {"tenantId": "acme"}}') IS NOT NULL AS published;
SELECT hooks.complete('s', (SELECT jsonb_agg(jsonb_build_object('delivery_id', delivery_id,
           'attempt_number', attempt_number, 'lease_token', lease_token, 'status_code', 200))
      FROM hooks.claim('s', 10))) AS applied;
SELECT webhook_name, previous_secret, previous_secret_expires_at IS NULL AS no_expiry
  FROM hooks.webhooks ORDER BY webhook_name;
INSERT INTO hooks.senders (sender_id, awake, seen_at) VALUES ('gone-1', false, now() - interval '40 days');
CALL hooks.purge('30 days', commit_each_batch => false);
SELECT webhook_name, previous_secret FROM hooks.webhooks ORDER BY webhook_name;
SELECT sender_id FROM hooks.senders WHERE sender_id IN ('gone-1', 's') ORDER BY 1;
ROLLBACK;

-- hooks.webhook_backlog: per webhook, what is due and for how long, for alerting from SQL
BEGIN;
SET LOCAL hooks.max_in_flight_per_webhook = 0;
SELECT count(*) FROM hooks.create_webhook('acme', 'slow', 'x/*', 'https://slow.example/');
SELECT count(*) FROM hooks.create_webhook('acme', 'quick', 'y/*', 'https://quick.example/');
SELECT count(hooks.publish(jsonb_build_object('event', 'x/a', 'data', jsonb_build_object('tenantId', 'acme', 'n', g))))
  FROM generate_series(1, 3) g;
SELECT hooks.publish('{"event": "y/a", "data": {"tenantId": "acme"}}') IS NOT NULL AS published;
-- slow's deliveries were due 10 minutes ago; one of them is in flight
UPDATE hooks.queue q SET next_attempt_at = now() - interval '10 minutes'
  FROM hooks.webhooks w WHERE w.webhook_id = q.webhook_id AND w.webhook_name = 'slow';
SELECT count(*) AS claimed FROM hooks.claim('backlog-sender', 1);
SELECT webhook_name, due, overdue_for >= interval '10 minutes' AS overdue_10_min, in_flight, retrying, live, state
  FROM hooks.webhook_backlog ORDER BY webhook_name;
SELECT webhook_name FROM hooks.webhook_backlog WHERE overdue_for > interval '5 minutes';
ROLLBACK;
