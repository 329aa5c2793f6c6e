-- The circuit breaker: consecutive failures pause a webhook; its deliveries wait instead of
-- spending attempts; a healthy webhook is not held up; a success closes the breaker.
BEGIN;
SET LOCAL hooks.breaker_failure_threshold = 2;
SET LOCAL hooks.breaker_cooldown_ms = 60000;
INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, secret, retry_config) VALUES
    ('acme', 'flaky',   '*', 'https://flaky.example/',   'secret-0001', '{"maxAttempts": 10, "backoffMs": 0}'),
    ('acme', 'healthy', '*', 'https://healthy.example/', 'secret-0002', '{"maxAttempts": 10, "backoffMs": 0}');
UPDATE hooks.webhooks SET enabled = false WHERE webhook_name = 'healthy';  -- start with flaky alone

SELECT hooks.publish(format('{"event": "a/b", "id": "e%s", "data": {"tenantId": "acme"}}', i)::jsonb) IS NOT NULL
  FROM generate_series(1, 3) i;
-- two failures in a row open the breaker
SELECT hooks.complete('s1', (SELECT jsonb_agg(jsonb_build_object('delivery_id', delivery_id, 'attempt_number', attempt_number, 'status_code', 503))
                              FROM hooks.claim('s1', 2)));
SELECT webhook_name, consecutive_failures, paused_until > now() AS paused, failing_since IS NOT NULL AS failing
  FROM hooks.webhooks WHERE webhook_name = 'flaky';
SELECT state FROM hooks.webhook_health WHERE webhook_name = 'flaky';
-- while paused nothing of it is claimed, and its due rows are moved to the end of the pause
SELECT count(*) AS claimed_while_paused FROM hooks.claim('s1', 10);
SELECT status, attempt_number, next_attempt_at >= (SELECT paused_until FROM hooks.webhooks WHERE webhook_name = 'flaky') AS waits
  FROM hooks.deliveries ORDER BY delivery_id;

-- a healthy webhook's deliveries are claimed past the paused ones
UPDATE hooks.webhooks SET enabled = true WHERE webhook_name = 'healthy';
SELECT hooks.publish('{"event": "a/c", "id": "h1", "data": {"tenantId": "acme"}}') IS NOT NULL;
UPDATE hooks.deliveries d SET next_attempt_at = now() - interval '1 minute'
  FROM hooks.webhooks w WHERE w.webhook_id = d.webhook_id AND w.webhook_name = 'flaky';
SELECT w.webhook_name FROM hooks.claim('s1', 10) c JOIN hooks.webhooks w USING (webhook_id);

-- after the cool-down the breaker is half-open: one probe per claim; its success closes it
UPDATE hooks.webhooks SET paused_until = now() - interval '1 second' WHERE webhook_name = 'flaky';
UPDATE hooks.deliveries d SET next_attempt_at = now() - interval '1 minute'
  FROM hooks.webhooks w WHERE w.webhook_id = d.webhook_id AND w.webhook_name = 'flaky' AND d.status <> 'in_flight';
SELECT count(*) AS probes FROM hooks.claim('s1', 10) c JOIN hooks.webhooks w USING (webhook_id) WHERE w.webhook_name = 'flaky';
SELECT hooks.complete('s1', (SELECT jsonb_agg(jsonb_build_object('delivery_id', delivery_id, 'attempt_number', attempt_number, 'status_code', 200))
                              FROM hooks.deliveries WHERE status = 'in_flight'));
SELECT webhook_name, consecutive_failures, paused_until, failing_since, last_success_at IS NOT NULL AS succeeded
  FROM hooks.webhooks ORDER BY webhook_name;

-- failing for longer than hooks.disable_after_failing_hours disables it, with the reason; its
-- deliveries are kept (README, "Disabled webhooks"), the failed one to be retried
SET LOCAL hooks.disable_after_failing_hours = 1;
UPDATE hooks.webhooks SET failing_since = now() - interval '2 hours', consecutive_failures = 50, paused_until = NULL
 WHERE webhook_name = 'flaky';
UPDATE hooks.deliveries d SET next_attempt_at = now() - interval '1 minute'
  FROM hooks.webhooks w WHERE w.webhook_id = d.webhook_id AND w.webhook_name = 'flaky' AND d.status <> 'success';
SELECT hooks.complete('s1', (SELECT jsonb_agg(jsonb_build_object('delivery_id', delivery_id, 'attempt_number', attempt_number, 'status_code', 500))
                              FROM hooks.claim('s1', 10)));
SELECT webhook_name, enabled, disabled_reason LIKE 'failing since %' AS reason_recorded FROM hooks.webhooks WHERE webhook_name = 'flaky';
SELECT status, count(*) FROM hooks.deliveries d JOIN hooks.webhooks w USING (webhook_id)
 WHERE w.webhook_name = 'flaky' GROUP BY status ORDER BY status;
ROLLBACK;
