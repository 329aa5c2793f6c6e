-- beema_hooks 0.2.0 -> 0.3.0: run by ALTER EXTENSION beema_hooks UPDATE TO '0.3.0'.
-- Must bring a 0.2.0 database to exactly what a fresh CREATE EXTENSION of 0.3.0 gives
-- (scripts/upgrade_test.sh compares the two). Never edit it once 0.3.0 is released.

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION beema_hooks UPDATE TO '0.3.0'" to load this file. \quit

-------------------------------------------------------------------------------------------------
-- New columns (none rewrites its table: NULL, or a constant default). Paused webhooks stay
-- paused until their paused_until, at breaker level 0.
-------------------------------------------------------------------------------------------------
ALTER TABLE hooks.webhooks ADD COLUMN breaker_level integer NOT NULL DEFAULT 0;
ALTER TABLE hooks.webhooks ADD COLUMN breaker_fence bigint;
CREATE SEQUENCE hooks.lease_tokens;
SELECT pg_catalog.pg_extension_config_dump('hooks.lease_tokens', '');
GRANT USAGE ON SEQUENCE hooks.lease_tokens TO hooks_admin;

-------------------------------------------------------------------------------------------------
-- Storage (README, "Storage"): the one table hooks.deliveries becomes three, hooks.outbox (what
-- goes where), hooks.queue (live work) and hooks.outcomes (how finished deliveries ended), and
-- a view hooks.deliveries with the table's columns over them. Every row moves: pending,
-- retrying and in-flight deliveries into the queue (a lease stays as it was: a 0.2.0 sender
-- holding one reports without a lease token and is fenced by attempt number), finished ones
-- into the outcomes. Delivery ids go on from where they were. A finished delivery's
-- next_attempt_at now reads as when it finished (no due time is kept for it).
-------------------------------------------------------------------------------------------------
DROP VIEW hooks.dead_letters;
DROP VIEW hooks.delivery_log;
DROP FUNCTION hooks.retry_delivery(bigint);
-- (attempts are now deleted with their delivery by the trigger outbox_after_delete)
ALTER TABLE hooks.attempts DROP CONSTRAINT attempts_delivery_id_fkey;
-- The attempt log keeps its rows, renamed hooks.attempt_log; hooks.attempts becomes a view of
-- it and of the final attempts that hooks.outcomes now keeps (created below, after the table).
ALTER TABLE hooks.attempts RENAME TO attempt_log;
ALTER SEQUENCE hooks.attempts_attempt_id_seq RENAME TO attempt_log_attempt_id_seq;
ALTER INDEX hooks.attempts_pkey RENAME TO attempt_log_pkey;
ALTER INDEX hooks.attempts_delivery_idx RENAME TO attempt_log_delivery_idx;
ALTER INDEX hooks.attempts_webhook_idx RENAME TO attempt_log_webhook_idx;
ALTER TABLE hooks.attempt_log RENAME CONSTRAINT attempts_outcome_check TO attempt_log_outcome_check;

-- The tenant is part of the keys that tie a delivery (and a webhook's further patterns) to its
-- webhook and its event: no row can pair one tenant's webhook with another tenant's event.
-- Deliveries of 0.2.0 that do (only possible by writing hooks.deliveries by hand) are removed,
-- with a NOTICE.
ALTER TABLE hooks.webhooks ADD CONSTRAINT webhooks_tenant_webhook_key UNIQUE (tenant_id, webhook_id);
ALTER TABLE hooks.events ADD CONSTRAINT events_tenant_event_key UNIQUE (tenant_id, event_id);
DO $$
DECLARE
    n bigint;
BEGIN
    WITH gone AS (
        DELETE FROM hooks.deliveries d
         WHERE NOT EXISTS (SELECT 1 FROM hooks.webhooks w WHERE w.webhook_id = d.webhook_id AND w.tenant_id = d.tenant_id)
            OR NOT EXISTS (SELECT 1 FROM hooks.events e WHERE e.event_id = d.event_id AND e.tenant_id = d.tenant_id)
        RETURNING d.delivery_id
    ), their_attempts AS (
        DELETE FROM hooks.attempt_log a USING gone WHERE a.delivery_id = gone.delivery_id
    )
    SELECT count(*) INTO n FROM gone;
    IF n > 0 THEN
        RAISE NOTICE 'beema_hooks: % deliveries paired a webhook or an event of another tenant than their own and were removed', n;
    END IF;
END
$$;

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
GRANT SELECT, INSERT ON hooks.attempts TO hooks_admin;

INSERT INTO hooks.outbox (delivery_id, delivery_uuid, webhook_id, event_id, tenant_id, event_type, created_at)
SELECT d.delivery_id, d.delivery_uuid, d.webhook_id, d.event_id, d.tenant_id, d.event_type, d.created_at
  FROM hooks.deliveries d;
INSERT INTO hooks.queue (delivery_id, webhook_id, tenant_id, status, attempt_number, next_attempt_at,
                         lease_owner, status_code, response_body, error_message, updated_at)
SELECT d.delivery_id, d.webhook_id, d.tenant_id, d.status, d.attempt_number, d.next_attempt_at,
       d.lease_owner, d.status_code, d.response_body, d.error_message, d.updated_at
  FROM hooks.deliveries d
 WHERE d.status IN ('pending', 'retrying', 'in_flight');
INSERT INTO hooks.outcomes (delivery_id, webhook_id, tenant_id, status, attempt_number, status_code,
                            response_body, error_message, delivered_at, updated_at)
SELECT d.delivery_id, d.webhook_id, d.tenant_id, d.status, d.attempt_number, d.status_code,
       d.response_body, d.error_message, d.delivered_at, d.updated_at
  FROM hooks.deliveries d
 WHERE d.status IN ('success', 'failed', 'cancelled');
SELECT setval('hooks.outbox_delivery_id_seq', s.last_value, s.is_called)
  FROM hooks.deliveries_delivery_id_seq s;
-- out of the extension first: that also takes the table and its sequence off the list of
-- tables pg_dump dumps the rows of (pg_extension_config_dump)
ALTER EXTENSION beema_hooks DROP SEQUENCE hooks.deliveries_delivery_id_seq;
ALTER EXTENSION beema_hooks DROP TABLE hooks.deliveries;
DROP TABLE hooks.deliveries;

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

SELECT pg_catalog.pg_extension_config_dump('hooks.outbox', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.outbox_delivery_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.queue', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.outcomes', '');

-------------------------------------------------------------------------------------------------
-- Fenced leases, expired leases counted as attempts, the breaker per probe
-------------------------------------------------------------------------------------------------
-- The lease fence, the one rule for whether a sender's result or release still applies: the
-- delivery is in flight, leased to this sender, under the same lease. A lease is named by its
-- token (hooks.claim issues a new one for every lease, never reused); a result without one
-- (a sender older than 0.3.0) is fenced by the attempt number instead, as 0.2.0 did.
CREATE FUNCTION hooks._holds_lease(status text, lease_owner text, attempt_number integer,
                                   lease_token bigint, sender_id text, claimed_attempt integer,
                                   claimed_token bigint)
RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce($1 = 'in_flight', false) AND $2 = $5
       AND CASE WHEN $7 IS NULL THEN $3 = $6 ELSE $4 = $7 END
$$;

-- The circuit breaker's step for a batch of failed results of one webhook with no success among
-- them (a success always closes it): 'open' when they bring its consecutive failures to the
-- threshold (paused for the first cool-down); 'reopen' when it is half-open (at the threshold,
-- pause over) and a request claimed since it last opened failed: a failed probe (paused for
-- twice the last cool-down); 'keep' otherwise: failures while paused, or of requests already in
-- flight when it opened, count once with the failure that opened it. Threshold 0: no breaker.
CREATE FUNCTION hooks._breaker_step(consecutive_failures integer, paused boolean, failures bigint,
                                    new_failures bigint, threshold integer)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
               WHEN $3 = 0 OR $5 <= 0 OR $2 THEN 'keep'
               WHEN $1 < $5 AND $1 + $3 >= $5 THEN 'open'
               WHEN $1 >= $5 AND $4 > 0 THEN 'reopen'
               ELSE 'keep'
           END
$$;

-- The senders' wake-up at commit (wake.rs): one NOTIFY when the transaction commits, none when it
-- is prepared.
CREATE FUNCTION hooks."_notify_at_commit"() RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'notify_at_commit_wrapper';

-- The advisory lock keys, named once (api.sql); the wake-up barrier now uses them.
CREATE FUNCTION hooks._lock_key(name text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE $1
               WHEN 'commit' THEN 7233327398000001
               WHEN 'awake'  THEN 7233327398000002
               WHEN 'claims' THEN 7233327398000003
           END::bigint
$$;

CREATE OR REPLACE FUNCTION hooks._commit_barrier() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_timeout text := current_setting('lock_timeout');
BEGIN
    PERFORM set_config('lock_timeout', '200ms', true);
    PERFORM pg_advisory_lock(hooks._lock_key('commit'));
    PERFORM pg_advisory_unlock(hooks._lock_key('commit'));
    PERFORM set_config('lock_timeout', v_timeout, true);
EXCEPTION WHEN lock_not_available THEN
    -- A commit still in progress may have seen this sender awake and sent no NOTIFY: wake the
    -- senders when this claim commits, so that they look (and wait) again.
    PERFORM hooks._notify_at_commit();
END
$$;

-- Waits for this claim's turn: while webhooks have an in-flight cap, the claims of all senders
-- take turns (transaction advisory lock 'claims', held until the claim commits). A claim then
-- never meets another's claim locks or locked rows: without turns, with 4 senders on 3 capped
-- webhooks two of three claims locked due rows only to leave them all, their webhooks being
-- claimed by another sender (BENCHMARKS.md, "Claims take turns"). A claim takes milliseconds;
-- one that waited 200 ms goes on without its turn, as claims did before, and for the next 10
-- seconds this session's claims do not wait (any session can take the key: holding it can slow
-- the senders down, never stop them).
CREATE FUNCTION hooks._claim_turn() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_timeout text;
    v_gave_up timestamptz;
BEGIN
    IF pg_try_advisory_xact_lock(hooks._lock_key('claims')) THEN
        RETURN;
    END IF;
    v_gave_up := nullif(current_setting('beema_hooks.claim_turn_gave_up', true), '')::timestamptz;
    IF v_gave_up > clock_timestamp() - interval '10 seconds' AND v_gave_up <= clock_timestamp() THEN
        RETURN;
    END IF;
    v_timeout := current_setting('lock_timeout');
    PERFORM set_config('lock_timeout', '200ms', true);
    BEGIN
        PERFORM pg_advisory_xact_lock(hooks._lock_key('claims'));
    EXCEPTION WHEN lock_not_available THEN
        PERFORM set_config('beema_hooks.claim_turn_gave_up', clock_timestamp()::text, false);
    END;
    PERFORM set_config('lock_timeout', v_timeout, true);
END
$$;

-- claim returns lease_token: a new result type, so drop and create (privileges set again below)
DROP FUNCTION hooks.claim(text, integer, interval, boolean);
-- Claims at most max_rows due deliveries for sender_id, leased for greatest(lease, timeout + 10 s),
-- with the body in the delivery's payload envelope and every header (signatures of that body
-- included) computed, and a new lease_token for each: the fence
-- complete and release check (hooks._holds_lease). Rows whose lease expired are reclaimed and
-- their lost attempt logged; an expired lease was an attempt, so one that was the last attempt
-- ends the delivery as failed instead (its sender never reported). Due rows of a disabled webhook are cancelled, or wait until it is enabled when its disabling holds the queue; those of a paused
-- webhook (circuit breaker open) wait until it resumes, and while its breaker is half-open only
-- one delivery per webhook and claim goes out as a probe; skipped rows move out of the due range
-- (for a second, or to the end of the pause) and the claim looks further, so these never hold up
-- healthy webhooks. A webhook with hooks.max_in_flight_per_webhook requests in flight (live
-- leases, all senders) is passed over: its due rows stay as they are, neither locked nor
-- rewritten, and hooks.complete() wakes the senders when it frees such a webhook.
-- When nothing is due, the sender goes idle (publishers notify again) unless stay_awake asks it
-- to stay awake, for a sender that promises to claim again within milliseconds.
-- max_bytes, when given, is a byte budget besides max_rows: the event bodies of the rows
-- claimed add up to at most that many bytes, except that the first row is claimed even when it
-- is larger, alone (a sender's memory bound, README "Memory"). 22023 when negative.
-- Must run in READ COMMITTED on the sender's own session (it holds the "awake" lock there).
-- Plans: only index lookups and nested loops (see hooks.complete).
CREATE FUNCTION hooks.claim(sender_id text, max_rows integer, lease interval DEFAULT '60 seconds',
                            stay_awake boolean DEFAULT false, max_bytes bigint DEFAULT NULL)
RETURNS TABLE (delivery_id bigint, attempt_number integer, delivery_uuid uuid, webhook_id bigint,
               event_type text, url text, headers jsonb, body text, timeout_ms integer,
               lease_expires_at timestamptz, lease_token bigint)
LANGUAGE plpgsql SET enable_seqscan = off SET enable_bitmapscan = off SET enable_hashjoin = off
    SET enable_mergejoin = off SET jit = off
    SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    v_sender    text := claim.sender_id;
    v_ts        bigint := extract(epoch FROM now())::bigint;
    v_threshold integer := hooks._setting_int('hooks.breaker_failure_threshold', 5);
    v_max_cool  bigint := hooks._setting_int('hooks.breaker_max_cooldown_ms', 3600000);
    v_cap       integer := hooks._setting_int('hooks.max_in_flight_per_webhook', 32);
    v_full      bigint[];
    v_cand      bigint[];
    v_cand_wh   bigint[];
    v_mine      bigint[];
    v_scan      integer;
    v_last_full timestamptz;
    v_ids       bigint[];
    v_end       bigint[];
    v_end_status text[];
    v_end_note  text[];
    v_wait      bigint[];
    v_wait_until timestamptz[];
    v_expired   bigint[];
    v_skipped   bigint;
    v_claimed   integer := 0;
    v_looked_again boolean := false;
    v_quiet     boolean := false;
    v_now       timestamptz;
BEGIN
    PERFORM hooks._check_sender_id(v_sender);
    IF max_rows IS NULL OR max_rows < 1 OR max_rows > 10000 THEN
        RAISE EXCEPTION 'max_rows must be between 1 and 10000, got %', max_rows
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF lease IS NULL OR lease < interval '1 second' OR lease > interval '1 day' THEN
        RAISE EXCEPTION 'lease must be between 1 second and 1 day, got %', lease
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF max_bytes < 0 THEN
        RAISE EXCEPTION 'max_bytes must not be negative, got %', max_bytes
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- Asynchronous commit for the sender's own transactions: after a Postgres crash the last
    -- moments of claims and results may be lost, which only means those deliveries are sent
    -- again (at-least-once). Publishing transactions keep their own setting.
    PERFORM set_config('synchronous_commit', 'off', true);

    -- A lingering sender's look at an empty queue: one probe of the due index, and it stays
    -- awake (the loop below would find nothing either, at several times the cost).
    IF stay_awake AND NOT EXISTS (SELECT 1 FROM hooks.queue x WHERE x.next_attempt_at <= clock_timestamp()) THEN
        PERFORM pg_try_advisory_lock_shared(hooks._lock_key('awake'));
        v_quiet := true;
    END IF;

    -- Ordering keys whose settling waited for a publisher (hooks._order_settle): settled now.
    IF EXISTS (SELECT 1 FROM hooks.order_pending) THEN
        PERFORM hooks._order_settle_pending();
    END IF;

    IF v_cap > 0 AND NOT v_quiet THEN
        PERFORM hooks._claim_turn();
    END IF;

    FOR v_round IN 1..1000 LOOP
        EXIT WHEN v_quiet;
        -- not now(): a later look must see rows of transactions that began after this one
        v_now := clock_timestamp();
        v_full := hooks._webhooks_at_cap(v_cap, v_now);

        -- Which due rows to look at. Normally all, oldest first. While webhooks are at the cap,
        -- their rows can be most of the due backlog, and reading past all of them on every
        -- claim would cost more than the claim: then only the oldest v_scan due rows are read,
        -- except for one full look per second per sender, which finds any row further behind.
        v_scan := NULL;
        IF cardinality(v_full) > 0 THEN
            v_last_full := nullif(current_setting('beema_hooks.full_look_at', true), '')::timestamptz;
            IF v_last_full IS NULL OR v_last_full > v_now OR v_now - v_last_full >= interval '1 second' THEN
                PERFORM set_config('beema_hooks.full_look_at', v_now::text, false);
            ELSE
                v_scan := greatest(1000, 4 * max_rows);
            END IF;
        END IF;

        -- Lock the oldest due rows (of webhooks not at the cap).
        IF v_scan IS NULL THEN
            WITH due AS (
                SELECT q.delivery_id, q.webhook_id
                  FROM hooks.queue q
                 WHERE q.next_attempt_at <= v_now
                   AND q.webhook_id <> ALL (v_full)
                 ORDER BY q.next_attempt_at
                 LIMIT max_rows
                   FOR UPDATE SKIP LOCKED
            )
            SELECT array_agg(due.delivery_id), array_agg(due.webhook_id) INTO v_cand, v_cand_wh FROM due;
        ELSE
            -- the window: the oldest v_scan due rows, read in due order, those of webhooks not
            -- at the cap kept; each then locked by primary key, in that order, until max_rows
            -- are locked (the window is read only that far). (Written as a test `delivery_id =
            -- ANY (the window's ids)` on the due scan, the scan read every due row and compared
            -- each with the whole window: a claim that found nothing read 41,980 rows of 20,000
            -- due and took 8 ms; written as one locking join of the window, it read every row of
            -- the window again and sorted them before locking 64: BENCHMARKS.md "Claims at the
            -- cap"; pg_regress plans.)
            WITH win AS MATERIALIZED (
                SELECT w.delivery_id
                  FROM (SELECT x.delivery_id, x.webhook_id
                          FROM hooks.queue x
                         WHERE x.next_attempt_at <= v_now
                         ORDER BY x.next_attempt_at LIMIT v_scan) AS w
                 WHERE w.webhook_id <> ALL (v_full)
            ), due AS (
                -- (no ORDER BY: the rows come in the window's order, and sorting them would read
                -- the whole window)
                SELECT l.delivery_id, l.webhook_id
                  FROM win CROSS JOIN LATERAL (
                           SELECT q.delivery_id, q.webhook_id
                             FROM hooks.queue q
                            WHERE q.delivery_id = win.delivery_id
                              AND q.next_attempt_at <= v_now  -- (tested again once locked)
                              FOR UPDATE SKIP LOCKED) AS l
                 LIMIT max_rows
            )
            SELECT array_agg(due.delivery_id), array_agg(due.webhook_id) INTO v_cand, v_cand_wh FROM due;
        END IF;

        -- Take each of their webhooks' claim lock, a lock on its hooks.webhooks row (skipped
        -- when another transaction holds it): counting a webhook's requests in flight and
        -- claiming more is then one step no other sender interleaves with. A row lock, not an
        -- advisory key: any role may hold any advisory key, and one holding a webhook's kept
        -- its deliveries passed over for as long as it held it; a webhook's row can be locked
        -- only by roles that may update it (an admin of its tenant). Publishers' key-share
        -- locks (the outbox's foreign key) do not conflict with it.
        SELECT coalesce(array_agg(h.webhook_id), '{}') INTO v_mine
          FROM (SELECT w.webhook_id FROM hooks.webhooks w
                 WHERE v_cap > 0 AND w.webhook_id = ANY (v_cand_wh)
                   FOR NO KEY UPDATE SKIP LOCKED) AS h;

        v_ids := NULL;
        v_skipped := 0;
        IF v_cand IS NOT NULL THEN
            -- What to do with each locked row (hooks._claim_plan), then each transition.
            SELECT array_agg(p.delivery_id) FILTER (WHERE p.action = 'claim'),
                   array_agg(p.delivery_id) FILTER (WHERE p.action IN ('cancel', 'exhaust')),
                   array_agg(CASE p.action WHEN 'cancel' THEN 'cancelled' ELSE 'failed' END)
                       FILTER (WHERE p.action IN ('cancel', 'exhaust')),
                   array_agg(p.note) FILTER (WHERE p.action IN ('cancel', 'exhaust')),
                   array_agg(p.delivery_id) FILTER (WHERE p.action IN ('wait', 'park')),
                   array_agg(p.held_until) FILTER (WHERE p.action IN ('wait', 'park')),
                   array_agg(p.delivery_id) FILTER (WHERE p.expired),
                   count(*) FILTER (WHERE p.action IN ('cancel', 'exhaust', 'wait', 'park'))
              INTO v_ids, v_end, v_end_status, v_end_note, v_wait, v_wait_until, v_expired, v_skipped
              FROM hooks._claim_plan(v_cand, v_cand_wh, v_mine, v_cap, v_threshold, v_max_cool, v_now) AS p;

            -- (The statements below run only when they have rows: starting a statement's plan
            -- costs more than running it on nothing, BENCHMARKS.md "Claims at the cap, continued".)
            -- Leases that ran out were attempts whose sender never reported: logged.
            IF v_expired IS NOT NULL THEN
                INSERT INTO hooks.attempt_log (delivery_id, webhook_id, tenant_id, attempt_number, sender_id, outcome, error_message)
                SELECT q.delivery_id, q.webhook_id, q.tenant_id, q.attempt_number, q.lease_owner,
                       'lease_expired', 'lease expired before the sender reported a result'
                  FROM hooks.queue q
                 WHERE q.delivery_id = ANY (v_expired);
            END IF;
            -- Disabled webhooks' rows are cancelled; an expired lease that was the last attempt fails.
            -- (hooks._finish returns at once when there are none)
            PERFORM hooks._finish(v_end, NULL, v_end_status, NULL, v_end_note);
            -- Held back by the breaker: out of the due range until it may go; of a webhook whose
            -- disabling holds its queue: until it is enabled ('infinity'). An expired lease
            -- becomes retrying.
            IF v_wait IS NOT NULL THEN
                UPDATE hooks.queue q
                   SET status = CASE WHEN q.status = 'in_flight' THEN 'retrying' ELSE q.status END,
                       next_attempt_at = w.until,
                       breaker_held_ms = q.breaker_held_ms
                                         + CASE WHEN isfinite(w.until) THEN ceil(extract(epoch FROM w.until - v_now) * 1000)::bigint ELSE 0 END,
                       lease_owner = NULL,
                       updated_at = now()
                  FROM unnest(v_wait, v_wait_until) AS w(delivery_id, until)
                 WHERE q.delivery_id = w.delivery_id;
            END IF;
            -- The byte budget: the rows to claim, in the order they were due, while their event
            -- bodies add up to at most max_bytes; the first one in any case. The others stay as
            -- they are (unlocked at commit) for a later claim.
            IF max_bytes IS NOT NULL AND v_ids IS NOT NULL THEN
                SELECT array_agg(s.delivery_id ORDER BY s.ord) FILTER (WHERE s.ord = 1 OR s.running <= max_bytes)
                  INTO v_ids
                  FROM (SELECT u.delivery_id, u.ord,
                               sum(octet_length(e.body)) OVER (ORDER BY u.ord) AS running
                          FROM unnest(v_ids) WITH ORDINALITY AS u(delivery_id, ord)
                          JOIN hooks.outbox o ON o.delivery_id = u.delivery_id
                          JOIN hooks.events e ON e.event_id = o.event_id) AS s;
            END IF;
            -- Claimed: in flight under a new lease token, the attempt counted.
            WITH claimed AS (
                UPDATE hooks.queue q
                   SET status = 'in_flight',
                       attempt_number = q.attempt_number + 1,
                       lease_owner = v_sender,
                       lease_token = nextval('hooks.lease_tokens'),
                       next_attempt_at = v_now + greatest(lease, make_interval(secs => w.timeout_ms / 1000.0 + 10)),
                       updated_at = now()
                  FROM hooks.webhooks w
                 WHERE q.delivery_id = ANY (v_ids) AND w.webhook_id = q.webhook_id
                   AND w.webhook_id = ANY (v_cand_wh)
                RETURNING q.delivery_id
            )
            SELECT array_agg(claimed.delivery_id) INTO v_ids FROM claimed;
        END IF;
        v_claimed := coalesce(cardinality(v_ids), 0);

        IF v_claimed > 0 THEN
            RETURN QUERY
            SELECT q.delivery_id, q.attempt_number, o.delivery_uuid, q.webhook_id, o.event_type, w.url,
                   w.headers || jsonb_build_object(
                       'Content-Type', 'application/json',
                       'X-Beema-Signature', hooks.sign(b.body, w.secret),
                       'X-Beema-Event', o.event_type,
                       'X-Beema-Delivery', o.delivery_uuid::text,
                       'webhook-id', o.delivery_uuid::text,
                       'webhook-timestamp', v_ts::text,
                       'webhook-signature', concat_ws(' ',
                           CASE WHEN 'v1' = ANY (w.signatures)
                                THEN hooks.sign_standard(o.delivery_uuid::text, v_ts, b.body,
                                         CASE WHEN w.previous_secret_expires_at > v_now
                                              THEN ARRAY[w.secret, w.previous_secret] ELSE ARRAY[w.secret] END) END,
                           CASE WHEN 'v1a' = ANY (w.signatures)
                                THEN hooks.sign_standard_v1a(o.delivery_uuid::text, v_ts, b.body, w.signing_key) END,
                           CASE WHEN 'v1a' = ANY (w.signatures) AND w.previous_signing_key_expires_at > v_now
                                THEN hooks.sign_standard_v1a(o.delivery_uuid::text, v_ts, b.body, w.previous_signing_key) END)),
                   b.body, w.timeout_ms, q.next_attempt_at, q.lease_token
              FROM hooks.queue q
              -- (a queue row that names another webhook or tenant than its outbox row is never sent)
              JOIN hooks.outbox o ON o.delivery_id = q.delivery_id AND o.webhook_id = q.webhook_id
                                 AND o.tenant_id = q.tenant_id
              JOIN hooks.webhooks w ON w.webhook_id = q.webhook_id AND w.webhook_id = ANY (v_cand_wh)
              JOIN hooks.events e ON e.event_id = o.event_id
              -- the body in the delivery's envelope, rendered once (OFFSET 0) for both signatures
             CROSS JOIN LATERAL (SELECT CASE WHEN o.envelope IS NULL THEN e.body
                                             ELSE hooks._render_envelope(o.envelope, e.body) END AS body
                                 OFFSET 0) AS b
             WHERE q.delivery_id = ANY (v_ids)
             ORDER BY q.delivery_id;
            -- Awake: hold the shared "awake" lock, so publishers skip NOTIFY. Taken again on
            -- every claim while awake (a session lock counts its holds) rather than dropped and
            -- retaken, so it is never free while this sender is awake; going idle drops all.
            PERFORM pg_try_advisory_lock_shared(hooks._lock_key('awake'));
            EXIT;
        END IF;
        CONTINUE WHEN v_skipped > 0;  -- only rows to skip so far: look further
        -- Nothing due, and the sender will look again shortly: stay awake, publishers keep
        -- skipping NOTIFY, and no commit needs waiting for (the next claim sees it).
        IF stay_awake THEN
            PERFORM pg_try_advisory_lock_shared(hooks._lock_key('awake'));
            EXIT;
        END IF;
        -- Nothing due: stop suppressing NOTIFY, wait for the publishers that saw this sender
        -- awake to finish committing, and look once more.
        PERFORM pg_advisory_unlock_all();
        EXIT WHEN v_looked_again;
        PERFORM hooks._commit_barrier();
        v_looked_again := true;
    END LOOP;

    -- For DBAs: which senders exist and whether they are awake (written on changes, and at
    -- most every 2 seconds; read first, since ON CONFLICT locks the row even when it changes
    -- nothing).
    IF NOT EXISTS (SELECT 1 FROM hooks.senders s
                    WHERE s.sender_id = v_sender
                      AND s.awake = (v_claimed > 0 OR coalesce(stay_awake, false))
                      AND s.seen_at >= now() - interval '2 seconds') THEN
        INSERT INTO hooks.senders AS s (sender_id, awake, seen_at)
        VALUES (v_sender, v_claimed > 0 OR coalesce(stay_awake, false), now())
        ON CONFLICT ON CONSTRAINT senders_pkey DO UPDATE
           SET awake = EXCLUDED.awake, seen_at = EXCLUDED.seen_at
         WHERE s.awake IS DISTINCT FROM EXCLUDED.awake OR s.seen_at < EXCLUDED.seen_at - interval '2 seconds';
    END IF;
END
$$;

-- Records a batch of attempt results (docs/sender-api.md) and returns how many were applied.
-- Each result is logged (hooks.attempts); it changes its delivery only while sender_id still
-- holds that lease (hooks._holds_lease, checked by the DELETE and UPDATE that apply it: no row
-- is locked before; a result that lost its lease is logged lease_lost). What a result leads to
-- is hooks._outcome's rule: 2xx -> success; 410 -> failed and the webhook disabled; the last
-- attempt -> failed; otherwise retrying after the webhook's backoff (or Retry-After).
-- Applied results also drive each webhook's circuit breaker (README, "Circuit breaker").
-- Plans: only index lookups and nested loops. The planner cannot know how many rows
-- jsonb_to_recordset gives (it assumes 100), and while hooks.deliveries looked small (a new
-- database, or statistics from before a bulk load) the session's cached plans hash- or
-- merge-joined the batch against whole-table or whole-index scans, whose cost then grew with
-- the table: 19 ms per batch of 24 at 15,000 rows (BENCHMARKS.md, P3). A batch only ever
-- touches its own rows, found by primary key.
-- Bitmap scans are off too: a generic plan cannot see how selective its parameters are, and
-- hooks.claim's due-row scan was planned as a bitmap scan of every due row plus a sort, so a
-- claim of 64 read the whole backlog (7,137 rows, 6.4 ms; an ordered index scan stops at 64).
-- JIT is off: with sequential scans disabled, the one plan that must scan (reading the lease
-- token sequence) was priced at 10^10 and JIT-compiled on every call: 19 ms of a 26 ms batch
-- of 80 results (BENCHMARKS.md, COST). hooks.claim and hooks.release run with JIT off too.
-- Generic plans only (plan_cache_mode): their statements take arrays, and with custom plans
-- each call planned them again, 1 to 4 ms per statement (BENCHMARKS.md, COST); the plans are
-- index lookups whatever the values, so one plan per session serves every call.
CREATE OR REPLACE FUNCTION hooks.complete(sender_id text, results jsonb) RETURNS integer
LANGUAGE plpgsql SET enable_seqscan = off SET enable_bitmapscan = off SET enable_hashjoin = off
    SET enable_mergejoin = off SET jit = off
    SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    v_sender    text := complete.sender_id;
    v_threshold integer := hooks._setting_int('hooks.breaker_failure_threshold', 5);
    v_cooldown  bigint := hooks._setting_int('hooks.breaker_cooldown_ms', 30000);
    v_max_cool  bigint := hooks._setting_int('hooks.breaker_max_cooldown_ms', 3600000);
    v_disable   integer := hooks._setting_int('hooks.disable_after_failing_hours', 72);
    v_cap       integer := hooks._setting_int('hooks.max_in_flight_per_webhook', 32);
    -- every lease token issued so far: the breaker's fence when it opens now
    v_issued    bigint := coalesce(pg_sequence_last_value('hooks.lease_tokens'), 0);
    v_applied   integer;
    v_webhooks  integer;
    v_freed     boolean;
    v_id        bigint[];
    v_webhook   bigint[];
    v_tenant    text[];
    v_attempt   integer[];
    v_code      integer[];
    v_err       text[];
    v_body      text[];
    v_duration  integer[];
    v_token     bigint[];
    v_holds     boolean[];
    v_held      bigint[];
    v_ok        boolean[];
    v_after_fence boolean[];
    v_next      text[];
    v_delay     bigint[];
    v_fin       bigint[];
    v_fin_status text[];
    v_fin_code  integer[];
    v_fin_err   text[];
    v_fin_body  text[];
    v_fin_attempt integer[];
    v_fin_token bigint[];
    v_fin_dur   integer[];
    v_ended     bigint[];
BEGIN
    PERFORM hooks._check_sender_id(v_sender);
    IF results IS NULL OR jsonb_typeof(results) <> 'array' THEN
        RAISE EXCEPTION 'results must be a JSON array of attempt results'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    PERFORM set_config('synchronous_commit', 'off', true);  -- as in hooks.claim

    -- The facts, and the status each leads to if its sender still holds the lease. Nothing is
    -- locked here: the fence is checked by the DELETE and UPDATE that apply them, on each row
    -- as it is then (a claim that took a delivery over meanwhile wins; the result is lease_lost).
    WITH r AS (
        SELECT *
          FROM jsonb_to_recordset(results) AS r(delivery_id bigint, attempt_number integer,
               lease_token bigint, status_code integer, error text, response_body text,
               duration_ms integer, retry_after_ms bigint)
    ), cur AS (
        SELECT r.*, o.webhook_id, o.tenant_id, w.retry_config,
               -- claimed after the breaker last opened (or a probe failed): a new request
               coalesce(r.lease_token, q.lease_token, 0) > coalesce(w.breaker_fence, 0) AS after_fence,
               (r.status_code BETWEEN 200 AND 299 AND r.error IS NULL) AS ok,
               -- (a disabling that holds the queue: a failed result waits to be retried)
               w.enabled OR w.disabled_holds_queue AS enabled
          FROM r
          JOIN hooks.outbox o ON o.delivery_id = r.delivery_id
          JOIN hooks.webhooks w ON w.webhook_id = o.webhook_id
          LEFT JOIN hooks.queue q ON q.delivery_id = r.delivery_id
    )
    SELECT array_agg(cur.delivery_id), array_agg(cur.webhook_id), array_agg(cur.tenant_id),
           array_agg(cur.attempt_number), array_agg(cur.lease_token), array_agg(cur.status_code),
           array_agg(CASE WHEN cur.ok THEN NULL
                          ELSE left(coalesce(cur.error, 'HTTP ' || cur.status_code, 'unknown error'), 1000) END),
           array_agg(left(cur.response_body, 1000)), array_agg(cur.duration_ms),
           array_agg(cur.ok), array_agg(cur.after_fence),
           array_agg(hooks._outcome(cur.ok, cur.status_code, cur.attempt_number,
                                    hooks._max_attempts(cur.retry_config), cur.enabled)),
           array_agg(CASE WHEN NOT cur.ok
                          THEN hooks.retry_delay_ms(cur.retry_config::text, cur.attempt_number,
                                                    cur.retry_after_ms, random()) END)
      INTO v_id, v_webhook, v_tenant, v_attempt, v_token, v_code, v_err, v_body, v_duration, v_ok,
           v_after_fence, v_next, v_delay
      FROM cur;
    IF v_id IS NULL THEN
        RETURN 0;
    END IF;

    -- Webhooks at the in-flight cap (whose due rows claims passed over) that these results
    -- free: counted before the results are applied.
    v_freed := cardinality(hooks._webhooks_at_cap(v_cap, now(), v_webhook)) > 0;

    -- Final: out of the queue, fenced; the outcome row keeps the attempt.
    SELECT array_agg(a.delivery_id), array_agg(a.next), array_agg(a.status_code), array_agg(a.err),
           array_agg(a.body), array_agg(a.attempt_number), array_agg(a.lease_token), array_agg(a.duration_ms)
      INTO v_fin, v_fin_status, v_fin_code, v_fin_err, v_fin_body, v_fin_attempt, v_fin_token, v_fin_dur
      FROM unnest(v_id, v_next, v_code, v_err, v_body, v_attempt, v_token, v_duration)
           AS a(delivery_id, next, status_code, err, body, attempt_number, lease_token, duration_ms)
     WHERE a.next IN ('success', 'failed', 'cancelled');
    v_ended := hooks._finish(v_fin, NULL, v_fin_status, coalesce(v_fin_code, '{}'), v_fin_err,
                             coalesce(v_fin_body, '{}'), v_sender, v_fin_attempt, v_fin_token, v_fin_dur);
    v_held := v_ended;

    -- Retrying: due again after the backoff (or Retry-After), with this attempt's result, fenced.
    -- (only when there are such: see hooks.claim)
    IF 'retrying' = ANY (v_next) THEN
        WITH retried AS (
            UPDATE hooks.queue q
               SET status = 'retrying',
                   next_attempt_at = now() + a.delay * interval '1 millisecond',
                   status_code = a.status_code,
                   response_body = a.body,
                   error_message = a.err,
                   lease_owner = NULL,
                   updated_at = now()
              FROM unnest(v_id, v_next, v_delay, v_code, v_err, v_body, v_attempt, v_token)
                   AS a(delivery_id, next, delay, status_code, err, body, attempt_number, lease_token)
             WHERE q.delivery_id = a.delivery_id AND a.next = 'retrying'
               AND hooks._holds_lease(q.status, q.lease_owner, q.attempt_number, q.lease_token,
                                      v_sender, a.attempt_number, a.lease_token)
            RETURNING q.delivery_id
        )
        SELECT v_held || coalesce(array_agg(retried.delivery_id), '{}') INTO v_held FROM retried;
    END IF;
    v_applied := cardinality(v_held);
    SELECT array_agg(a.delivery_id = ANY (v_held) ORDER BY a.i) INTO v_holds
      FROM unnest(v_id) WITH ORDINALITY AS a(delivery_id, i);

    -- Every result is logged (hooks.attempts): one that ended its delivery in its outcome row
    -- (above), the others in the attempt log; one that no longer held its lease as lease_lost.
    -- (only when there are such: a batch of successes writes no log row)
    IF cardinality(v_ended) < cardinality(v_id) THEN
        INSERT INTO hooks.attempt_log (delivery_id, webhook_id, tenant_id, attempt_number, sender_id, outcome,
                                       status_code, error_message, duration_ms)
        SELECT a.delivery_id, a.webhook_id, a.tenant_id, a.attempt_number, v_sender,
               CASE WHEN NOT a.holds THEN 'lease_lost' WHEN a.ok THEN 'success' ELSE 'failure' END,
               a.status_code, a.err, a.duration_ms
          FROM unnest(v_id, v_webhook, v_tenant, v_attempt, v_code, v_err, v_duration, v_holds, v_ok)
               AS a(delivery_id, webhook_id, tenant_id, attempt_number, status_code, err, duration_ms, holds, ok)
         WHERE a.delivery_id <> ALL (v_ended);
    END IF;

    WITH per_webhook AS (
        SELECT a.webhook_id, bool_or(a.ok) AS any_ok, count(*) FILTER (WHERE NOT a.ok) AS failures,
               count(*) FILTER (WHERE NOT a.ok AND a.after_fence) AS new_failures,
               bool_or(a.status_code = 410) AS gone
          FROM unnest(v_webhook, v_holds, v_ok, v_after_fence, v_code)
               AS a(webhook_id, holds, ok, after_fence, status_code)
         WHERE a.holds
         GROUP BY a.webhook_id
    ), breaker AS (
        -- One update per webhook: a success closes the breaker. Failures count up; reaching the
        -- threshold opens it (paused for hooks.breaker_cooldown_ms); once the pause is over
        -- (half-open), a failed probe, a request claimed since it opened, pauses it again for
        -- twice as long (up to hooks.breaker_max_cooldown_ms). Failures of requests that were
        -- already in flight when it opened, or that end while it is paused, change no pause:
        -- requests failing together count once. A sustained failure window disables the
        -- webhook; 410 Gone disables it at once.
        -- (Read from w, not from a CTE: w is the row as it is after any concurrent complete.)
        UPDATE hooks.webhooks w
           SET consecutive_failures = CASE WHEN s.any_ok THEN 0 ELSE w.consecutive_failures + s.failures END,
               failing_since = CASE WHEN s.any_ok THEN NULL ELSE coalesce(w.failing_since, now()) END,
               last_success_at = CASE WHEN s.any_ok THEN now() ELSE w.last_success_at END,
               last_failure_at = CASE WHEN s.failures > 0 THEN now() ELSE w.last_failure_at END,
               paused_until = CASE WHEN s.any_ok THEN NULL ELSE
                   CASE hooks._breaker_step(w.consecutive_failures, coalesce(w.paused_until > now(), false),
                                            s.failures, s.new_failures, v_threshold)
                       WHEN 'open' THEN now() + least(v_cooldown, v_max_cool) * interval '1 millisecond'
                       WHEN 'reopen' THEN now() + least(v_cooldown * 2 ^ least(w.breaker_level + 1, 30), v_max_cool)
                                                  * interval '1 millisecond'
                       ELSE w.paused_until END END,
               breaker_level = CASE WHEN s.any_ok THEN 0 ELSE
                   CASE hooks._breaker_step(w.consecutive_failures, coalesce(w.paused_until > now(), false),
                                            s.failures, s.new_failures, v_threshold)
                       WHEN 'open' THEN 0
                       WHEN 'reopen' THEN w.breaker_level + 1
                       ELSE w.breaker_level END END,
               breaker_fence = CASE WHEN s.any_ok THEN w.breaker_fence ELSE
                   CASE hooks._breaker_step(w.consecutive_failures, coalesce(w.paused_until > now(), false),
                                            s.failures, s.new_failures, v_threshold)
                       WHEN 'keep' THEN w.breaker_fence
                       ELSE v_issued END END,
               enabled = CASE
                   WHEN s.gone THEN false
                   WHEN NOT s.any_ok AND v_disable > 0
                        AND coalesce(w.failing_since, now()) < now() - v_disable * interval '1 hour' THEN false
                   ELSE w.enabled END,
               -- the system's disabling keeps the queued deliveries, waiting for enable_webhook
               disabled_holds_queue = w.disabled_holds_queue OR (w.enabled AND (s.gone OR (
                   NOT s.any_ok AND v_disable > 0
                   AND coalesce(w.failing_since, now()) < now() - v_disable * interval '1 hour'))),
               -- a rotated-out secret is forgotten once its grace period is over
               previous_secret = CASE WHEN w.previous_secret_expires_at <= now() THEN NULL
                                      ELSE w.previous_secret END,
               previous_secret_expires_at = CASE WHEN w.previous_secret_expires_at <= now() THEN NULL
                                                 ELSE w.previous_secret_expires_at END,
               previous_signing_key = CASE WHEN w.previous_signing_key_expires_at <= now() THEN NULL
                                           ELSE w.previous_signing_key END,
               previous_signing_key_expires_at = CASE WHEN w.previous_signing_key_expires_at <= now() THEN NULL
                                                      ELSE w.previous_signing_key_expires_at END,
               disabled_reason = CASE
                   WHEN NOT w.enabled THEN w.disabled_reason
                   WHEN s.gone THEN '410 Gone at ' || to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                   WHEN NOT s.any_ok AND v_disable > 0
                        AND coalesce(w.failing_since, now()) < now() - v_disable * interval '1 hour'
                       THEN 'failing since ' || to_char(w.failing_since AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                            || ' (hooks.disable_after_failing_hours = ' || v_disable || ')'
                   ELSE w.disabled_reason END
          FROM per_webhook s
         WHERE w.webhook_id = s.webhook_id
           -- a healthy webhook's row is written at most once a second, not once per batch
           AND (s.failures > 0 OR w.consecutive_failures > 0 OR w.failing_since IS NOT NULL
                OR w.paused_until IS NOT NULL OR w.last_success_at IS NULL
                OR w.last_success_at < now() - interval '1 second'
                OR w.previous_secret_expires_at <= now() OR w.previous_signing_key_expires_at <= now())
    )
    SELECT count(*) INTO v_webhooks FROM per_webhook;  -- (the breaker update runs in any case)
    -- Requests of such a webhook finished: wake the senders, whose last claim may have found
    -- nothing else to do (sent on commit), unless a sender is awake: it looks again shortly
    -- and claims what these results free (a NOTIFY woke every sender at once, and with 4 senders
    -- on 3 capped webhooks most of their claims found little: BENCHMARKS.md, "Claims take turns").
    IF v_freed THEN
        PERFORM hooks._wake_unless_awake();
    END IF;
    RETURN v_applied;
END
$$;

-- Gives back claimed deliveries that were never sent: due at once, the attempt not counted
-- (the lease token is not reused: the next claim issues a new one).
-- Plans: as in hooks.complete.
CREATE OR REPLACE FUNCTION hooks.release(sender_id text, deliveries jsonb) RETURNS integer
LANGUAGE plpgsql SET enable_seqscan = off SET enable_bitmapscan = off SET enable_hashjoin = off
    SET enable_mergejoin = off SET jit = off
    SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    v_sender   text := release.sender_id;
    v_released integer;
BEGIN
    PERFORM hooks._check_sender_id(v_sender);
    IF deliveries IS NULL OR jsonb_typeof(deliveries) <> 'array' THEN
        RAISE EXCEPTION 'deliveries must be a JSON array of {"delivery_id", "attempt_number"}'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    WITH r AS (
        SELECT * FROM jsonb_to_recordset(deliveries) AS r(delivery_id bigint, attempt_number integer,
                                                          lease_token bigint)
    ), upd AS (
        UPDATE hooks.queue d
           SET status = CASE WHEN d.attempt_number > 1 THEN 'retrying' ELSE 'pending' END,
               attempt_number = d.attempt_number - 1,
               next_attempt_at = now(),
               lease_owner = NULL,
               updated_at = now()
          FROM r
         WHERE d.delivery_id = r.delivery_id
           AND hooks._holds_lease(d.status, d.lease_owner, d.attempt_number, d.lease_token,
                                  v_sender, r.attempt_number, r.lease_token)
        RETURNING 1
    )
    SELECT count(*) INTO v_released FROM upd;
    RETURN v_released;
END
$$;

-- The check: asks for the wake-up at commit unless a sender is awake, and holds the commit lock
-- (shared) until commit when it does not ask. Never waits for a lock: when the commit lock is
-- held exclusively (a sender going idle, or any session that took the key) it asks instead.
-- hooks.complete makes the same check when its results free a capped webhook.
CREATE FUNCTION hooks._wake_unless_awake() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock_shared(hooks._lock_key('commit')) THEN
        PERFORM hooks._notify_at_commit();
    ELSIF pg_try_advisory_xact_lock(hooks._lock_key('awake')) THEN
        PERFORM hooks._notify_at_commit();
    END IF;
END
$$;

-------------------------------------------------------------------------------------------------
-- The wake-up check once per publishing transaction: a trigger on hooks.events (one row per
-- publish) armed by publish when it queued deliveries, instead of one firing per delivery row
-------------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION hooks._wake_sender() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- (hooks.wake = 'poll': no NOTIFY, which PREPARE TRANSACTION refuses; the senders' poll
    -- finds the rows. README, "Wake-ups")
    IF current_setting('beema_hooks.wake_needed', true) IS DISTINCT FROM 'on'
       OR current_setting('beema_hooks.wake_checked', true) = 'on'
       OR current_setting('hooks.wake', true) = 'poll' THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('beema_hooks.wake_checked', 'on', true);
    PERFORM hooks._wake_unless_awake();
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER events_wake_sender
    AFTER INSERT ON hooks.events
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION hooks._wake_sender();

-------------------------------------------------------------------------------------------------
-- Settings an admin sets for every session (hooks.settings, README "Settings"): read first by
-- hooks._setting_int; no rows at first, so every database keeps the settings it had.
-------------------------------------------------------------------------------------------------
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
SELECT pg_catalog.pg_extension_config_dump('hooks.settings', '');
GRANT SELECT, INSERT, UPDATE, DELETE ON hooks.settings TO hooks_admin;
ALTER TABLE hooks.settings ENABLE ROW LEVEL SECURITY;
CREATE POLICY admins_read ON hooks.settings FOR SELECT TO hooks_admin USING (true);
-- (its policy for writing: "Tenants bound to roles", at the end)

-- The largest event hooks.publish accepts, in bytes: an admin's row in hooks.settings, else
-- 1 MiB. A session's own hooks.max_payload_bytes (read by hooks._prepare_event) can only lower
-- it. Returns `json` (the event's text, or with kind 'body' the body built from it) when it is
-- within the limit, raises 54000 as hooks._prepare_event words it otherwise.
CREATE FUNCTION hooks._check_payload(json text, kind text DEFAULT 'event') RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_limit integer;
BEGIN
    IF octet_length(json) <= 1024 THEN
        RETURN json;  -- (under every limit there can be)
    END IF;
    SELECT coalesce((SELECT s.value FROM hooks.settings s WHERE s.name = 'hooks.max_payload_bytes'), 1048576) INTO v_limit;
    IF octet_length(json) > v_limit THEN
        RAISE EXCEPTION USING ERRCODE = 'program_limit_exceeded', DETAIL = 'field: event',
            MESSAGE = format(CASE kind WHEN 'body' THEN 'hooks.publish: event too large: event body is %s bytes; the limit is %s (setting hooks.max_payload_bytes)'
                                       ELSE 'hooks.publish: event too large: event is %s bytes of JSON; the limit is %s (setting hooks.max_payload_bytes)' END,
                             octet_length(json), v_limit);
    END IF;
    RETURN json;
END
$$;

-- An integer setting: an admin's row in hooks.settings, else the session's (or database's)
-- setting, else the default. PL/pgSQL for the reason given at hooks._may_publish (claim and
-- complete read three to five settings per call).
CREATE OR REPLACE FUNCTION hooks._setting_int(name text, fallback integer) RETURNS integer
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN coalesce((SELECT s.value FROM hooks.settings s WHERE s.name = _setting_int.name),
                    nullif(current_setting(_setting_int.name, true), '')::integer, fallback);
END
$$;


-- The role a session acts as: its role after SET ROLE, else its login role. Inside the SECURITY
-- DEFINER functions of beema_hooks current_user is their owner; this is who called them. (A
-- SECURITY DEFINER function of the application in between does not change it: a call acts for
-- the session's role, never for more.) SET ROLE only accepts roles the login is a member of.
CREATE FUNCTION hooks._session_role() RETURNS name
LANGUAGE sql STABLE AS $$
    SELECT CASE pg_catalog.current_setting('role') WHEN 'none' THEN session_user
                                                   ELSE pg_catalog.current_setting('role')::name END
$$;

-- The tenants role r acts for (hooks.tenant_grants): NULL for every tenant (a grant without a
-- tenant; the owner of schema hooks; superusers), else the tenants granted to the roles r is a
-- member of (maybe none). A session's hooks.tenant_id narrows it to that one tenant, or to none
-- when r may not act for it. Every row-level security policy of beema_hooks asks it for
-- current_user, once per query; hooks.publish asks it for the session's role.
CREATE FUNCTION hooks._tenant_scope(r name) RETURNS text[]
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, hooks AS $$
DECLARE
    v_narrow  text := nullif(current_setting('hooks.tenant_id', true), '');
    v_every   boolean;
    v_granted text[];
BEGIN
    SELECT pg_has_role(ro.oid, n.nspowner, 'MEMBER') INTO v_every
      FROM pg_namespace n, pg_roles ro
     WHERE n.nspname = 'hooks' AND ro.rolname = r;
    IF v_every IS NULL THEN
        RETURN '{}';  -- (no such role: a watch's role since dropped)
    END IF;
    IF NOT v_every THEN
        -- (read as the caller, this table shows the grants of the caller's own roles only)
        SELECT coalesce(bool_or(g.tenant_id IS NULL), false),
               coalesce(array_agg(g.tenant_id) FILTER (WHERE g.tenant_id IS NOT NULL), '{}')
          INTO v_every, v_granted
          FROM hooks.tenant_grants g
         WHERE pg_has_role(r, to_regrole(quote_ident(g.role_name)), 'MEMBER');
    END IF;
    IF v_narrow IS NULL THEN
        RETURN CASE WHEN v_every THEN NULL ELSE v_granted END;
    END IF;
    RETURN CASE WHEN v_every OR v_narrow = ANY (v_granted) THEN ARRAY[v_narrow] ELSE '{}' END;
END
$$;

-- Whether role `publisher` may publish for every tenant of `tenants`: what _tenant_scope and
-- _check_publisher decide, asked in one query (publish asks it for every event). PL/pgSQL, not
-- SQL: a SQL function with a subquery is never inlined, and the SQL-function executor parsed
-- and planned this query again in every publishing transaction (BENCHMARKS.md, "Publish").
-- PL/pgSQL keeps its plan for the session.
CREATE FUNCTION hooks._may_publish(publisher name, tenants text[]) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN NOT EXISTS (
        SELECT 1 FROM unnest(tenants) AS t
         WHERE t <> coalesce(nullif(pg_catalog.current_setting('hooks.tenant_id', true), ''), t)
            OR NOT (pg_catalog.pg_has_role(publisher, (SELECT n.nspowner FROM pg_catalog.pg_namespace n WHERE n.nspname = 'hooks'), 'MEMBER')
                    OR EXISTS (SELECT 1 FROM hooks.tenant_grants g
                                WHERE (g.tenant_id = t OR g.tenant_id IS NULL)
                                  AND pg_catalog.pg_has_role(publisher, pg_catalog.to_regrole(pg_catalog.quote_ident(g.role_name)), 'MEMBER'))));
END
$$;

-- Raises 42501 unless role `publisher` may publish for every tenant of `tenants`.
CREATE FUNCTION hooks._check_publisher(publisher name, tenants text[]) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_scope  text[] := hooks._tenant_scope(publisher);
    v_narrow text := nullif(current_setting('hooks.tenant_id', true), '');
    v_other  text;
BEGIN
    IF v_scope IS NULL THEN
        RETURN;
    END IF;
    SELECT t INTO v_other FROM unnest(tenants) AS t WHERE NOT t = ANY (v_scope) LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    ELSIF v_narrow IS NOT NULL AND v_narrow <> v_other THEN
        RAISE EXCEPTION 'hooks.publish: this session is tenant %, the event is for tenant %', v_narrow, v_other
            USING ERRCODE = 'insufficient_privilege';
    ELSE
        RAISE EXCEPTION 'hooks.publish: role % may not publish for tenant %', publisher, v_other
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('An admin of that tenant grants it: SELECT hooks.grant_tenant(%L, %L);', publisher, v_other);
    END IF;
END
$$;

-- hooks._tenant_scope of the session's role, as the extension's owner: what an admin's session
-- acts for, for the policy that shows admins the grants of their tenants.
CREATE FUNCTION hooks._session_scope() RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT hooks._tenant_scope(hooks._session_role())
$$;

-- Raises 42501 unless the session's role may grant or revoke `tenant_id` (NULL: every tenant):
-- an admin (hooks_admin) or the owner, acting for that tenant, or for every tenant for NULL.
CREATE FUNCTION hooks._check_granter(fn text, tenant_id text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_caller name := hooks._session_role();
    v_scope  text[] := hooks._tenant_scope(v_caller);
BEGIN
    IF NOT pg_has_role(v_caller, 'hooks_admin', 'MEMBER')
       AND NOT pg_has_role(v_caller, (SELECT n.nspowner FROM pg_namespace n WHERE n.nspname = 'hooks'), 'MEMBER') THEN
        RAISE EXCEPTION 'hooks.%: % is not an admin (hooks_admin)', fn, v_caller USING ERRCODE = 'insufficient_privilege';
    ELSIF tenant_id IS NULL AND v_scope IS NOT NULL THEN
        RAISE EXCEPTION 'hooks.%: only an admin of every tenant grants or revokes every tenant; % acts for %', fn, v_caller,
                        CASE WHEN v_scope = '{}' THEN 'no tenant' ELSE array_to_string(v_scope, ', ') END
            USING ERRCODE = 'insufficient_privilege';
    ELSIF NOT tenant_id = ANY (coalesce(v_scope, ARRAY[tenant_id])) THEN
        RAISE EXCEPTION 'hooks.%: % does not act for tenant %', fn, v_caller, tenant_id USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$;

-- Lets a role act for a tenant (NULL: for every tenant): publish for it, and read and manage
-- its rows as far as the role's privileges go (hooks_publisher, hooks_admin). Any member of the
-- role acts for it too. An admin grants the tenants it acts for; only an admin of every tenant
-- (or the owner) grants every tenant. Returns false when the role had the grant already.
-- Errors: 42704 (no such role), 22023 (an empty tenant), 42501.
CREATE FUNCTION hooks.grant_tenant(role_name name, tenant_id text DEFAULT NULL) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = grant_tenant.role_name) THEN
        RAISE EXCEPTION 'hooks.grant_tenant: role % does not exist', role_name USING ERRCODE = 'undefined_object';
    ELSIF tenant_id = '' THEN
        RAISE EXCEPTION 'hooks.grant_tenant: tenant_id must not be empty (NULL grants every tenant)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM hooks._check_granter('grant_tenant', tenant_id);
    INSERT INTO hooks.tenant_grants (role_name, tenant_id, granted_by)
    VALUES (grant_tenant.role_name, grant_tenant.tenant_id, hooks._session_role())
    ON CONFLICT DO NOTHING;
    RETURN FOUND;
END
$$;

-- Takes back what hooks.grant_tenant(role_name, tenant_id) gave (NULL: the grant of every
-- tenant; a role's grants of single tenants stay). Same rights as grant_tenant. Returns false
-- when there was no such grant.
CREATE FUNCTION hooks.revoke_tenant(role_name name, tenant_id text DEFAULT NULL) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM hooks._check_granter('revoke_tenant', tenant_id);
    DELETE FROM hooks.tenant_grants g
     WHERE g.role_name = revoke_tenant.role_name AND g.tenant_id IS NOT DISTINCT FROM revoke_tenant.tenant_id;
    RETURN FOUND;
END
$$;

-- hooks.publish (below) for role `publisher`: the session's role, or the role that watches a table.
CREATE FUNCTION hooks._publish(event jsonb, publisher name) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    p        record;
    v_id     bigint;
    v_body   jsonb;
    v_webhooks  bigint[];
    v_envelopes text[];
    v_filtered  boolean;
    v_filters   jsonb[];
    v_paths     jsonpath[];
    v_ordered   boolean;
    v_orderings text[];
    v_keys      text[];
BEGIN
    IF event IS NULL THEN
        RAISE EXCEPTION 'hooks.publish: event must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass a JSON object such as {"event": "policy/bound", "data": {"tenantId": "acme"}}.';
    END IF;

    -- (the admin's limit, hooks.settings; the session's own, lower one is _prepare_event's)
    SELECT * INTO STRICT p
      FROM hooks._prepare_event(hooks._check_payload(event::text),
                                to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'));
    PERFORM hooks._check_payload(p.body, 'body');
    IF NOT hooks._may_publish(publisher, ARRAY[p.tenant_id]) THEN
        PERFORM hooks._check_publisher(publisher, ARRAY[p.tenant_id]);
    END IF;

    INSERT INTO hooks.events (tenant_id, event_type, event_key, body)
    VALUES (p.tenant_id, p.event_type, p.event_key, p.body)
    ON CONFLICT (tenant_id, event_key) DO NOTHING
    RETURNING event_id INTO v_id;

    IF v_id IS NULL THEN
        -- Same id published before for this tenant: idempotent, nothing more to write.
        SELECT e.event_id INTO STRICT v_id
          FROM hooks.events e
         WHERE e.tenant_id = p.tenant_id AND e.event_key = p.event_key;
        RETURN v_id;
    END IF;

    SELECT array_agg(m.webhook_id), array_agg(nullif(m.envelope, 'beema')),
           bool_or(m.filter IS NOT NULL OR m.filter_path IS NOT NULL),
           array_agg(m.filter), array_agg(m.filter_path),
           bool_or(m.ordering_key IS NOT NULL), array_agg(m.ordering_key)
      INTO v_webhooks, v_envelopes, v_filtered, v_filters, v_paths, v_ordered, v_orderings
      FROM hooks.match(p.event_type, p.tenant_id) m;
    IF v_filtered THEN
        -- some matched webhook has payload filters: test them on the body as receivers get it,
        -- parsed once (publishes that match no filtered webhook never parse it)
        v_body := p.body::jsonb;
        SELECT array_agg(f.webhook_id), array_agg(f.envelope), array_agg(f.ordering)
          INTO v_webhooks, v_envelopes, v_orderings
          FROM unnest(v_webhooks, v_envelopes, v_filters, v_paths, v_orderings)
               AS f(webhook_id, envelope, filter, path, ordering)
         WHERE hooks._passes_filter(f.filter, f.path, v_body);
    END IF;
    IF v_ordered AND v_webhooks IS NOT NULL THEN
        -- some matched webhook orders its deliveries: each one's key from the body
        v_body := coalesce(v_body, p.body::jsonb);
        v_keys := ARRAY(SELECT CASE WHEN o IS NOT NULL THEN hooks._order_key(v_body, o) END
                          FROM unnest(v_orderings) WITH ORDINALITY AS u(o, i) ORDER BY u.i);
    END IF;
    IF v_webhooks IS NOT NULL THEN
        -- (arms the wake-up check at commit; a rolled-back savepoint disarms it again)
        PERFORM hooks._enqueue(array_fill(v_id, ARRAY[cardinality(v_webhooks)]),
                               array_fill(p.tenant_id, ARRAY[cardinality(v_webhooks)]),
                               array_fill(p.event_type, ARRAY[cardinality(v_webhooks)]),
                               v_webhooks, v_envelopes, v_keys);
    END IF;
    RETURN v_id;
END
$$;

-- Publishes an event inside the caller's transaction: one hooks.events row, and one
-- delivery per matching webhook whose payload filters it passes (hooks._enqueue) (which arms the sender's wake-up on commit, below). Returns the
-- event id; publishing the same "id" again for a tenant returns the first event's id and writes
-- nothing. Errors: 22004 (NULL event, missing event name or tenant), 22023 (wrong shape or type,
-- naming the field), 54000 (larger than hooks.max_payload_bytes or nested too deep), 42501 (the
-- session's role may not publish for the event's tenant: hooks.tenant_grants, narrowed by the
-- session's hooks.tenant_id).
CREATE OR REPLACE FUNCTION hooks.publish(event jsonb) RETURNS bigint
LANGUAGE sql AS $$
    SELECT hooks._publish(event, hooks._session_role())
$$;

-- A delivery an admin acts on (hooks.retry_delivery, hooks.skip_delivery): its outbox row
-- locked (a concurrent action on the same delivery waits), and the delivery as it is then.
-- P0002 when there is no such delivery, 55000 while it is in flight.
CREATE FUNCTION hooks._delivery_to_change(delivery_id bigint) RETURNS hooks.deliveries
LANGUAGE plpgsql AS $$
DECLARE
    d hooks.deliveries;
BEGIN
    PERFORM 1 FROM hooks.outbox x WHERE x.delivery_id = _delivery_to_change.delivery_id FOR UPDATE;
    SELECT * INTO d FROM hooks.deliveries x WHERE x.delivery_id = _delivery_to_change.delivery_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'delivery % does not exist', delivery_id USING ERRCODE = 'no_data_found';
    END IF;
    IF d.status = 'in_flight' THEN
        RAISE EXCEPTION 'delivery % is in flight', delivery_id
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'Wait for its result.';
    END IF;
    RETURN d;
END
$$;


-- Sends one delivery again: due now with a fresh attempt budget and the same delivery uuid
-- (receivers dedup on it), and wakes the senders on commit. 55000 while it is in flight or its
-- webhook is disabled.
CREATE OR REPLACE FUNCTION hooks.retry_delivery(delivery_id bigint) RETURNS hooks.deliveries
LANGUAGE plpgsql AS $$
DECLARE
    d hooks.deliveries := hooks._delivery_to_change(delivery_id);
BEGIN
    IF NOT (hooks._webhook(d.webhook_id)).enabled THEN
        RAISE EXCEPTION 'the webhook of delivery % is disabled', delivery_id
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'Enable it with hooks.enable_webhook first.';
    END IF;
    PERFORM hooks._requeue(ARRAY[d.delivery_id]);
    SELECT * INTO d FROM hooks.deliveries x WHERE x.delivery_id = retry_delivery.delivery_id;
    PERFORM hooks._notify_at_commit();  -- wake the senders on commit
    RETURN d;
END
$$;

-- Replays an event to every webhook that matches it now (or only `webhook_id`, which must belong
-- to the event's tenant). Each replayed delivery gets a new delivery uuid, since receivers dedup
-- on it; deliveries in flight are left alone. Returns the number of deliveries queued; when
-- any, the senders are woken on commit.
CREATE OR REPLACE FUNCTION hooks.replay_event(event_id bigint, webhook_id bigint DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    e hooks.events;
    n integer;
    v_webhooks bigint[];
    v_again bigint[];
    v_new bigint[];
BEGIN
    SELECT * INTO e FROM hooks.events x WHERE x.event_id = replay_event.event_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'event % does not exist', event_id USING ERRCODE = 'no_data_found';
    END IF;
    IF webhook_id IS NOT NULL AND (hooks._webhook(webhook_id)).tenant_id <> e.tenant_id THEN
        RAISE EXCEPTION 'webhook % belongs to another tenant than event %', webhook_id, event_id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT array_agg(w.webhook_id) INTO v_webhooks
      FROM hooks.webhooks w
     WHERE CASE WHEN replay_event.webhook_id IS NULL
                THEN w.webhook_id IN (SELECT m.webhook_id FROM hooks.match(e.event_type, e.tenant_id) m
                                       WHERE hooks._passes_filter(m.filter, m.filter_path, e.body::jsonb))
                ELSE w.webhook_id = replay_event.webhook_id AND w.enabled END;
    -- Webhooks that had a delivery of this event: it starts over with a new uuid (unless in
    -- flight); the others get a new delivery.
    SELECT array_agg(o.delivery_id) INTO v_again
      FROM hooks.outbox o
     WHERE o.event_id = e.event_id AND o.webhook_id = ANY (v_webhooks);
    n := hooks._requeue(v_again, true);
    v_new := ARRAY(SELECT w FROM unnest(v_webhooks) AS w
                    WHERE NOT EXISTS (SELECT 1 FROM hooks.outbox o WHERE o.event_id = e.event_id AND o.webhook_id = w));
    n := n + hooks._enqueue(array_fill(e.event_id, ARRAY[cardinality(v_new)]),
                            array_fill(e.tenant_id, ARRAY[cardinality(v_new)]),
                            array_fill(e.event_type, ARRAY[cardinality(v_new)]), v_new);
    IF n > 0 THEN
        PERFORM hooks._notify_at_commit();  -- wake the senders on commit
    END IF;
    RETURN n;
END
$$;

-- Queues again every failed delivery of a webhook created since `since` (same delivery uuids:
-- they never arrived), and wakes the senders on commit. Returns how many.
CREATE OR REPLACE FUNCTION hooks.redeliver_failed(webhook_id bigint, since timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    w hooks.webhooks := hooks._webhook(webhook_id);
    n integer;
BEGIN
    IF NOT w.enabled THEN
        RAISE EXCEPTION 'webhook % is disabled', webhook_id
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'Enable it with hooks.enable_webhook first.';
    END IF;
    n := hooks._requeue(ARRAY(SELECT f.delivery_id
                                FROM hooks.outcomes f
                                JOIN hooks.outbox o ON o.delivery_id = f.delivery_id
                               WHERE f.webhook_id = w.webhook_id AND f.status = 'failed'
                                 AND o.created_at >= coalesce(since, '-infinity')));
    IF n > 0 THEN
        PERFORM hooks._notify_at_commit();  -- wake the senders on commit
    END IF;
    RETURN n;
END
$$;

-- Sends a `webhook.test` event to one webhook through the normal path (event row, delivery,
-- signed by the sender like any other). Returns the delivery id.
CREATE OR REPLACE FUNCTION hooks.test_webhook(webhook_id bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    w   hooks.webhooks := hooks._webhook(webhook_id);
    p   record;
    eid bigint;
    did bigint;
BEGIN
    IF NOT w.enabled THEN
        RAISE EXCEPTION 'webhook % is disabled', webhook_id USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    SELECT * INTO STRICT p FROM hooks._prepare_event(
        jsonb_build_object('event', 'webhook.test',
                           'data', jsonb_build_object('tenantId', w.tenant_id, 'webhookId', w.webhook_id,
                                                      'webhookName', w.webhook_name))::text,
        to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'));
    INSERT INTO hooks.events (tenant_id, event_type, event_key, body)
    VALUES (p.tenant_id, p.event_type, p.event_key, p.body)
    RETURNING event_id INTO eid;
    PERFORM hooks._enqueue(ARRAY[eid], ARRAY[w.tenant_id], ARRAY[p.event_type], ARRAY[w.webhook_id]);  -- wakes the senders on commit
    SELECT o.delivery_id INTO STRICT did FROM hooks.outbox o WHERE o.event_id = eid;
    RETURN did;
END
$$;

-- CREATE (OR REPLACE) resets these (security.sql sets them at install)
ALTER FUNCTION hooks.publish(jsonb) SECURITY DEFINER SET search_path = pg_catalog, hooks;
ALTER FUNCTION hooks.claim(text, integer, interval, boolean, bigint) SECURITY DEFINER SET search_path = pg_catalog, hooks;
ALTER FUNCTION hooks.complete(text, jsonb) SECURITY DEFINER SET search_path = pg_catalog, hooks;
ALTER FUNCTION hooks.release(text, jsonb) SECURITY DEFINER SET search_path = pg_catalog, hooks;
REVOKE EXECUTE ON FUNCTION hooks.claim(text, integer, interval, boolean, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hooks.claim(text, integer, interval, boolean, bigint) TO hooks_sender;

-------------------------------------------------------------------------------------------------
-- Storage, continued: the state machine's functions, the view's triggers, the views and the
-- function that were dropped with the table, and privileges and row-level security of the new
-- tables.
-------------------------------------------------------------------------------------------------
-- The outcome rule: the status a delivery takes after an attempt's result, decided here only.
-- 2xx (and no transport error) -> success; 410 Gone -> failed (and the webhook is disabled, by
-- hooks.complete's breaker step); the last attempt (maxAttempts) -> failed; the webhook disabled
-- meanwhile -> cancelled; otherwise retrying (after hooks.retry_delay_ms).
CREATE FUNCTION hooks._outcome(ok boolean, status_code integer, attempt_number integer,
                               max_attempts integer, webhook_enabled boolean)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
               WHEN $1 THEN 'success'
               WHEN $2 = 410 THEN 'failed'
               WHEN $3 >= $4 THEN 'failed'
               WHEN NOT $5 THEN 'cancelled'
               ELSE 'retrying'
           END
$$;

-- A webhook's maxAttempts (retry_config; validated by hooks._check_webhook).
CREATE FUNCTION hooks._max_attempts(retry_config jsonb) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(($1->>'maxAttempts')::int, 3)
$$;

-- Queues new deliveries, the i-th of event event_ids[i] (of tenant tenant_ids[i], type
-- event_types[i]) to webhook webhook_ids[i] in payload envelope envelopes[i] (NULL for beema)
-- with ordering key order_keys[i] (NULL: not ordered). Both arrays NULL: each webhook's envelope
-- and ordering key of now (read from the webhooks and the event bodies). Writes an hooks.outbox
-- row (what goes where) and a hooks.queue row: due now, or waiting behind the live or
-- blocking delivery of its ordering key, in call order (hooks.order_keys; the key's row stays
-- locked until commit, so that publishers of one key queue in commit order). When any is
-- queued, arms the senders' wake-up at commit (the check on hooks.events, below). Returns how
-- many. publish, hooks._publish_many, replay and test_webhook all queue through this.
CREATE FUNCTION hooks._enqueue(event_ids bigint[], tenant_ids text[], event_types text[],
                               webhook_ids bigint[], envelopes text[] DEFAULT NULL,
                               order_keys text[] DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    n integer;
    v_kw    bigint[];
    v_kk    text[];
    v_khead bigint[];
BEGIN
    IF envelopes IS NULL THEN
        SELECT array_agg(nullif(x.envelope, 'beema') ORDER BY u.i),
               array_agg(CASE WHEN x.ordering_key IS NOT NULL
                              THEN (SELECT hooks._order_key(e.body::jsonb, x.ordering_key)
                                      FROM hooks.events e WHERE e.event_id = u.e) END ORDER BY u.i)
          INTO envelopes, order_keys
          FROM unnest(webhook_ids, event_ids) WITH ORDINALITY AS u(w, e, i)
          LEFT JOIN hooks.webhooks x ON x.webhook_id = u.w;
    END IF;
    IF order_keys IS NULL OR cardinality(array_remove(order_keys, NULL)) = 0 THEN
        WITH o AS (
            INSERT INTO hooks.outbox (webhook_id, event_id, tenant_id, event_type, envelope)
            SELECT u.w, u.e, u.t, u.et, u.env
              FROM unnest(webhook_ids, event_ids, tenant_ids, event_types, envelopes) AS u(w, e, t, et, env)
            RETURNING outbox.delivery_id, outbox.webhook_id, outbox.tenant_id
        )
        INSERT INTO hooks.queue (delivery_id, webhook_id, tenant_id)
        SELECT o.delivery_id, o.webhook_id, o.tenant_id FROM o;
        GET DIAGNOSTICS n = ROW_COUNT;
    ELSE
        -- Ordered deliveries: lock their keys first (one upsert, in a fixed order), so that the
        -- delivery ids below, and so the order the key's deliveries go in, follow commit order.
        WITH k AS (
            SELECT DISTINCT u.w, u.k, u.t
              FROM unnest(webhook_ids, order_keys, tenant_ids) AS u(w, k, t)
             WHERE u.k IS NOT NULL
             ORDER BY u.w, u.k
        ), up AS (
            INSERT INTO hooks.order_keys AS ok (webhook_id, order_key, tenant_id)
            SELECT k.w, k.k, k.t FROM k
            ON CONFLICT (webhook_id, order_key) DO UPDATE SET updated_at = now()
            RETURNING ok.webhook_id, ok.order_key, ok.head
        )
        SELECT array_agg(up.webhook_id), array_agg(up.order_key), array_agg(up.head)
          INTO v_kw, v_kk, v_khead
          FROM up;
        WITH o AS (
            INSERT INTO hooks.outbox (webhook_id, event_id, tenant_id, event_type, envelope, order_key)
            SELECT u.w, u.e, u.t, u.et, u.env, u.k
              FROM unnest(webhook_ids, event_ids, tenant_ids, event_types, envelopes, order_keys)
                   WITH ORDINALITY AS u(w, e, t, et, env, k, i)
             ORDER BY u.i
            RETURNING outbox.delivery_id, outbox.webhook_id, outbox.tenant_id, outbox.order_key
        ), r AS (
            -- behind: its key has a head already, or an earlier delivery of this call
            SELECT o.*, o.order_key IS NOT NULL
                        AND (h.head IS NOT NULL
                             OR row_number() OVER (PARTITION BY o.webhook_id, o.order_key ORDER BY o.delivery_id) > 1)
                        AS behind
              FROM o
              LEFT JOIN unnest(v_kw, v_kk, v_khead) AS h(w, k, head) ON h.w = o.webhook_id AND h.k = o.order_key
        ), q AS (
            INSERT INTO hooks.queue (delivery_id, webhook_id, tenant_id, order_key, behind, next_attempt_at)
            SELECT r.delivery_id, r.webhook_id, r.tenant_id, r.order_key, r.behind,
                   CASE WHEN r.behind THEN 'infinity'::timestamptz ELSE now() END
              FROM r
            RETURNING queue.delivery_id, queue.webhook_id, queue.order_key, queue.behind
        )
        , heads AS (
            -- the keys that had no head: their first delivery of this call is it
            UPDATE hooks.order_keys ok
               SET head = q.delivery_id
              FROM q
             WHERE q.order_key IS NOT NULL AND NOT q.behind
               AND ok.webhook_id = q.webhook_id AND ok.order_key = q.order_key
            RETURNING 1
        )
        SELECT count(*) INTO n FROM q;
    END IF;
    IF n > 0 THEN
        PERFORM set_config('beema_hooks.wake_needed', 'on', true);
    END IF;
    RETURN n;
END
$$;

-- Ends live deliveries: each leaves hooks.queue for hooks.outcomes with its final status
-- (success, failed or cancelled), result and error. `status` (one for all) is used where
-- `statuses` is NULL; a NULL array of status codes or of response bodies keeps the last
-- failed attempt's (a cancel, or a lease that ran out). With `fence_sender`, a delivery ends
-- only while it still holds the lease of `fence_attempts`/`fence_tokens` (hooks._holds_lease),
-- checked on the row as it is when deleted (a concurrent claim that took it over wins); the
-- delivery then ends by that sender's result, and the outcome row keeps the attempt (its id
-- in the attempt log, the sender, `durations`: hooks.attempts shows it).
-- An ordered delivery that ends lets the next of its key go (hooks._order_settle).
-- Returns the ids of the deliveries that ended.
CREATE FUNCTION hooks._finish(ids bigint[], status text, statuses text[], status_codes integer[],
                              errors text[], response_bodies text[] DEFAULT NULL,
                              fence_sender text DEFAULT NULL, fence_attempts integer[] DEFAULT NULL,
                              fence_tokens bigint[] DEFAULT NULL, durations integer[] DEFAULT NULL)
RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    v_ended bigint[];
    v_order_w bigint[];
    v_order_k text[];
    v_order_d bigint[];
BEGIN
    IF cardinality(ids) IS NULL OR cardinality(ids) = 0 THEN
        RETURN '{}';
    END IF;
    WITH f AS (
        SELECT * FROM unnest(ids, statuses, status_codes, errors, response_bodies, fence_attempts, fence_tokens,
                             durations)
                 AS f(delivery_id, status, status_code, error_message, response_body, attempt_number, lease_token,
                      duration_ms)
    ), gone AS (
        DELETE FROM hooks.queue q USING f
         WHERE q.delivery_id = f.delivery_id
           AND (fence_sender IS NULL
                OR hooks._holds_lease(q.status, q.lease_owner, q.attempt_number, q.lease_token,
                                      fence_sender, f.attempt_number, f.lease_token))
        RETURNING q.delivery_id, q.webhook_id, q.tenant_id, q.attempt_number, q.lease_token,
                  q.breaker_held_ms, q.order_key, q.behind, coalesce(f.status, _finish.status) AS status,
                  CASE WHEN status_codes IS NULL THEN q.status_code ELSE f.status_code END AS status_code,
                  CASE WHEN response_bodies IS NULL THEN q.response_body ELSE f.response_body END AS response_body,
                  f.error_message, f.duration_ms
    ), ended AS (
        INSERT INTO hooks.outcomes (delivery_id, webhook_id, tenant_id, status, attempt_number,
                                    status_code, response_body, error_message, lease_token,
                                    breaker_held_ms, delivered_at, attempt_id, sender_id, duration_ms)
        SELECT g.delivery_id, g.webhook_id, g.tenant_id, g.status, g.attempt_number, g.status_code,
               g.response_body, g.error_message, g.lease_token, g.breaker_held_ms,
               CASE WHEN g.status = 'success' THEN now() END,
               CASE WHEN fence_sender IS NOT NULL THEN nextval('hooks.attempt_log_attempt_id_seq') END,
               fence_sender, g.duration_ms
          FROM gone g
    )
    -- (every row of gone is inserted by ended, which runs whether or not it is read)
    SELECT coalesce(array_agg(g.delivery_id), '{}'),
           array_agg(g.webhook_id) FILTER (WHERE g.order_key IS NOT NULL AND NOT g.behind),
           array_agg(g.order_key) FILTER (WHERE g.order_key IS NOT NULL AND NOT g.behind),
           array_agg(g.delivery_id) FILTER (WHERE g.order_key IS NOT NULL AND NOT g.behind)
      INTO v_ended, v_order_w, v_order_k, v_order_d
      FROM gone g;
    -- ordered deliveries that ended: the next of their key may go (or, failed, block it)
    IF v_order_d IS NOT NULL THEN
        PERFORM hooks._order_settle(v_order_w, v_order_k, v_order_d);
    END IF;
    RETURN v_ended;
END
$$;

-- The attempts that ended the finished deliveries `ids`, kept in their outcome rows (hooks._finish),
-- copied into the attempt log as hooks.attempts shows them: called before those rows are
-- deleted (hooks._requeue) or changed (hooks._deliveries_update), so that the log keeps them.
CREATE FUNCTION hooks._log_final_attempts(ids bigint[]) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO hooks.attempt_log (attempt_id, delivery_id, webhook_id, tenant_id, attempt_number,
                                   sender_id, outcome, status_code, error_message, duration_ms, created_at)
    SELECT a.attempt_id, a.delivery_id, a.webhook_id, a.tenant_id, a.attempt_number,
           a.sender_id, a.outcome, a.status_code, a.error_message, a.duration_ms, a.created_at
      FROM hooks.outcomes f
      JOIN hooks.attempts a ON a.delivery_id = f.delivery_id AND a.attempt_id = f.attempt_id
     WHERE f.delivery_id = ANY (ids) AND f.attempt_id IS NOT NULL;
$$;

-- Queues finished or waiting deliveries again from the start: pending, due now, attempt 0,
-- no error. A finished one moves back from hooks.outcomes into hooks.queue; one in the queue
-- that is not in flight starts over; one in flight is left alone. `new_uuids` gives each a new
-- delivery_uuid (a replay: receivers dedup on it). An ordered delivery that moves back goes
-- first when it is its key's head (the failed one that blocks it) or the key is idle, and
-- waits behind the key's head otherwise; one waiting behind keeps waiting. Returns how many
-- were queued.
CREATE FUNCTION hooks._requeue(ids bigint[], new_uuids boolean DEFAULT false) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
    m integer;
    v_back bigint[];
BEGIN
    UPDATE hooks.queue q
       SET status = 'pending', attempt_number = 0,
           next_attempt_at = CASE WHEN q.behind THEN 'infinity'::timestamptz ELSE now() END, lease_owner = NULL,
           status_code = NULL, response_body = NULL, error_message = NULL, breaker_held_ms = 0,
           updated_at = now()
     WHERE q.delivery_id = ANY (ids) AND q.status IN ('pending', 'retrying');
    GET DIAGNOSTICS m = ROW_COUNT;
    PERFORM hooks._log_final_attempts(ids);
    WITH back AS (
        DELETE FROM hooks.outcomes f WHERE f.delivery_id = ANY (ids)
        RETURNING f.delivery_id, f.webhook_id, f.tenant_id, f.lease_token
    ), q AS (
        INSERT INTO hooks.queue (delivery_id, webhook_id, tenant_id, lease_token, order_key)
        SELECT b.delivery_id, b.webhook_id, b.tenant_id, b.lease_token, o.order_key
          FROM back b JOIN hooks.outbox o ON o.delivery_id = b.delivery_id
        RETURNING queue.delivery_id, queue.order_key
    )
    SELECT count(*), array_agg(q.delivery_id) FILTER (WHERE q.order_key IS NOT NULL)
      INTO n, v_back
      FROM q;
    IF v_back IS NOT NULL THEN
        -- their keys locked (as a publisher does), then each goes first or waits
        INSERT INTO hooks.order_keys AS ok (webhook_id, order_key, tenant_id)
        SELECT DISTINCT q.webhook_id, q.order_key, q.tenant_id
          FROM hooks.queue q WHERE q.delivery_id = ANY (v_back)
         ORDER BY 1, 2
        ON CONFLICT (webhook_id, order_key) DO UPDATE SET updated_at = now();
        UPDATE hooks.order_keys ok
           SET head = f.delivery_id
          FROM (SELECT DISTINCT ON (q.webhook_id, q.order_key) q.webhook_id, q.order_key, q.delivery_id
                  FROM hooks.queue q WHERE q.delivery_id = ANY (v_back)
                 ORDER BY q.webhook_id, q.order_key, q.delivery_id) AS f
         WHERE ok.webhook_id = f.webhook_id AND ok.order_key = f.order_key AND ok.head IS NULL;
        UPDATE hooks.queue q
           SET behind = true, next_attempt_at = 'infinity'
          FROM hooks.order_keys ok
         WHERE q.delivery_id = ANY (v_back)
           AND ok.webhook_id = q.webhook_id AND ok.order_key = q.order_key AND ok.head <> q.delivery_id;
    END IF;
    IF new_uuids THEN
        UPDATE hooks.outbox o SET delivery_uuid = gen_random_uuid()
         WHERE o.delivery_id = ANY (ids)
           AND EXISTS (SELECT 1 FROM hooks.queue q WHERE q.delivery_id = o.delivery_id AND q.status = 'pending');
    END IF;
    RETURN n + m;
END
$$;

-- An INSERT into the view hooks.deliveries (a DBA's or an old script's): the delivery goes into
-- hooks.outbox, and into hooks.queue when its status is live (pending by default) or
-- hooks.outcomes when it is final.
CREATE FUNCTION hooks._deliveries_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO hooks.outbox (delivery_id, delivery_uuid, webhook_id, event_id, tenant_id, event_type, created_at)
    VALUES (coalesce(NEW.delivery_id, nextval(pg_get_serial_sequence('hooks.outbox', 'delivery_id'))),
            coalesce(NEW.delivery_uuid, gen_random_uuid()), NEW.webhook_id, NEW.event_id,
            NEW.tenant_id, NEW.event_type, coalesce(NEW.created_at, now()))
    RETURNING delivery_id, delivery_uuid, created_at INTO NEW.delivery_id, NEW.delivery_uuid, NEW.created_at;
    NEW.status := coalesce(NEW.status, 'pending');
    NEW.attempt_number := coalesce(NEW.attempt_number, 0);
    NEW.updated_at := coalesce(NEW.updated_at, now());
    NEW.breaker_held_ms := coalesce(NEW.breaker_held_ms, 0);
    IF NEW.status IN ('success', 'failed', 'cancelled') THEN
        INSERT INTO hooks.outcomes (delivery_id, webhook_id, tenant_id, status, attempt_number,
                                    status_code, response_body, error_message, lease_token,
                                    breaker_held_ms, delivered_at, updated_at)
        VALUES (NEW.delivery_id, NEW.webhook_id, NEW.tenant_id, NEW.status, NEW.attempt_number,
                NEW.status_code, NEW.response_body, NEW.error_message, NEW.lease_token,
                NEW.breaker_held_ms, NEW.delivered_at, NEW.updated_at);
    ELSE
        NEW.next_attempt_at := coalesce(NEW.next_attempt_at, now());
        INSERT INTO hooks.queue (delivery_id, webhook_id, tenant_id, status, attempt_number,
                                 next_attempt_at, lease_owner, lease_token, breaker_held_ms,
                                 status_code, response_body, error_message, updated_at)
        VALUES (NEW.delivery_id, NEW.webhook_id, NEW.tenant_id, NEW.status, NEW.attempt_number,
                NEW.next_attempt_at, NEW.lease_owner, NEW.lease_token, NEW.breaker_held_ms,
                NEW.status_code, NEW.response_body, NEW.error_message, NEW.updated_at);
    END IF;
    RETURN NEW;
END
$$;

-- An UPDATE of the view hooks.deliveries: the row ends up with exactly the values set, as in a
-- table; a status that crosses between live and final moves the delivery through the state
-- machine (hooks._finish, hooks._requeue) first. Its id, webhook, event and tenant are fixed.
CREATE FUNCTION hooks._deliveries_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_live constant text[] := ARRAY['pending', 'retrying', 'in_flight'];
BEGIN
    IF (NEW.delivery_id, NEW.webhook_id, NEW.event_id, NEW.tenant_id)
       IS DISTINCT FROM (OLD.delivery_id, OLD.webhook_id, OLD.event_id, OLD.tenant_id) THEN
        RAISE EXCEPTION 'the delivery_id, webhook_id, event_id and tenant_id of a delivery cannot change'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Replay the event to another webhook with hooks.replay_event.';
    END IF;
    IF (NEW.delivery_uuid, NEW.event_type, NEW.created_at) IS DISTINCT FROM (OLD.delivery_uuid, OLD.event_type, OLD.created_at) THEN
        UPDATE hooks.outbox o
           SET delivery_uuid = NEW.delivery_uuid, event_type = NEW.event_type, created_at = NEW.created_at
         WHERE o.delivery_id = OLD.delivery_id;
    END IF;
    IF OLD.status = ANY (v_live) AND NOT (NEW.status = ANY (v_live)) THEN
        PERFORM hooks._finish(ARRAY[OLD.delivery_id], NEW.status, NULL, NULL, NULL);
    ELSIF NOT (OLD.status = ANY (v_live)) AND NEW.status = ANY (v_live) THEN
        PERFORM hooks._requeue(ARRAY[OLD.delivery_id]);
    END IF;
    IF NEW.status = ANY (v_live) THEN
        UPDATE hooks.queue q
           SET status = NEW.status, attempt_number = NEW.attempt_number,
               next_attempt_at = NEW.next_attempt_at, lease_owner = NEW.lease_owner,
               lease_token = NEW.lease_token, breaker_held_ms = NEW.breaker_held_ms,
               status_code = NEW.status_code, response_body = NEW.response_body,
               error_message = NEW.error_message, updated_at = NEW.updated_at
         WHERE q.delivery_id = OLD.delivery_id;
    ELSE
        PERFORM hooks._log_final_attempts(ARRAY[OLD.delivery_id]);
        UPDATE hooks.outcomes f
           SET status = NEW.status, attempt_number = NEW.attempt_number,
               lease_token = NEW.lease_token, breaker_held_ms = NEW.breaker_held_ms,
               status_code = NEW.status_code, response_body = NEW.response_body,
               error_message = NEW.error_message, delivered_at = NEW.delivered_at,
               updated_at = NEW.updated_at, attempt_id = NULL, sender_id = NULL, duration_ms = NULL
         WHERE f.delivery_id = OLD.delivery_id;
    END IF;
    RETURN NEW;
END
$$;

-- A DELETE from the view hooks.deliveries deletes the delivery with its attempts.
CREATE FUNCTION hooks._deliveries_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM hooks.outbox o WHERE o.delivery_id = OLD.delivery_id;
    RETURN OLD;
END
$$;


-- The webhooks with hooks.max_in_flight_per_webhook (cap) requests in flight: live leases of
-- every sender at `at`; with `among`, only those of these webhooks (each counted up to cap).
-- Empty when there is no cap, or fewer leases than that in all. Runs under hooks.claim's (or
-- hooks.complete's) planner settings.
CREATE FUNCTION hooks._webhooks_at_cap(cap integer, at timestamptz, among bigint[] DEFAULT NULL)
RETURNS bigint[]
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_full bigint[] := '{}';
BEGIN
    IF cap > 0 AND EXISTS (SELECT 1 FROM hooks.queue x  -- at least cap in flight at all
                            WHERE x.status = 'in_flight' AND x.next_attempt_at > at
                           OFFSET cap - 1) THEN
        IF among IS NULL THEN
            SELECT coalesce(array_agg(b.webhook_id), '{}') INTO v_full
              FROM (SELECT x.webhook_id
                      FROM hooks.queue x
                     WHERE x.status = 'in_flight' AND x.next_attempt_at > at
                     GROUP BY x.webhook_id
                    HAVING count(*) >= cap) AS b;
        ELSE
            SELECT coalesce(array_agg(s.webhook_id), '{}') INTO v_full
              FROM (SELECT DISTINCT a.webhook_id FROM unnest(among) AS a(webhook_id)) AS s
             WHERE (SELECT count(*) FROM (SELECT 1 FROM hooks.queue x
                                           WHERE x.webhook_id = s.webhook_id AND x.status = 'in_flight'
                                             AND x.next_attempt_at > at
                                           LIMIT cap) AS f) >= cap;
        END IF;
    END IF;
    RETURN v_full;
END
$$;

-- What hooks.claim does with each due row it locked (`ids`, of webhooks `webhook_ids`; `mine`:
-- the webhooks whose claim lock it holds), one action each:
--   'exhaust'  its lease expired and that was the last attempt: it ends failed (`note` says why)
--   'park'     its webhook is disabled by a disabling that holds the queue: it waits, out of
--              the due range (`held_until` 'infinity'), until the webhook is enabled
--   'cancel'   its webhook is disabled otherwise: it ends cancelled
--   'wait'     the breaker holds it back (paused, or half-open with its one probe out) until
--              `held_until`; at most one maximum cool-down (max_cool ms) over a delivery's life
--   'over'     another sender is claiming its webhook, or the webhook is at the cap: left as it
--              is (unlocked at commit) for a later claim
--   'claim'    sent now
-- `expired`: its lease ran out (an attempt whose sender never reported).
CREATE FUNCTION hooks._claim_plan(ids bigint[], webhook_ids bigint[], mine bigint[], cap integer,
                                  threshold integer, max_cool bigint, at timestamptz)
RETURNS TABLE (delivery_id bigint, action text, held_until timestamptz, expired boolean, note text)
LANGUAGE sql STABLE AS $$
    WITH due AS (
        SELECT q.delivery_id, q.webhook_id, q.status, q.lease_owner, q.attempt_number,
               q.next_attempt_at, greatest(max_cool - q.breaker_held_ms, 0) AS hold_left_ms
          FROM hooks.queue q
         WHERE q.delivery_id = ANY (ids)
    ), busy AS MATERIALIZED (
        -- read after taking the claim locks, so it includes every other claim; counted once per
        -- webhook (not materialized, it was counted again for every row of the plan: 2.7 ms of
        -- a claim of 64 in COST, BENCHMARKS.md "Claims at the cap"; pg_regress plans)
        SELECT x.webhook_id, count(*) AS n
          FROM hooks.queue x
         WHERE cap > 0 AND x.webhook_id = ANY (mine)
           AND x.status = 'in_flight' AND x.next_attempt_at > at
         GROUP BY x.webhook_id
    ), plan AS (
        SELECT due.*, w.enabled, w.disabled_reason, hooks._max_attempts(w.retry_config) AS max_attempts,
               CASE WHEN NOT w.enabled THEN 'infinity'::timestamptz
                    ELSE least(greatest(w.paused_until, at + interval '1 second'),
                               at + due.hold_left_ms * interval '1 millisecond') END AS held_until,
               CASE
                   WHEN due.status = 'in_flight' AND due.attempt_number >= hooks._max_attempts(w.retry_config)
                       THEN 'exhaust'
                   WHEN NOT w.enabled AND w.disabled_holds_queue THEN 'park'
                   WHEN NOT w.enabled THEN 'cancel'
                   WHEN w.paused_until > at AND due.hold_left_ms > 0 THEN 'wait'
                   -- half-open: one probe, the delivery with the most attempts behind it
                   WHEN threshold > 0 AND w.consecutive_failures >= threshold AND due.hold_left_ms > 0
                        AND coalesce(busy.n, 0)
                            + row_number() OVER (PARTITION BY due.webhook_id
                                                 ORDER BY due.attempt_number DESC, due.next_attempt_at) > 1
                       THEN 'wait'
                   WHEN cap > 0 AND NOT (due.webhook_id = ANY (mine)) THEN 'over'
                   WHEN cap > 0
                        AND coalesce(busy.n, 0)
                            + row_number() OVER (PARTITION BY due.webhook_id ORDER BY due.next_attempt_at) > cap
                       THEN 'over'
                   ELSE 'claim'
               END AS action
          FROM due
          JOIN hooks.webhooks w ON w.webhook_id = due.webhook_id AND w.webhook_id = ANY (webhook_ids)
          LEFT JOIN busy ON busy.webhook_id = due.webhook_id
    )
    SELECT plan.delivery_id, plan.action, plan.held_until,
           plan.status = 'in_flight' AND plan.action <> 'over',
           CASE plan.action
               WHEN 'cancel' THEN 'webhook disabled' || coalesce(': ' || plan.disabled_reason, '')
               WHEN 'exhaust' THEN format('attempt %s of %s: the sender (%s) never reported a result before its lease expired',
                                          plan.attempt_number, plan.max_attempts, plan.lease_owner)
           END
      FROM plan
$$;

-- Disabling a webhook cancels its queued deliveries, unless the disabling holds them
-- (disabled_holds_queue: the system's disabling, or an admin's that asks for it): then they wait
-- for hooks.enable_webhook, until an admin's disable_webhook cancels them. What is in flight
-- finishes and is recorded.
CREATE OR REPLACE FUNCTION hooks._webhook_after_disable() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_ids bigint[];
BEGIN
    SELECT array_agg(q.delivery_id) INTO v_ids
      FROM hooks.queue q
     WHERE q.webhook_id = NEW.webhook_id AND q.status IN ('pending', 'retrying');
    IF v_ids IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM hooks._finish(v_ids, 'cancelled', NULL, NULL,
                          array_fill('webhook disabled' || coalesce(': ' || NEW.disabled_reason, ''),
                                     ARRAY[cardinality(v_ids)]));
    RETURN NULL;
END
$$;

-- The queue at a glance, for monitoring with nothing but SQL. Reads only hooks.queue (the live
-- deliveries), so it stays cheap whatever the size of the history.
CREATE OR REPLACE FUNCTION hooks.metrics()
RETURNS TABLE (pending bigint, retrying bigint, in_flight bigint, due_now bigint,
               oldest_due_age_seconds double precision, paused_webhooks bigint,
               disabled_webhooks bigint, awake_senders bigint)
LANGUAGE sql STABLE AS $$
    SELECT count(*) FILTER (WHERE d.status = 'pending'),
           count(*) FILTER (WHERE d.status = 'retrying'),
           count(*) FILTER (WHERE d.status = 'in_flight'),
           count(*) FILTER (WHERE d.status IN ('pending', 'retrying') AND d.next_attempt_at <= now()),
           coalesce(extract(epoch FROM now() - min(d.next_attempt_at)
                    FILTER (WHERE d.status IN ('pending', 'retrying') AND d.next_attempt_at <= now())), 0)::float8,
           (SELECT count(*) FROM hooks.webhooks w WHERE w.enabled AND w.paused_until > now()),
           (SELECT count(*) FROM hooks.webhooks w WHERE NOT w.enabled),
           (SELECT count(*) FROM hooks.senders s WHERE s.awake AND s.seen_at > now() - interval '1 minute')
      FROM hooks.queue d
$$;



-- Deletes finished deliveries (success, failed, cancelled) last changed more than `older_than`
-- ago, with their attempts, then events older than that with no delivery left. Works in
-- batches of `batch_size` rows taken with SKIP LOCKED, so it never waits on, or holds up,
-- publish and claim. With `commit_each_batch` (the default) it commits after every batch, so no
-- lock or snapshot is held for long; that needs CALL outside a transaction block (2D000
-- otherwise), like VACUUM. Returns the rows deleted in `deleted`. Also forgets rotated-out
-- secrets past their grace period and senders not seen for `older_than`, and cancels the
-- deliveries a disabled webhook holds (README, "Disabled webhooks") that were queued before then.
--   CALL hooks.purge('30 days');
CREATE OR REPLACE PROCEDURE hooks.purge(older_than interval DEFAULT '30 days', batch_size integer DEFAULT 5000,
                             commit_each_batch boolean DEFAULT true, INOUT deleted bigint DEFAULT 0)
LANGUAGE plpgsql AS $$
DECLARE
    v_cutoff   timestamptz;
    v_last     bigint;
    v_from     bigint := 0;
    v_taken    bigint;
    n          integer;
    v_held     bigint[];
    v_held_why text[];
    v_kw       bigint[];
    v_kk       text[];
    v_kd       bigint[];
BEGIN
    IF older_than IS NULL OR older_than < interval '0' THEN
        RAISE EXCEPTION 'older_than must be a non-negative interval' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF batch_size IS NULL OR batch_size < 1 OR batch_size > 1000000 THEN
        RAISE EXCEPTION 'batch_size must be between 1 and 1000000' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_cutoff := now() - older_than;
    deleted := 0;
    -- The finished deliveries are taken in key order, up to the newest key among those old
    -- enough (found once, through the BRIN time index; `+ 0` keeps the planner from reading the
    -- key index backwards through every newer row instead), each batch after the last key of
    -- the one before: a batch reads about its own rows. (By time, oldest first, each batch
    -- sorted every old row, since a BRIN index gives no order: 360 ms per batch of 5,000 in a
    -- million; BENCHMARKS.md, "The outcomes' time index".)
    SELECT max(f.delivery_id + 0) INTO v_last FROM hooks.outcomes f WHERE f.updated_at < v_cutoff;
    LOOP
        EXIT WHEN v_last IS NULL;
        WITH victims AS (
            SELECT f.delivery_id FROM hooks.outcomes f
             WHERE f.updated_at < v_cutoff AND f.delivery_id > v_from AND f.delivery_id <= v_last
             ORDER BY f.delivery_id
             LIMIT batch_size
               FOR UPDATE SKIP LOCKED
        ), gone AS (
            DELETE FROM hooks.outbox o USING victims v WHERE o.delivery_id = v.delivery_id
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM gone), count(*), max(v.delivery_id)
          INTO n, v_taken, v_from
          FROM victims v;
        deleted := deleted + n;
        EXIT WHEN v_taken < batch_size;
        IF commit_each_batch THEN
            COMMIT;
        END IF;
    END LOOP;
    LOOP
        WITH victims AS (
            SELECT e.event_id FROM hooks.events e
             WHERE e.created_at < v_cutoff
               AND NOT EXISTS (SELECT 1 FROM hooks.outbox o WHERE o.event_id = e.event_id)
             ORDER BY e.created_at
             LIMIT batch_size
               FOR UPDATE SKIP LOCKED
        )
        DELETE FROM hooks.events e USING victims v WHERE e.event_id = v.event_id;
        GET DIAGNOSTICS n = ROW_COUNT;
        deleted := deleted + n;
        EXIT WHEN n < batch_size;
        IF commit_each_batch THEN
            COMMIT;
        END IF;
    END LOOP;
    -- Rotated-out secrets past their grace period (hooks.complete also forgets them, for
    -- webhooks that deliver), and senders not seen since the cutoff (every restart of a sender
    -- without --sender-id adds one).
    UPDATE hooks.webhooks w
       SET previous_secret = NULL, previous_secret_expires_at = NULL
     WHERE w.previous_secret_expires_at <= now();
    UPDATE hooks.webhooks w
       SET previous_signing_key = NULL, previous_signing_key_expires_at = NULL
     WHERE w.previous_signing_key_expires_at <= now();
    DELETE FROM hooks.senders s WHERE s.seen_at < v_cutoff;
    SELECT array_agg(q.delivery_id),
           array_agg(format('webhook disabled (%s) and not enabled again before the retention window ended',
                            w.disabled_reason))
      INTO v_held, v_held_why
      FROM hooks.queue q
      JOIN hooks.webhooks w ON w.webhook_id = q.webhook_id
      JOIN hooks.outbox o ON o.delivery_id = q.delivery_id
     WHERE NOT w.enabled AND q.status <> 'in_flight' AND o.created_at < v_cutoff;
    IF v_held IS NOT NULL THEN
        PERFORM hooks._finish(v_held, 'cancelled', NULL, NULL, v_held_why);
    END IF;
    DELETE FROM hooks.watched_tables x WHERE NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = x.table_name);
    -- Ordering keys: a head that left the queue without its key being settled (an admin's
    -- DELETE from hooks.queue bypasses the state machine) is settled now, and keys idle since
    -- the cutoff are forgotten (a publisher holding one is skipped).
    SELECT array_agg(k.webhook_id), array_agg(k.order_key), array_agg(k.head)
      INTO v_kw, v_kk, v_kd
      FROM hooks.order_keys k
     WHERE k.head IS NOT NULL AND NOT EXISTS (SELECT 1 FROM hooks.queue q WHERE q.delivery_id = k.head);
    IF v_kw IS NOT NULL THEN
        PERFORM hooks._order_settle(v_kw, v_kk, v_kd);
    END IF;
    DELETE FROM hooks.order_keys k
     WHERE k.ctid = ANY (ARRAY(SELECT x.ctid FROM hooks.order_keys x
                                WHERE x.head IS NULL AND x.updated_at < v_cutoff
                                  FOR UPDATE SKIP LOCKED));
END
$$;


-- Deleting deliveries (hooks.outbox rows: their webhook or event deleted, hooks.purge, a
-- DELETE on hooks.deliveries) deletes their queue or outcome row and their attempts, once per
-- statement (schema.sql says why these are not foreign keys).
CREATE FUNCTION hooks._outbox_after_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_w bigint[];
    v_k text[];
    v_d bigint[];
BEGIN
    DELETE FROM hooks.queue q USING gone g WHERE q.delivery_id = g.delivery_id;
    DELETE FROM hooks.outcomes f USING gone g WHERE f.delivery_id = g.delivery_id;
    DELETE FROM hooks.attempt_log a USING gone g WHERE a.delivery_id = g.delivery_id;
    -- a deleted delivery that was its ordering key's head: the next of the key goes
    SELECT array_agg(g.webhook_id), array_agg(g.order_key), array_agg(g.delivery_id) INTO v_w, v_k, v_d
      FROM gone g
      JOIN hooks.order_keys ok ON ok.webhook_id = g.webhook_id AND ok.order_key = g.order_key AND ok.head = g.delivery_id;
    IF v_w IS NOT NULL THEN
        PERFORM hooks._order_settle(v_w, v_k, v_d);
    END IF;
    RETURN NULL;
END
$$;


-- An INSERT into the view hooks.attempts (a DBA's or an old script's) goes into the attempt log.
CREATE FUNCTION hooks._attempts_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO hooks.attempt_log (attempt_id, delivery_id, webhook_id, tenant_id, attempt_number,
                                   sender_id, outcome, status_code, error_message, duration_ms, created_at)
    VALUES (coalesce(NEW.attempt_id, nextval('hooks.attempt_log_attempt_id_seq')), NEW.delivery_id,
            NEW.webhook_id, NEW.tenant_id, NEW.attempt_number, NEW.sender_id, NEW.outcome,
            NEW.status_code, NEW.error_message, NEW.duration_ms, coalesce(NEW.created_at, now()))
    RETURNING attempt_id, created_at INTO NEW.attempt_id, NEW.created_at;
    RETURN NEW;
END
$$;

CREATE TRIGGER attempts_insert
    INSTEAD OF INSERT ON hooks.attempts
    FOR EACH ROW EXECUTE FUNCTION hooks._attempts_insert();

-- Per-webhook health over the last 24 hours of attempts, with the breaker's state. The
-- attempts are counted for all webhooks in one pass (most of them are final attempts kept in
-- hooks.outcomes, found by its index on the time they ended); a query for one webhook counts
-- only its attempts.
CREATE OR REPLACE VIEW hooks.webhook_health AS
SELECT w.webhook_id,
       w.tenant_id,
       w.webhook_name,
       w.url,
       CASE WHEN NOT w.enabled THEN 'disabled'
            WHEN w.paused_until > now() THEN 'paused'
            ELSE 'active' END AS state,
       w.disabled_reason,
       w.paused_until,
       w.consecutive_failures,
       w.failing_since,
       w.last_success_at,
       w.last_failure_at,
       coalesce(a.attempts, 0) AS attempts_24h,
       coalesce(a.successes, 0) AS successes_24h,
       round(a.successes::numeric / nullif(a.attempts, 0), 4) AS success_rate_24h,
       a.p50_ms,
       a.p95_ms
  FROM hooks.webhooks w
  LEFT JOIN (
      SELECT at.webhook_id,
             count(*) FILTER (WHERE at.outcome IN ('success', 'failure')) AS attempts,
             count(*) FILTER (WHERE at.outcome = 'success') AS successes,
             percentile_cont(0.5) WITHIN GROUP (ORDER BY at.duration_ms) AS p50_ms,
             percentile_cont(0.95) WITHIN GROUP (ORDER BY at.duration_ms) AS p95_ms
        FROM hooks.attempts at
       WHERE at.created_at > now() - interval '24 hours'
       GROUP BY at.webhook_id
  ) a ON a.webhook_id = w.webhook_id;
ALTER VIEW hooks.webhook_health SET (security_invoker = true);

CREATE TRIGGER outbox_after_delete
    AFTER DELETE ON hooks.outbox
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION hooks._outbox_after_delete();
CREATE TRIGGER deliveries_insert
    INSTEAD OF INSERT ON hooks.deliveries
    FOR EACH ROW EXECUTE FUNCTION hooks._deliveries_insert();
CREATE TRIGGER deliveries_update
    INSTEAD OF UPDATE ON hooks.deliveries
    FOR EACH ROW EXECUTE FUNCTION hooks._deliveries_update();
CREATE TRIGGER deliveries_delete
    INSTEAD OF DELETE ON hooks.deliveries
    FOR EACH ROW EXECUTE FUNCTION hooks._deliveries_delete();

-- Every delivery with its webhook and event: what was sent where, and how it went.
CREATE VIEW hooks.delivery_log AS
SELECT d.delivery_id,
       d.delivery_uuid,
       d.tenant_id,
       w.webhook_name,
       w.url,
       d.event_type,
       e.event_key,
       d.status,
       d.attempt_number AS attempts,
       d.status_code,
       d.error_message,
       d.created_at,
       d.updated_at,
       d.delivered_at,
       CASE WHEN d.status IN ('pending', 'retrying') THEN d.next_attempt_at END AS next_attempt_at,
       d.webhook_id,
       d.event_id
  FROM hooks.deliveries d
  JOIN hooks.webhooks w ON w.webhook_id = d.webhook_id
  JOIN hooks.events e ON e.event_id = d.event_id;

-- Final failures: the dead letters. Replay one with hooks.retry_delivery(delivery_id), or all of
-- a webhook's since a time with hooks.redeliver_failed(webhook_id, since).
CREATE VIEW hooks.dead_letters AS
SELECT l.delivery_id, l.delivery_uuid, l.tenant_id, l.webhook_name, l.url, l.event_type,
       l.event_key, l.attempts, l.status_code, l.error_message, l.created_at,
       l.updated_at AS failed_at, l.webhook_id, l.event_id
  FROM hooks.delivery_log l
 WHERE l.status = 'failed';

REVOKE EXECUTE ON FUNCTION hooks.retry_delivery(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hooks.retry_delivery(bigint) TO hooks_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON hooks.outbox, hooks.queue, hooks.outcomes TO hooks_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON hooks.deliveries TO hooks_admin;
GRANT SELECT ON hooks.delivery_log, hooks.dead_letters TO hooks_admin;
GRANT USAGE ON SEQUENCE hooks.outbox_delivery_id_seq TO hooks_admin;
ALTER VIEW hooks.delivery_log SET (security_invoker = true);
ALTER VIEW hooks.dead_letters SET (security_invoker = true);
ALTER TABLE hooks.outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE hooks.queue ENABLE ROW LEVEL SECURITY;
ALTER TABLE hooks.outcomes ENABLE ROW LEVEL SECURITY;
-- (their policies: "Tenants bound to roles", at the end)

-------------------------------------------------------------------------------------------------
-- Webhooks: payload filters (README, "Payload filters"), several event types per webhook
-- (README, "Several event types per webhook") and payload envelopes (README, "Payload
-- envelopes"). New columns filter, filter_path, event_types (NULL: none) and envelope ('beema':
-- the body as before), none rewriting the table, checked on write; hooks.webhook_patterns, the
-- index of the further patterns of event_types, kept by two triggers; hooks.match looking there
-- too, and the new hooks.match(event jsonb) applying the filters; hooks.create_webhook taking the
-- new columns (a new signature: dropped and created again, privileges set again below);
-- hooks.update_webhook changing them. hooks.publish, hooks.replay_event, hooks._enqueue and
-- hooks.claim (above) apply the filters and envelopes.
-------------------------------------------------------------------------------------------------

ALTER TABLE hooks.webhooks ADD COLUMN filter jsonb;
ALTER TABLE hooks.webhooks ADD COLUMN filter_path jsonpath;
ALTER TABLE hooks.webhooks ADD COLUMN event_types text[];
ALTER TABLE hooks.webhooks ADD COLUMN envelope text NOT NULL DEFAULT 'beema';
ALTER TABLE hooks.webhooks ADD COLUMN disabled_holds_queue boolean NOT NULL DEFAULT false;
ALTER TABLE hooks.webhooks ADD COLUMN signatures text[] NOT NULL DEFAULT ARRAY['v1'];
ALTER TABLE hooks.webhooks ADD COLUMN signing_key text;
ALTER TABLE hooks.webhooks ADD COLUMN previous_signing_key text;
ALTER TABLE hooks.webhooks ADD COLUMN previous_signing_key_expires_at timestamptz;
ALTER TABLE hooks.webhooks ADD COLUMN ordering_key text;
ALTER TABLE hooks.webhooks ADD COLUMN ordering_on_failure text NOT NULL DEFAULT 'skip';

-- A webhook's ordering (README, "Ordered delivery per key"), checked on write (22023):
-- `ordering_key` a dotted path of 1 to 10 names into the event (such as 'data.policyNumber'),
-- at most 200 characters; `ordering_on_failure` 'skip' or 'block'.
CREATE FUNCTION hooks._check_ordering(ordering_key text, ordering_on_failure text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF ordering_key IS NOT NULL
       AND (length(ordering_key) > 200 OR ordering_key !~ '^[^.\s]+(\.[^.\s]+){0,9}$') THEN
        RAISE EXCEPTION 'hooks.webhooks: invalid ordering_key: % (a dotted path into the event of 1 to 10 names, at most 200 characters)',
                        ordering_key
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'field: ordering_key',
                  HINT = 'For example data.policyNumber; NULL for no ordering.';
    END IF;
    IF ordering_on_failure IS NULL OR ordering_on_failure NOT IN ('skip', 'block') THEN
        RAISE EXCEPTION 'hooks.webhooks: invalid ordering_on_failure: % (skip or block)', ordering_on_failure
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'field: ordering_on_failure';
    END IF;
END
$$;


-- The ordering key of a delivery (README, "Ordered delivery per key"): the value at the dotted
-- `path` of its event body, as text (an object or array as its JSON text); NULL when the event
-- has none there (the delivery is then not ordered). A value longer than 200 bytes is keyed by
-- its md5, so a key always fits the index. One expression, so that it is inlined where it is
-- called (a subquery here would run the SQL-function executor for every publish).
CREATE FUNCTION hooks._order_key(body jsonb, path text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN octet_length($1 #>> string_to_array($2, '.')) > 200
                THEN 'md5:' || md5($1 #>> string_to_array($2, '.'))
                ELSE $1 #>> string_to_array($2, '.') END
$$;



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


-- Rust: validating event_types and envelope names, and rendering a body in an envelope
CREATE FUNCTION hooks."_check_patterns"(
	"event_types" TEXT[] /* Array < & str > */
) RETURNS bool /* bool */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'check_patterns_wrapper';
CREATE FUNCTION hooks."_check_envelope"(
	"envelope" TEXT /* &str */
) RETURNS bool /* bool */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'check_envelope_wrapper';
CREATE FUNCTION hooks."_render_envelope"(
	"envelope" TEXT, /* &str */
	"body" TEXT /* &str */
) RETURNS TEXT /* alloc::string::String */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'render_envelope_wrapper';

-- A webhook's payload filters, checked on write (22023): `filter` a JSON object of at most 8 kB
-- (an event contains it or not); `filter_path` a jsonpath predicate of at most 2 kB that gives
-- true or false (such as '$.data.amount > 1000'), which is tried on an empty object here so that
-- a path that selects a value instead ('$.data.amount') is refused now, not skipped at publish.
CREATE FUNCTION hooks._check_filter(filter jsonb, filter_path jsonpath) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF filter IS NOT NULL AND jsonb_typeof(filter) <> 'object' THEN
        RAISE EXCEPTION 'hooks.webhooks: invalid filter: filter must be a JSON object that events contain, got %',
                        jsonb_typeof(filter)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example {"data": {"status": "bound"}}; set it to NULL for no filter.';
    END IF;
    IF octet_length(filter::text) > 8192 THEN
        RAISE EXCEPTION 'hooks.webhooks: invalid filter: filter is % bytes; at most 8192', octet_length(filter::text)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF octet_length(filter_path::text) > 2048 THEN
        RAISE EXCEPTION 'hooks.webhooks: invalid filter_path: filter_path is % bytes; at most 2048',
                        octet_length(filter_path::text)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF filter_path IS NOT NULL THEN
        BEGIN
            PERFORM jsonb_path_match('{}', filter_path);
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'hooks.webhooks: invalid filter_path: % is not a predicate (%)', filter_path, SQLERRM
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A predicate gives true or false, such as $.data.amount > 1000 or $.data.flag == true.';
        END;
    END IF;
END
$$;


CREATE OR REPLACE FUNCTION hooks._webhook_before_write() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.secret IS NULL OR NEW.secret = '' THEN
        NEW.secret := hooks.generate_secret();
    END IF;
    -- STRICT: NULL columns skip the check and hit the NOT NULL constraints (23502) instead.
    PERFORM hooks._check_webhook(NEW.tenant_id, NEW.webhook_name, NEW.event_type, NEW.url,
                                 NEW.headers::text, NEW.retry_config::text, NEW.timeout_ms,
                                 NEW.secret);
    PERFORM hooks._check_filter(NEW.filter, NEW.filter_path);
    NEW.event_types := nullif(NEW.event_types, '{}');
    PERFORM hooks._check_patterns(NEW.event_types);
    PERFORM hooks._check_envelope(NEW.envelope);
    PERFORM hooks._check_ordering(NEW.ordering_key, NEW.ordering_on_failure);
    IF NEW.signatures IS NULL OR cardinality(NEW.signatures) = 0
       OR NOT NEW.signatures <@ ARRAY['v1', 'v1a'] OR array_position(NEW.signatures, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'hooks.webhooks: invalid signatures: % (list v1, v1a or both)', NEW.signatures
            USING ERRCODE = 'invalid_parameter_value', DETAIL = 'field: signatures';
    END IF;
    IF 'v1a' = ANY (NEW.signatures) THEN
        -- (the portable flavor has no ed25519: 0A000)
        NEW.signing_key := coalesce(NEW.signing_key, hooks.generate_signing_key());
        PERFORM hooks.public_key(NEW.signing_key);  -- 22023 unless a whsk_ key
    END IF;
    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := now();
    END IF;
    IF NEW.enabled THEN
        NEW.disabled_reason := NULL;
        NEW.disabled_holds_queue := false;
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER webhooks_before_write ON hooks.webhooks;
CREATE TRIGGER webhooks_before_write
    BEFORE INSERT OR UPDATE OF tenant_id, webhook_name, event_type, url, secret, enabled, headers,
                               retry_config, timeout_ms, filter, filter_path, event_types, envelope,
                               signatures, signing_key, ordering_key, ordering_on_failure
                            ON hooks.webhooks
    FOR EACH ROW EXECUTE FUNCTION hooks._webhook_before_write();

-- Keeps hooks.webhook_patterns in step with a webhook's event_types (and tenant): its rows are
-- written again when either changes. Runs as the extension's owner (security.sql): the table
-- is an index, which no role writes directly.
CREATE FUNCTION hooks._webhook_patterns_sync() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        DELETE FROM hooks.webhook_patterns p WHERE p.webhook_id = OLD.webhook_id;
    END IF;
    INSERT INTO hooks.webhook_patterns (webhook_id, tenant_id, pattern)
    SELECT DISTINCT NEW.webhook_id, NEW.tenant_id, t FROM unnest(NEW.event_types) AS t;
    RETURN NULL;
END
$$;

CREATE TRIGGER webhooks_patterns_insert
    AFTER INSERT ON hooks.webhooks
    FOR EACH ROW WHEN (NEW.event_types IS NOT NULL)
    EXECUTE FUNCTION hooks._webhook_patterns_sync();
CREATE TRIGGER webhooks_patterns_update
    AFTER UPDATE OF event_types, tenant_id ON hooks.webhooks
    FOR EACH ROW WHEN (NEW.event_types IS DISTINCT FROM OLD.event_types OR NEW.tenant_id <> OLD.tenant_id)
    EXECUTE FUNCTION hooks._webhook_patterns_sync();

-- The enabled webhooks of a tenant whose pattern (event_type, or one of its event_types)
-- selects an event type, each once. hooks.publish uses this very function (the planner inlines
-- it). Exact patterns are found through an index; wildcard patterns through their literal
-- prefix (hooks._prefixes(), in Rust), then tested with hooks.pattern_matches(), so a tenant's
-- unrelated patterns are never read. Further patterns (hooks.webhook_patterns) the same way; a
-- webhook they select is left out when its event_type selected it already.
CREATE OR REPLACE FUNCTION hooks.match(event_type text, tenant_id text) RETURNS SETOF hooks.webhooks
LANGUAGE sql STABLE AS $$
    SELECT w.* FROM hooks.webhooks w
     WHERE w.tenant_id = $2 AND w.enabled AND NOT w.is_pattern AND w.event_type = $1
    UNION ALL
    SELECT w.* FROM hooks.webhooks w
     WHERE w.tenant_id = $2 AND w.enabled AND w.is_pattern
       AND w.pattern_prefix = ANY (hooks._prefixes($1))
       AND hooks.pattern_matches(w.event_type, $1)
    UNION ALL
    SELECT w.* FROM hooks.webhooks w
     WHERE w.webhook_id IN (SELECT p.webhook_id FROM hooks.webhook_patterns p
                             WHERE p.tenant_id = $2 AND NOT p.is_pattern AND p.pattern = $1
                            UNION ALL
                            SELECT p.webhook_id FROM hooks.webhook_patterns p
                             WHERE p.tenant_id = $2 AND p.is_pattern
                               AND p.pattern_prefix = ANY (hooks._prefixes($1))
                               AND hooks.pattern_matches(p.pattern, $1))
       AND w.tenant_id = $2 AND w.enabled
       AND NOT hooks.pattern_matches(w.event_type, $1)
$$;

-- Whether an event passes a webhook's payload filters: its body (as receivers get it) contains
-- `filter` and `filter_path` holds for it. A predicate that cannot be evaluated on this event (a type mismatch, a missing
-- field in strict mode) counts as false: a filter never aborts the publishing transaction.
-- Inlined into hooks.publish; a webhook without filters costs two NULL tests.
CREATE FUNCTION hooks._passes_filter(filter jsonb, filter_path jsonpath, event jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT ($1 IS NULL OR $3 @> $1)
       AND ($2 IS NULL OR coalesce(jsonb_path_match($3, $2, '{}', true), false))
$$;

-- The webhooks hooks.publish would deliver an event to: matched by type and tenant as
-- hooks.match(event_type, tenant_id) does, and passing their payload filters. An invalid event
-- raises what hooks.publish raises for it.
CREATE FUNCTION hooks.match(event jsonb) RETURNS SETOF hooks.webhooks
LANGUAGE sql STABLE AS $$
    SELECT m.*
      FROM hooks._prepare_event(hooks._check_payload($1::text), to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')) AS p
     -- (the body checked and parsed once, not once per matched webhook)
     CROSS JOIN LATERAL (SELECT hooks._check_payload(p.body, 'body')::jsonb AS body OFFSET 0) AS b
     CROSS JOIN LATERAL hooks.match(p.event_type, p.tenant_id) AS m
     WHERE hooks._passes_filter(m.filter, m.filter_path, b.body)
$$;

DROP FUNCTION hooks.create_webhook(text, text, text, text, text, jsonb, jsonb, integer, text);
-- Registers a webhook and returns it (with its secret: generated as whsec_... when NULL).
-- `ordering_key`: deliver events with the same value at this path one at a time, in commit
-- order (README, "Ordered delivery per key").
CREATE FUNCTION hooks.create_webhook(
    tenant_id text, webhook_name text, event_type text, url text,
    secret text DEFAULT NULL,
    headers jsonb DEFAULT '{}',
    retry_config jsonb DEFAULT '{"maxAttempts":3,"backoffMs":1000}',
    timeout_ms integer DEFAULT 10000,
    created_by text DEFAULT current_user,
    filter jsonb DEFAULT NULL,
    filter_path jsonpath DEFAULT NULL,
    event_types text[] DEFAULT NULL,
    envelope text DEFAULT 'beema',
    ordering_key text DEFAULT NULL,
    ordering_on_failure text DEFAULT 'skip')
RETURNS hooks.webhooks
LANGUAGE sql AS $$
    INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, secret, headers,
                                retry_config, timeout_ms, created_by, filter, filter_path, event_types,
                                envelope, ordering_key, ordering_on_failure)
    VALUES ($1, $2, $3, $4, $5, coalesce($6, '{}'), coalesce($7, '{"maxAttempts":3,"backoffMs":1000}'),
            coalesce($8, 10000), $9, $10, $11, $12, coalesce($13, 'beema'), $14, coalesce($15, 'skip'))
    RETURNING *
$$;

-- Changes the keys given in `changes` (webhook_name, event_type, url, headers, retry_config,
-- timeout_ms, enabled, filter, filter_path, event_types, envelope, signatures, ordering_key,
-- ordering_on_failure; a JSON null filter, filter_path, event_types or ordering_key removes it);
-- other keys raise 22023. A new ordering_key applies to deliveries queued from then on.
CREATE OR REPLACE FUNCTION hooks.update_webhook(webhook_id bigint, changes jsonb) RETURNS hooks.webhooks
LANGUAGE plpgsql AS $$
DECLARE
    w   hooks.webhooks := hooks._webhook(webhook_id);
    bad text;
BEGIN
    IF changes IS NULL OR jsonb_typeof(changes) <> 'object' THEN
        RAISE EXCEPTION 'changes must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT k INTO bad FROM jsonb_object_keys(changes) k
     WHERE k NOT IN ('webhook_name', 'event_type', 'url', 'headers', 'retry_config', 'timeout_ms', 'enabled',
                     'filter', 'filter_path', 'event_types', 'envelope', 'signatures', 'ordering_key',
                     'ordering_on_failure')
     LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'update_webhook cannot change %', bad
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Changeable: webhook_name, event_type, url, headers, retry_config, timeout_ms, enabled, filter, filter_path, event_types, envelope, signatures, ordering_key, ordering_on_failure; use hooks.rotate_secret for the secret.';
    END IF;
    IF jsonb_typeof(changes->'signatures') <> 'array' THEN
        RAISE EXCEPTION 'update_webhook: signatures must be a JSON array: ["v1"], ["v1a"] or ["v1", "v1a"]'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF jsonb_typeof(changes->'event_types') NOT IN ('array', 'null') THEN
        RAISE EXCEPTION 'update_webhook: event_types must be a JSON array of patterns, or null for none'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE hooks.webhooks x
       SET webhook_name = coalesce(changes->>'webhook_name', x.webhook_name),
           event_type   = coalesce(changes->>'event_type', x.event_type),
           url          = coalesce(changes->>'url', x.url),
           headers      = coalesce(changes->'headers', x.headers),
           retry_config = coalesce(changes->'retry_config', x.retry_config),
           timeout_ms   = coalesce((changes->>'timeout_ms')::integer, x.timeout_ms),
           enabled      = coalesce((changes->>'enabled')::boolean, x.enabled),
           envelope     = coalesce(changes->>'envelope', x.envelope),
           signatures   = CASE WHEN changes ? 'signatures'
                               THEN ARRAY(SELECT jsonb_array_elements_text(changes->'signatures'))
                               ELSE x.signatures END,
           ordering_key = CASE WHEN changes ? 'ordering_key' THEN changes->>'ordering_key' ELSE x.ordering_key END,
           ordering_on_failure = coalesce(changes->>'ordering_on_failure', x.ordering_on_failure),
           filter       = CASE WHEN changes ? 'filter' THEN nullif(changes->'filter', 'null') ELSE x.filter END,
           filter_path  = CASE WHEN changes ? 'filter_path' THEN (changes->>'filter_path')::jsonpath
                               ELSE x.filter_path END,
           event_types  = CASE WHEN NOT changes ? 'event_types' THEN x.event_types
                               WHEN jsonb_typeof(changes->'event_types') = 'null' THEN NULL
                               WHEN jsonb_typeof(changes->'event_types') = 'array'
                                   THEN ARRAY(SELECT jsonb_array_elements_text(changes->'event_types'))
                               ELSE x.event_types END
     WHERE x.webhook_id = w.webhook_id
    RETURNING * INTO w;
    RETURN w;
END
$$;

REVOKE EXECUTE ON FUNCTION hooks.create_webhook(text, text, text, text, text, jsonb, jsonb, integer, text, jsonb, jsonpath, text[], text, text, text)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hooks.create_webhook(text, text, text, text, text, jsonb, jsonb, integer, text, jsonb, jsonpath, text[], text, text, text)
    TO hooks_admin;
GRANT SELECT ON hooks.webhook_patterns TO hooks_admin;
ALTER FUNCTION hooks._webhook_patterns_sync() SECURITY DEFINER SET search_path = pg_catalog, hooks;
ALTER TABLE hooks.webhook_patterns ENABLE ROW LEVEL SECURITY;
-- (its policy: "Tenants bound to roles", at the end)

-------------------------------------------------------------------------------------------------
-- Webhooks on table changes (README, "Webhooks on table changes"): hooks.watched_tables,
-- hooks.watch_table / unwatch_table and their triggers, the view hooks.watched.
-------------------------------------------------------------------------------------------------

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
SELECT pg_catalog.pg_extension_config_dump('hooks.watched_tables', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.watched_tables_watch_id_seq', '');
GRANT USAGE ON SEQUENCE hooks.watched_tables_watch_id_seq TO hooks_admin;

-- Publishes many events in one go, as hooks.publish would each (same validation, errors and
-- tenant check, for role `publisher`; fresh event ids, so no event is a repeat): the events rows,
-- the matching of each distinct (tenant, event type) once, and the deliveries, each in one
-- statement. For the statement triggers of watched tables (10,000 rows of one INSERT are one
-- call). Returns the number of deliveries queued.
CREATE FUNCTION hooks._publish_many(events jsonb[], publisher name) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_now     text := to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"');
    v_tenant  text[];
    v_type    text[];
    v_key     text[];
    v_body    text[];
    n         integer;
BEGIN
    SELECT array_agg(p.tenant_id ORDER BY u.ord), array_agg(p.event_type ORDER BY u.ord),
           array_agg(p.event_key ORDER BY u.ord), array_agg(p.body ORDER BY u.ord)
      INTO v_tenant, v_type, v_key, v_body
      FROM unnest(events) WITH ORDINALITY AS u(ev, ord)
     CROSS JOIN LATERAL hooks._prepare_event(hooks._check_payload(u.ev::text), v_now) AS p
     WHERE hooks._check_payload(p.body, 'body') IS NOT NULL;
    IF v_tenant IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM hooks._check_publisher(publisher, ARRAY(SELECT DISTINCT t FROM unnest(v_tenant) AS t));
    WITH e AS (
        INSERT INTO hooks.events (tenant_id, event_type, event_key, body)
        SELECT * FROM unnest(v_tenant, v_type, v_key, v_body)
        RETURNING event_id, tenant_id, event_type, body
    ), m AS (
        SELECT k.tenant_id, k.event_type, w.webhook_id, nullif(w.envelope, 'beema') AS envelope,
               w.filter, w.filter_path, w.ordering_key
          FROM (SELECT DISTINCT t.tenant_id, t.event_type FROM unnest(v_tenant, v_type) AS t(tenant_id, event_type)) AS k
         CROSS JOIN LATERAL hooks.match(k.event_type, k.tenant_id) AS w
    ), d AS (
        SELECT e.event_id, e.tenant_id, e.event_type, m.webhook_id, m.envelope,
               CASE WHEN m.ordering_key IS NOT NULL THEN hooks._order_key(e.body::jsonb, m.ordering_key) END AS order_key
          FROM e JOIN m ON m.tenant_id = e.tenant_id AND m.event_type = e.event_type
         WHERE (m.filter IS NULL AND m.filter_path IS NULL)
            OR hooks._passes_filter(m.filter, m.filter_path, e.body::jsonb)
         ORDER BY e.event_id, m.webhook_id
    )
    SELECT hooks._enqueue(coalesce(array_agg(d.event_id), '{}'), array_agg(d.tenant_id), array_agg(d.event_type),
                          coalesce(array_agg(d.webhook_id), '{}'), coalesce(array_agg(d.envelope), '{}'),
                          array_agg(d.order_key))
      INTO n
      FROM d;
    RETURN n;
END
$$;

-- A changed row's columns as a watch puts them in an event: only `columns` (all when NULL),
-- then without `exclude_columns`. NULL stays NULL.
CREATE FUNCTION hooks._watch_columns(row_data jsonb, columns text[], exclude_columns text[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN $1 IS NULL THEN NULL
                WHEN $2 IS NULL THEN $1 - coalesce($3, '{}')
                ELSE (SELECT coalesce(jsonb_object_agg(e.key, e.value), '{}')
                        FROM jsonb_each($1) AS e WHERE e.key = ANY ($2)) - coalesce($3, '{}')
           END
$$;

-- The event a change publishes: {"event": <the watch's event_type, {schema}, {table} and {op}
-- replaced>, "data": {"tenantId", "type": INSERT|UPDATE|DELETE, "table", "schema", "record",
-- "old_record"}} (record NULL for a delete, old_record NULL for an insert): the fields the
-- supabase payload envelope takes.
CREATE FUNCTION hooks._watch_event(w hooks.watched_tables, schema_name text, table_name text, op text,
                                   new_row jsonb, old_row jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'event', replace(replace(replace(w.event_type, '{table}', table_name), '{schema}', schema_name), '{op}', op),
        'data', jsonb_build_object(
            'tenantId', coalesce(w.tenant_id, coalesce(new_row, old_row) ->> w.tenant_column),
            'type', upper(op), 'table', table_name, 'schema', schema_name,
            'record', hooks._watch_columns(new_row, w.columns, w.exclude_columns),
            'old_record', hooks._watch_columns(old_row, w.columns, w.exclude_columns)))
$$;

-- The watch a trigger belongs to, while the role that created it may still publish (42501
-- otherwise: a change is never dropped without a word). Its tenants are checked as it publishes.
CREATE FUNCTION hooks._watch(watch_id bigint) RETURNS hooks.watched_tables
LANGUAGE plpgsql STABLE AS $$
DECLARE
    w hooks.watched_tables;
BEGIN
    SELECT * INTO w FROM hooks.watched_tables x WHERE x.watch_id = _watch.watch_id;
    IF FOUND AND NOT coalesce((SELECT has_function_privilege(ro.oid, 'hooks.publish(jsonb)', 'EXECUTE')
                                 FROM pg_roles ro WHERE ro.rolname = w.watched_by), false) THEN
        RAISE EXCEPTION 'hooks: % is watched by %, who may no longer publish', w.table_name, w.watched_by
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Grant hooks_publisher to that role again, or hooks.unwatch_table the table.';
    END IF;
    RETURN w;
END
$$;

-- Statement-level trigger of a watched table's inserts and deletes: one event per row of the
-- statement's transition table that meets the watch's condition, all published in the same
-- transaction by one hooks._publish_many (set-based: no publish call per row).
CREATE FUNCTION hooks._watch_statement() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    w  hooks.watched_tables := hooks._watch(TG_ARGV[0]::bigint);
    op text := lower(TG_OP);
BEGIN
    -- (a trigger some role made by hand, naming another table's watch, publishes nothing)
    IF w.watch_id IS NULL OR w.table_name <> TG_RELID THEN
        RETURN NULL;
    END IF;
    EXECUTE format(
        -- the missing side (old of an insert, new of a delete) is a row of NULLs of the same
        -- columns, taken from the transition table itself: the owner running this needs no
        -- rights on the watched table's schema (on managed Postgres it is not a superuser)
        'SELECT hooks._publish_many(array_agg(hooks._watch_event($1, $2, $3, $4, %1$s, %2$s)), $1.watched_by)
           FROM %3$s AS %4$s LEFT JOIN (SELECT * FROM %3$s LIMIT 0) AS %5$s ON true
          WHERE %6$s',
        CASE WHEN op = 'insert' THEN 'to_jsonb(new)' ELSE 'NULL::jsonb' END,
        CASE WHEN op = 'delete' THEN 'to_jsonb(old)' ELSE 'NULL::jsonb' END,
        CASE WHEN op = 'insert' THEN 'hooks_new_rows' ELSE 'hooks_old_rows' END,
        CASE WHEN op = 'insert' THEN 'new' ELSE 'old' END,
        CASE WHEN op = 'insert' THEN 'old' ELSE 'new' END,
        coalesce(w.condition, 'true'))
    USING w, TG_TABLE_SCHEMA::text, TG_TABLE_NAME::text, op;
    RETURN NULL;
END
$$;

-- Row-level trigger of a watched table's updates (its WHEN is the watch's condition): the old
-- and the new row of each update, paired as only a row trigger sees them.
CREATE FUNCTION hooks._watch_row() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    w hooks.watched_tables := hooks._watch(TG_ARGV[0]::bigint);
BEGIN
    IF w.watch_id IS NOT NULL AND w.table_name = TG_RELID THEN
        PERFORM hooks._publish(hooks._watch_event(w, TG_TABLE_SCHEMA, TG_TABLE_NAME, 'update',
                                                  to_jsonb(NEW), to_jsonb(OLD)), w.watched_by);
    END IF;
    RETURN NULL;
END
$$;

-- The triggers of a watch on its table (hooks.watch_table; a move between flavors attaches the
-- watches it copies again).
CREATE FUNCTION hooks._watch_attach(w hooks.watched_tables) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF 'insert' = ANY (w.operations) THEN
        EXECUTE format('CREATE TRIGGER hooks_watch_insert AFTER INSERT ON %s REFERENCING NEW TABLE AS hooks_new_rows
                        FOR EACH STATEMENT EXECUTE FUNCTION hooks._watch_statement(%s)', w.table_name, w.watch_id);
    END IF;
    IF 'update' = ANY (w.operations) THEN
        EXECUTE format('CREATE TRIGGER hooks_watch_update AFTER UPDATE ON %s FOR EACH ROW %s
                        EXECUTE FUNCTION hooks._watch_row(%s)',
                       w.table_name, CASE WHEN w.condition IS NULL THEN '' ELSE format('WHEN (%s)', w.condition) END,
                       w.watch_id);
    END IF;
    IF 'delete' = ANY (w.operations) THEN
        EXECUTE format('CREATE TRIGGER hooks_watch_delete AFTER DELETE ON %s REFERENCING OLD TABLE AS hooks_old_rows
                        FOR EACH STATEMENT EXECUTE FUNCTION hooks._watch_statement(%s)', w.table_name, w.watch_id);
    END IF;
END
$$;

-- Watches a table: each committed insert, update and delete of a row (of `operations`) publishes
-- an event through hooks.publish, in the same transaction, with the rights of the role calling
-- this (which must be allowed to publish: 42501) and the tenant of `tenant_column` of the row
-- or the fixed `tenant_id` (one of the two). `event_type` is a template ({schema}, {table},
-- {op}); `columns` / `exclude_columns` choose the row's columns in the event; `condition` is
-- an SQL boolean expression on OLD and NEW (as in a trigger's WHEN; a missing row's columns
-- are NULL), such as 'OLD.status IS DISTINCT FROM NEW.status'. Needs the TRIGGER privilege on
-- the table (its owner has it). Inserts and deletes are published by statement triggers over
-- the statement's transition table, updates by a row trigger. Errors: 22023 (an unknown
-- column or operation, both or neither tenant given), 42501, 42P07 (watched already).
CREATE FUNCTION hooks.watch_table(table_name regclass, tenant_column text DEFAULT NULL,
                                  tenant_id text DEFAULT NULL,
                                  event_type text DEFAULT '{table}/{op}',
                                  operations text[] DEFAULT ARRAY['insert', 'update', 'delete'],
                                  columns text[] DEFAULT NULL, exclude_columns text[] DEFAULT NULL,
                                  condition text DEFAULT NULL)
RETURNS hooks.watched_tables
LANGUAGE plpgsql AS $$
DECLARE
    w      hooks.watched_tables;
    v_cols text[];
    v_bad  text;
    v_rel  text := table_name::text;
BEGIN
    IF NOT has_function_privilege('hooks.publish(jsonb)', 'EXECUTE') THEN
        RAISE EXCEPTION 'hooks.watch_table: % may not publish', current_user
            USING ERRCODE = 'insufficient_privilege', HINT = 'Grant it hooks_publisher.';
    END IF;
    IF (tenant_column IS NULL) = (tenant_id IS NULL) THEN
        RAISE EXCEPTION 'hooks.watch_table: give tenant_column or tenant_id, not both and not neither'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF tenant_id IS NOT NULL THEN
        -- (a tenant taken from a column is checked as each change publishes)
        PERFORM hooks._check_publisher(current_user, ARRAY[tenant_id]);
    END IF;
    SELECT array_agg(a.attname::text) INTO v_cols
      FROM pg_attribute a WHERE a.attrelid = table_name AND a.attnum > 0 AND NOT a.attisdropped;
    SELECT c INTO v_bad FROM unnest(array_remove(ARRAY[tenant_column], NULL) || coalesce(columns, '{}')
                                    || coalesce(exclude_columns, '{}')) AS c
     WHERE NOT c = ANY (v_cols) LIMIT 1;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'hooks.watch_table: % has no column %', v_rel, v_bad USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF operations IS NULL OR cardinality(operations) = 0 OR NOT operations <@ ARRAY['insert', 'update', 'delete'] THEN
        RAISE EXCEPTION 'hooks.watch_table: operations must list insert, update or delete, got %', operations
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF event_type IS NULL OR strpos(event_type, '*') > 0 THEN
        RAISE EXCEPTION 'hooks.watch_table: event_type % is not an event type (no wildcards)', event_type
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM hooks._check_webhook('t', 'n', replace(replace(replace(event_type, '{table}', 'x'), '{schema}', 'x'), '{op}', 'x'),
                                 'https://example.com/', '{}', '{}', 1000, 'secret-check');
    -- watches of tables dropped since
    DELETE FROM hooks.watched_tables x WHERE NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = x.table_name);
    IF EXISTS (SELECT 1 FROM hooks.watched_tables x WHERE x.table_name = watch_table.table_name) THEN
        RAISE EXCEPTION 'hooks.watch_table: % is watched already', v_rel
            USING ERRCODE = 'duplicate_object', HINT = 'hooks.unwatch_table it first.';
    END IF;
    -- the condition compiles against the table (an error names what is wrong with it)
    IF condition IS NOT NULL THEN
        EXECUTE format('SELECT 1 FROM %s AS new, %s AS old WHERE (%s) LIMIT 0', v_rel, v_rel, condition);
    END IF;
    INSERT INTO hooks.watched_tables (table_name, tenant_column, tenant_id, event_type, operations,
                                      columns, exclude_columns, condition)
    VALUES (watch_table.table_name, tenant_column, tenant_id, event_type, operations,
            columns, exclude_columns, condition)
    RETURNING * INTO w;
    PERFORM hooks._watch_attach(w);
    RETURN w;
END
$$;

-- Stops watching a table: drops its triggers and its hooks.watched_tables row. Returns whether
-- it was watched. (Dropping a watched table drops its triggers; its watch row is removed by
-- the next hooks.watch_table or hooks.purge.)
CREATE FUNCTION hooks.unwatch_table(table_name regclass) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    t name;
BEGIN
    FOR t IN SELECT g.tgname FROM pg_trigger g
              WHERE g.tgrelid = table_name
                AND g.tgname IN ('hooks_watch_insert', 'hooks_watch_update', 'hooks_watch_delete') LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', t, table_name);
    END LOOP;
    DELETE FROM hooks.watched_tables x WHERE x.table_name = unwatch_table.table_name;
    RETURN FOUND;
END
$$;

-- Forces watched_by to the role inserting the watch: a watch publishes with its creator's
-- rights, never another role's.
CREATE FUNCTION hooks._watched_tables_before_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.watched_by := current_user;
    RETURN NEW;
END
$$;

CREATE TRIGGER watched_tables_before_insert
    BEFORE INSERT ON hooks.watched_tables
    FOR EACH ROW EXECUTE FUNCTION hooks._watched_tables_before_insert();

-- The watched tables, for DBAs: what each publishes and for whom.
CREATE VIEW hooks.watched AS
SELECT w.table_name, w.operations, w.event_type, coalesce(w.tenant_id, '(column ' || w.tenant_column || ')') AS tenant,
       w.columns, w.exclude_columns, w.condition, w.watched_by, w.created_at
  FROM hooks.watched_tables w;

-- watching tables: publishers and admins; each sees and removes only its own watches (admins
-- all), and the trigger functions run as the extension's owner (they read the watches, publish)
GRANT SELECT, INSERT, DELETE ON hooks.watched_tables TO hooks_publisher, hooks_admin;
GRANT USAGE ON SEQUENCE hooks.watched_tables_watch_id_seq TO hooks_publisher;
GRANT SELECT ON hooks.watched TO hooks_publisher, hooks_admin;
ALTER VIEW hooks.watched SET (security_invoker = true);
ALTER TABLE hooks.watched_tables ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_watches ON hooks.watched_tables
    USING (watched_by = current_user OR pg_has_role(current_user, 'hooks_admin', 'MEMBER'))
    WITH CHECK (watched_by = current_user);
ALTER FUNCTION hooks._watch_statement() SECURITY DEFINER SET search_path = pg_catalog, hooks;
ALTER FUNCTION hooks._watch_row() SECURITY DEFINER SET search_path = pg_catalog, hooks;
-- the wake-up check at commit runs as the owner too: a role that only writes a watched table
-- commits events without any privilege on schema hooks
ALTER FUNCTION hooks._wake_sender() SECURITY DEFINER SET search_path = pg_catalog, hooks;
REVOKE EXECUTE ON FUNCTION hooks.watch_table(regclass, text, text, text, text[], text[], text[], text),
    hooks.unwatch_table(regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hooks.watch_table(regclass, text, text, text, text[], text[], text[], text),
    hooks.unwatch_table(regclass) TO hooks_publisher, hooks_admin;
-- (end of: webhooks on table changes)

-------------------------------------------------------------------------------------------------
-- Security fixes
-------------------------------------------------------------------------------------------------

-- The session's tenant setting, or NULL when none is set (as in 0.2.0; which tenants a role
-- acts for is hooks._tenant_scope). Inlined where it is used, so it takes the caller's
-- search_path: pg_catalog is named, or a current_setting() of the caller's schemas, searched
-- before pg_catalog, would answer instead (pg_regress security).
CREATE OR REPLACE FUNCTION hooks.current_tenant() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT nullif(pg_catalog.current_setting('hooks.tenant_id', true), '')
$$;

-------------------------------------------------------------------------------------------------
-- Alerting from SQL
-------------------------------------------------------------------------------------------------

-- The backlog per webhook, for alerting from SQL (README, "Views and metrics for DBAs"): each
-- webhook with live deliveries, how many are due and not sent, how long the oldest has waited
-- past its due time, how many are in flight or waiting for a retry, and its breaker state.
-- Reads only hooks.queue (live rows) and the webhooks. An alert query:
--   SELECT * FROM hooks.webhook_backlog WHERE overdue_for > interval '5 minutes';
CREATE VIEW hooks.webhook_backlog AS
SELECT w.webhook_id,
       w.tenant_id,
       w.webhook_name,
       count(*) FILTER (WHERE q.status <> 'in_flight' AND q.next_attempt_at <= now()) AS due,
       max(now() - q.next_attempt_at) FILTER (WHERE q.status <> 'in_flight' AND q.next_attempt_at <= now())
           AS overdue_for,
       count(*) FILTER (WHERE q.status = 'in_flight') AS in_flight,
       count(*) FILTER (WHERE q.status = 'retrying') AS retrying,
       count(*) AS live,
       CASE WHEN NOT w.enabled THEN 'disabled'
            WHEN w.paused_until > now() THEN 'paused'
            ELSE 'active' END AS state
  FROM hooks.queue q
  JOIN hooks.webhooks w ON w.webhook_id = q.webhook_id
 GROUP BY w.webhook_id;
GRANT SELECT ON hooks.webhook_backlog TO hooks_admin;
ALTER VIEW hooks.webhook_backlog SET (security_invoker = true);

-------------------------------------------------------------------------------------------------
-- Tenants bound to roles (README, "Security"): hooks.tenant_grants says which tenants a role acts
-- for; the policies of every tenant table ask hooks._tenant_scope. In 0.2.0 every publisher
-- and every admin acted for every tenant whose name it set (or for all of them); the roles that
-- could get an explicit grant of every tenant, with a NOTICE, so nothing stops on upgrade.
-------------------------------------------------------------------------------------------------
CREATE TABLE hooks.tenant_grants (
    role_name  name        NOT NULL,
    tenant_id  text,
    granted_at timestamptz NOT NULL DEFAULT now(),
    granted_by name        NOT NULL
);
CREATE UNIQUE INDEX tenant_grants_role_tenant_key ON hooks.tenant_grants (role_name, tenant_id);
CREATE UNIQUE INDEX tenant_grants_every_tenant_key ON hooks.tenant_grants (role_name) WHERE tenant_id IS NULL;
CREATE INDEX tenant_grants_tenant_idx ON hooks.tenant_grants (tenant_id);
SELECT pg_catalog.pg_extension_config_dump('hooks.tenant_grants', '');
ALTER FUNCTION hooks.grant_tenant(name, text) SECURITY DEFINER SET search_path = pg_catalog, hooks;
ALTER FUNCTION hooks.revoke_tenant(name, text) SECURITY DEFINER SET search_path = pg_catalog, hooks;
ALTER FUNCTION hooks._session_scope() SECURITY DEFINER SET search_path = pg_catalog, hooks;
REVOKE EXECUTE ON FUNCTION hooks._publish(jsonb, name), hooks._publish_many(jsonb[], name),
    hooks._session_scope() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION hooks.grant_tenant(name, text), hooks.revoke_tenant(name, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hooks.grant_tenant(name, text), hooks.revoke_tenant(name, text),
    hooks._session_scope() TO hooks_admin;
-- tenant grants: every role reads the grants of the roles it is a member of (hooks._tenant_scope
-- reads them as the caller), admins those of the tenants they act for; hooks.grant_tenant and
-- hooks.revoke_tenant write them, as the extension's owner
GRANT SELECT ON hooks.tenant_grants TO PUBLIC;
ALTER TABLE hooks.tenant_grants ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_grants ON hooks.tenant_grants FOR SELECT
    USING (EXISTS (SELECT 1 FROM pg_catalog.pg_roles ro
                    WHERE ro.rolname = role_name AND pg_catalog.pg_has_role(current_user, ro.oid, 'MEMBER')));
CREATE POLICY admins_read ON hooks.tenant_grants FOR SELECT TO hooks_admin
    USING (CASE WHEN (SELECT hooks._session_scope()) IS NULL THEN true
                ELSE tenant_id = ANY ((SELECT hooks._session_scope())::text[]) END);
CREATE POLICY all_tenant_admins_write ON hooks.settings TO hooks_admin
    USING ((SELECT hooks._tenant_scope(current_user)) IS NULL)
    WITH CHECK ((SELECT hooks._tenant_scope(current_user)) IS NULL);

DROP POLICY tenant_isolation ON hooks.webhooks;
DROP POLICY tenant_isolation ON hooks.events;
DROP POLICY tenant_isolation ON hooks.attempt_log;
DROP POLICY admin_all_tenants ON hooks.webhooks;
DROP POLICY admin_all_tenants ON hooks.events;
DROP POLICY admin_all_tenants ON hooks.attempt_log;
CREATE POLICY tenant_scope ON hooks.webhooks
    USING (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])))
    WITH CHECK (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])));
CREATE POLICY tenant_scope ON hooks.events
    USING (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])))
    WITH CHECK (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])));
CREATE POLICY tenant_scope ON hooks.outbox
    USING (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])))
    WITH CHECK (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])));
CREATE POLICY tenant_scope ON hooks.queue
    USING (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])))
    WITH CHECK (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])));
CREATE POLICY tenant_scope ON hooks.outcomes
    USING (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])))
    WITH CHECK (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])));
CREATE POLICY tenant_scope ON hooks.attempt_log
    USING (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])))
    WITH CHECK (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])));
CREATE POLICY tenant_scope ON hooks.webhook_patterns
    USING (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])))
    WITH CHECK (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])));

DO $$
DECLARE
    r name;
BEGIN
    -- the roles that held privileges on publish or on the tenant tables (hooks_publisher,
    -- hooks_admin, and any role granted them directly), owners and superusers aside
    FOR r IN
        SELECT DISTINCT ro.rolname
          FROM (SELECT a.grantee
                  FROM pg_proc p, aclexplode(p.proacl) a
                 WHERE p.oid = 'hooks.publish(jsonb)'::regprocedure
                UNION
                SELECT a.grantee
                  FROM pg_class c, aclexplode(c.relacl) a
                 WHERE c.oid IN ('hooks.webhooks'::regclass, 'hooks.events'::regclass, 'hooks.attempt_log'::regclass)) AS g
          JOIN pg_roles ro ON ro.oid = g.grantee
         WHERE NOT ro.rolsuper
           AND NOT pg_has_role(ro.oid, (SELECT n.nspowner FROM pg_namespace n WHERE n.nspname = 'hooks'), 'MEMBER')
         ORDER BY 1
    LOOP
        INSERT INTO hooks.tenant_grants (role_name, tenant_id, granted_by) VALUES (r, NULL, current_user)
        ON CONFLICT DO NOTHING;
        RAISE NOTICE 'beema_hooks 0.3.0: role % may act for every tenant, as in 0.2.0 (hooks.tenant_grants); bind it to its tenants with hooks.grant_tenant(%L, tenant), then hooks.revoke_tenant(%L)', r, r, r;
    END LOOP;
END
$$;

-------------------------------------------------------------------------------------------------
-- Disabled webhooks (README, "Disabled webhooks"): the system's disabling (410 Gone, failing
-- too long) holds the queued deliveries until the webhook is enabled again, instead of
-- cancelling them; an admin's disable_webhook chooses (cancel_queued).
-------------------------------------------------------------------------------------------------
DROP TRIGGER webhooks_after_disable ON hooks.webhooks;
CREATE TRIGGER webhooks_after_disable
    AFTER UPDATE OF enabled, disabled_holds_queue ON hooks.webhooks
    FOR EACH ROW WHEN (NOT NEW.enabled AND NOT NEW.disabled_holds_queue AND (OLD.enabled OR OLD.disabled_holds_queue))
    EXECUTE FUNCTION hooks._webhook_after_disable();

-- A webhook enabled again: the deliveries its disabling held (out of the due range, see
-- hooks.claim) are due now, and the senders are woken on commit (those waiting behind their
-- ordering key keep waiting).
CREATE FUNCTION hooks._webhook_after_enable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE hooks.queue q
       SET next_attempt_at = now(), updated_at = now()
     WHERE q.webhook_id = NEW.webhook_id AND q.status <> 'in_flight' AND q.next_attempt_at = 'infinity'
       AND NOT q.behind;
    IF FOUND THEN
        PERFORM hooks._notify_at_commit();
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER webhooks_after_enable
    AFTER UPDATE OF enabled ON hooks.webhooks
    FOR EACH ROW WHEN (NOT OLD.enabled AND NEW.enabled)
    EXECUTE FUNCTION hooks._webhook_after_enable();

DROP FUNCTION hooks.disable_webhook(bigint, text);
-- Disables a webhook (in-flight deliveries finish). Its queued deliveries are cancelled, or with
-- cancel_queued false wait until hooks.enable_webhook (as when the system disables a webhook;
-- hooks.purge cancels those queued longer than its retention window).
CREATE FUNCTION hooks.disable_webhook(webhook_id bigint, reason text DEFAULT NULL,
                                      cancel_queued boolean DEFAULT true) RETURNS hooks.webhooks
LANGUAGE plpgsql AS $$
DECLARE
    w hooks.webhooks := hooks._webhook(webhook_id);
BEGIN
    UPDATE hooks.webhooks x
       SET enabled = false, disabled_reason = coalesce(reason, 'disabled by ' || current_user),
           disabled_holds_queue = NOT coalesce(cancel_queued, true)
     WHERE x.webhook_id = w.webhook_id
    RETURNING * INTO w;
    RETURN w;
END
$$;

REVOKE EXECUTE ON FUNCTION hooks.disable_webhook(bigint, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hooks.disable_webhook(bigint, text, boolean) TO hooks_admin;

-------------------------------------------------------------------------------------------------
-- Alerting (README, "Alerting"): the per-webhook figures the senders export at /metrics.
-------------------------------------------------------------------------------------------------
-- Per-webhook figures the senders export at /metrics for alerting (README, "Alerting"), from
-- hooks.webhook_backlog: each webhook with live deliveries, how many are due and not sent, how
-- long (seconds) the oldest has waited past its due time, whether its breaker holds them back,
-- and how many a disabling holds. No URL, no secret: the senders, which read no table, may call
-- it (as the extension's owner).
CREATE FUNCTION hooks.sender_metrics()
RETURNS TABLE (webhook_id bigint, tenant_id text, webhook_name text, due bigint,
               overdue_seconds double precision, breaker_open boolean, held bigint)
LANGUAGE sql STABLE AS $$
    SELECT b.webhook_id, b.tenant_id, b.webhook_name, b.due,
           coalesce(extract(epoch FROM b.overdue_for), 0)::float8,
           b.state = 'paused',
           CASE WHEN b.state = 'disabled' THEN b.live - b.in_flight ELSE 0 END
      FROM hooks.webhook_backlog b
$$;
ALTER FUNCTION hooks.sender_metrics() SECURITY DEFINER SET search_path = pg_catalog, hooks;
REVOKE EXECUTE ON FUNCTION hooks.sender_metrics() FROM PUBLIC;
-- (only the senders: it reads every tenant; admins have hooks.webhook_backlog, under row-level security)
GRANT EXECUTE ON FUNCTION hooks.sender_metrics() TO hooks_sender;

-------------------------------------------------------------------------------------------------
-- Asymmetric signatures (README, "Signatures"): webhooks.signatures (v1, v1a) and signing_key,
-- and the ed25519 functions of the library.
-------------------------------------------------------------------------------------------------
CREATE FUNCTION hooks."generate_signing_key"() RETURNS TEXT /* String */
STRICT VOLATILE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'generate_signing_key_wrapper';
CREATE FUNCTION hooks."public_key"(
	"signing_key" TEXT /* & str */
) RETURNS TEXT /* String */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'public_key_wrapper';
CREATE FUNCTION hooks."sign_standard_v1a"(
	"msg_id" TEXT, /* & str */
	"timestamp" bigint, /* i64 */
	"body" TEXT, /* & str */
	"signing_key" TEXT /* & str */
) RETURNS TEXT /* String */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'sign_standard_v1a_wrapper';
CREATE FUNCTION hooks."verify_standard_v1a"(
	"msg_id" TEXT, /* & str */
	"timestamp" bigint, /* i64 */
	"body" TEXT, /* & str */
	"public_key" TEXT, /* & str */
	"signature" TEXT /* & str */
) RETURNS bool /* bool */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'verify_standard_v1a_wrapper';
-- Rotates a webhook's v1a signing key (README, "Asymmetric signatures"): the new key (generated
-- when NULL) signs at once, and for `grace` (0..30 days) the previous one signs too, so
-- webhook-signature carries both v1a signatures and receivers verifying with either public key
-- accept. Returns the new public key. Errors: P0002 (no such webhook), 22023 (grace out of
-- range, a webhook without v1a, not a whsk_ key), 0A000 (portable flavor: no ed25519).
CREATE FUNCTION hooks.rotate_signing_key(webhook_id bigint, new_signing_key text DEFAULT NULL,
                                         grace interval DEFAULT '24 hours')
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    w hooks.webhooks := hooks._webhook(webhook_id);
BEGIN
    IF grace IS NULL OR grace < interval '0' OR grace > interval '30 days' THEN
        RAISE EXCEPTION 'grace must be between 0 and 30 days' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT 'v1a' = ANY (w.signatures) THEN
        RAISE EXCEPTION 'webhook % signs no v1a signatures: set its signatures first', w.webhook_id
            USING ERRCODE = 'invalid_parameter_value', HINT = 'hooks.update_webhook(id, ''{"signatures": ["v1", "v1a"]}'')';
    END IF;
    UPDATE hooks.webhooks x
       SET signing_key = coalesce(new_signing_key, hooks.generate_signing_key()),
           previous_signing_key = w.signing_key,
           previous_signing_key_expires_at = now() + grace
     WHERE x.webhook_id = w.webhook_id
    RETURNING * INTO w;
    RETURN hooks.public_key(w.signing_key);
END
$$;
REVOKE EXECUTE ON FUNCTION hooks.rotate_signing_key(bigint, text, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hooks.rotate_signing_key(bigint, text, interval) TO hooks_admin;

-------------------------------------------------------------------------------------------------
-- Ordered delivery per key (README, "Ordered delivery per key"): webhooks.ordering_key and
-- ordering_on_failure (added above), outbox.order_key and queue.order_key/behind (created
-- above), the keys' heads, and the functions of the state machine that keep them. Deliveries
-- queued before the update are not ordered.
-------------------------------------------------------------------------------------------------
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

SELECT pg_catalog.pg_extension_config_dump('hooks.order_keys', '');
SELECT pg_catalog.pg_extension_config_dump('hooks.order_pending', '');
GRANT SELECT, INSERT, UPDATE, DELETE ON hooks.order_keys, hooks.order_pending TO hooks_admin;
ALTER TABLE hooks.order_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE hooks.order_pending ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_scope ON hooks.order_keys
    USING (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])))
    WITH CHECK (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])));
CREATE POLICY tenant_scope ON hooks.order_pending
    USING (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])))
    WITH CHECK (tenant_id = ANY (coalesce((SELECT hooks._tenant_scope(current_user)), ARRAY[tenant_id])));

-- Ordered delivery (README, "Ordered delivery per key"): lets the next delivery of each key go
-- whose head ended (webhook_ids[i], order_keys[i], ended[i]): the key's oldest delivery waiting
-- behind becomes its head and is due now (or, with none waiting, the key is idle). A head that
-- failed keeps blocking its key when its webhook's ordering_on_failure is 'block', unless
-- `unblock` (hooks.skip_delivery). A head queued again meanwhile (hooks.retry_delivery) still
-- goes first. Never waits: a key whose row a publisher holds (until its commit) is left in
-- hooks.order_pending, which hooks.claim settles later. Returns how many deliveries it let go;
-- wakes the senders on commit when any.
CREATE FUNCTION hooks._order_settle(webhook_ids bigint[], order_keys text[], ended bigint[],
                                    unblock boolean DEFAULT false)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_w    bigint[];
    v_k    text[];
    v_d    bigint[];
    v_lw   bigint[];
    v_lk   text[];
    n      integer;
BEGIN
    -- the ended deliveries that are their key's head (only a head's end changes anything)
    SELECT array_agg(ok.webhook_id), array_agg(ok.order_key), array_agg(u.d)
      INTO v_w, v_k, v_d
      FROM unnest(webhook_ids, order_keys, ended) AS u(w, k, d)
      JOIN hooks.order_keys ok ON ok.webhook_id = u.w AND ok.order_key = u.k AND ok.head = u.d;
    IF v_w IS NULL THEN
        RETURN 0;
    END IF;
    -- their keys' rows, locked, but not those a publisher of the key holds: settled later
    SELECT array_agg(l.webhook_id), array_agg(l.order_key) INTO v_lw, v_lk
      FROM (SELECT ok.webhook_id, ok.order_key
              FROM hooks.order_keys ok
              JOIN unnest(v_w, v_k) AS u(w, k) ON ok.webhook_id = u.w AND ok.order_key = u.k
             ORDER BY ok.webhook_id, ok.order_key
               FOR UPDATE OF ok SKIP LOCKED) AS l;
    INSERT INTO hooks.order_pending (webhook_id, order_key, tenant_id, delivery_id)
    SELECT u.w, u.k, w.tenant_id, u.d
      FROM unnest(v_w, v_k, v_d) AS u(w, k, d)
      JOIN hooks.webhooks w ON w.webhook_id = u.w
     WHERE NOT EXISTS (SELECT 1 FROM unnest(v_lw, v_lk) AS l(w, k) WHERE l.w = u.w AND l.k = u.k);
    WITH go AS (
        SELECT ok.webhook_id, ok.order_key,
               (SELECT min(q.delivery_id) FROM hooks.queue q
                 WHERE q.webhook_id = ok.webhook_id AND q.order_key = ok.order_key AND q.behind) AS next
          FROM unnest(v_w, v_k, v_d) AS u(w, k, d)
          JOIN unnest(v_lw, v_lk) AS l(w, k) ON l.w = u.w AND l.k = u.k
          JOIN hooks.order_keys ok ON ok.webhook_id = u.w AND ok.order_key = u.k AND ok.head = u.d
          JOIN hooks.webhooks w ON w.webhook_id = u.w
         WHERE NOT EXISTS (SELECT 1 FROM hooks.queue q WHERE q.delivery_id = u.d)
           AND (unblock OR w.ordering_on_failure <> 'block'
                OR NOT EXISTS (SELECT 1 FROM hooks.outcomes f WHERE f.delivery_id = u.d AND f.status = 'failed'))
    ), heads AS (
        UPDATE hooks.order_keys ok
           SET head = go.next, updated_at = now()
          FROM go
         WHERE ok.webhook_id = go.webhook_id AND ok.order_key = go.order_key
        RETURNING go.next
    ), let_go AS (
        UPDATE hooks.queue q
           SET behind = false, next_attempt_at = now(), updated_at = now()
          FROM heads
         WHERE q.delivery_id = heads.next
        RETURNING q.delivery_id
    )
    SELECT count(*) INTO n FROM let_go;
    IF n > 0 THEN
        PERFORM hooks._notify_at_commit();  -- the senders may have nothing else due
    END IF;
    RETURN n;
END
$$;


-- The keys hooks._order_settle left for later (a publisher held them): settled now, those
-- still held left again. Called by hooks.claim while any are left.
CREATE FUNCTION hooks._order_settle_pending() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_w bigint[];
    v_k text[];
    v_d bigint[];
BEGIN
    WITH p AS (
        DELETE FROM hooks.order_pending x
         WHERE x.ctid = ANY (ARRAY(SELECT y.ctid FROM hooks.order_pending y LIMIT 1000 FOR UPDATE SKIP LOCKED))
        RETURNING x.webhook_id, x.order_key, x.delivery_id
    )
    SELECT array_agg(p.webhook_id), array_agg(p.order_key), array_agg(p.delivery_id) INTO v_w, v_k, v_d FROM p;
    IF v_w IS NULL THEN
        RETURN 0;
    END IF;
    RETURN hooks._order_settle(v_w, v_k, v_d);
END
$$;


-- Ordered delivery (README, "Ordered delivery per key"): lets an ordering key go on without a
-- delivery. A failed delivery that blocks its key (ordering_on_failure 'block') stays failed
-- and the next of its key goes; a queued one (pending, retrying, or waiting behind its key) is
-- cancelled with the reason, and when it was the key's head the next goes. Returns the delivery.
-- Errors: P0002 (no such delivery), 55000 (in flight; or finished and not blocking a key).
CREATE FUNCTION hooks.skip_delivery(delivery_id bigint, reason text DEFAULT NULL) RETURNS hooks.deliveries
LANGUAGE plpgsql AS $$
DECLARE
    d  hooks.deliveries := hooks._delivery_to_change(delivery_id);
    ok hooks.order_keys;
BEGIN
    IF d.status IN ('pending', 'retrying') THEN
        PERFORM hooks._finish(ARRAY[d.delivery_id], 'cancelled', NULL, NULL,
                              ARRAY['skipped by ' || hooks._session_role() || coalesce(': ' || reason, '')]);
    ELSE
        -- (its key's row locked: waits for a publisher of the key to commit)
        SELECT k.* INTO ok
          FROM hooks.outbox o
          JOIN hooks.order_keys k ON k.webhook_id = o.webhook_id AND k.order_key = o.order_key
         WHERE o.delivery_id = d.delivery_id AND k.head = d.delivery_id
           FOR UPDATE OF k;
        IF NOT FOUND OR d.status <> 'failed' THEN
            RAISE EXCEPTION 'delivery % is % and holds up no ordering key', delivery_id, d.status
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'hooks.blocked_keys lists the failed deliveries that block their keys.';
        END IF;
        PERFORM hooks._order_settle(ARRAY[ok.webhook_id], ARRAY[ok.order_key], ARRAY[d.delivery_id], true);
    END IF;
    SELECT * INTO d FROM hooks.deliveries x WHERE x.delivery_id = skip_delivery.delivery_id;
    RETURN d;
END
$$;

REVOKE EXECUTE ON FUNCTION hooks.skip_delivery(bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hooks.skip_delivery(bigint, text) TO hooks_admin;

-- Ordering keys that a failed delivery blocks (webhooks with ordering_on_failure 'block'): the
-- failed delivery, and how many of the key wait behind it. Let the key go on with
-- hooks.retry_delivery(delivery_id) (sent again first) or hooks.skip_delivery(delivery_id).
CREATE VIEW hooks.blocked_keys AS
SELECT k.webhook_id, k.tenant_id, k.order_key, f.delivery_id, f.error_message, f.updated_at AS failed_at,
       (SELECT count(*) FROM hooks.queue q
         WHERE q.webhook_id = k.webhook_id AND q.order_key = k.order_key AND q.behind) AS waiting
  FROM hooks.order_keys k
  JOIN hooks.outcomes f ON f.delivery_id = k.head AND f.status = 'failed'
  JOIN hooks.webhooks w ON w.webhook_id = k.webhook_id AND w.ordering_on_failure = 'block';

ALTER VIEW hooks.blocked_keys SET (security_invoker = true);
GRANT SELECT ON hooks.blocked_keys TO hooks_admin;
