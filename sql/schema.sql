-- beema_hooks schema: webhooks, events, deliveries (outbox, queue, outcomes), attempts, senders.
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
    -- payload filters (README, "Payload filters"), checked by hooks.publish: the event must
    -- contain `filter` (jsonb @>) and satisfy the jsonpath predicate `filter_path`; NULL: none
    filter          jsonb,
    filter_path     jsonpath,
    -- further patterns (README, "Several event types per webhook"): an event matching event_type
    -- or any of these is delivered once; NULL: event_type only. Indexed in hooks.webhook_patterns.
    event_types     text[],
    -- the shape of the body its receiver gets (README, "Payload envelopes"): beema (the event as
    -- published), standard, flat or supabase; recorded per delivery at publish time
    envelope        text        NOT NULL DEFAULT 'beema',
    -- while disabled, its queued deliveries wait for hooks.enable_webhook instead of being
    -- cancelled: set when the system disables it (410 Gone, failing too long) or an admin's
    -- disable_webhook asks for it; cleared when it is enabled
    disabled_holds_queue boolean NOT NULL DEFAULT false,
    -- the signatures of its webhook-signature header (README, "Signatures"): v1 (HMAC-SHA256 with
    -- `secret`), v1a (ed25519 with `signing_key`; native flavor only), or both
    signatures      text[]      NOT NULL DEFAULT ARRAY['v1'],
    -- the whsk_ ed25519 key of its v1a signatures, generated when v1a is asked for; receivers
    -- verify with hooks.public_key(signing_key)
    signing_key     text,
    -- key rotation (hooks.rotate_signing_key): the previous key also signs until this time
    previous_signing_key            text,
    previous_signing_key_expires_at timestamptz,
    -- ordered delivery (README, "Ordered delivery per key"): a dotted path into the event (such
    -- as 'data.policyNumber'); deliveries whose events have the same value there are sent one
    -- at a time, in commit order. NULL: no ordering.
    ordering_key    text,
    -- what a key does when its delivery fails for good: 'skip' (the next goes) or 'block' (the
    -- key waits until an admin's hooks.retry_delivery or hooks.skip_delivery)
    ordering_on_failure text    NOT NULL DEFAULT 'skip',
    CONSTRAINT webhooks_tenant_name_key UNIQUE (tenant_id, webhook_name),
    -- (the key deliveries and further patterns refer to: the tenant is part of it)
    CONSTRAINT webhooks_tenant_webhook_key UNIQUE (tenant_id, webhook_id)
);

-- publish: exact patterns are one index probe; wildcard patterns one probe per prefix of the
-- event type ('', 'claim/' for 'claim/opened'), each finding the patterns with that prefix.
CREATE INDEX webhooks_exact_idx   ON hooks.webhooks (tenant_id, event_type) WHERE enabled AND NOT is_pattern;
CREATE INDEX webhooks_prefix_idx  ON hooks.webhooks (tenant_id, pattern_prefix) WHERE enabled AND is_pattern;

-- A webhook's further patterns (its event_types), one row each, kept by the webhooks' triggers
-- (api.sql) and looked up by hooks.match through the same two kinds of index as event_type.
-- Empty while no webhook lists further patterns: then publish's extra cost is two probes of
-- empty indexes.
CREATE TABLE hooks.webhook_patterns (
    webhook_id      bigint NOT NULL,
    tenant_id       text   NOT NULL,
    pattern         text   NOT NULL,
    is_pattern      boolean GENERATED ALWAYS AS (strpos(pattern, '*') > 0) STORED,
    pattern_prefix  text    GENERATED ALWAYS AS (
        CASE WHEN strpos(pattern, '*') > 0 THEN left(pattern, strpos(pattern, '*') - 1) END) STORED,
    PRIMARY KEY (webhook_id, pattern),
    -- (a webhook moved to another tenant takes its patterns along)
    CONSTRAINT webhook_patterns_webhook_fkey FOREIGN KEY (tenant_id, webhook_id)
        REFERENCES hooks.webhooks (tenant_id, webhook_id) ON UPDATE CASCADE ON DELETE CASCADE
);
CREATE INDEX webhook_patterns_exact_idx  ON hooks.webhook_patterns (tenant_id, pattern) WHERE NOT is_pattern;
CREATE INDEX webhook_patterns_prefix_idx ON hooks.webhook_patterns (tenant_id, pattern_prefix) WHERE is_pattern;

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
    CONSTRAINT events_tenant_key_key UNIQUE (tenant_id, event_key),
    -- (the key deliveries refer to: the tenant is part of it)
    CONSTRAINT events_tenant_event_key UNIQUE (tenant_id, event_id)
);
CREATE INDEX events_created_idx ON hooks.events (created_at);

-- Deliveries are kept in three tables by what happens to them (README, "Storage"), and read
-- through the view hooks.deliveries, which puts them together:
--   hooks.outbox    what goes where: one row per (event, matching webhook), written once by
--                   publish and never updated in the delivery path;
--   hooks.queue     the live work: a narrow row per delivery still to send (pending, retrying,
--                   in flight) with its due time and lease; claim and complete write only here;
--   hooks.outcomes  how each finished delivery ended (success, failed, cancelled): inserted
--                   once when the delivery leaves the queue.
-- A delivery is in exactly one of queue and outcomes. Its status moves only through the state
-- machine in api.sql ("The delivery state machine").

CREATE TABLE hooks.outbox (
    delivery_id     bigserial   PRIMARY KEY,
    -- sent as X-Beema-Delivery and webhook-id; stable across retries, new on a replay
    delivery_uuid   uuid        NOT NULL DEFAULT gen_random_uuid(),
    webhook_id      bigint      NOT NULL,
    event_id        bigint      NOT NULL,
    tenant_id       text        NOT NULL,
    event_type      text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- the webhook's payload envelope when the delivery was queued; NULL: beema (the event as
    -- published). hooks.claim renders the body in it.
    envelope        text,
    -- the delivery's ordering key (the value at its webhook's ordering_key in the event) when
    -- the webhook orders its deliveries; NULL otherwise
    order_key       text,
    CONSTRAINT outbox_event_webhook_key UNIQUE (event_id, webhook_id),
    -- the tenant is part of both keys: a delivery cannot pair one tenant's webhook with another
    -- tenant's event, whatever role writes it (README, "Roles and tenant isolation")
    CONSTRAINT outbox_webhook_fkey FOREIGN KEY (tenant_id, webhook_id)
        REFERENCES hooks.webhooks (tenant_id, webhook_id) ON DELETE CASCADE,
    CONSTRAINT outbox_event_fkey FOREIGN KEY (tenant_id, event_id)
        REFERENCES hooks.events (tenant_id, event_id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX outbox_uuid_idx ON hooks.outbox (delivery_uuid);
CREATE INDEX outbox_webhook_idx ON hooks.outbox (webhook_id, created_at);

-- hooks.queue, hooks.outcomes and hooks.attempt_log belong to an hooks.outbox row by delivery_id
-- and go with it (trigger outbox_after_delete, api.sql). They carry no foreign key to it: its
-- check locks the outbox row on every insert, a WAL record and a dirtied page per delivery for
-- a row that is otherwise never written again (BENCHMARKS.md, COST). Only the state machine's
-- functions write them.
CREATE TABLE hooks.queue (
    delivery_id     bigint      PRIMARY KEY,
    webhook_id      bigint      NOT NULL,
    tenant_id       text        NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
        CONSTRAINT queue_status_check CHECK (status IN ('pending', 'retrying', 'in_flight')),
    -- attempts started so far; the claim of attempt n sets it to n
    attempt_number  integer     NOT NULL DEFAULT 0,
    -- pending/retrying: when it is due; in_flight: when its lease expires
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_owner     text,
    -- the fence of the current (or last) lease: issued by hooks.claim from hooks.lease_tokens,
    -- unique for all time; complete and release apply only while the delivery still holds it
    lease_token     bigint,
    -- how long the circuit breaker has held this delivery back so far: at most
    -- hooks.breaker_max_cooldown_ms over its life, after which it is sent despite the breaker
    breaker_held_ms bigint      NOT NULL DEFAULT 0,
    -- the last failed attempt's result, while the delivery waits to be retried
    status_code     integer,
    response_body   text,
    error_message   text,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- ordered delivery: the delivery's ordering key (as in hooks.outbox), and whether it waits
    -- behind an earlier delivery of its key (then next_attempt_at is 'infinity': never due,
    -- until hooks._order_settle lets it go)
    order_key       text,
    behind          boolean     NOT NULL DEFAULT false
)
-- Half of each page is left free when rows are queued: a claim's update of a row (a new version,
-- not HOT: the due time is indexed) then fits on the row's own page. On a full page the new
-- version goes to another page, and Postgres logs a lock of the old one first: a record more per
-- delivery, and the other page's first change after a checkpoint is a full-page image
-- (BENCHMARKS.md, "The queue's fillfactor").
WITH (fillfactor = 50);

-- claim: the due rows, oldest first (and leases that ran out: an in-flight row is due when its
-- lease expires).
CREATE INDEX queue_due_idx ON hooks.queue (next_attempt_at);
-- claim: live leases (requests in flight) per webhook (hooks.max_in_flight_per_webhook)
CREATE INDEX queue_in_flight_idx ON hooks.queue (webhook_id, next_attempt_at) WHERE status = 'in_flight';
-- ordered delivery: the deliveries waiting behind others, per key, in the order they go
CREATE INDEX queue_behind_idx ON hooks.queue (webhook_id, order_key, delivery_id) WHERE behind;

CREATE TABLE hooks.outcomes (
    delivery_id     bigint      PRIMARY KEY,
    webhook_id      bigint      NOT NULL,
    tenant_id       text        NOT NULL,
    status          text        NOT NULL
        CONSTRAINT outcomes_status_check CHECK (status IN ('success', 'failed', 'cancelled')),
    attempt_number  integer     NOT NULL,
    status_code     integer,
    response_body   text,
    error_message   text,
    lease_token     bigint,
    breaker_held_ms bigint      NOT NULL DEFAULT 0,
    delivered_at    timestamptz,
    -- when it finished
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- The HTTP attempt that ended it, when a sender's result did (hooks.complete): its id in
    -- the attempt log (NULL: the delivery ended otherwise, cancelled or out of attempts after
    -- a lease ran out), the sender and the request's duration. Its outcome, status code, error
    -- and time are the columns above. Stored here instead of a row of hooks.attempt_log: an
    -- insert and three index entries less per delivery (BENCHMARKS.md, "The final attempt in the
    -- outcome row").
    attempt_id      bigint,
    sender_id       text,
    duration_ms     integer
);
-- retention (hooks.purge) and recent attempts (hooks.webhook_health): finished deliveries by
-- age. A BRIN index: rows are inserted as deliveries finish, so updated_at follows the table's
-- order, and a BRIN index costs an insert nothing until autovacuum summarizes the new pages; a
-- B-tree here was an index entry per delivery, about 60 B of WAL (BENCHMARKS.md, "The outcomes'
-- time index").
CREATE INDEX outcomes_updated_idx ON hooks.outcomes USING brin (updated_at) WITH (autosummarize = on);
-- dead letters of a webhook (hooks.redeliver_failed)
CREATE INDEX outcomes_failed_idx ON hooks.outcomes (webhook_id, updated_at) WHERE status = 'failed';

-- Every delivery as one row: the contract's hooks.deliveries (DESIGN.md), with the columns
-- 0.2.0's table had. Reading it filters through to the tables (a status of pending, retrying
-- or in_flight reads only the queue). Written through the state machine's functions; an
-- INSERT here (api.sql, hooks._deliveries_insert) queues a delivery or records a finished one.
CREATE VIEW hooks.deliveries WITH (security_invoker = true) AS
SELECT o.delivery_id, o.delivery_uuid, o.webhook_id, o.event_id, o.tenant_id, o.event_type,
       q.status, q.status_code, q.response_body, q.error_message, q.attempt_number,
       q.next_attempt_at, q.lease_owner, o.created_at, q.updated_at,
       NULL::timestamptz AS delivered_at, q.lease_token, q.breaker_held_ms
  FROM hooks.outbox o JOIN hooks.queue q ON q.delivery_id = o.delivery_id
UNION ALL
SELECT o.delivery_id, o.delivery_uuid, o.webhook_id, o.event_id, o.tenant_id, o.event_type,
       f.status, f.status_code, f.response_body, f.error_message, f.attempt_number,
       f.updated_at, NULL::text, o.created_at, f.updated_at,
       f.delivered_at, f.lease_token, f.breaker_held_ms
  FROM hooks.outbox o JOIN hooks.outcomes f ON f.delivery_id = o.delivery_id;

-- Ordered delivery (README, "Ordered delivery per key"): one row per ordering key of a webhook
-- that has ever had a delivery. `head` is the delivery the key's next one waits for: live (in
-- the queue, not behind), or finished and not yet settled, or failed and blocking the key (a
-- webhook with ordering_on_failure 'block'); NULL when nothing of the key is waiting or going.
-- hooks._enqueue locks the row (an upsert) before it queues a delivery of the key and holds it
-- until commit: publishers of one key queue in commit order. Written only by the state machine.
CREATE TABLE hooks.order_keys (
    webhook_id  bigint      NOT NULL,
    order_key   text        NOT NULL,
    tenant_id   text        NOT NULL,
    head        bigint,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (webhook_id, order_key),
    CONSTRAINT order_keys_webhook_fkey FOREIGN KEY (tenant_id, webhook_id)
        REFERENCES hooks.webhooks (tenant_id, webhook_id) ON UPDATE CASCADE ON DELETE CASCADE
);

-- Keys whose head ended while a publisher of the key held its row (hooks._order_settle never
-- waits for one): hooks.claim settles them on its next call, once that publisher is done.
CREATE TABLE hooks.order_pending (
    webhook_id  bigint      NOT NULL,
    order_key   text        NOT NULL,
    tenant_id   text        NOT NULL,
    -- the head that ended
    delivery_id bigint      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Lease tokens (hooks.queue.lease_token): one per claim, never reused.
CREATE SEQUENCE hooks.lease_tokens;

-- The attempt log: one row per HTTP attempt, read through the view hooks.attempts below. The
-- attempt that ends a delivery is kept in its hooks.outcomes row; this table holds the others:
-- attempts that failed and were retried, results that came after their lease was lost, leases
-- that ran out (written by hooks.claim for attempts whose sender vanished before reporting).
CREATE TABLE hooks.attempt_log (
    attempt_id      bigserial   PRIMARY KEY,
    delivery_id     bigint      NOT NULL,
    webhook_id      bigint      NOT NULL,
    tenant_id       text        NOT NULL,
    attempt_number  integer     NOT NULL,
    sender_id       text,
    -- success | failure | lease_lost (result came after the lease passed to another sender)
    -- | lease_expired (the sender never reported; the delivery was claimed again)
    outcome         text        NOT NULL
        CONSTRAINT attempt_log_outcome_check
        CHECK (outcome IN ('success', 'failure', 'lease_lost', 'lease_expired')),
    status_code     integer,
    error_message   text,
    duration_ms     integer,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX attempt_log_delivery_idx ON hooks.attempt_log (delivery_id, attempt_number);
CREATE INDEX attempt_log_webhook_idx ON hooks.attempt_log (webhook_id, created_at);

-- Every HTTP attempt as one row: the log's rows and the final attempts kept in hooks.outcomes,
-- with the columns 0.2.0's table had (an attempt's id comes from the log's sequence either
-- way). An INSERT here (a DBA's or an old script's) goes into the log (api.sql,
-- hooks._attempts_insert).
CREATE VIEW hooks.attempts WITH (security_invoker = true) AS
SELECT a.attempt_id, a.delivery_id, a.webhook_id, a.tenant_id, a.attempt_number, a.sender_id,
       a.outcome, a.status_code, a.error_message, a.duration_ms, a.created_at
  FROM hooks.attempt_log a
UNION ALL
SELECT f.attempt_id, f.delivery_id, f.webhook_id, f.tenant_id, f.attempt_number, f.sender_id,
       CASE WHEN f.status = 'success' THEN 'success' ELSE 'failure' END, f.status_code,
       f.error_message, f.duration_ms, f.updated_at
  FROM hooks.outcomes f
 WHERE f.attempt_id IS NOT NULL;

-- Senders seen by hooks.claim(): whether each is awake (will claim again soon) decides whether
-- a publish needs to NOTIFY.
CREATE TABLE hooks.senders (
    sender_id   text        PRIMARY KEY,
    awake       boolean     NOT NULL,
    seen_at     timestamptz NOT NULL DEFAULT now()
);

-- Tables watched for changes (README, "Webhooks on table changes"): each insert, update or
-- delete of a watched table publishes an event, through triggers that hooks.watch_table creates.
CREATE TABLE hooks.watched_tables (
    watch_id        bigserial   PRIMARY KEY,
    table_name      regclass    NOT NULL UNIQUE,
    -- the tenant: the value of this column of the changed row, or the fixed tenant_id
    tenant_column   text,
    tenant_id       text,
    -- event type; {table}, {schema} and {op} (insert, update, delete) are replaced
    event_type      text        NOT NULL,
    operations      text[]      NOT NULL,
    -- the row's columns in the event: only these (NULL: all), then without these
    columns         text[],
    exclude_columns text[],
    -- an SQL condition on OLD and NEW (NULL: every change)
    condition       text,
    -- publishes with this role's rights (checked at every change)
    watched_by      name        NOT NULL DEFAULT current_user,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((tenant_column IS NULL) <> (tenant_id IS NULL)),
    CHECK (operations <@ ARRAY['insert', 'update', 'delete'] AND cardinality(operations) > 0)
);

-- Settings an admin sets for every session (README, "Settings"): a row here is the value that
-- hooks.claim and hooks.complete use, whatever a session sets; without a row, the session's (or
-- the database's) setting applies, then the default. The settings the sender's sessions read
-- (circuit breaker, in-flight cap, disabling); both flavors read this table, and where
-- ALTER DATABASE ... SET needs a superuser (the portable flavor on managed Postgres) it is how
-- the database owner changes them. Only all-tenant admins and the owner write it.
CREATE TABLE hooks.settings (
    name       text        PRIMARY KEY,
    value      integer     NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by name        NOT NULL DEFAULT current_user,
    CONSTRAINT settings_known CHECK (name IN ('hooks.max_payload_bytes', 'hooks.breaker_failure_threshold',
        'hooks.breaker_cooldown_ms', 'hooks.breaker_max_cooldown_ms', 'hooks.max_in_flight_per_webhook',
        'hooks.disable_after_failing_hours')),
    CONSTRAINT settings_range CHECK (CASE name
        WHEN 'hooks.max_payload_bytes' THEN value BETWEEN 1024 AND 67108864
        WHEN 'hooks.breaker_failure_threshold' THEN value BETWEEN 0 AND 1000
        WHEN 'hooks.breaker_cooldown_ms' THEN value BETWEEN 100 AND 86400000
        WHEN 'hooks.breaker_max_cooldown_ms' THEN value BETWEEN 100 AND 604800000
        WHEN 'hooks.max_in_flight_per_webhook' THEN value BETWEEN 0 AND 100000
        WHEN 'hooks.disable_after_failing_hours' THEN value BETWEEN 0 AND 8760 END)
);

-- Which tenants each role may act for (README, "Security"): publish for, read and manage. A row
-- with no tenant trusts the role for every tenant. A role may act for a tenant when it is a
-- member of a role granted that tenant (or every tenant); the owner of schema hooks and
-- superusers act for every tenant. Written by hooks.grant_tenant and hooks.revoke_tenant only;
-- the session setting hooks.tenant_id narrows what a session acts for, never widens it.
CREATE TABLE hooks.tenant_grants (
    role_name  name        NOT NULL,
    tenant_id  text,
    granted_at timestamptz NOT NULL DEFAULT now(),
    granted_by name        NOT NULL
);
CREATE UNIQUE INDEX tenant_grants_role_tenant_key ON hooks.tenant_grants (role_name, tenant_id);
CREATE UNIQUE INDEX tenant_grants_every_tenant_key ON hooks.tenant_grants (role_name) WHERE tenant_id IS NULL;
CREATE INDEX tenant_grants_tenant_idx ON hooks.tenant_grants (tenant_id);

-- pg_dump writes the rows of an extension's tables only when they are marked as configuration:
-- without this a dump and restore would keep the extension and lose every webhook, event and
-- delivery. The sequences are marked too, so new ids continue after the restored ones.
SELECT pg_catalog.pg_extension_config_dump('hooks.webhooks', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.webhooks_webhook_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.events', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.events_event_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.outbox', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.outbox_delivery_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.queue', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.outcomes', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.attempt_log', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.attempt_log_attempt_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.senders', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.lease_tokens', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.watched_tables', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.watched_tables_watch_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.settings', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.tenant_grants', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.order_keys', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.order_pending', '');
-- (hooks.webhook_patterns is not dumped: restoring hooks.webhooks rebuilds it by its trigger)
