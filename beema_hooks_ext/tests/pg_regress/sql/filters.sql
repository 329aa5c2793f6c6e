-- Payload filters: a webhook's `filter` (the event body must contain it) and `filter_path` (a
-- jsonpath predicate on the body) decide at publish time whether it gets a delivery.
SELECT count(*) FROM hooks.create_webhook('acme', 'all', 'policy/*', 'https://all.example/');
SELECT count(*) FROM hooks.create_webhook('acme', 'bound-only', 'policy/*', 'https://bound.example/',
                                          filter => '{"data": {"status": "bound"}}');
SELECT count(*) FROM hooks.create_webhook('acme', 'large', 'policy/*', 'https://large.example/',
                                          filter_path => '$.data.premium > 1000');
SELECT count(*) FROM hooks.create_webhook('acme', 'large-motor', 'policy/*', 'https://motor.example/',
                                          filter => '{"data": {"line": "motor"}}',
                                          filter_path => '$.data.premium > 1000');
CREATE FUNCTION pg_temp.published_to(event jsonb) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_event bigint := hooks.publish(event);
BEGIN
    RETURN (SELECT coalesce(string_agg(w.webhook_name, ', ' ORDER BY w.webhook_name), '(none)')
              FROM hooks.outbox o JOIN hooks.webhooks w USING (webhook_id)
             WHERE o.event_id = v_event);
END
$$;
CREATE FUNCTION pg_temp.matched(event jsonb) RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(string_agg(m.webhook_name, ', ' ORDER BY m.webhook_name), '(none)') FROM hooks.match(event) m
$$;
-- what publish queues, and what hooks.match(event) says beforehand: the same
SELECT e->'data' AS data, pg_temp.matched(e) AS matched, pg_temp.published_to(e) AS published_to
  FROM (VALUES
    ('{"event": "policy/bound", "data": {"tenantId": "acme", "status": "bound", "premium": 500, "line": "home"}}'::jsonb),
    ('{"event": "policy/bound", "data": {"tenantId": "acme", "status": "bound", "premium": 5000, "line": "motor"}}'),
    ('{"event": "policy/quoted", "data": {"tenantId": "acme", "status": "quoted", "premium": 1500, "line": "home"}}'),
    ('{"event": "policy/quoted", "data": {"tenantId": "acme", "status": "quoted"}}'),
    -- a premium that is text: the predicate cannot compare it, which counts as no match
    ('{"event": "policy/quoted", "data": {"tenantId": "acme", "premium": "a lot", "line": "motor"}}'),
    -- a nested value and an array: containment looks inside
    ('{"event": "policy/bound", "data": {"tenantId": "acme", "status": "bound", "tags": ["a", "b"]}}')
  ) AS t(e);
-- the session's transaction is never aborted by a filter: still usable
SELECT 'still in a good state' AS after_type_mismatch;
-- a filter is part of the webhook's row, shown and changed like the rest
SELECT webhook_name, filter, filter_path FROM hooks.webhooks WHERE tenant_id = 'acme' ORDER BY webhook_name;
SELECT (hooks.update_webhook(webhook_id, '{"filter_path": "$.data.premium > 10"}')).filter_path
  FROM hooks.webhooks WHERE webhook_name = 'large';
SELECT (hooks.update_webhook(webhook_id, '{"filter": null}')).filter
  FROM hooks.webhooks WHERE webhook_name = 'bound-only';
SELECT pg_temp.matched('{"event": "policy/lapsed", "data": {"tenantId": "acme", "premium": 50}}') AS matched_after_update;
-- invalid filters are refused on write (22023; 42601 for a jsonpath that does not parse),
-- through the functions and plain DML alike
SELECT sqlstate_of(q) FROM (VALUES
    ($$SELECT hooks.create_webhook('acme', 'bad', '*', 'https://a.example/', filter => '["bound"]')$$),
    ($$SELECT hooks.create_webhook('acme', 'bad', '*', 'https://a.example/', filter => '"bound"')$$),
    ($$SELECT hooks.create_webhook('acme', 'bad', '*', 'https://a.example/', filter_path => '$.data.premium')$$),
    ($$SELECT hooks.create_webhook('acme', 'bad', '*', 'https://a.example/', filter_path => '$.data.premium >')$$),
    ($$UPDATE hooks.webhooks SET filter = 'null' WHERE webhook_name = 'all'$$),
    ($$UPDATE hooks.webhooks SET filter = jsonb_build_object('x', repeat('y', 9000)) WHERE webhook_name = 'all'$$),
    ($$SELECT hooks.update_webhook(webhook_id, '{"filter_path": "strict $.data"}') FROM hooks.webhooks WHERE webhook_name = 'all'$$)
) AS t(q);
-- hooks.match(event) refuses what publish refuses
SELECT sqlstate_of($$SELECT * FROM hooks.match('{"event": "policy/bound"}'::jsonb)$$);
-- replay follows the filters of now: the 500 premium event now also passes 'large' (> 10) and
-- 'bound-only' (no filter any more); 'all' and 'bound-only' had it already and start over
SELECT hooks.replay_event(e.event_id) AS replayed
  FROM hooks.events e WHERE e.body::jsonb->'data'->>'premium' = '500';
SELECT w.webhook_name, count(*) AS deliveries
  FROM hooks.events e JOIN hooks.outbox o USING (event_id) JOIN hooks.webhooks w USING (webhook_id)
 WHERE e.body::jsonb->'data'->>'premium' = '500'
 GROUP BY w.webhook_name ORDER BY 1;
DELETE FROM hooks.webhooks WHERE tenant_id = 'acme';
DELETE FROM hooks.events WHERE tenant_id = 'acme';
