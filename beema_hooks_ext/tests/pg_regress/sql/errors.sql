-- Every bad input raises a documented SQLSTATE naming the field, and writes nothing.
BEGIN;
INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, secret)
VALUES ('acme', 'all', '*', 'https://a.example/all', 'secret-0001');

SELECT q, sqlstate_of(q) FROM (VALUES
    ($$SELECT hooks.publish(NULL)$$),
    ($$SELECT hooks.publish('[1, 2]')$$),
    ($$SELECT hooks.publish('"policy/bound"')$$),
    ($$SELECT hooks.publish('42')$$),
    ($$SELECT hooks.publish('{}')$$),
    ($$SELECT hooks.publish('{"event": "", "data": {"tenantId": "acme"}}')$$),
    ($$SELECT hooks.publish('{"event": 7, "data": {"tenantId": "acme"}}')$$),
    ($$SELECT hooks.publish('{"event": "claim/*", "data": {"tenantId": "acme"}}')$$),
    ($$SELECT hooks.publish('{"event": "policy/bound"}')$$),
    ($$SELECT hooks.publish('{"event": "policy/bound", "data": {"tenantId": 12}}')$$),
    ($$SELECT hooks.publish('{"event": "policy/bound", "data": "acme"}')$$),
    ($$SELECT hooks.publish('{"event": "policy/bound", "data": {"tenantId": "acme"}, "id": 5}')$$),
    ($$SELECT hooks.publish('{"event": "policy/bound", "data": {"tenantId": "acme"}, "user": "bob"}')$$),
    ($$SELECT hooks.publish('{"event": "policy/bound", "data": {"tenantId": "acme"}, "timestamp": {}}')$$)
) AS t(q);

-- limits: hooks.max_payload_bytes (default 1 MiB) and nesting depth
SELECT sqlstate_of($$SELECT hooks.publish(jsonb_build_object('event', 'a/b', 'data',
        jsonb_build_object('tenantId', 'acme', 'blob', repeat('x', 2000000))))$$);
SET LOCAL hooks.max_payload_bytes = 2048;
SELECT sqlstate_of($$SELECT hooks.publish(jsonb_build_object('event', 'a/b', 'data',
        jsonb_build_object('tenantId', 'acme', 'blob', repeat('x', 3000))))$$);
SELECT sqlstate_of(format($$SELECT hooks.publish('{"event": "a/b", "data": {"tenantId": "acme", "deep": %s%s}}')$$,
                          repeat('[', 200), repeat(']', 200)));

-- webhooks: validated on plain INSERT and UPDATE
SELECT q, sqlstate_of(q) FROM (VALUES
    ($$INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url) VALUES ('acme', 'w1', '*', 'ftp://a.example/')$$),
    ($$INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url) VALUES ('acme', 'w1', '*', '/relative/path')$$),
    ($$INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url) VALUES ('acme', 'w1', '*', 'javascript:alert(1)')$$),
    ($$INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url) VALUES ('acme', 'w1', '*', 'https://user:pw@a.example/')$$),
    ($$INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url) VALUES ('acme', 'w1', 'claim/x*', 'https://a.example/')$$),
    ($$INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url) VALUES ('acme', 'w1', 'claim//x', 'https://a.example/')$$),
    ($$INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, headers) VALUES ('acme', 'w1', '*', 'https://a.example/', '{"X-A": "a\r\nX-Evil: 1"}')$$),
    ($$INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, headers) VALUES ('acme', 'w1', '*', 'https://a.example/', '{"x-beema-signature": "sha256=00"}')$$),
    ($$INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, headers) VALUES ('acme', 'w1', '*', 'https://a.example/', '{"X-A": 1}')$$),
    ($$INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, retry_config) VALUES ('acme', 'w1', '*', 'https://a.example/', '{"maxAttempts": -1}')$$),
    ($$INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, retry_config) VALUES ('acme', 'w1', '*', 'https://a.example/', '{"backoffMs": 99999999999}')$$),
    ($$INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, retry_config) VALUES ('acme', 'w1', '*', 'https://a.example/', '{"maxAtempts": 3}')$$),
    ($$INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, timeout_ms) VALUES ('acme', 'w1', '*', 'https://a.example/', 0)$$),
    ($$INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, secret) VALUES ('acme', 'w1', '*', 'https://a.example/', 'short')$$),
    ($$INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url) VALUES ('', 'w1', '*', 'https://a.example/')$$),
    ($$INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url) VALUES ('acme', 'w1', '*', NULL)$$),
    ($$INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url) VALUES ('acme', 'all', '*', 'https://a.example/')$$),
    ($$UPDATE hooks.webhooks SET url = 'not a url' WHERE webhook_name = 'all'$$)
) AS t(q);

-- the sender's API refuses nonsense
SELECT q, sqlstate_of(q) FROM (VALUES
    ($$SELECT * FROM hooks.claim('', 10)$$),
    ($$SELECT * FROM hooks.claim('s1', 0)$$),
    ($$SELECT * FROM hooks.claim('s1', 10, interval '0 seconds')$$),
    ($$SELECT hooks.complete('s1', '{}')$$),
    ($$SELECT hooks.release('s1', NULL)$$)
) AS t(q);

SELECT (SELECT count(*) FROM hooks.events) AS events, (SELECT count(*) FROM hooks.deliveries) AS deliveries,
       (SELECT count(*) FROM hooks.webhooks) AS webhooks;
ROLLBACK;
