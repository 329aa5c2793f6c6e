-- Payload envelopes: a webhook's envelope decides the body its receiver gets. The event is
-- stored once; each delivery records the envelope at publish time, and hooks.claim renders the
-- body in it, signed as sent.
SET hooks.max_in_flight_per_webhook = 0;
SELECT webhook_name, envelope
  FROM hooks.create_webhook('env', 'beema', 'policy/*', 'https://beema.example/', secret => 'secret-beema');
SELECT webhook_name, envelope
  FROM hooks.create_webhook('env', 'standard', 'policy/*', 'https://standard.example/', secret => 'secret-standard',
                            envelope => 'standard');
SELECT webhook_name, envelope
  FROM hooks.create_webhook('env', 'flat', 'policy/*', 'https://flat.example/', secret => 'secret-flat',
                            envelope => 'flat');
SELECT webhook_name, envelope
  FROM hooks.create_webhook('env', 'supabase', 'policy/*', 'https://supabase.example/', secret => 'secret-supabase',
                            envelope => 'supabase');
SELECT hooks.publish('{"event": "policy/bound", "id": "p-1", "timestamp": "2026-12-01T10:00:00.000Z",
                       "data": {"tenantId": "env", "premium": 1234.50, "holder": "Zoë", "type": "INSERT",
                                "table": "policies", "schema": "public", "record": {"id": 1}, "old_record": null}}') IS NOT NULL AS published;
-- recorded per delivery (NULL: beema)
SELECT w.webhook_name, o.envelope FROM hooks.outbox o JOIN hooks.webhooks w USING (webhook_id)
 WHERE o.tenant_id = 'env' ORDER BY w.webhook_name;
-- the bodies a sender gets, and their X-Beema-Signature is over exactly those bytes
CREATE TEMP TABLE claimed AS
SELECT c.*, w.webhook_name, w.secret FROM hooks.claim('env-sender', 10) c JOIN hooks.webhooks w USING (webhook_id);
SELECT webhook_name, body FROM claimed ORDER BY webhook_name;
SELECT webhook_name, headers->>'X-Beema-Signature' = hooks.sign(body, secret) AS signed_as_sent
  FROM claimed ORDER BY webhook_name;
-- a retry sends the same bytes: fail them all, claim again, compare
SELECT hooks.complete('env-sender', (SELECT jsonb_agg(jsonb_build_object('delivery_id', delivery_id,
           'attempt_number', attempt_number, 'lease_token', lease_token, 'status_code', 503)) FROM claimed)) AS failed;
UPDATE hooks.queue SET next_attempt_at = now() - interval '1 second' WHERE tenant_id = 'env';
SELECT c.webhook_name, c.body = r.body AS same_body, r.attempt_number
  FROM claimed c JOIN hooks.claim('env-sender', 10) r USING (delivery_id) ORDER BY c.webhook_name;
-- changing a webhook's envelope applies to deliveries queued afterwards, not to those already queued
SELECT (hooks.update_webhook(webhook_id, '{"envelope": "flat"}')).envelope FROM hooks.webhooks WHERE webhook_name = 'standard';
SELECT hooks.publish('{"event": "policy/lapsed", "data": {"tenantId": "env"}}') IS NOT NULL AS published;
SELECT e.event_type, coalesce(o.envelope, 'beema') AS envelope
  FROM hooks.outbox o JOIN hooks.webhooks w USING (webhook_id) JOIN hooks.events e USING (event_id)
 WHERE w.webhook_name = 'standard' ORDER BY o.delivery_id;
-- unknown envelopes are refused on write (22023)
SELECT sqlstate_of(q) FROM (VALUES
    ($$SELECT hooks.create_webhook('env', 'bad', '*', 'https://a.example/', envelope => 'cloudevents')$$),
    ($$UPDATE hooks.webhooks SET envelope = 'Standard' WHERE webhook_name = 'beema'$$),
    ($$UPDATE hooks.webhooks SET envelope = NULL WHERE webhook_name = 'beema'$$)
) AS t(q);
-- the renderer on its own
SELECT hooks._render_envelope('standard', '{"id":"x","event":"a/b","data":{"n":1.50},"user":{},"timestamp":7}') AS standard,
       hooks._render_envelope('beema', 'kept as it is') AS beema;
RESET hooks.max_in_flight_per_webhook;
DELETE FROM hooks.webhooks WHERE tenant_id = 'env';
DELETE FROM hooks.events WHERE tenant_id = 'env';
