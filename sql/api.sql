-- beema_hooks SQL API: webhook triggers, publish, match, wake-ups, and the sender's
-- claim/complete/release. Runs after schema.sql and the Rust functions; ops.sql runs last.

-------------------------------------------------------------------------------------------------
-- Webhooks: validation on every write, whether through functions or plain DML.
-------------------------------------------------------------------------------------------------

CREATE FUNCTION hooks._webhook_before_write() RETURNS trigger
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

-- Disabling a webhook cancels its queued deliveries, unless the disabling holds them
-- (disabled_holds_queue: the system's disabling, or an admin's that asks for it): then they wait
-- for hooks.enable_webhook, until an admin's disable_webhook cancels them. What is in flight
-- finishes and is recorded.
CREATE FUNCTION hooks._webhook_after_disable() RETURNS trigger
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

-------------------------------------------------------------------------------------------------
-- The delivery state machine. Every change of a delivery's status goes through the functions
-- of this section; the statuses are the CHECKs of hooks.queue (live) and hooks.outcomes (final).
--
--   (publish, replay)          -> pending                        hooks._enqueue
--   pending, retrying          -> in_flight   (claim)            hooks.claim
--   pending, retrying          -> cancelled   (webhook disabled) hooks._finish
--                                 (a disabling that holds the queue: they wait, out of the due
--                                 range, until it is enabled; hooks.purge cancels those queued
--                                 longer than its retention window)
--   in_flight                  -> success, failed, retrying      hooks._outcome decides;
--                                              (a result)        hooks._finish / hooks._retry
--   in_flight                  -> pending, retrying (released)   hooks.release
--   in_flight, lease expired   -> retrying, or failed when that was the last attempt (claim)
--   success, failed, cancelled -> pending     (retry, replay, redeliver)  hooks._requeue
--
-- Live rows (pending, retrying, in_flight) are in hooks.queue, final ones in hooks.outcomes:
-- hooks._finish and hooks._requeue are the only moves between the two.
--
-- Ordered delivery (a webhook's ordering_key): a pending delivery may wait `behind` the head
-- of its key (never due) until hooks._order_settle lets it go, which hooks._finish calls when
-- a head ends (and hooks.skip_delivery, hooks.claim for keys a publisher held, the deletion of
-- a head). hooks.order_keys holds each key's head; hooks._enqueue and hooks._requeue set it.
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

CREATE TRIGGER outbox_after_delete
    AFTER DELETE ON hooks.outbox
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION hooks._outbox_after_delete();

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

CREATE TRIGGER deliveries_insert
    INSTEAD OF INSERT ON hooks.deliveries
    FOR EACH ROW EXECUTE FUNCTION hooks._deliveries_insert();

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

CREATE TRIGGER deliveries_update
    INSTEAD OF UPDATE ON hooks.deliveries
    FOR EACH ROW EXECUTE FUNCTION hooks._deliveries_update();

-- A DELETE from the view hooks.deliveries deletes the delivery with its attempts.
CREATE FUNCTION hooks._deliveries_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM hooks.outbox o WHERE o.delivery_id = OLD.delivery_id;
    RETURN OLD;
END
$$;

CREATE TRIGGER deliveries_delete
    INSTEAD OF DELETE ON hooks.deliveries
    FOR EACH ROW EXECUTE FUNCTION hooks._deliveries_delete();

-------------------------------------------------------------------------------------------------
-- Matching and publishing.
-------------------------------------------------------------------------------------------------

-- The enabled webhooks of a tenant whose pattern (event_type, or one of its event_types)
-- selects an event type, each once. hooks.publish uses this very function (the planner inlines
-- it). Exact patterns are found through an index; wildcard patterns through their literal
-- prefix (hooks._prefixes(), in Rust), then tested with hooks.pattern_matches(), so a tenant's
-- unrelated patterns are never read. Further patterns (hooks.webhook_patterns) the same way; a
-- webhook they select is left out when its event_type selected it already.
CREATE FUNCTION hooks.match(event_type text, tenant_id text) RETURNS SETOF hooks.webhooks
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

-- Raises 42501, saying why, unless role `publisher` may publish for every tenant of `tenants`.
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
CREATE FUNCTION hooks.publish(event jsonb) RETURNS bigint
LANGUAGE sql AS $$
    SELECT hooks._publish(event, hooks._session_role())
$$;

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

-- The lease fence, the one rule for whether a sender's result or release still applies: the
-- delivery is in flight, leased to this sender, under the same lease. A lease is named by its
-- token (hooks.claim issues a new one for every lease, never reused); a result without one
-- (a sender older than 0.3.0) is fenced by the attempt number instead, as 0.2.0 did.
-- The status test is written as coalesce(...) so that the planner cannot match it to the
-- partial index queue_in_flight_idx: in a queue the statistics say "nothing in flight" as often
-- as not, and the generic plan of complete's retry step then read every lease of the sender
-- once per result (1,344 leases x 64 results: 33 ms) instead of its rows by primary key.
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

-- The advisory lock keys of beema_hooks, named once. 'awake' and 'commit' are the wake-up locks
-- (below); 'claims' is the turn that claims take while webhooks have an in-flight cap
-- (hooks._claim_turn). (A webhook's claim lock is its row's lock, not a key: hooks.claim.)
-- Any other name gives NULL. Inlined and folded to a constant when a statement is planned, so
-- naming a key costs nothing at run time.
CREATE FUNCTION hooks._lock_key(name text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE $1
               WHEN 'commit' THEN 7233327398000001
               WHEN 'awake'  THEN 7233327398000002
               WHEN 'claims' THEN 7233327398000003
           END::bigint
$$;

-------------------------------------------------------------------------------------------------
-- Wake-ups. NOTIFY makes a committing transaction take a cluster-wide lock, so publishers only
-- notify when no sender is awake. Two advisory locks, neither of them MVCC (so the check is
-- right at any isolation level):
--   "awake" lock (hooks._lock_key('awake')): every awake sender holds it in shared mode on its claim
--       session (taken by hooks.claim when it returns rows, dropped when it returns none, and
--       dropped by Postgres when the session dies). A publisher that can take it exclusively
--       knows no sender is awake, and notifies.
--   "commit" lock (hooks._lock_key('commit')): every publishing transaction holds it in shared mode from
--       its wake-up check until its commit is visible (and so does a hooks.complete whose results
--       free a webhook at the in-flight cap). A sender going idle takes it exclusively
--       once (waiting for those commits) and then claims again, so a publisher that saw it awake
--       is never missed. A publisher never waits for it: when it is held exclusively (by a
--       sender going idle, or by any session, since any role may take any advisory lock key),
--       the publisher notifies instead. A session holding either key can at worst make the
--       senders rely on their poll, never hold up or fail a commit.
-- The NOTIFY itself is hooks._notify_at_commit(): in the native flavor sent by a commit callback,
-- so that a transaction that is prepared (two-phase commit) sends none and can be prepared.
-- The check runs at commit, once per transaction, in a deferred trigger on hooks.events (one row
-- per publish, not one per delivery), and only when the transaction queued deliveries: publish
-- and test_webhook then set the transaction-local beema_hooks.wake_needed (a rolled-back
-- savepoint resets it with its rows; a SQL function setting it cost a plan per publish).
-- Rolled-back transactions never reach the check. NOTIFY sends on commit only.
-------------------------------------------------------------------------------------------------

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

CREATE FUNCTION hooks._wake_sender() RETURNS trigger
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

-- Waits until every publishing transaction that is committing has finished (see above), at most
-- 200 ms: a commit can take longer (a slow WAL flush, a synchronous standby, the application's
-- own deferred triggers, a prepared two-phase commit, or any session holding the key). Then it
-- notifies at commit, and the senders look and wait again until those commits are visible.
CREATE FUNCTION hooks._commit_barrier() RETURNS void
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

-------------------------------------------------------------------------------------------------
-- The sender's API (docs/sender-api.md). The sender reads no table; these own every transition.
-------------------------------------------------------------------------------------------------

-- An integer setting: an admin's row in hooks.settings, else the session's (or database's)
-- setting, else the default. PL/pgSQL for the reason given at hooks._may_publish (claim and
-- complete read three to five settings per call).
CREATE FUNCTION hooks._setting_int(name text, fallback integer) RETURNS integer
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN coalesce((SELECT s.value FROM hooks.settings s WHERE s.name = _setting_int.name),
                    nullif(current_setting(_setting_int.name, true), '')::integer, fallback);
END
$$;

CREATE FUNCTION hooks._check_sender_id(sender_id text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF sender_id IS NULL OR sender_id = '' OR length(sender_id) > 255 THEN
        RAISE EXCEPTION 'sender_id must be 1 to 255 characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
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
CREATE FUNCTION hooks.complete(sender_id text, results jsonb) RETURNS integer
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
CREATE FUNCTION hooks.release(sender_id text, deliveries jsonb) RETURNS integer
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
