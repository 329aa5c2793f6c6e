-- Asymmetric signatures (v1a, ed25519), native flavor only (portable/sql/v1a.sql: 0A000 there).
-- RFC 8032's test 1 seed, as a whsk_ key: its public key is the RFC's; signatures are
-- deterministic, so the exact value is checked.
\set key 'whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A='
SELECT hooks.public_key(:'key') AS rfc8032_test1_public_key;
SELECT hooks.sign_standard_v1a('msg_1', 1700000000, '{"a":1}', :'key') AS signature;
SELECT hooks.verify_standard_v1a('msg_1', 1700000000, '{"a":1}', hooks.public_key(:'key'),
                                 'v1,abc ' || hooks.sign_standard_v1a('msg_1', 1700000000, '{"a":1}', :'key')) AS verifies,
       hooks.verify_standard_v1a('msg_1', 1700000000, '{"a":2}', hooks.public_key(:'key'),
                                 hooks.sign_standard_v1a('msg_1', 1700000000, '{"a":1}', :'key')) AS changed_body;
SELECT left(sqlstate_of($$SELECT hooks.public_key('whsec_abc')$$), 5) AS not_a_signing_key,
       left(sqlstate_of($$SELECT hooks.sign_standard_v1a('m', 1, 'b', 'whsk_AAAA')$$), 5) AS short_key,
       hooks.generate_signing_key() LIKE 'whsk_%' AS generated;

-- a webhook asking for v1 and v1a gets a signing key, and claims carry both signatures
BEGIN;
SELECT count(*) FROM hooks.create_webhook('acme', 'ed', 'ed/*', 'https://ed.example/', 'secret-ed-1');
SELECT signatures, signing_key LIKE 'whsk_%' AS has_key
  FROM hooks.update_webhook((SELECT webhook_id FROM hooks.webhooks WHERE webhook_name = 'ed'), '{"signatures": ["v1", "v1a"]}');
SELECT hooks.publish('{"event": "ed/x", "data": {"tenantId": "acme"}}') IS NOT NULL AS published;
SELECT (c.headers->>'webhook-signature') ~ '^v1,[^ ]+ v1a,[^ ]+$' AS both_entries,
       hooks.verify_standard(c.headers->>'webhook-id', (c.headers->>'webhook-timestamp')::bigint, c.body,
                             'secret-ed-1', c.headers->>'webhook-signature') AS v1_verifies,
       hooks.verify_standard_v1a(c.headers->>'webhook-id', (c.headers->>'webhook-timestamp')::bigint, c.body,
                                 hooks.public_key(w.signing_key), c.headers->>'webhook-signature') AS v1a_verifies
  FROM hooks.claim('s-ed', 1) c JOIN hooks.webhooks w USING (webhook_id);
SELECT left(sqlstate_of($$SELECT hooks.update_webhook((SELECT webhook_id FROM hooks.webhooks WHERE webhook_name = 'ed'), '{"signatures": ["v2"]}')$$), 5) AS unknown_scheme,
       left(sqlstate_of($$SELECT hooks.update_webhook((SELECT webhook_id FROM hooks.webhooks WHERE webhook_name = 'ed'), '{"signatures": []}')$$), 5) AS none,
       left(sqlstate_of($$UPDATE hooks.webhooks SET signing_key = 'whsk_x' WHERE webhook_name = 'ed'$$), 5) AS bad_key;
-- rotation: the new key signs at once, the previous one too during the grace period, so a
-- receiver with either public key accepts; afterwards only the new one
SELECT hooks.public_key(signing_key) AS old_public_key FROM hooks.webhooks WHERE webhook_name = 'ed' \gset
SELECT hooks.rotate_signing_key(webhook_id, grace => '1 hour') <> :'old_public_key' AS new_public_key
  FROM hooks.webhooks WHERE webhook_name = 'ed';
SELECT hooks.public_key(signing_key) AS new_public_key FROM hooks.webhooks WHERE webhook_name = 'ed' \gset
SELECT hooks.publish('{"event": "ed/y", "data": {"tenantId": "acme"}}') IS NOT NULL AS published;
SELECT (c.headers->>'webhook-signature') ~ '^v1,[^ ]+ v1a,[^ ]+ v1a,[^ ]+$' AS two_v1a,
       hooks.verify_standard_v1a(c.headers->>'webhook-id', (c.headers->>'webhook-timestamp')::bigint, c.body,
                                 :'old_public_key', c.headers->>'webhook-signature') AS old_verifies,
       hooks.verify_standard_v1a(c.headers->>'webhook-id', (c.headers->>'webhook-timestamp')::bigint, c.body,
                                 :'new_public_key', c.headers->>'webhook-signature') AS new_verifies
  FROM hooks.claim('s-ed', 1) c;
-- an hour later (moved back instead of waited for): the old key no longer signs, and purge forgets it
UPDATE hooks.webhooks SET previous_signing_key_expires_at = now() - interval '1 second' WHERE webhook_name = 'ed';
SELECT hooks.publish('{"event": "ed/z", "data": {"tenantId": "acme"}}') IS NOT NULL AS published;
SELECT hooks.verify_standard_v1a(c.headers->>'webhook-id', (c.headers->>'webhook-timestamp')::bigint, c.body,
                                 :'old_public_key', c.headers->>'webhook-signature') AS old_after_grace,
       hooks.verify_standard_v1a(c.headers->>'webhook-id', (c.headers->>'webhook-timestamp')::bigint, c.body,
                                 :'new_public_key', c.headers->>'webhook-signature') AS new_after_grace
  FROM hooks.claim('s-ed', 1) c;
CALL hooks.purge('30 days', commit_each_batch => false);
SELECT previous_signing_key IS NULL AS forgotten FROM hooks.webhooks WHERE webhook_name = 'ed';
SELECT left(sqlstate_of($$SELECT hooks.rotate_signing_key((SELECT webhook_id FROM hooks.webhooks WHERE webhook_name = 'ed'), grace => '31 days')$$), 5) AS long_grace,
       left(sqlstate_of($$SELECT hooks.rotate_signing_key(-1)$$), 5) AS no_webhook;
ROLLBACK;
