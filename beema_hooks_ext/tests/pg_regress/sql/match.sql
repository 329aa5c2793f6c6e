-- hooks.match and hooks.pattern_matches: which webhooks an event selects.
BEGIN;
INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, secret) VALUES
    ('acme', 'exact',     'policy/bound', 'https://a.example/1', 'secret-0001'),
    ('acme', 'all',       '*',            'https://a.example/2', 'secret-0002'),
    ('acme', 'claims',    'claim/*',      'https://a.example/3', 'secret-0003'),
    ('acme', 'created',   '*.created',    'https://a.example/4', 'secret-0004'),
    ('acme', 'off',       'policy/bound', 'https://a.example/5', 'secret-0005'),
    ('beta', 'exact',     'policy/bound', 'https://b.example/1', 'secret-0006');
UPDATE hooks.webhooks SET enabled = false WHERE webhook_name = 'off';

SELECT e.event_type, string_agg(m.webhook_name, ', ' ORDER BY m.webhook_name) AS matches
  FROM (VALUES ('policy/bound'), ('claim/opened'), ('claim/opened/late'), ('claim.opened'),
               ('invoice.created'), ('agreement/updated')) AS e(event_type)
  LEFT JOIN LATERAL hooks.match(e.event_type, 'acme') m ON true
 GROUP BY e.event_type
 ORDER BY e.event_type;

SELECT webhook_name FROM hooks.match('policy/bound', 'beta') ORDER BY 1;
SELECT count(*) AS unknown_tenant FROM hooks.match('policy/bound', 'nobody');

SELECT p, e, hooks.pattern_matches(p, e)
  FROM (VALUES ('*', 'a/b'), ('a/*', 'a/b'), ('a/*', 'a/b/c'), ('*/b', 'a/b'),
               ('a.*', 'a/b'), ('a/b', 'a/b'), ('a/b', 'a/c')) AS t(p, e)
 ORDER BY p, e;
ROLLBACK;

-- Several event types per webhook: event_type and the further patterns of event_types, any of
-- them selecting the event; each webhook matched (and published to) once.
BEGIN;
SELECT webhook_name, event_type, event_types
  FROM hooks.create_webhook('multi', 'crm', 'policy/bound', 'https://crm.example/',
                            event_types => ARRAY['claim/*', 'policy/bound', 'invoice.created', '*.created']);
SELECT webhook_name, event_type, event_types
  FROM hooks.create_webhook('multi', 'single', 'claim/opened', 'https://single.example/');
SELECT pattern, is_pattern, pattern_prefix FROM hooks.webhook_patterns ORDER BY pattern;
SELECT e.event_type, string_agg(m.webhook_name, ', ' ORDER BY m.webhook_name) AS matches
  FROM (VALUES ('policy/bound'), ('claim/opened'), ('claim/closed'), ('invoice.created'),
               ('order.created'), ('policy/lapsed')) AS e(event_type)
  LEFT JOIN LATERAL hooks.match(e.event_type, 'multi') m ON true
 GROUP BY e.event_type
 ORDER BY e.event_type;
-- one delivery per webhook, though three of crm's patterns select invoice.created
SELECT hooks.publish('{"event": "invoice.created", "data": {"tenantId": "multi"}}') AS event_id \gset
SELECT w.webhook_name, count(*) AS deliveries
  FROM hooks.outbox o JOIN hooks.webhooks w USING (webhook_id)
 WHERE o.event_id = :event_id GROUP BY w.webhook_name;
-- changing the list rewrites the index rows; another tenant's event never matches them
SELECT (hooks.update_webhook(webhook_id, '{"event_types": ["order.*"]}')).event_types
  FROM hooks.webhooks WHERE webhook_name = 'crm';
SELECT pattern FROM hooks.webhook_patterns ORDER BY pattern;
SELECT count(*) AS other_tenant FROM hooks.match('order.created', 'acme');
SELECT string_agg(webhook_name, ', ') AS order_created FROM hooks.match('order.created', 'multi');
-- disabled: its further patterns match nothing either
UPDATE hooks.webhooks SET enabled = false WHERE webhook_name = 'crm';
SELECT count(*) AS disabled FROM hooks.match('order.created', 'multi');
-- an empty list is no list; null removes it; deleting the webhook deletes its rows
SELECT (hooks.update_webhook(webhook_id, '{"event_types": []}')).event_types IS NULL AS emptied
  FROM hooks.webhooks WHERE webhook_name = 'crm';
SELECT count(*) AS rows_left FROM hooks.webhook_patterns;
UPDATE hooks.webhooks SET event_types = ARRAY['a/b'] WHERE webhook_name = 'crm';
DELETE FROM hooks.webhooks WHERE webhook_name = 'crm';
SELECT count(*) AS rows_after_delete FROM hooks.webhook_patterns;
-- invalid lists are refused on write, naming the element (22023)
SELECT sqlstate_of(q) FROM (VALUES
    ($$SELECT hooks.create_webhook('multi', 'bad', 'a/b', 'https://a.example/', event_types => ARRAY['a/b', 'claim/x*'])$$),
    ($$SELECT hooks.create_webhook('multi', 'bad', 'a/b', 'https://a.example/', event_types => ARRAY['a/b', NULL])$$),
    ($$SELECT hooks.create_webhook('multi', 'bad', 'a/b', 'https://a.example/', event_types => array_fill('a/b'::text, ARRAY[51]))$$),
    ($$SELECT hooks.update_webhook(webhook_id, '{"event_types": "claim/*"}') FROM hooks.webhooks WHERE webhook_name = 'single'$$),
    ($$UPDATE hooks.webhooks SET event_types = ARRAY[''] WHERE webhook_name = 'single'$$)
) AS t(q);
ROLLBACK;
