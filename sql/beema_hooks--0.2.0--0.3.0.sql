-- beema_hooks 0.2.0 -> 0.3.0: run by ALTER EXTENSION beema_hooks UPDATE TO '0.3.0'.
-- Must bring a 0.2.0 database to exactly what a fresh CREATE EXTENSION of 0.3.0 gives
-- (scripts/upgrade_test.sh compares the two). Never edit it once 0.3.0 is released.

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION beema_hooks UPDATE TO '0.3.0'" to load this file. \quit

-------------------------------------------------------------------------------------------------
-- New columns (none rewrites its table: NULL, or a constant default). Rows in flight at the
-- update have no lease token: their senders (0.2.0) report without one and are fenced by
-- attempt number. Paused webhooks stay paused until their paused_until, at breaker level 0.
-------------------------------------------------------------------------------------------------
ALTER TABLE hooks.webhooks ADD COLUMN breaker_level integer NOT NULL DEFAULT 0;
ALTER TABLE hooks.webhooks ADD COLUMN breaker_fence bigint;
ALTER TABLE hooks.deliveries ADD COLUMN lease_token bigint;
ALTER TABLE hooks.deliveries ADD COLUMN breaker_held_ms bigint NOT NULL DEFAULT 0;
CREATE SEQUENCE hooks.lease_tokens;
SELECT pg_catalog.pg_extension_config_dump('hooks.lease_tokens', '');
GRANT USAGE ON SEQUENCE hooks.lease_tokens TO hooks_admin;

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
    SELECT $1 = 'in_flight' AND $2 = $5
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

-- The advisory lock keys, named once (api.sql); the wake-up barrier now uses them.
CREATE FUNCTION hooks._lock_key(name text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE $1
               WHEN 'commit' THEN 7233327398000001
               WHEN 'awake'  THEN 7233327398000002
               WHEN 'claim'  THEN 1751936875
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
    NULL;
END
$$;

-- claim returns lease_token: a new result type, so drop and create (privileges set again below)
DROP FUNCTION hooks.claim(text, integer, interval, boolean);
-- Claims at most max_rows due deliveries for sender_id, leased for greatest(lease, timeout + 10 s),
-- with every header (signatures included) computed, and a new lease_token for each: the fence
-- complete and release check (hooks._holds_lease). Rows whose lease expired are reclaimed and
-- their lost attempt logged; an expired lease was an attempt, so one that was the last attempt
-- ends the delivery as failed instead (its sender never reported). Due rows of a disabled webhook are cancelled; those of a paused
-- webhook (circuit breaker open) wait until it resumes, and while its breaker is half-open only
-- one delivery per webhook and claim goes out as a probe; skipped rows move out of the due range
-- (for a second, or to the end of the pause) and the claim looks further, so these never hold up
-- healthy webhooks. A webhook with hooks.max_in_flight_per_webhook requests in flight (live
-- leases, all senders) is passed over: its due rows stay as they are, neither locked nor
-- rewritten, and hooks.complete() wakes the senders when it frees such a webhook.
-- When nothing is due, the sender goes idle (publishers notify again) unless stay_awake asks it
-- to stay awake, for a sender that promises to claim again within milliseconds.
-- Must run in READ COMMITTED on the sender's own session (it holds the "awake" lock there).
-- Plans: only index lookups and nested loops (see hooks.complete).
CREATE FUNCTION hooks.claim(sender_id text, max_rows integer, lease interval DEFAULT '60 seconds',
                            stay_awake boolean DEFAULT false)
RETURNS TABLE (delivery_id bigint, attempt_number integer, delivery_uuid uuid, webhook_id bigint,
               event_type text, url text, headers jsonb, body text, timeout_ms integer,
               lease_expires_at timestamptz, lease_token bigint)
LANGUAGE plpgsql SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off AS $$
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

    -- Asynchronous commit for the sender's own transactions: after a Postgres crash the last
    -- moments of claims and results may be lost, which only means those deliveries are sent
    -- again (at-least-once). Publishing transactions keep their own setting.
    PERFORM set_config('synchronous_commit', 'off', true);

    -- A lingering sender's look at an empty queue: one probe of the due index, and it stays
    -- awake (the loop below would find nothing either, at several times the cost).
    IF stay_awake AND NOT EXISTS (SELECT 1 FROM hooks.deliveries x
                                   WHERE x.status IN ('pending', 'retrying', 'in_flight')
                                     AND x.next_attempt_at <= clock_timestamp()) THEN
        PERFORM pg_try_advisory_lock_shared(hooks._lock_key('awake'));
        v_quiet := true;
    END IF;

    FOR v_round IN 1..1000 LOOP
        EXIT WHEN v_quiet;
        -- not now(): a later look must see rows of transactions that began after this one
        v_now := clock_timestamp();
        -- The webhooks at the cap (requests in flight: live leases of every sender), whose due
        -- rows this claim passes over.
        v_full := '{}';
        IF v_cap > 0 AND EXISTS (SELECT 1 FROM hooks.deliveries x  -- at least v_cap in flight at all
                                  WHERE x.status = 'in_flight' AND x.next_attempt_at > v_now
                                 OFFSET v_cap - 1) THEN
            SELECT coalesce(array_agg(b.webhook_id), '{}') INTO v_full
              FROM (SELECT x.webhook_id
                      FROM hooks.deliveries x
                     WHERE x.status = 'in_flight' AND x.next_attempt_at > v_now
                     GROUP BY x.webhook_id
                    HAVING count(*) >= v_cap) AS b;
        END IF;

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
                SELECT d.delivery_id, d.webhook_id
                  FROM hooks.deliveries d
                 WHERE d.status IN ('pending', 'retrying', 'in_flight')
                   AND d.next_attempt_at <= v_now
                   AND d.webhook_id <> ALL (v_full)
                 ORDER BY d.next_attempt_at
                 LIMIT max_rows
                   FOR UPDATE SKIP LOCKED
            )
            SELECT array_agg(due.delivery_id), array_agg(due.webhook_id) INTO v_cand, v_cand_wh FROM due;
        ELSE
            WITH due AS (
                SELECT d.delivery_id, d.webhook_id
                  FROM hooks.deliveries d
                 WHERE d.delivery_id = ANY (ARRAY(SELECT x.delivery_id
                                                    FROM hooks.deliveries x
                                                   WHERE x.status IN ('pending', 'retrying', 'in_flight')
                                                     AND x.next_attempt_at <= v_now
                                                   ORDER BY x.next_attempt_at
                                                   LIMIT v_scan))
                   AND d.status IN ('pending', 'retrying', 'in_flight')
                   AND d.next_attempt_at <= v_now
                   AND d.webhook_id <> ALL (v_full)
                 ORDER BY d.next_attempt_at
                 LIMIT max_rows
                   FOR UPDATE OF d SKIP LOCKED
            )
            SELECT array_agg(due.delivery_id), array_agg(due.webhook_id) INTO v_cand, v_cand_wh FROM due;
        END IF;

        -- Take each of their webhooks' claim lock (transaction advisory lock, skipped when
        -- another sender holds it): counting a webhook's requests in flight and claiming more
        -- is then one step no other sender interleaves with.
        SELECT coalesce(array_agg(h.webhook_id), '{}') INTO v_mine
          FROM (SELECT DISTINCT u.webhook_id FROM unnest(v_cand_wh) AS u(webhook_id)) AS h
         WHERE v_cap > 0 AND pg_try_advisory_xact_lock(hooks._lock_key('claim')::integer, (h.webhook_id % 2147483647)::integer);

        IF v_cand IS NULL THEN  -- nothing due
            v_ids := NULL;
            v_skipped := 0;
        ELSE
            WITH due AS (
                SELECT d.delivery_id, d.webhook_id, d.tenant_id, d.status, d.lease_owner, d.attempt_number,
                       d.next_attempt_at, greatest(v_max_cool - d.breaker_held_ms, 0) AS hold_left_ms
                  FROM hooks.deliveries d
                 WHERE d.delivery_id = ANY (v_cand)
            ), busy AS (
                -- read after taking the claim locks, so it includes every other claim
                SELECT x.webhook_id, count(*) AS n
                  FROM hooks.deliveries x
                 WHERE v_cap > 0 AND x.webhook_id = ANY (v_mine)
                   AND x.status = 'in_flight' AND x.next_attempt_at > v_now
                 GROUP BY x.webhook_id
            ), plan AS (
                SELECT due.*, w.enabled, w.disabled_reason, w.timeout_ms, w.paused_until,
                       coalesce((w.retry_config->>'maxAttempts')::int, 3) AS max_attempts,
                       least(greatest(w.paused_until, v_now + interval '1 second'),
                             v_now + due.hold_left_ms * interval '1 millisecond') AS held_until,
                       CASE
                           -- an expired lease was an attempt: with none left, the delivery ends
                           WHEN due.status = 'in_flight'
                                AND due.attempt_number >= coalesce((w.retry_config->>'maxAttempts')::int, 3)
                               THEN 'exhaust'
                           WHEN NOT w.enabled THEN 'cancel'
                           -- the breaker holds a delivery back for at most one maximum
                           -- cool-down over its life; after that it goes out like any other
                           WHEN w.paused_until > v_now AND due.hold_left_ms > 0 THEN 'wait'
                           -- half-open: one probe, the delivery with the most attempts behind it
                           WHEN v_threshold > 0 AND w.consecutive_failures >= v_threshold AND due.hold_left_ms > 0
                                AND coalesce(busy.n, 0)
                                    + row_number() OVER (PARTITION BY due.webhook_id
                                                         ORDER BY due.attempt_number DESC, due.next_attempt_at) > 1
                               THEN 'wait'
                           -- another sender is claiming this webhook, or it is at the cap: left as
                           -- it is (unlocked at commit) for a later claim
                           WHEN v_cap > 0 AND NOT (due.webhook_id = ANY (v_mine)) THEN 'over'
                           WHEN v_cap > 0
                                AND coalesce(busy.n, 0)
                                    + row_number() OVER (PARTITION BY due.webhook_id ORDER BY due.next_attempt_at) > v_cap
                               THEN 'over'
                           ELSE 'claim'
                       END AS action
                  FROM due
                  JOIN hooks.webhooks w ON w.webhook_id = due.webhook_id AND w.webhook_id = ANY (v_cand_wh)
                  LEFT JOIN busy ON busy.webhook_id = due.webhook_id
            ), lost AS (
                INSERT INTO hooks.attempts (delivery_id, webhook_id, tenant_id, attempt_number, sender_id, outcome, error_message)
                SELECT plan.delivery_id, plan.webhook_id, plan.tenant_id, plan.attempt_number, plan.lease_owner,
                       'lease_expired', 'lease expired before the sender reported a result'
                  FROM plan
                 WHERE plan.status = 'in_flight' AND plan.action <> 'over'
            ), skipped AS (
                UPDATE hooks.deliveries d
                   SET status = CASE WHEN plan.action = 'cancel' THEN 'cancelled'
                                     WHEN plan.action = 'exhaust' THEN 'failed'
                                     WHEN plan.status = 'in_flight' THEN 'retrying'
                                     ELSE plan.status END,
                       error_message = CASE WHEN plan.action = 'cancel'
                                            THEN 'webhook disabled' || coalesce(': ' || plan.disabled_reason, '')
                                            WHEN plan.action = 'exhaust'
                                            THEN format('attempt %s of %s: the sender (%s) never reported a result before its lease expired',
                                                        plan.attempt_number, plan.max_attempts, plan.lease_owner)
                                            ELSE d.error_message END,
                       next_attempt_at = CASE WHEN plan.action IN ('cancel', 'exhaust') THEN d.next_attempt_at
                                              ELSE plan.held_until END,
                       breaker_held_ms = d.breaker_held_ms + CASE WHEN plan.action = 'wait'
                           THEN ceil(extract(epoch FROM plan.held_until - v_now) * 1000)::bigint ELSE 0 END,
                       lease_owner = NULL,
                       updated_at = now()
                  FROM plan
                 WHERE d.delivery_id = plan.delivery_id AND plan.action IN ('cancel', 'wait', 'exhaust')
                RETURNING 1
            ), claimed AS (
                UPDATE hooks.deliveries d
                   SET status = 'in_flight',
                       attempt_number = d.attempt_number + 1,
                       lease_owner = v_sender,
                       lease_token = nextval('hooks.lease_tokens'),
                       next_attempt_at = v_now + greatest(lease, make_interval(secs => plan.timeout_ms / 1000.0 + 10)),
                       updated_at = now()
                  FROM plan
                 WHERE d.delivery_id = plan.delivery_id AND plan.action = 'claim'
                RETURNING d.delivery_id
            )
            SELECT (SELECT array_agg(claimed.delivery_id) FROM claimed),
                   (SELECT count(*) FROM skipped)
              INTO v_ids, v_skipped;
        END IF;
        v_claimed := coalesce(cardinality(v_ids), 0);

        IF v_claimed > 0 THEN
            RETURN QUERY
            SELECT d.delivery_id, d.attempt_number, d.delivery_uuid, d.webhook_id, d.event_type, w.url,
                   w.headers || jsonb_build_object(
                       'Content-Type', 'application/json',
                       'X-Beema-Signature', hooks.sign(e.body, w.secret),
                       'X-Beema-Event', d.event_type,
                       'X-Beema-Delivery', d.delivery_uuid::text,
                       'webhook-id', d.delivery_uuid::text,
                       'webhook-timestamp', v_ts::text,
                       'webhook-signature', hooks.sign_standard(d.delivery_uuid::text, v_ts, e.body,
                           CASE WHEN w.previous_secret_expires_at > v_now
                                THEN ARRAY[w.secret, w.previous_secret] ELSE ARRAY[w.secret] END)),
                   e.body, w.timeout_ms, d.next_attempt_at, d.lease_token
              FROM hooks.deliveries d
              JOIN hooks.webhooks w ON w.webhook_id = d.webhook_id AND w.webhook_id = ANY (v_cand_wh)
              JOIN hooks.events e ON e.event_id = d.event_id
             WHERE d.delivery_id = ANY (v_ids)
             ORDER BY d.delivery_id;
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
-- Each result is logged in hooks.attempts; it changes its delivery only while sender_id still
-- holds that lease (hooks._holds_lease). 2xx -> success; 410 -> failed and the webhook disabled; the
-- last attempt -> failed; otherwise retrying after the webhook's backoff (or Retry-After).
-- Applied results also drive each webhook's circuit breaker (README, "Circuit breaker").
-- Plans: only index lookups and nested loops. The planner cannot know how many rows
-- jsonb_to_recordset gives (it assumes 100), and while hooks.deliveries looked small (a new
-- database, or statistics from before a bulk load) the session's cached plans hash- or
-- merge-joined the batch against whole-table or whole-index scans, whose cost then grew with
-- the table: 19 ms per batch of 24 at 15,000 rows (BENCHMARKS.md, P3). A batch only ever
-- touches its own rows, found by primary key.
CREATE OR REPLACE FUNCTION hooks.complete(sender_id text, results jsonb) RETURNS integer
LANGUAGE plpgsql SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off AS $$
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
    v_freed     boolean;
BEGIN
    PERFORM hooks._check_sender_id(v_sender);
    IF results IS NULL OR jsonb_typeof(results) <> 'array' THEN
        RAISE EXCEPTION 'results must be a JSON array of attempt results'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    PERFORM set_config('synchronous_commit', 'off', true);  -- as in hooks.claim

    WITH r AS (
        SELECT *
          FROM jsonb_to_recordset(results) AS r(delivery_id bigint, attempt_number integer,
               lease_token bigint, status_code integer, error text, response_body text,
               duration_ms integer, retry_after_ms bigint)
    ), cur AS (
        SELECT r.*, d.webhook_id, d.tenant_id, w.retry_config, w.enabled,
               -- claimed after the breaker last opened (or a probe failed): a new request
               coalesce(d.lease_token, 0) > coalesce(w.breaker_fence, 0) AS after_fence,
               hooks._holds_lease(d.status, d.lease_owner, d.attempt_number, d.lease_token,
                                  v_sender, r.attempt_number, r.lease_token) AS holds,
               (r.status_code BETWEEN 200 AND 299 AND r.error IS NULL) AS ok,
               CASE WHEN r.status_code BETWEEN 200 AND 299 AND r.error IS NULL THEN NULL
                    ELSE left(coalesce(r.error, 'HTTP ' || r.status_code, 'unknown error'), 1000)
               END AS err
          FROM r
          JOIN hooks.deliveries d ON d.delivery_id = r.delivery_id
          JOIN hooks.webhooks w ON w.webhook_id = d.webhook_id
           FOR UPDATE OF d
    ), upd AS (
        UPDATE hooks.deliveries d
           SET status = CASE
                   WHEN cur.ok THEN 'success'
                   WHEN cur.status_code = 410 THEN 'failed'
                   WHEN cur.attempt_number >= coalesce((cur.retry_config->>'maxAttempts')::int, 3) THEN 'failed'
                   WHEN NOT cur.enabled THEN 'cancelled'
                   ELSE 'retrying' END,
               status_code = cur.status_code,
               response_body = left(cur.response_body, 1000),
               error_message = cur.err,
               next_attempt_at = CASE WHEN cur.ok THEN d.next_attempt_at
                   ELSE now() + hooks.retry_delay_ms(cur.retry_config::text, cur.attempt_number,
                                                     cur.retry_after_ms, random())
                                * interval '1 millisecond' END,
               delivered_at = CASE WHEN cur.ok THEN now() END,
               lease_owner = NULL,
               updated_at = now()
          FROM cur
         WHERE d.delivery_id = cur.delivery_id AND cur.holds
        RETURNING d.delivery_id
    ), log AS (
        INSERT INTO hooks.attempts (delivery_id, webhook_id, tenant_id, attempt_number, sender_id, outcome,
                                    status_code, error_message, duration_ms)
        SELECT cur.delivery_id, cur.webhook_id, cur.tenant_id, cur.attempt_number, v_sender,
               CASE WHEN NOT cur.holds THEN 'lease_lost' WHEN cur.ok THEN 'success' ELSE 'failure' END,
               cur.status_code, cur.err, cur.duration_ms
          FROM cur
    ), per_webhook AS (
        SELECT cur.webhook_id, bool_or(cur.ok) AS any_ok, count(*) FILTER (WHERE NOT cur.ok) AS failures,
               count(*) FILTER (WHERE NOT cur.ok AND cur.after_fence) AS new_failures,
               bool_or(cur.status_code = 410) AS gone
          FROM cur
         WHERE cur.holds
         GROUP BY cur.webhook_id
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
                OR w.last_success_at < now() - interval '1 second')
    ), freed AS (
        -- webhooks that were at the in-flight cap, whose due rows claims passed over
        SELECT 1
          FROM per_webhook s
         WHERE v_cap > 0
           AND (SELECT count(*) FROM (SELECT 1 FROM hooks.deliveries x
                                       WHERE x.webhook_id = s.webhook_id AND x.status = 'in_flight'
                                         AND x.next_attempt_at > now()
                                       LIMIT v_cap) AS f) >= v_cap
    )
    SELECT (SELECT count(*) FROM upd), EXISTS (SELECT 1 FROM freed) INTO v_applied, v_freed;
    -- Requests of such a webhook finished: wake the senders, whose last claim may have found
    -- nothing else to do (sent on commit).
    IF v_freed THEN
        PERFORM pg_notify('hooks_deliveries', '');
    END IF;
    RETURN v_applied;
END
$$;

-- Gives back claimed deliveries that were never sent: due at once, the attempt not counted
-- (the lease token is not reused: the next claim issues a new one).
-- Plans: as in hooks.complete.
CREATE OR REPLACE FUNCTION hooks.release(sender_id text, deliveries jsonb) RETURNS integer
LANGUAGE plpgsql SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off AS $$
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
        UPDATE hooks.deliveries d
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

-------------------------------------------------------------------------------------------------
-- The wake-up check once per publishing transaction: a trigger on hooks.events (one row per
-- publish) armed by publish when it queued deliveries, instead of one firing per delivery row
-------------------------------------------------------------------------------------------------
DROP TRIGGER deliveries_wake_sender ON hooks.deliveries;
CREATE OR REPLACE FUNCTION hooks._wake_sender() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('beema_hooks.wake_needed', true) IS DISTINCT FROM 'on'
       OR current_setting('beema_hooks.wake_checked', true) = 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('beema_hooks.wake_checked', 'on', true);
    PERFORM pg_advisory_xact_lock_shared(hooks._lock_key('commit'));
    IF pg_try_advisory_xact_lock(hooks._lock_key('awake')) THEN
        PERFORM pg_notify('hooks_deliveries', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER events_wake_sender
    AFTER INSERT ON hooks.events
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION hooks._wake_sender();

-- Publishes an event inside the caller's transaction: one hooks.events row, and one
-- hooks.deliveries row per matching webhook (which arms the sender's wake-up on commit, below). Returns the
-- event id; publishing the same "id" again for a tenant returns the first event's id and writes
-- nothing. Errors: 22004 (NULL event, missing event name or tenant), 22023 (wrong shape or type,
-- naming the field), 54000 (larger than hooks.max_payload_bytes or nested too deep), 42501 (the
-- session's hooks.tenant_id names another tenant).
CREATE OR REPLACE FUNCTION hooks.publish(event jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    p        record;
    v_id     bigint;
BEGIN
    IF event IS NULL THEN
        RAISE EXCEPTION 'hooks.publish: event must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass a JSON object such as {"event": "policy/bound", "data": {"tenantId": "acme"}}.';
    END IF;

    SELECT * INTO STRICT p
      FROM hooks._prepare_event(event::text,
                                to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'));
    IF nullif(current_setting('hooks.tenant_id', true), '') <> p.tenant_id THEN
        RAISE EXCEPTION 'hooks.publish: this session is tenant %, the event is for tenant %',
                        current_setting('hooks.tenant_id'), p.tenant_id
            USING ERRCODE = 'insufficient_privilege';
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

    INSERT INTO hooks.deliveries (webhook_id, event_id, tenant_id, event_type)
    SELECT m.webhook_id, v_id, p.tenant_id, p.event_type
      FROM hooks.match(p.event_type, p.tenant_id) m;
    IF FOUND THEN
        -- arm the wake-up check at commit (below); a rolled-back savepoint disarms it again
        PERFORM set_config('beema_hooks.wake_needed', 'on', true);
    END IF;
    RETURN v_id;
END
$$;

-- Sends one delivery again: due now with a fresh attempt budget and the same delivery uuid
-- (receivers dedup on it), and wakes the senders on commit. 55000 while it is in flight or its
-- webhook is disabled.
CREATE OR REPLACE FUNCTION hooks.retry_delivery(delivery_id bigint) RETURNS hooks.deliveries
LANGUAGE plpgsql AS $$
DECLARE
    d hooks.deliveries;
BEGIN
    SELECT * INTO d FROM hooks.deliveries x WHERE x.delivery_id = retry_delivery.delivery_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'delivery % does not exist', delivery_id USING ERRCODE = 'no_data_found';
    END IF;
    IF d.status = 'in_flight' THEN
        RAISE EXCEPTION 'delivery % is in flight', delivery_id
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'Wait for its result.';
    END IF;
    IF NOT (hooks._webhook(d.webhook_id)).enabled THEN
        RAISE EXCEPTION 'the webhook of delivery % is disabled', delivery_id
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'Enable it with hooks.enable_webhook first.';
    END IF;
    UPDATE hooks.deliveries x
       SET status = 'pending', attempt_number = 0, next_attempt_at = now(), error_message = NULL,
           delivered_at = NULL, updated_at = now()
     WHERE x.delivery_id = d.delivery_id
    RETURNING * INTO d;
    PERFORM pg_notify('hooks_deliveries', '');  -- wake the senders on commit
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
BEGIN
    SELECT * INTO e FROM hooks.events x WHERE x.event_id = replay_event.event_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'event % does not exist', event_id USING ERRCODE = 'no_data_found';
    END IF;
    IF webhook_id IS NOT NULL AND (hooks._webhook(webhook_id)).tenant_id <> e.tenant_id THEN
        RAISE EXCEPTION 'webhook % belongs to another tenant than event %', webhook_id, event_id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO hooks.deliveries AS d (webhook_id, event_id, tenant_id, event_type)
    SELECT w.webhook_id, e.event_id, e.tenant_id, e.event_type
      FROM hooks.webhooks w
     WHERE CASE WHEN replay_event.webhook_id IS NULL
                THEN w.webhook_id IN (SELECT m.webhook_id FROM hooks.match(e.event_type, e.tenant_id) m)
                ELSE w.webhook_id = replay_event.webhook_id AND w.enabled END
    ON CONFLICT ON CONSTRAINT deliveries_event_webhook_key DO UPDATE
       SET status = 'pending', attempt_number = 0, next_attempt_at = now(), error_message = NULL,
           delivered_at = NULL, delivery_uuid = gen_random_uuid(), updated_at = now()
     WHERE d.status <> 'in_flight';
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM pg_notify('hooks_deliveries', '');  -- wake the senders on commit
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
    UPDATE hooks.deliveries d
       SET status = 'pending', attempt_number = 0, next_attempt_at = now(), error_message = NULL,
           updated_at = now()
     WHERE d.webhook_id = w.webhook_id AND d.status = 'failed' AND d.created_at >= coalesce(since, '-infinity');
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM pg_notify('hooks_deliveries', '');  -- wake the senders on commit
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
    INSERT INTO hooks.deliveries (webhook_id, event_id, tenant_id, event_type)
    VALUES (w.webhook_id, eid, w.tenant_id, p.event_type)
    RETURNING delivery_id INTO did;
    PERFORM set_config('beema_hooks.wake_needed', 'on', true);  -- wake the senders on commit
    RETURN did;
END
$$;

-- CREATE (OR REPLACE) resets these (security.sql sets them at install)
ALTER FUNCTION hooks.publish(jsonb) SECURITY DEFINER SET search_path = pg_catalog, hooks;
ALTER FUNCTION hooks.claim(text, integer, interval, boolean) SECURITY DEFINER SET search_path = pg_catalog, hooks;
ALTER FUNCTION hooks.complete(text, jsonb) SECURITY DEFINER SET search_path = pg_catalog, hooks;
ALTER FUNCTION hooks.release(text, jsonb) SECURITY DEFINER SET search_path = pg_catalog, hooks;
REVOKE EXECUTE ON FUNCTION hooks.claim(text, integer, interval, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hooks.claim(text, integer, interval, boolean) TO hooks_sender;
