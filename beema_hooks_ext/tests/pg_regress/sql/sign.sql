-- hooks.sign / verify: the seeds' X-Beema-Signature, byte for byte Node's createHmac output.
BEGIN;
-- RFC 4231 test case 2
SELECT hooks.sign('what do ya want for nothing?', 'Jefe');
-- non-ASCII payload: the UTF-8 bytes are signed
SELECT hooks.sign('{"name":"Zoë","note":"🚀 ünïcödé"}', 'whsec_not-decoded-here');
SELECT hooks.verify('{"name":"Zoë"}', 's3cret', hooks.sign('{"name":"Zoë"}', 's3cret')) AS good,
       hooks.verify('{"name":"Zoe"}', 's3cret', hooks.sign('{"name":"Zoë"}', 's3cret')) AS tampered,
       hooks.verify('{"name":"Zoë"}', 'other', hooks.sign('{"name":"Zoë"}', 's3cret')) AS wrong_key;
-- NULL in, NULL out
SELECT hooks.sign(NULL, 'x') IS NULL AS null_payload, hooks.sign('x', NULL) IS NULL AS null_secret;
-- Standard Webhooks: the reference libraries' example
SELECT hooks.sign_standard('msg_p5jXN8AQM9LWM0D4loKWxJek', 1614265330, '{"test": 2432232314}',
                           ARRAY['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw']);
-- two secrets (a rotation): two space-separated signatures, each verifies
SELECT array_length(string_to_array(hooks.sign_standard('id', 1, '{}', ARRAY['whsec_AAAA', 'plain-secret']), ' '), 1) AS signatures,
       hooks.verify_standard('id', 1, '{}', 'plain-secret',
                             hooks.sign_standard('id', 1, '{}', ARRAY['whsec_AAAA', 'plain-secret'])) AS second_verifies;
SELECT left(s, 6) AS prefix, length(s) AS length FROM hooks.generate_secret() s;
ROLLBACK;
