-- Per-webhook in-flight cap (hooks.max_in_flight_per_webhook, default 32): a webhook with a
-- backlog gets at most the cap in flight, across senders; other webhooks' rows behind its
-- backlog are claimed; the rows over the cap are left exactly as they were (not rewritten).
BEGIN;
INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, secret) VALUES
    ('acme', 'busy',  'busy/*',  'https://busy.example/',  'secret-0001'),
    ('acme', 'quiet', 'quiet/*', 'https://quiet.example/', 'secret-0002');
-- 40 deliveries to "busy", then 5 to "quiet": in due order, quiet's rows come last
SELECT count(hooks.publish(format('{"event": "busy/x", "id": "b%s", "data": {"tenantId": "acme"}}', i)::jsonb))
  FROM generate_series(1, 40) i;
UPDATE hooks.deliveries SET next_attempt_at = now() - interval '1 minute';
SELECT count(hooks.publish(format('{"event": "quiet/x", "id": "q%s", "data": {"tenantId": "acme"}}', i)::jsonb))
  FROM generate_series(1, 5) i;
SELECT hooks._setting_int('hooks.max_in_flight_per_webhook', 32) AS cap;  -- (the setting, or its default)
CREATE TEMP TABLE before_claim AS SELECT * FROM hooks.deliveries;

-- one claim of 100: 32 of busy (the cap) and all 5 of quiet
SELECT w.webhook_name, count(*) AS claimed
  FROM hooks.claim('s1', 100) c JOIN hooks.webhooks w USING (webhook_id)
 GROUP BY 1 ORDER BY 1;
-- busy's 8 other rows are untouched: same status, due time, attempt and updated_at
SELECT count(*) AS untouched
  FROM hooks.deliveries d JOIN before_claim b USING (delivery_id)
 WHERE d.status = 'pending' AND d.next_attempt_at = b.next_attempt_at
   AND d.attempt_number = 0 AND d.updated_at = b.updated_at;
-- another sender finds nothing to do: busy is at its cap
SELECT count(*) AS claimed_at_cap FROM hooks.claim('s2', 100);
-- a finished request frees one place, which the next claim fills
SELECT hooks.complete('s1', (SELECT jsonb_agg(jsonb_build_object('delivery_id', delivery_id,
                                 'attempt_number', attempt_number, 'status_code', 200))
                               FROM (SELECT delivery_id, attempt_number FROM hooks.deliveries d
                                      JOIN hooks.webhooks w USING (webhook_id)
                                     WHERE w.webhook_name = 'busy' AND d.status = 'in_flight'
                                     ORDER BY delivery_id LIMIT 3) x));
SELECT count(*) AS claimed_after_3_finished FROM hooks.claim('s2', 100);
-- leases that expired do not count: the lost attempts are logged and the rows claimed again
UPDATE hooks.deliveries SET next_attempt_at = now() - interval '1 second' WHERE status = 'in_flight' AND lease_owner = 's1';
SELECT count(*) AS reclaimed FROM hooks.claim('s3', 100);
SELECT outcome, count(*) FROM hooks.attempts GROUP BY 1 ORDER BY 1;
SELECT status, lease_owner, count(*) FROM hooks.deliveries GROUP BY 1, 2 ORDER BY 1, 2;

-- 0 turns the cap off
SET LOCAL hooks.max_in_flight_per_webhook = 0;
UPDATE hooks.deliveries SET next_attempt_at = now() - interval '1 second' WHERE status = 'in_flight';
SELECT count(*) AS claimed_without_cap FROM hooks.claim('s4', 100);
ROLLBACK;

-- A webhook at its cap with more due rows than a claim reads while webhooks are capped
-- (greatest(1000, 4 * max_rows)): other webhooks' rows behind them are found by the one full
-- look per second and sender session, so they wait at most about a second.
BEGIN;
INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, secret) VALUES
    ('acme', 'big',   'big/*',   'https://big.example/',   'secret-0003'),
    ('acme', 'small', 'small/*', 'https://small.example/', 'secret-0004');
SELECT count(hooks.publish(format('{"event": "big/x", "id": "g%s", "data": {"tenantId": "acme"}}', i)::jsonb))
  FROM generate_series(1, 1200) i;
UPDATE hooks.deliveries SET next_attempt_at = now() - interval '1 minute';
SELECT count(*) AS big_in_flight FROM hooks.claim('holder', 32);
SELECT count(hooks.publish(format('{"event": "small/x", "id": "s%s", "data": {"tenantId": "acme"}}', i)::jsonb))
  FROM generate_series(1, 3) i;
-- the first claim of a session looks at everything (forget the full look of part one)
SELECT set_config('beema_hooks.full_look_at', '', false) IS NOT NULL AS reset;
SELECT count(*) AS small_claimed_by_full_look FROM hooks.claim('s5', 100);
SELECT count(hooks.publish(format('{"event": "small/x", "id": "t%s", "data": {"tenantId": "acme"}}', i)::jsonb))
  FROM generate_series(1, 3) i;
-- within the second, only the oldest 1,000 due rows: all big's
SELECT count(*) AS small_claimed_within_the_second FROM hooks.claim('s5', 100);
SELECT pg_sleep(1.1);
SELECT count(*) AS small_claimed_after_a_second FROM hooks.claim('s5', 100);
ROLLBACK;

-- A byte budget besides the row count (hooks.claim's max_bytes, README "Memory"): the claimed
-- rows' bodies add up to at most max_bytes, in due order; a body larger than the budget is
-- claimed alone; a negative budget is 22023.
BEGIN;
SET LOCAL hooks.max_in_flight_per_webhook = 0;
SELECT count(*) FROM hooks.create_webhook('acme', 'sized', 'sized/*', 'https://sized.example/');
SELECT count(hooks.publish(jsonb_build_object('event', 'sized/x', 'data',
                                              jsonb_build_object('tenantId', 'acme', 'n', g, 'pad', repeat('p', 1000)))))
  FROM generate_series(1, 6) g;
SELECT min(octet_length(body)) AS body_bytes FROM hooks.events WHERE event_type = 'sized/x';
SELECT count(*) AS claimed_within_3000_bytes, sum(octet_length(body)) <= 3000 AS within
  FROM hooks.claim('s-bytes', 100, max_bytes => 3000);
SELECT count(*) AS claimed_alone_over_budget FROM hooks.claim('s-bytes', 100, max_bytes => 10);
SELECT count(*) AS claimed_without_budget FROM hooks.claim('s-bytes', 100);
SELECT left(sqlstate_of($$SELECT * FROM hooks.claim('s-bytes', 1, max_bytes => -1)$$), 5) AS negative;
ROLLBACK;
