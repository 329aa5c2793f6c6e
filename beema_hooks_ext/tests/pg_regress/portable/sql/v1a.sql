-- Asymmetric signatures (v1a, ed25519) on the portable flavor: pgcrypto has no ed25519, so
-- every v1a function and a webhook that asks for v1a raise 0A000 (native/sql/v1a.sql: the
-- signatures themselves).
SELECT left(sqlstate_of($$SELECT hooks.generate_signing_key()$$), 5) AS generate,
       left(sqlstate_of($$SELECT hooks.public_key('whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=')$$), 5) AS public_key,
       left(sqlstate_of($$SELECT hooks.sign_standard_v1a('m', 1, 'b', 'whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=')$$), 5) AS sign,
       left(sqlstate_of($$SELECT hooks.verify_standard_v1a('m', 1, 'b', 'whpk_x', 'v1a,x')$$), 5) AS verify;
BEGIN;
SELECT count(*) FROM hooks.create_webhook('acme', 'ed', 'ed/*', 'https://ed.example/', 'secret-ed-1');
SELECT left(sqlstate_of($$SELECT hooks.update_webhook((SELECT webhook_id FROM hooks.webhooks WHERE webhook_name = 'ed'), '{"signatures": ["v1", "v1a"]}')$$), 5) AS webhook_with_v1a,
       (SELECT signatures FROM hooks.webhooks WHERE webhook_name = 'ed') AS still,
       left(sqlstate_of($$SELECT hooks.rotate_signing_key((SELECT webhook_id FROM hooks.webhooks WHERE webhook_name = 'ed'))$$), 5) AS rotate;
ROLLBACK;
