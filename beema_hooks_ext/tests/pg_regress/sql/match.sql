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
