-- beema_hooks operations: views and metrics for DBAs, and management functions.
-- Runs last in the install script. Missing objects raise P0002 (no_data_found); actions that
-- do not fit an object's state raise 55000 (object_not_in_prerequisite_state).

-------------------------------------------------------------------------------------------------
-- Views and metrics.
-------------------------------------------------------------------------------------------------

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

-- Per-webhook health over the last 24 hours of attempts, with the breaker's state. The
-- attempts are counted for all webhooks in one pass (most of them are final attempts kept in
-- hooks.outcomes, found by its index on the time they ended); a query for one webhook counts
-- only its attempts.
CREATE VIEW hooks.webhook_health AS
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

-- The queue at a glance, for monitoring with nothing but SQL. Reads only hooks.queue (the live
-- deliveries), so it stays cheap whatever the size of the history.
CREATE FUNCTION hooks.metrics()
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

-------------------------------------------------------------------------------------------------
-- Management. Plain DML on hooks.webhooks is validated the same way; these add the lookups,
-- state changes and defaults people expect.
-------------------------------------------------------------------------------------------------

CREATE FUNCTION hooks._webhook(webhook_id bigint) RETURNS hooks.webhooks
LANGUAGE plpgsql STABLE AS $$
DECLARE
    w hooks.webhooks;
BEGIN
    SELECT * INTO w FROM hooks.webhooks x WHERE x.webhook_id = _webhook.webhook_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook % does not exist', webhook_id USING ERRCODE = 'no_data_found';
    END IF;
    RETURN w;
END
$$;

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
CREATE FUNCTION hooks.update_webhook(webhook_id bigint, changes jsonb) RETURNS hooks.webhooks
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

-- Enables a webhook and resets its circuit breaker; the deliveries its disabling held are due
-- again (the senders are woken on commit).
CREATE FUNCTION hooks.enable_webhook(webhook_id bigint) RETURNS hooks.webhooks
LANGUAGE plpgsql AS $$
DECLARE
    w hooks.webhooks := hooks._webhook(webhook_id);
BEGIN
    UPDATE hooks.webhooks x
       SET enabled = true, consecutive_failures = 0, failing_since = NULL, paused_until = NULL
     WHERE x.webhook_id = w.webhook_id
    RETURNING * INTO w;
    RETURN w;
END
$$;

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

-- Deletes a webhook with its deliveries and their attempts. Returns false when it did not exist.
CREATE FUNCTION hooks.delete_webhook(webhook_id bigint) RETURNS boolean
LANGUAGE sql AS $$
    WITH gone AS (DELETE FROM hooks.webhooks x WHERE x.webhook_id = $1 RETURNING 1)
    SELECT count(*) > 0 FROM gone
$$;

-- Replaces a webhook's secret and returns the new one (generated when NULL). For `grace` the
-- old secret still signs every delivery: webhook-signature then carries two v1 signatures, so
-- receivers verifying with either secret accept it. X-Beema-Signature (one value) uses the new
-- secret at once.
CREATE FUNCTION hooks.rotate_secret(webhook_id bigint, new_secret text DEFAULT NULL,
                                    grace interval DEFAULT '24 hours')
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    w hooks.webhooks := hooks._webhook(webhook_id);
BEGIN
    IF grace IS NULL OR grace < interval '0' OR grace > interval '30 days' THEN
        RAISE EXCEPTION 'grace must be between 0 and 30 days' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE hooks.webhooks x
       SET secret = coalesce(new_secret, hooks.generate_secret()),
           previous_secret = w.secret,
           previous_secret_expires_at = now() + grace
     WHERE x.webhook_id = w.webhook_id
    RETURNING * INTO w;
    RETURN w.secret;
END
$$;

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
CREATE FUNCTION hooks.retry_delivery(delivery_id bigint) RETURNS hooks.deliveries
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

-- Replays an event to every webhook that matches it now, payload filters included (or only to
-- `webhook_id`, which must belong to the event's tenant, whatever its filters). Each replayed delivery gets a new delivery uuid, since receivers dedup
-- on it; deliveries in flight are left alone. Returns the number of deliveries queued; when
-- any, the senders are woken on commit.
CREATE FUNCTION hooks.replay_event(event_id bigint, webhook_id bigint DEFAULT NULL) RETURNS integer
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
CREATE FUNCTION hooks.redeliver_failed(webhook_id bigint, since timestamptz) RETURNS integer
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
CREATE FUNCTION hooks.test_webhook(webhook_id bigint) RETURNS bigint
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

-------------------------------------------------------------------------------------------------
-- Webhooks on table changes (README, "Webhooks on table changes").
-------------------------------------------------------------------------------------------------

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

-------------------------------------------------------------------------------------------------
-- Retention.
-------------------------------------------------------------------------------------------------

-- Deletes finished deliveries (success, failed, cancelled) last changed more than `older_than`
-- ago, with their attempts, then events older than that with no delivery left. Works in
-- batches of `batch_size` rows taken with SKIP LOCKED, so it never waits on, or holds up,
-- publish and claim. With `commit_each_batch` (the default) it commits after every batch, so no
-- lock or snapshot is held for long; that needs CALL outside a transaction block (2D000
-- otherwise), like VACUUM. Returns the rows deleted in `deleted`. Also forgets rotated-out
-- secrets past their grace period and senders not seen for `older_than`, and cancels the
-- deliveries a disabled webhook holds (README, "Disabled webhooks") that were queued before then.
--   CALL hooks.purge('30 days');
CREATE PROCEDURE hooks.purge(older_than interval DEFAULT '30 days', batch_size integer DEFAULT 5000,
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
