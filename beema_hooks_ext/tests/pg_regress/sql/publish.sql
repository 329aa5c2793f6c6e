-- hooks.publish: one event row, one delivery per matching webhook, idempotent per (tenant, id).
BEGIN;
INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, secret) VALUES
    ('acme', 'bound',  'policy/bound', 'https://a.example/bound',  'secret-0001'),
    ('acme', 'claims', 'claim/*',      'https://a.example/claims', 'secret-0002'),
    ('beta', 'all',    '*',            'https://b.example/all',    'secret-0003');

SELECT hooks.publish('{"event": "policy/bound", "id": "evt-1", "timestamp": "2026-11-23T10:00:00Z",
                       "data": {"tenantId": "acme", "policyId": 42, "premium": 1234.50},
                       "user": {"id": "u-7"}}') IS NOT NULL AS published;
-- Inngest's "name" and a top-level tenantId
SELECT hooks.publish('{"name": "claim/opened", "id": "evt-2", "tenantId": "acme",
                       "timestamp": 1763892000000, "data": {"claimId": "C-1"}}') IS NOT NULL AS published;
-- no webhook matches: the event is still recorded, no delivery
SELECT hooks.publish('{"event": "agreement/updated", "id": "evt-3", "timestamp": "t",
                       "data": {"tenantId": "acme"}}') IS NOT NULL AS published;
-- the same id again: same event id, nothing new written
SELECT hooks.publish('{"event": "policy/bound", "id": "evt-1", "data": {"tenantId": "acme"}}')
     = (SELECT event_id FROM hooks.events WHERE event_key = 'evt-1') AS same_event_id;

SELECT tenant_id, event_type, event_key, body FROM hooks.events ORDER BY event_id;
SELECT d.tenant_id, w.webhook_name, d.event_type, d.status, d.attempt_number
  FROM hooks.deliveries d JOIN hooks.webhooks w USING (webhook_id)
 ORDER BY d.delivery_id;

-- the delivery view DBAs read
SELECT tenant_id, webhook_name, event_type, event_key, status, attempts FROM hooks.delivery_log ORDER BY delivery_id;
ROLLBACK;

-- A rolled-back publish leaves nothing behind.
BEGIN;
INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, secret)
VALUES ('acme', 'all', '*', 'https://a.example/all', 'secret-0001');
COMMIT;
BEGIN;
SELECT hooks.publish('{"event": "policy/bound", "data": {"tenantId": "acme"}}') IS NOT NULL AS published;
ROLLBACK;
SELECT (SELECT count(*) FROM hooks.events) AS events, (SELECT count(*) FROM hooks.deliveries) AS deliveries;
-- and a savepoint rolled back inside a committed transaction
BEGIN;
SAVEPOINT s;
SELECT hooks.publish('{"event": "policy/bound", "data": {"tenantId": "acme"}}') IS NOT NULL AS published;
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT (SELECT count(*) FROM hooks.events) AS events, (SELECT count(*) FROM hooks.deliveries) AS deliveries;
DELETE FROM hooks.webhooks;
