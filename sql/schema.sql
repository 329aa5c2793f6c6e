-- beema_hooks schema: webhooks, events, deliveries (the outbox), attempts, senders.
-- Runs first in the install script (before the Rust functions); api.sql runs last.

-- Registered webhooks (the seeds' sys_webhooks). Validated by hooks._webhook_before_write().
CREATE TABLE hooks.webhooks (
    webhook_id      bigserial PRIMARY KEY,
    webhook_name    text        NOT NULL,
    tenant_id       text        NOT NULL,
    -- exact 'policy/bound', catch-all '*', or segment wildcards 'claim/*', '*.created'
    event_type      text        NOT NULL,
    url             text        NOT NULL,
    -- HMAC key; generated as whsec_<base64 of 32 random bytes> when not given
    secret          text        NOT NULL,
    enabled         boolean     NOT NULL DEFAULT true,
    headers         jsonb       NOT NULL DEFAULT '{}',
    retry_config    jsonb       NOT NULL DEFAULT '{"maxAttempts":3,"backoffMs":1000}',
    timeout_ms      integer     NOT NULL DEFAULT 10000,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    created_by      text,
    -- why the webhook was disabled, when it was disabled by the system (410 Gone) or an admin
    disabled_reason text,
    -- secret rotation: the previous secret also signs (webhook-signature) until this time
    previous_secret            text,
    previous_secret_expires_at timestamptz,
    -- circuit breaker state, maintained by hooks.complete()
    consecutive_failures integer     NOT NULL DEFAULT 0,
    failing_since        timestamptz,
    paused_until         timestamptz,
    last_success_at      timestamptz,
    last_failure_at      timestamptz,
    -- true when event_type holds a '*': such rows are matched by hooks.pattern_matches()
    is_pattern      boolean     GENERATED ALWAYS AS (strpos(event_type, '*') > 0) STORED,
    -- wildcard patterns: the literal text before the first '*' ('claim/' for 'claim/*', '' for
    -- '*.created'); publish looks up only the patterns whose prefix the event type starts with
    pattern_prefix  text        GENERATED ALWAYS AS (
        CASE WHEN strpos(event_type, '*') > 0 THEN left(event_type, strpos(event_type, '*') - 1) END) STORED,
    -- circuit breaker (README, "Circuit breaker"): failed probes since it opened (the cool-down
    -- is hooks.breaker_cooldown_ms x 2^breaker_level), and the last lease token issued when it
    -- last opened or a probe failed: requests with tokens up to it were already in flight, and
    -- their failures count once, with the one that opened it
    breaker_level   integer     NOT NULL DEFAULT 0,
    breaker_fence   bigint,
    CONSTRAINT webhooks_tenant_name_key UNIQUE (tenant_id, webhook_name)
);

-- publish: exact patterns are one index probe; wildcard patterns one probe per prefix of the
-- event type ('', 'claim/' for 'claim/opened'), each finding the patterns with that prefix.
CREATE INDEX webhooks_exact_idx   ON hooks.webhooks (tenant_id, event_type) WHERE enabled AND NOT is_pattern;
CREATE INDEX webhooks_prefix_idx  ON hooks.webhooks (tenant_id, pattern_prefix) WHERE enabled AND is_pattern;

-- One row per published event; the body is stored once however many webhooks match.
CREATE TABLE hooks.events (
    event_id    bigserial   PRIMARY KEY,
    tenant_id   text        NOT NULL,
    event_type  text        NOT NULL,
    -- the event's "id": the caller's (idempotency key) or a generated uuid
    event_key   text        NOT NULL,
    -- the exact JSON text sent to receivers and signed
    body        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_tenant_key_key UNIQUE (tenant_id, event_key)
);
CREATE INDEX events_created_idx ON hooks.events (created_at);

-- The outbox: one row per (event, matching webhook) (the seeds' sys_webhook_deliveries).
CREATE TABLE hooks.deliveries (
    delivery_id     bigserial   PRIMARY KEY,
    delivery_uuid   uuid        NOT NULL DEFAULT gen_random_uuid(),
    webhook_id      bigint      NOT NULL REFERENCES hooks.webhooks ON DELETE CASCADE,
    event_id        bigint      NOT NULL REFERENCES hooks.events ON DELETE CASCADE,
    tenant_id       text        NOT NULL,
    event_type      text        NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
        CONSTRAINT deliveries_status_check
        CHECK (status IN ('pending', 'in_flight', 'retrying', 'success', 'failed', 'cancelled')),
    status_code     integer,
    response_body   text,
    error_message   text,
    -- attempts started so far; the claim of attempt n sets it to n
    attempt_number  integer     NOT NULL DEFAULT 0,
    -- pending/retrying: when it is due; in_flight: when its lease expires
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_owner     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    -- the fence of the current (or last) lease: issued by hooks.claim from hooks.lease_tokens,
    -- unique for all time; complete and release apply only while the delivery still holds it
    lease_token     bigint,
    -- how long the circuit breaker has held this delivery back so far: at most
    -- hooks.breaker_max_cooldown_ms over its life, after which it is sent despite the breaker
    breaker_held_ms bigint      NOT NULL DEFAULT 0,
    CONSTRAINT deliveries_event_webhook_key UNIQUE (event_id, webhook_id)
);

-- Lease tokens (hooks.deliveries.lease_token): one per claim, never reused.
CREATE SEQUENCE hooks.lease_tokens;

-- claim: the due rows, oldest first, one index whatever the size of the finished history.
CREATE INDEX deliveries_due_idx ON hooks.deliveries (next_attempt_at)
    WHERE status IN ('pending', 'retrying', 'in_flight');
CREATE INDEX deliveries_webhook_idx ON hooks.deliveries (webhook_id, created_at);
-- claim: live leases (requests in flight) per webhook (hooks.max_in_flight_per_webhook)
CREATE INDEX deliveries_in_flight_idx ON hooks.deliveries (webhook_id, next_attempt_at) WHERE status = 'in_flight';
-- retention (hooks.purge): finished rows by age
CREATE INDEX deliveries_finished_idx ON hooks.deliveries (updated_at)
    WHERE status IN ('success', 'failed', 'cancelled');
CREATE UNIQUE INDEX deliveries_uuid_idx ON hooks.deliveries (delivery_uuid);

-- One row per HTTP attempt, written by hooks.complete() (and by hooks.claim() for attempts
-- whose sender vanished before reporting).
CREATE TABLE hooks.attempts (
    attempt_id      bigserial   PRIMARY KEY,
    delivery_id     bigint      NOT NULL REFERENCES hooks.deliveries ON DELETE CASCADE,
    webhook_id      bigint      NOT NULL,
    tenant_id       text        NOT NULL,
    attempt_number  integer     NOT NULL,
    sender_id       text,
    -- success | failure | lease_lost (result came after the lease passed to another sender)
    -- | lease_expired (the sender never reported; the delivery was claimed again)
    outcome         text        NOT NULL
        CONSTRAINT attempts_outcome_check
        CHECK (outcome IN ('success', 'failure', 'lease_lost', 'lease_expired')),
    status_code     integer,
    error_message   text,
    duration_ms     integer,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX attempts_delivery_idx ON hooks.attempts (delivery_id, attempt_number);
CREATE INDEX attempts_webhook_idx ON hooks.attempts (webhook_id, created_at);

-- Senders seen by hooks.claim(): whether each is awake (will claim again soon) decides whether
-- a publish needs to NOTIFY.
CREATE TABLE hooks.senders (
    sender_id   text        PRIMARY KEY,
    awake       boolean     NOT NULL,
    seen_at     timestamptz NOT NULL DEFAULT now()
);

-- pg_dump writes the rows of an extension's tables only when they are marked as configuration:
-- without this a dump and restore would keep the extension and lose every webhook, event and
-- delivery. The sequences are marked too, so new ids continue after the restored ones.
SELECT pg_catalog.pg_extension_config_dump('hooks.webhooks', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.webhooks_webhook_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.events', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.events_event_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.deliveries', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.deliveries_delivery_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.attempts', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.attempts_attempt_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.senders', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.lease_tokens', '');
