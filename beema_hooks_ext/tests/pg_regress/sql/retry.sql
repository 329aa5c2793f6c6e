-- The retry schedule of each backoff strategy (retry_config.strategy): the delay before the
-- next attempt after failed attempt n, with backoffMs 1000 and maxBackoffMs 30000, exact
-- (jitter off) and at both ends of the jitter (factor 0.8 at 0, just under 1.2 near 1).
SELECT n AS failed_attempt,
       hooks.retry_delay_ms('{"backoffMs": 1000, "maxBackoffMs": 30000, "jitter": false}', n, NULL, 0.5) AS exponential,
       hooks.retry_delay_ms('{"backoffMs": 1000, "maxBackoffMs": 30000, "jitter": false, "strategy": "linear"}', n, NULL, 0.5) AS linear,
       hooks.retry_delay_ms('{"backoffMs": 1000, "maxBackoffMs": 30000, "jitter": false, "strategy": "fixed"}', n, NULL, 0.5) AS fixed,
       hooks.retry_delay_ms('{"backoffMs": 1000, "maxBackoffMs": 30000, "strategy": "linear"}', n, NULL, 0) AS linear_jitter_low,
       hooks.retry_delay_ms('{"backoffMs": 1000, "maxBackoffMs": 30000, "strategy": "linear"}', n, NULL, 0.999999) AS linear_jitter_high
  FROM generate_series(1, 7) n;
-- the default is exponential with jitter, as before 0.3.0
SELECT hooks.retry_delay_ms('{"backoffMs": 1000}', 3, NULL, 0.5) AS default_3rd,
       hooks.retry_delay_ms('{"backoffMs": 1000, "strategy": "exponential", "jitter": true}', 3, NULL, 0.5) AS explicit_3rd,
       hooks.retry_delay_ms('{"backoffMs": 1000}', 3, NULL, 0) AS default_3rd_jitter_low;
-- a longer Retry-After still wins, whatever the strategy
SELECT hooks.retry_delay_ms('{"backoffMs": 1000, "strategy": "fixed"}', 4, 20000, 0.5) AS fixed_with_retry_after;
-- webhooks take the strategy on create and update, and refuse what is not one (22023)
SELECT (hooks.create_webhook('acme', 'linear', 'x/*', 'https://a.example/',
                             retry_config => '{"maxAttempts": 5, "backoffMs": 200, "strategy": "linear"}')).retry_config;
SELECT sqlstate_of($$SELECT hooks.create_webhook('acme', 'bad', 'x/*', 'https://a.example/', retry_config => '{"strategy": "random"}')$$);
SELECT sqlstate_of($$UPDATE hooks.webhooks SET retry_config = '{"strategy": "fixed", "jitter": "off"}' WHERE webhook_name = 'linear'$$);
DELETE FROM hooks.webhooks WHERE tenant_id = 'acme';
