-- Ordered delivery per key (README, "Ordered delivery per key"): a webhook's ordering_key names
-- a path into the event; its deliveries with the same value go one at a time, in commit order.
BEGIN;
-- validation (22023), on create and on update
SELECT sqlstate_of($$SELECT hooks.create_webhook('acme', 'bad', 'x/*', 'https://a.example/', ordering_key => 'data..policy')$$);
SELECT sqlstate_of($$SELECT hooks.create_webhook('acme', 'bad', 'x/*', 'https://a.example/', ordering_key => 'a b')$$);
SELECT sqlstate_of($$SELECT hooks.create_webhook('acme', 'bad', 'x/*', 'https://a.example/', ordering_key => 'a.b.c.d.e.f.g.h.i.j.k')$$);
SELECT sqlstate_of($$SELECT hooks.create_webhook('acme', 'bad', 'x/*', 'https://a.example/', ordering_key => 'data.id', ordering_on_failure => 'wait')$$);
SELECT webhook_name, ordering_key, ordering_on_failure
  FROM hooks.create_webhook('acme', 'ordered', 'policy/*', 'https://ordered.example/',
                            retry_config => '{"maxAttempts": 2, "backoffMs": 0}', ordering_key => 'data.policyNumber');
SELECT webhook_name, ordering_key FROM hooks.create_webhook('acme', 'plain', 'policy/*', 'https://plain.example/');
SELECT sqlstate_of($$SELECT hooks.update_webhook((SELECT webhook_id FROM hooks.webhooks WHERE webhook_name = 'plain'), '{"ordering_on_failure": "never"}')$$);

-- claims what is due and answers every claimed delivery with HTTP `code`; returns how many
CREATE FUNCTION pg_temp.answer(code integer) RETURNS integer LANGUAGE sql AS $$
    SELECT hooks.complete('s1', (SELECT coalesce(jsonb_agg(jsonb_build_object('delivery_id', delivery_id,
                                        'attempt_number', attempt_number, 'lease_token', lease_token,
                                        'status_code', code)), '[]')
                                   FROM hooks.claim('s1', 100)))
$$;

-- what is due fails, and its retry (due at once) too: maxAttempts 2, so it fails for good
CREATE FUNCTION pg_temp.fail_twice() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE n integer;
BEGIN
    n := pg_temp.answer(500);
    UPDATE hooks.queue SET next_attempt_at = now() WHERE status = 'retrying';
    RETURN n + pg_temp.answer(500);
END $$;

-- P1 three times, P2 once, one event without the key: the first of each key is due, the rest
-- of P1 wait behind it, in call order; the plain webhook is not ordered at all
SELECT hooks.publish(format('{"event": "policy/bound", "id": "p%s", "data": {"tenantId": "acme", "policyNumber": "%s"}}',
                            i, CASE WHEN i IN (1, 2, 4) THEN 'P1' ELSE 'P2' END)::jsonb) IS NOT NULL
  FROM generate_series(1, 4) i;
SELECT hooks.publish('{"event": "policy/bound", "id": "nokey", "data": {"tenantId": "acme"}}') IS NOT NULL;
CREATE TEMP VIEW q AS
SELECT e.event_key, w.webhook_name, o.order_key, d.status, d.next_attempt_at = 'infinity' AS waits, d.attempt_number
  FROM hooks.deliveries d JOIN hooks.webhooks w USING (webhook_id) JOIN hooks.events e USING (event_id)
  JOIN hooks.outbox o USING (delivery_id)
 ORDER BY w.webhook_name, d.delivery_id;
SELECT * FROM q;
SELECT w.webhook_name, k.order_key, e.event_key AS head
  FROM hooks.order_keys k JOIN hooks.webhooks w USING (webhook_id)
  JOIN hooks.outbox o ON o.delivery_id = k.head JOIN hooks.events e ON e.event_id = o.event_id
 ORDER BY 2;

-- a claim takes each key's head only (and everything of the plain webhook)
CREATE TEMP TABLE c1 AS SELECT * FROM hooks.claim('s1', 100);
SELECT e.event_key, w.webhook_name FROM c1 JOIN hooks.webhooks w USING (webhook_id)
  JOIN hooks.outbox o USING (delivery_id) JOIN hooks.events e USING (event_id) ORDER BY 2, 1;
-- P1's head fails once (retrying: P1 still waits), P2's head succeeds
SELECT hooks.complete('s1', (SELECT jsonb_agg(jsonb_build_object('delivery_id', c1.delivery_id, 'attempt_number', c1.attempt_number,
                                  'lease_token', c1.lease_token,
                                  'status_code', CASE WHEN e.event_key = 'p1' THEN 500 ELSE 200 END))
                              FROM c1 JOIN hooks.outbox o USING (delivery_id) JOIN hooks.events e USING (event_id)));
SELECT * FROM q WHERE webhook_name = 'ordered';
-- its retry succeeds: p2 is due now, p4 still waits
UPDATE hooks.queue SET next_attempt_at = now() WHERE status = 'retrying';
SELECT pg_temp.answer(200);
SELECT * FROM q WHERE webhook_name = 'ordered';

-- skip: p2 fails for good (maxAttempts 2) and p4 goes
SELECT pg_temp.fail_twice();
SELECT * FROM q WHERE webhook_name = 'ordered' AND order_key = 'P1';
SELECT count(*) AS blocked FROM hooks.blocked_keys;

-- block: with ordering_on_failure 'block', p4's final failure holds up P1
SELECT (hooks.update_webhook(webhook_id, '{"ordering_on_failure": "block"}')).ordering_on_failure
  FROM hooks.webhooks WHERE webhook_name = 'ordered';
SELECT hooks.publish('{"event": "policy/renewed", "id": "p5", "data": {"tenantId": "acme", "policyNumber": "P1"}}') IS NOT NULL;
SELECT * FROM q WHERE webhook_name = 'ordered' AND order_key = 'P1';
SELECT pg_temp.fail_twice();
SELECT * FROM q WHERE webhook_name = 'ordered' AND order_key = 'P1';
SELECT b.order_key, e.event_key, b.error_message, b.waiting FROM hooks.blocked_keys b
  JOIN hooks.outbox o USING (delivery_id) JOIN hooks.events e USING (event_id);
-- nothing of P1 is claimed while it is blocked; other keys go on
SELECT hooks.publish('{"event": "policy/renewed", "id": "p6", "data": {"tenantId": "acme", "policyNumber": "P2"}}') IS NOT NULL;
SELECT e.event_key FROM hooks.claim('s1', 100) c JOIN hooks.outbox o USING (delivery_id) JOIN hooks.events e USING (event_id)
 WHERE c.webhook_id = (SELECT webhook_id FROM hooks.webhooks WHERE webhook_name = 'ordered');
-- enabling a webhook again does not let waiting deliveries go
SELECT (hooks.disable_webhook(webhook_id, 'maintenance', cancel_queued => false)).enabled FROM hooks.webhooks WHERE webhook_name = 'ordered';
SELECT (hooks.enable_webhook(webhook_id)).enabled FROM hooks.webhooks WHERE webhook_name = 'ordered';
SELECT * FROM q WHERE webhook_name = 'ordered' AND order_key = 'P1';
-- retry_delivery sends the failed one again first: P1 unblocked, p5 still behind it
SELECT (hooks.retry_delivery(delivery_id)).status FROM hooks.blocked_keys;
SELECT * FROM q WHERE webhook_name = 'ordered' AND order_key = 'P1';
SELECT pg_temp.fail_twice();
-- failed again: skip_delivery lets p5 go, p4 stays failed
SELECT regexp_replace(sqlstate_of($$SELECT hooks.skip_delivery(delivery_id) FROM hooks.deliveries d JOIN hooks.events e USING (event_id) WHERE e.event_key = 'p1' AND d.webhook_id = (SELECT webhook_id FROM hooks.webhooks WHERE webhook_name = 'ordered')$$), '[0-9]+ is', 'N is');
SELECT sqlstate_of($$SELECT hooks.skip_delivery(-1)$$);
SELECT (hooks.skip_delivery(delivery_id, 'known bad')).status FROM hooks.blocked_keys;
SELECT * FROM q WHERE webhook_name = 'ordered' AND order_key = 'P1';
SELECT count(*) AS blocked FROM hooks.blocked_keys;
-- skipping a queued one cancels it; the next goes
SELECT hooks.publish('{"event": "policy/renewed", "id": "p7", "data": {"tenantId": "acme", "policyNumber": "P1"}}') IS NOT NULL;
SELECT (hooks.skip_delivery(d.delivery_id, 'obsolete')).error_message
  FROM hooks.deliveries d JOIN hooks.events e USING (event_id)
 WHERE e.event_key = 'p5' AND d.webhook_id = (SELECT webhook_id FROM hooks.webhooks WHERE webhook_name = 'ordered');
SELECT * FROM q WHERE webhook_name = 'ordered' AND order_key = 'P1';

-- one statement of a watched table publishes its rows' events in one call: per key, the first
-- row's delivery is the head and the others wait behind it, in row order
CREATE TABLE public.ledger (id int PRIMARY KEY, tenant text NOT NULL, account text);
SELECT webhook_name, ordering_key
  FROM hooks.create_webhook('acme', 'ledger', 'ledger/*', 'https://ledger.example/', ordering_key => 'data.record.account');
SELECT count(*) FROM hooks.watch_table('public.ledger', tenant_column => 'tenant');
INSERT INTO public.ledger VALUES (1, 'acme', 'L1'), (2, 'acme', 'L2'), (3, 'acme', 'L1'), (4, 'acme', 'L1');
SELECT (e.body::jsonb)->'data'->'record'->>'id' AS row_id, o.order_key, d.next_attempt_at = 'infinity' AS waits
  FROM hooks.deliveries d JOIN hooks.outbox o ON o.delivery_id = d.delivery_id JOIN hooks.events e ON e.event_id = d.event_id
 WHERE d.webhook_id = (SELECT webhook_id FROM hooks.webhooks WHERE webhook_name = 'ledger')
 ORDER BY d.delivery_id;

-- a long key is keyed by its md5; an object key by its JSON text
SELECT hooks._order_key('{"a": {"b": "x"}}', 'a.b') AS k1, hooks._order_key('{"a": {"b": {"c": 1}}}', 'a.b') AS k2,
       hooks._order_key(jsonb_build_object('a', repeat('y', 300)), 'a') AS k3, hooks._order_key('{"a": 1}', 'b') AS k4;

-- disabling the webhook cancels the key's queue; the key is idle afterwards
SELECT hooks.publish('{"event": "policy/renewed", "id": "p8", "data": {"tenantId": "acme", "policyNumber": "P9"}}') IS NOT NULL;
SELECT hooks.publish('{"event": "policy/renewed", "id": "p9", "data": {"tenantId": "acme", "policyNumber": "P9"}}') IS NOT NULL;
SELECT (hooks.disable_webhook(webhook_id)).enabled FROM hooks.webhooks WHERE webhook_name = 'ordered';
SELECT * FROM q WHERE webhook_name = 'ordered' AND order_key = 'P9';
SELECT k.order_key, k.head FROM hooks.order_keys k WHERE k.order_key = 'P9';
-- and deliveries queued again (redeliver, replay) go in order behind the key's head
SELECT (hooks.enable_webhook(webhook_id)).enabled FROM hooks.webhooks WHERE webhook_name = 'ordered';
SELECT hooks.replay_event(event_id) FROM hooks.events WHERE event_key IN ('p8', 'p9') ORDER BY event_id;
SELECT * FROM q WHERE webhook_name = 'ordered' AND order_key = 'P9';
ROLLBACK;
