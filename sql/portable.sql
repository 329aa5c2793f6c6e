-- beema_hooks, portable flavor: PL/pgSQL + pgcrypto twins of the functions the native flavor
-- writes in Rust (beema_hooks_ext/src, rules in crates/hooks_core). Same names, arguments,
-- volatility, results, SQLSTATEs and messages. scripts/portable.sh puts this file where the
-- native install script has the Rust functions: after schema.sql, before api.sql. The native
-- flavor never runs it. tests/tests/twins.rs runs every twin and its original over a generated
-- corpus and requires the same result or the same SQLSTATE.
--
-- The input of hooks._prepare_event is always the text of a jsonb value (hooks.publish,
-- hooks.match, test_webhook and watched tables pass `event::text`), so its keys are unique and
-- in jsonb order, and its only whitespace outside strings is the space after ':' and ','.
-- What a library would do and PL/pgSQL cannot: signatures are compared with `=`, not in
-- constant time (the receivers verify, not the database; hooks.verify is a test helper).

-- pgcrypto, wherever it was created (public, extensions, ...): its two functions used here are
-- bound at install time through these wrappers, so no search_path decides which runs.
DO $install$
DECLARE
    s name;
BEGIN
    SELECT n.nspname INTO s
      FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'pgcrypto';
    IF pg_catalog.current_setting('server_encoding') <> 'UTF8' THEN
        RAISE EXCEPTION 'beema_hooks (portable) needs a UTF8 database, this one is %', pg_catalog.current_setting('server_encoding')
            USING ERRCODE = 'feature_not_supported';
    END IF;
    IF s IS NULL THEN
        RAISE EXCEPTION 'beema_hooks (portable) needs pgcrypto in this database'
            USING ERRCODE = 'undefined_object', HINT = 'Run CREATE EXTENSION pgcrypto; first.';
    END IF;
    EXECUTE format($f$
        CREATE FUNCTION hooks._hmac_sha256(key bytea, message bytea) RETURNS bytea
        LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS 'SELECT %I.hmac($2, $1, ''sha256'')'$f$, s);
    EXECUTE format($f$
        CREATE FUNCTION hooks._random_bytes(n integer) RETURNS bytea
        LANGUAGE sql VOLATILE STRICT PARALLEL SAFE AS 'SELECT %I.gen_random_bytes($1)'$f$, s);
END
$install$;

-- The UTF-8 bytes of a text (the database's bytes: the portable flavor needs a UTF8 database).
-- Immutable, unlike convert_to, so that the signing functions built on it are inlined.
CREATE FUNCTION hooks._utf8(t text) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT decode(replace($1, '\', '\\'), 'escape')
$$;

-------------------------------------------------------------------------------------------------
-- Errors and messages as the native flavor words them (beema_hooks_ext/src/errors.rs).
-------------------------------------------------------------------------------------------------

-- Raises `<context>: invalid|missing <field>: <message>` or `<context>: <field> too large: ...`
-- with SQLSTATE 22023, 22004 or 54000 and DETAIL `field: <field>`, as errors.rs::raise does.
CREATE FUNCTION hooks._raise(context text, kind text, field text, message text) RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    CASE kind
    WHEN 'invalid' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', DETAIL = 'field: ' || field,
            MESSAGE = context || ': invalid ' || field || ': ' || message;
    WHEN 'missing' THEN
        RAISE EXCEPTION USING ERRCODE = 'null_value_not_allowed', DETAIL = 'field: ' || field,
            MESSAGE = context || ': missing ' || field || ': ' || message;
    ELSE
        RAISE EXCEPTION USING ERRCODE = 'program_limit_exceeded', DETAIL = 'field: ' || field,
            MESSAGE = context || ': ' || field || ' too large: ' || message;
    END CASE;
END
$$;

-- The characters Rust's `{:?}` writes as \u{..}: control characters (Cc), separators (Zs but the
-- space, Zl, Zp) and the common format characters (Cf). Rarer ones it also escapes (unassigned,
-- private use, combining marks) are left as they are: only such messages can differ.
CREATE FUNCTION hooks._unprintable() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT '([\u0001-\u001f\u007f-\u00a0\u00ad\u1680\u2000-\u200f\u2028-\u202f\u205f-\u2064\u3000\ufeff])'::text
$$;

-- A string quoted as Rust's `{:?}` quotes it in the native flavor's messages.
CREATE FUNCTION hooks._dbg(s text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    out text := replace(replace(replace(replace(replace(s, '\', '\\'), '"', '\"'),
                        E'\n', '\n'), E'\r', '\r'), E'\t', '\t');
    c   text;
BEGIN
    FOR c IN SELECT DISTINCT m[1] FROM regexp_matches(out, hooks._unprintable(), 'g') AS m LOOP
        out := replace(out, c, '\u{' || to_hex(ascii(c)) || '}');
    END LOOP;
    RETURN '"' || out || '"';
END
$$;

-- A character quoted as Rust's `{:?}` quotes it ('x', '\t', ' ').
CREATE FUNCTION hooks._dbg_char(c text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE $1 WHEN E'\t' THEN '''\t''' WHEN E'\n' THEN '''\n''' WHEN E'\r' THEN '''\r'''
                   WHEN '''' THEN '''\''''' WHEN '\' THEN '''\\'''
                   ELSE CASE WHEN $1 ~ hooks._unprintable()
                             THEN '''\u{' || to_hex(ascii($1)) || '}'''
                             ELSE '''' || $1 || '''' END END
$$;

-- How users name a JSON value's type in messages (hooks_core error.rs json_type).
CREATE FUNCTION hooks._json_type(v jsonb) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE jsonb_typeof($1) WHEN 'object' THEN 'an object' WHEN 'array' THEN 'an array'
                                 WHEN 'string' THEN 'a string' WHEN 'number' THEN 'a number'
                                 WHEN 'boolean' THEN 'a boolean' ELSE 'null' END
$$;

-- JSON text without whitespace between tokens: the body serde_json writes for the same value
-- (strings are left as they are; jsonb already escapes them as serde_json does). Postgres'
-- json_strip_nulls writes exactly that, 20 times faster than the regular expression, but drops
-- null members: it serves texts without "null" anywhere.
CREATE FUNCTION hooks._compact(json text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN strpos($1, 'null') = 0 THEN json_strip_nulls($1::json)::text
                ELSE regexp_replace($1, '("(?:[^"\\]|\\.)*")|[ \t\n\r]+', '\1', 'g') END
$$;

-- Canonical standard base64 (padded, no stray bits, no whitespace), decoded; NULL otherwise.
-- (Not STRICT, so that it is inlined; NULL gives NULL.)
CREATE FUNCTION hooks._b64_decode(b64 text) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN $1 ~ '^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$'
                THEN decode($1, 'base64') END
$$;

-------------------------------------------------------------------------------------------------
-- Event types and patterns (hooks_core pattern.rs).
-------------------------------------------------------------------------------------------------

-- Control characters (Unicode Cc) or whitespace (Unicode White_Space): what Rust's
-- char::is_control and char::is_whitespace find.
CREATE FUNCTION hooks._first_blank(s text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT substring($1 from '[\u0001-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]')
$$;

-- Segments shared by event types and patterns: non-empty, at most 255 bytes, no whitespace or
-- control characters, no empty segment.
CREATE FUNCTION hooks._check_segments(context text, field text, s text, what text) RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    c text;
BEGIN
    IF s = '' THEN
        PERFORM hooks._raise(context, 'invalid', field, what || ' must not be empty');
    END IF;
    IF octet_length(s) > 255 THEN
        PERFORM hooks._raise(context, 'invalid', field,
                             format('%s is %s bytes long; the limit is 255', what, octet_length(s)));
    END IF;
    c := hooks._first_blank(s);
    IF c IS NOT NULL THEN
        PERFORM hooks._raise(context, 'invalid', field,
            format('%s %s contains the character %s; whitespace and control characters are not allowed',
                   what, hooks._dbg(s), hooks._dbg_char(c)));
    END IF;
    IF s ~ '(^|[/.])([/.]|$)' THEN
        PERFORM hooks._raise(context, 'invalid', field,
            format('%s %s has an empty segment (segments are separated by ''/'' or ''.'')', what, hooks._dbg(s)));
    END IF;
END
$$;

-- A webhook pattern: `*`, or segments where `*` stands for a whole segment.
CREATE FUNCTION hooks._check_pattern(context text, field text, pattern text) RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    seg text;
BEGIN
    IF pattern = '*' THEN
        RETURN;
    END IF;
    PERFORM hooks._check_segments(context, field, pattern, 'pattern');
    SELECT x.s INTO seg
      FROM unnest(regexp_split_to_array(pattern, '[/.]')) WITH ORDINALITY AS x(s, i)
     WHERE strpos(x.s, '*') > 0 AND x.s <> '*'
     ORDER BY x.i LIMIT 1;
    IF seg IS NOT NULL THEN
        PERFORM hooks._raise(context, 'invalid', field,
            format('pattern %s has the segment %s; ''*'' must stand for a whole segment, as in ''claim/*'' or ''*.created''',
                   hooks._dbg(pattern), hooks._dbg(seg)));
    END IF;
END
$$;

-- Twins of generate_signing_key, public_key, sign_standard_v1a and verify_standard_v1a
-- (signing.rs): pgcrypto has no ed25519, so the portable flavor signs no v1a signatures. Each
-- raises 0A000 (feature_not_supported), and so does writing a webhook that asks for them.
CREATE FUNCTION hooks.generate_signing_key() RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION 'hooks: v1a (ed25519) signatures need the native flavor: pgcrypto has no ed25519'
        USING ERRCODE = 'feature_not_supported';
END
$$;
CREATE FUNCTION hooks.public_key(signing_key text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
    RETURN hooks.generate_signing_key();
END
$$;
CREATE FUNCTION hooks.sign_standard_v1a(msg_id text, "timestamp" bigint, body text, signing_key text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
    RETURN hooks.generate_signing_key();
END
$$;
CREATE FUNCTION hooks.verify_standard_v1a(msg_id text, "timestamp" bigint, body text, public_key text, signature text)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
    RETURN hooks.generate_signing_key() IS NOT NULL;
END
$$;

-- Twin of _notify_at_commit (wake.rs): the NOTIFY that wakes the senders, sent when the
-- transaction commits. Without a library there is no commit callback: it is queued at once, so
-- a transaction that will be prepared (two-phase commit) sets hooks.wake = 'poll' first
-- (README, "Wake-ups").
CREATE FUNCTION hooks._notify_at_commit() RETURNS void
LANGUAGE sql VOLATILE AS $$
    SELECT pg_notify('hooks_deliveries', '')
$$;

-- The regular expression a wildcard pattern stands for: its text with every character special
-- to regular expressions escaped, and each `*` that is a whole segment as `[^/.]+` (one
-- non-empty segment); `claim/*` gives ^claim/[^/.]+$. A `*` inside a segment stays literal.
CREATE FUNCTION hooks._pattern_regex(pattern text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT '^' || regexp_replace(regexp_replace($1, '[]^.$|(){}+?*\\[]', '\\\&', 'g'),
                                 '(^|/|\\\.)\\\*(?=$|/|\\\.)', '\1[^/.]+', 'g') || '$'
$$;

-- Twin of pattern_matches (publish.rs): `*` matches every event type; a `*` segment matches
-- exactly one non-empty segment; separators must agree. NULL in, NULL out. (PL/pgSQL, whose
-- simple expressions run without an executor per call: a SQL function with a subquery cost
-- 40 us a call. COST 1, as the native function's, so that the planner orders hooks.match's
-- tests alike in both flavors.)
CREATE FUNCTION hooks.pattern_matches(pattern text, event_type text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE COST 1 AS $$
BEGIN
    RETURN CASE WHEN pattern = '*' THEN true
                WHEN strpos(pattern, '*') = 0 THEN pattern = event_type
                ELSE event_type ~ hooks._pattern_regex(pattern)
           END;
END
$$;

-- Twin of _prefixes (publish.rs): '' and each prefix of the event type that ends with a
-- separator ({"",claim/} for claim/opened). NULL in, NULL out.
CREATE FUNCTION hooks._prefixes(event_type text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    seps text := translate(event_type, '.', '/');
    out  text[] := ARRAY[''];
    pos  integer := 0;
    n    integer;
BEGIN
    LOOP
        n := strpos(substr(seps, pos + 1), '/');
        EXIT WHEN n = 0;
        pos := pos + n;
        out := out || left(event_type, pos);
    END LOOP;
    RETURN out;
END
$$;

-------------------------------------------------------------------------------------------------
-- Events (hooks_core event.rs).
-------------------------------------------------------------------------------------------------

-- A tenant id or event id: a non-empty string of at most 255 bytes without control characters.
CREATE FUNCTION hooks._id_string(field text, v jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    s text;
BEGIN
    IF jsonb_typeof(v) <> 'string' THEN
        PERFORM hooks._raise('hooks.publish', 'invalid', field,
                             format('%s must be a string, got %s', field, hooks._json_type(v)));
    END IF;
    s := v #>> '{}';
    IF s = '' THEN
        PERFORM hooks._raise('hooks.publish', 'invalid', field, field || ' must not be empty');
    END IF;
    IF octet_length(s) > 255 THEN
        PERFORM hooks._raise('hooks.publish', 'invalid', field,
                             format('%s is %s bytes long; the limit is 255', field, octet_length(s)));
    END IF;
    IF s ~ '[\u0001-\u001f\u007f-\u009f]' THEN
        PERFORM hooks._raise('hooks.publish', 'invalid', field, field || ' contains control characters');
    END IF;
    RETURN s;
END
$$;

-- Twin of _prepare_event (publish.rs, event.rs): validates an event (the text of a jsonb value)
-- and builds its delivery body `{"id","event","data","user","timestamp",...the other fields}`,
-- byte for byte what the native flavor builds. NULL input returns no row.
CREATE FUNCTION hooks._prepare_event(event text, now text)
RETURNS TABLE (tenant_id text, event_type text, event_key text, body text)
LANGUAGE plpgsql STRICT VOLATILE PARALLEL SAFE AS $$
DECLARE
    -- (the session's own limit, hooks.max_payload_bytes, 64 MiB when unset, as the native
    -- setting's default; the admin's limit in hooks.settings is applied by the callers)
    c_max   constant integer := least(greatest(coalesce(nullif(current_setting('hooks.max_payload_bytes', true), '')::integer, 67108864), 1024), 67108864);
    v       jsonb;
    v_field text;
    v_name  jsonb;
    v_data  jsonb;
    v_user  jsonb;
    v_ts    jsonb;
    v_rest  text;
    v_type  text;
    v_tid   text;
    v_key   text;
    v_body  text;
    v_nest  text;
BEGIN
    IF octet_length(event) > c_max THEN
        PERFORM hooks._raise('hooks.publish', 'too large', 'event',
            format('event is %s bytes of JSON; the limit is %s (setting hooks.max_payload_bytes)', octet_length(event), c_max));
    END IF;
    BEGIN
        v := event::jsonb;
    EXCEPTION WHEN invalid_text_representation THEN
        PERFORM hooks._raise('hooks.publish', 'invalid', 'event', 'event is not valid JSON: ' || SQLERRM);
    END;
    -- more than 127 nested arrays and objects: what serde_json refuses. Counted only when there
    -- are that many brackets at all, by removing the innermost empty pairs 127 times.
    IF octet_length(event) - octet_length(translate(event, '[{', '')) > 127 THEN
        v_nest := regexp_replace(regexp_replace(event, '"(?:[^"\\]|\\.)*"', '', 'g'), '[^][{}]+', '', 'g');
        FOR i IN 1..127 LOOP
            EXIT WHEN v_nest = '';
            v_nest := regexp_replace(v_nest, '\[\]|\{\}', '', 'g');
        END LOOP;
        IF v_nest <> '' THEN
            PERFORM hooks._raise('hooks.publish', 'too large', 'event', 'event nests deeper than 127 levels');
        END IF;
    END IF;
    IF jsonb_typeof(v) <> 'object' THEN
        PERFORM hooks._raise('hooks.publish', 'invalid', 'event',
                             'event must be a JSON object, got ' || hooks._json_type(v));
    END IF;

    IF v ? 'event' THEN
        v_field := 'event';
    ELSIF v ? 'name' THEN
        v_field := 'name';
    ELSE
        PERFORM hooks._raise('hooks.publish', 'missing', 'event', 'event has no "event" (or "name") field naming its type');
    END IF;
    v_name := v -> v_field;
    IF jsonb_typeof(v_name) <> 'string' THEN
        PERFORM hooks._raise('hooks.publish', 'invalid', v_field,
                             format('%s must be a string, got %s', v_field, hooks._json_type(v_name)));
    END IF;
    v_type := v_name #>> '{}';
    -- (the usual ASCII event type passes one test; anything else gets every check and its message)
    IF NOT (v_type ~ '^[A-Za-z0-9_-]+([/.][A-Za-z0-9_-]+)*$' AND octet_length(v_type) <= 255) THEN
        PERFORM hooks._check_segments('hooks.publish', v_field, v_type, 'event type');
    END IF;
    IF strpos(v_type, '*') > 0 THEN
        PERFORM hooks._raise('hooks.publish', 'invalid', v_field,
            format('event type %s contains ''*''; wildcards belong in webhook patterns, not in events', hooks._dbg(v_type)));
    END IF;

    v_data := v -> 'data';
    IF v_data IS NULL OR v_data = 'null' THEN
        v_data := '{}';
    ELSIF jsonb_typeof(v_data) <> 'object' THEN
        PERFORM hooks._raise('hooks.publish', 'invalid', 'data', 'data must be an object, got ' || hooks._json_type(v_data));
    END IF;
    v_user := v -> 'user';
    IF v_user IS NULL OR v_user = 'null' THEN
        v_user := '{}';
    ELSIF jsonb_typeof(v_user) <> 'object' THEN
        PERFORM hooks._raise('hooks.publish', 'invalid', 'user', 'user must be an object, got ' || hooks._json_type(v_user));
    END IF;

    v_tid := v_data ->> 'tenantId';
    IF jsonb_typeof(v_data -> 'tenantId') = 'string' AND octet_length(v_tid) BETWEEN 1 AND 255
       AND v_tid !~ '[^\u0020-\u007e]' THEN
        NULL;  -- (the usual ASCII tenant id: valid as it is)
    ELSIF v_data ? 'tenantId' THEN
        v_tid := hooks._id_string('data.tenantId', v_data -> 'tenantId');
    ELSIF v ? 'tenantId' THEN
        v_tid := hooks._id_string('tenantId', v -> 'tenantId');
    ELSE
        PERFORM hooks._raise('hooks.publish', 'missing', 'data.tenantId',
                             'event names no tenant: set data.tenantId (or a top-level tenantId)');
    END IF;

    IF v -> 'id' IS NULL OR v -> 'id' = 'null' THEN
        v_key := gen_random_uuid()::text;
    ELSE
        v_key := hooks._id_string('id', v -> 'id');
    END IF;

    v_ts := v -> 'timestamp';
    IF v_ts IS NULL OR v_ts = 'null' THEN
        v_ts := to_jsonb(now);
    ELSIF NOT ((jsonb_typeof(v_ts) = 'string' AND octet_length(v_ts #>> '{}') BETWEEN 1 AND 64)
               OR (jsonb_typeof(v_ts) = 'number' AND v_ts::text ~ '^[0-9]{1,20}$'
                   AND v_ts::text::numeric <= 18446744073709551615)) THEN
        PERFORM hooks._raise('hooks.publish', 'invalid', 'timestamp',
            'timestamp must be a non-empty string of at most 64 characters or a non-negative integer (epoch milliseconds), got '
            || hooks._json_type(v_ts));
    END IF;

    -- jsonb's text of each part, whitespace between tokens taken out once for the whole body
    v_rest := (v - ARRAY['event', 'name', 'data', 'user', 'id', 'timestamp'])::text;
    v_body := hooks._compact('{"id":' || to_json(v_key)::text || ',"event":' || to_json(v_type)::text
              || ',"data":' || v_data::text || ',"user":' || v_user::text || ',"timestamp":' || v_ts::text
              || CASE WHEN v_rest = '{}' THEN '}' ELSE ',' || substr(v_rest, 2) END);
    IF octet_length(v_body) > c_max THEN
        PERFORM hooks._raise('hooks.publish', 'too large', 'event',
            format('event body is %s bytes; the limit is %s (setting hooks.max_payload_bytes)', octet_length(v_body), c_max));
    END IF;
    RETURN QUERY SELECT v_tid, v_type, v_key, v_body;
END
$$;

-------------------------------------------------------------------------------------------------
-- Webhooks (hooks_core webhook.rs, retry.rs, envelope.rs).
-------------------------------------------------------------------------------------------------

-- An IPv4 host as WHATWG reads it (1 to 4 parts, each decimal, 0x-hex or 0-octal): does it parse?
CREATE FUNCTION hooks._ipv4_ok(host text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    parts text[] := string_to_array(regexp_replace(host, '\.$', ''), '.');
    n     integer := cardinality(parts);
    p     text;
    val   numeric;
    i     integer := 0;
BEGIN
    IF n > 4 OR n = 0 THEN
        RETURN false;
    END IF;
    FOREACH p IN ARRAY parts LOOP
        i := i + 1;
        IF p ~* '^0x[0-9a-f]*$' THEN
            val := 0;
            FOR j IN 3..length(p) LOOP
                val := val * 16 + ('x' || lpad(substr(p, j, 1), 8, '0'))::bit(32)::int;
            END LOOP;
        ELSIF p ~ '^0[0-9]+$' THEN
            IF p ~ '[89]' THEN
                RETURN false;
            END IF;
            val := 0;
            FOR j IN 2..length(p) LOOP
                val := val * 8 + substr(p, j, 1)::int;
            END LOOP;
        ELSIF p ~ '^[0-9]+$' THEN
            val := p::numeric;
        ELSE
            RETURN false;
        END IF;
        IF i < n AND val > 255 THEN
            RETURN false;
        END IF;
        IF i = n AND val >= 256::numeric ^ (5 - n) THEN
            RETURN false;
        END IF;
    END LOOP;
    RETURN true;
END
$$;

-- An absolute http(s) url with a host and no credentials, checked as the WHATWG parser of the
-- native flavor (the url crate) checks the urls webhooks use; the sender parses it again.
CREATE FUNCTION hooks._check_url(url text) RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    c_ctx  constant text := 'hooks.webhooks';
    scheme text;
    rest   text;
    auth   text;
    userinfo text;
    host   text;
    port   text;
    last_label text;
BEGIN
    IF octet_length(url) > 2048 THEN
        PERFORM hooks._raise(c_ctx, 'invalid', 'url', format('url is %s bytes long; the limit is 2048', octet_length(url)));
    END IF;
    IF hooks._first_blank(url) IS NOT NULL THEN
        PERFORM hooks._raise(c_ctx, 'invalid', 'url', 'url contains whitespace or control characters');
    END IF;
    scheme := lower(substring(url from '^([A-Za-z][A-Za-z0-9+.-]*):'));
    IF scheme IS NULL THEN
        PERFORM hooks._raise(c_ctx, 'invalid', 'url', 'url is not an absolute URL: relative URL without a base');
    END IF;
    IF scheme NOT IN ('http', 'https') THEN
        PERFORM hooks._raise(c_ctx, 'invalid', 'url', format('url scheme %s is not allowed; use http or https', hooks._dbg(scheme)));
    END IF;
    rest := regexp_replace(substr(url, length(scheme) + 2), '^[/\\]*', '');
    auth := substring(rest from '^[^/\\?#]*');
    IF strpos(auth, '@') > 0 THEN
        userinfo := substring(auth from '^(.*)@');
        auth := substring(auth from '^.*@(.*)$');
    END IF;
    IF auth LIKE '[%' THEN
        host := substring(auth from '^(\[[^]]*\])');
        port := substr(auth, coalesce(length(host), 0) + 1);
        IF host IS NULL OR host !~ '^\[[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\]$' THEN
            PERFORM hooks._raise(c_ctx, 'invalid', 'url', 'url is not an absolute URL: invalid IPv6 address');
        END IF;
        IF port <> '' AND port !~ '^:' THEN
            PERFORM hooks._raise(c_ctx, 'invalid', 'url', 'url is not an absolute URL: invalid port number');
        END IF;
        port := substr(port, 2);
    ELSE
        host := split_part(auth, ':', 1);
        port := substr(auth, length(host) + 2);
    END IF;
    IF host = '' THEN
        PERFORM hooks._raise(c_ctx, 'invalid', 'url', 'url is not an absolute URL: empty host');
    END IF;
    IF port <> '' AND (port !~ '^[0-9]+$' OR port::numeric > 65535) THEN
        PERFORM hooks._raise(c_ctx, 'invalid', 'url', 'url is not an absolute URL: invalid port number');
    END IF;
    IF host NOT LIKE '[%' THEN
        IF host ~ '[]\u0001-\u001f\u007f #%/:<>?@[\\^|]' THEN
            PERFORM hooks._raise(c_ctx, 'invalid', 'url', 'url is not an absolute URL: invalid domain character');
        END IF;
        last_label := substring(regexp_replace(host, '\.$', '') from '[^.]*$');
        IF (last_label ~ '^[0-9]+$' OR last_label ~* '^0x[0-9a-f]*$') AND NOT hooks._ipv4_ok(host) THEN
            PERFORM hooks._raise(c_ctx, 'invalid', 'url', 'url is not an absolute URL: invalid IPv4 address');
        END IF;
    END IF;
    IF userinfo IS NOT NULL AND userinfo NOT IN ('', ':') THEN
        PERFORM hooks._raise(c_ctx, 'invalid', 'url', 'url must not carry credentials; put them in headers instead');
    END IF;
END
$$;

-- A webhook's `headers`: an object of at most 50 strings, named by HTTP tokens, none of the
-- delivery's own headers, values of at most 4096 bytes without CR, LF or control characters.
CREATE FUNCTION hooks._check_headers(headers jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    c_ctx constant text := 'hooks.webhooks';
    h     record;
    field text;
BEGIN
    IF jsonb_typeof(headers) <> 'object' THEN
        PERFORM hooks._raise(c_ctx, 'invalid', 'headers',
                             'headers must be an object of strings, got ' || hooks._json_type(headers));
    END IF;
    IF (SELECT count(*) FROM jsonb_object_keys(headers)) > 50 THEN
        PERFORM hooks._raise(c_ctx, 'invalid', 'headers',
                             format('headers has %s entries; the limit is 50', (SELECT count(*) FROM jsonb_object_keys(headers))));
    END IF;
    FOR h IN SELECT * FROM jsonb_each(headers) LOOP
        field := 'headers.' || h.key;
        IF h.key !~ '^[A-Za-z0-9!#$%&''*+.^_`|~-]+$' THEN
            PERFORM hooks._raise(c_ctx, 'invalid', field, format('header name %s is not a valid HTTP token', hooks._dbg(h.key)));
        END IF;
        IF lower(h.key) IN ('x-beema-signature', 'x-beema-event', 'x-beema-delivery', 'webhook-id', 'webhook-timestamp',
                            'webhook-signature', 'content-type', 'content-length', 'content-encoding',
                            'transfer-encoding', 'host', 'connection', 'user-agent') THEN
            PERFORM hooks._raise(c_ctx, 'invalid', field,
                format('header %s is set by the delivery itself and cannot be overridden', hooks._dbg(h.key)));
        END IF;
        IF jsonb_typeof(h.value) <> 'string' THEN
            PERFORM hooks._raise(c_ctx, 'invalid', field, 'header values must be strings, got ' || hooks._json_type(h.value));
        END IF;
        IF octet_length(h.value #>> '{}') > 4096 THEN
            PERFORM hooks._raise(c_ctx, 'invalid', field,
                format('header value is %s bytes long; the limit is 4096', octet_length(h.value #>> '{}')));
        END IF;
        IF (h.value #>> '{}') ~ '[\u0001-\u0008\u000a-\u001f\u007f]' THEN
            PERFORM hooks._raise(c_ctx, 'invalid', field, 'header value contains CR, LF or another control character');
        END IF;
    END LOOP;
END
$$;

-- A `retry_config` parsed and bounds-checked as RetryConfig::parse does (retry.rs): missing keys
-- take their defaults, unknown keys are refused. Errors are raised under `context`.
CREATE FUNCTION hooks._retry_config(retry_config text, context text,
    OUT max_attempts integer, OUT backoff_ms bigint, OUT max_backoff_ms bigint, OUT strategy text, OUT jitter boolean)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    c   jsonb;
    kv  record;
    n   bigint;
    lo  bigint;
    hi  bigint;
    f   text;
BEGIN
    BEGIN
        c := retry_config::jsonb;
    EXCEPTION WHEN invalid_text_representation THEN
        PERFORM hooks._raise(context, 'invalid', 'retry_config', 'retry_config is not a JSON value this extension accepts: ' || SQLERRM);
    END;
    IF jsonb_typeof(c) <> 'object' THEN
        PERFORM hooks._raise(context, 'invalid', 'retry_config', 'retry_config must be an object, got ' || hooks._json_type(c));
    END IF;
    max_attempts := 3; backoff_ms := 1000; max_backoff_ms := 3600000; strategy := 'exponential'; jitter := true;
    FOR kv IN SELECT * FROM jsonb_each(c) LOOP
        IF kv.key IN ('maxAttempts', 'backoffMs', 'maxBackoffMs') THEN
            f := 'retry_config.' || kv.key;
            lo := CASE kv.key WHEN 'maxAttempts' THEN 1 ELSE 0 END;
            hi := CASE kv.key WHEN 'maxAttempts' THEN 100 WHEN 'backoffMs' THEN 86400000 ELSE 604800000 END;
            IF jsonb_typeof(kv.value) <> 'number' OR kv.value::text !~ '^-?[0-9]{1,19}$'
               OR kv.value::text::numeric NOT BETWEEN -9223372036854775808 AND 9223372036854775807 THEN
                PERFORM hooks._raise(context, 'invalid', f, format('%s must be an integer, got %s', f, hooks._json_type(kv.value)));
            END IF;
            n := kv.value::text::bigint;
            IF n NOT BETWEEN lo AND hi THEN
                PERFORM hooks._raise(context, 'invalid', f, format('%s is %s; it must be between %s and %s', f, n, lo, hi));
            END IF;
            CASE kv.key
                WHEN 'maxAttempts' THEN max_attempts := n;
                WHEN 'backoffMs' THEN backoff_ms := n;
                ELSE max_backoff_ms := n;
            END CASE;
        ELSIF kv.key = 'strategy' THEN
            IF jsonb_typeof(kv.value) <> 'string' OR kv.value #>> '{}' NOT IN ('exponential', 'linear', 'fixed') THEN
                PERFORM hooks._raise(context, 'invalid', 'retry_config.strategy',
                    'retry_config.strategy must be one of exponential, linear, fixed, got ' || hooks._compact(kv.value::text));
            END IF;
            strategy := kv.value #>> '{}';
        ELSIF kv.key = 'jitter' THEN
            IF jsonb_typeof(kv.value) <> 'boolean' THEN
                PERFORM hooks._raise(context, 'invalid', 'retry_config.jitter',
                    'retry_config.jitter must be true or false, got ' || hooks._json_type(kv.value));
            END IF;
            jitter := kv.value::text::boolean;
        ELSE
            PERFORM hooks._raise(context, 'invalid', 'retry_config',
                format('retry_config has the unknown key %s; known keys are maxAttempts, backoffMs, maxBackoffMs, strategy, jitter',
                       hooks._dbg(kv.key)));
        END IF;
    END LOOP;
    IF max_backoff_ms < backoff_ms THEN
        IF c ? 'maxBackoffMs' THEN
            PERFORM hooks._raise(context, 'invalid', 'retry_config.maxBackoffMs', 'maxBackoffMs must not be smaller than backoffMs');
        END IF;
        max_backoff_ms := backoff_ms;
    END IF;
END
$$;

-- Twin of _check_webhook (webhooks.rs): raises 22023 naming the field when a webhook's settings
-- are invalid. Called by the hooks.webhooks trigger. NULL in, NULL out.
CREATE FUNCTION hooks._check_webhook(tenant_id text, webhook_name text, event_type text, url text,
                                     headers text, retry_config text, timeout_ms integer, secret text)
RETURNS boolean
LANGUAGE plpgsql STRICT STABLE PARALLEL SAFE AS $$
DECLARE
    c_ctx constant text := 'hooks.webhooks';
    f     text;
    v     text;
BEGIN
    FOREACH f IN ARRAY ARRAY['tenant_id', 'webhook_name'] LOOP
        v := CASE f WHEN 'tenant_id' THEN tenant_id ELSE webhook_name END;
        IF v = '' OR octet_length(v) > 255 OR v ~ '[\u0001-\u001f\u007f-\u009f]' THEN
            PERFORM hooks._raise(c_ctx, 'invalid', f, f || ' must be 1 to 255 bytes without control characters');
        END IF;
    END LOOP;
    PERFORM hooks._check_pattern(c_ctx, 'event_type', event_type);
    PERFORM hooks._check_url(url);
    PERFORM hooks._check_headers(headers::jsonb);
    PERFORM hooks._retry_config(retry_config, c_ctx);
    IF timeout_ms NOT BETWEEN 100 AND 120000 THEN
        PERFORM hooks._raise(c_ctx, 'invalid', 'timeout_ms', format('timeout_ms is %s; it must be between 100 and 120000', timeout_ms));
    END IF;
    IF octet_length(secret) NOT BETWEEN 8 AND 512 THEN
        PERFORM hooks._raise(c_ctx, 'invalid', 'secret', 'secret must be between 8 and 512 bytes long');
    END IF;
    IF secret LIKE 'whsec\_%' AND coalesce(octet_length(hooks._b64_decode(substr(secret, 7))), 0) = 0 THEN
        PERFORM hooks._raise(c_ctx, 'invalid', 'secret', 'secret starts with whsec_ but the rest is not valid base64');
    END IF;
    RETURN true;
END
$$;

-- Twin of _check_patterns (webhooks.rs): at most 50 further patterns, none NULL, each valid;
-- errors name the element (event_types[2]). NULL in, NULL out.
CREATE FUNCTION hooks._check_patterns(event_types text[]) RETURNS boolean
LANGUAGE plpgsql STRICT STABLE PARALLEL SAFE AS $$
DECLARE
    p   text;
    i   integer := 0;
BEGIN
    IF cardinality(event_types) > 50 THEN
        PERFORM hooks._raise('hooks.webhooks', 'invalid', 'event_types',
                             format('event_types lists %s patterns; at most 50', cardinality(event_types)));
    END IF;
    FOREACH p IN ARRAY event_types LOOP
        i := i + 1;
        IF p IS NULL THEN
            PERFORM hooks._raise('hooks.webhooks', 'invalid', format('event_types[%s]', i),
                                 format('event_types[%s] is NULL; list patterns only', i));
        END IF;
        PERFORM hooks._check_pattern('hooks.webhooks', format('event_types[%s]', i), p);
    END LOOP;
    RETURN true;
END
$$;

-- Twin of _check_envelope (webhooks.rs): 22023 unless the name is beema, standard, flat or
-- supabase. NULL in, NULL out.
CREATE FUNCTION hooks._check_envelope(envelope text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    IF envelope NOT IN ('beema', 'standard', 'flat', 'supabase') THEN
        PERFORM hooks._raise('hooks.webhooks', 'invalid', 'envelope',
                             'envelope must be one of beema, standard, flat, supabase, got ' || hooks._dbg(envelope));
    END IF;
    RETURN true;
END
$$;

-- Twin of _render_envelope (webhooks.rs, envelope.rs): the stored body in the webhook's payload
-- envelope; `beema` returns it untouched, the others pick its fields by name (a missing one is
-- null). NULL in, NULL out.
CREATE FUNCTION hooks._render_envelope(envelope text, body text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    j    json;
    d    json;
BEGIN
    IF envelope NOT IN ('beema', 'standard', 'flat', 'supabase') THEN
        PERFORM hooks._raise('hooks.claim', 'invalid', 'envelope',
                             'envelope must be one of beema, standard, flat, supabase, got ' || hooks._dbg(envelope));
    END IF;
    IF envelope = 'beema' THEN
        RETURN body;
    END IF;
    BEGIN
        j := body::json;
    EXCEPTION WHEN invalid_text_representation THEN
        PERFORM hooks._raise('hooks.claim', 'invalid', 'body', 'the stored event body is not JSON: ' || SQLERRM);
    END;
    IF json_typeof(j) <> 'object' THEN
        PERFORM hooks._raise('hooks.claim', 'invalid', 'body', 'the stored event body is not a JSON object');
    END IF;
    IF envelope = 'standard' THEN
        RETURN '{"type":' || coalesce(hooks._compact((j -> 'event')::text), 'null')
            || ',"timestamp":' || coalesce(hooks._compact((j -> 'timestamp')::text), 'null')
            || ',"data":' || coalesce(hooks._compact((j -> 'data')::text), 'null') || '}';
    ELSIF envelope = 'flat' THEN
        RETURN '{"id":' || coalesce(hooks._compact((j -> 'id')::text), 'null')
            || ',"timestamp":' || coalesce(hooks._compact((j -> 'timestamp')::text), 'null')
            || ',"event_type":' || coalesce(hooks._compact((j -> 'event')::text), 'null')
            || ',"data":' || coalesce(hooks._compact((j -> 'data')::text), 'null') || '}';
    END IF;
    d := j -> 'data';
    IF d IS NULL OR json_typeof(d) <> 'object' THEN
        d := '{}';
    END IF;
    RETURN '{"type":' || coalesce(hooks._compact((d -> 'type')::text), 'null')
        || ',"table":' || coalesce(hooks._compact((d -> 'table')::text), 'null')
        || ',"schema":' || coalesce(hooks._compact((d -> 'schema')::text), 'null')
        || ',"record":' || coalesce(hooks._compact((d -> 'record')::text), 'null')
        || ',"old_record":' || coalesce(hooks._compact((d -> 'old_record')::text), 'null') || '}';
END
$$;

-- Twin of retry_delay_ms (webhooks.rs, retry.rs): milliseconds before the next attempt after
-- failed attempt `attempt`, by the webhook's strategy, jitter and cap; a longer Retry-After
-- (bounded to one day) wins. NULL retry_after_ms means none; other NULL arguments give NULL.
CREATE FUNCTION hooks.retry_delay_ms(retry_config text, attempt integer, retry_after_ms bigint, jitter double precision)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    c      record;
    n      bigint;
    base   numeric;
    factor double precision;
    delay  bigint;
BEGIN
    IF retry_config IS NULL OR attempt IS NULL OR jitter IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT * INTO c FROM hooks._retry_config(retry_config, 'hooks.retry_delay_ms');
    n := greatest(attempt, 1);
    base := CASE c.strategy
                WHEN 'exponential' THEN least(c.backoff_ms * 2::numeric ^ least(n - 1, 40), 9223372036854775807)
                WHEN 'linear' THEN least(c.backoff_ms::numeric * n, 9223372036854775807)
                ELSE c.backoff_ms END;
    factor := CASE WHEN NOT c.jitter OR jitter IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8) THEN 1.0::float8
                   ELSE 0.8::float8 + 0.4::float8 * least(greatest(jitter, 0.0::float8), 1.0::float8) END;
    delay := greatest(least(trunc(base::float8 * factor), c.max_backoff_ms::float8), 0::float8)::bigint;
    IF retry_after_ms IS NOT NULL THEN
        delay := greatest(delay, least(greatest(retry_after_ms, 0), 86400000));
    END IF;
    RETURN delay;
END
$$;

-------------------------------------------------------------------------------------------------
-- Signatures (hooks_core sign.rs, signing.rs).
-------------------------------------------------------------------------------------------------

-- The HMAC key of a secret for the Standard Webhooks signature: the decoded bytes after
-- `whsec_`, or the secret's UTF-8 bytes for any other form (or a whsec_ that does not decode).
-- (Not STRICT, so that it is inlined; NULL gives NULL.)
CREATE FUNCTION hooks._standard_key(secret text) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(CASE WHEN $1 LIKE 'whsec\_%' THEN hooks._b64_decode(substr($1, 7)) END, hooks._utf8($1))
$$;

-- Twin of sign (signing.rs): `sha256=<lowercase hex HMAC-SHA256>` of the payload's UTF-8 bytes,
-- keyed by the secret's UTF-8 bytes: the X-Beema-Signature header. NULL in, NULL out.
CREATE FUNCTION hooks.sign(payload text, secret text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT 'sha256=' || encode(hooks._hmac_sha256(hooks._utf8($2), hooks._utf8($1)), 'hex')
$$;

-- Twin of verify (signing.rs): does an X-Beema-Signature value (`sha256=<hex>`, the prefix
-- optional) sign the payload? Compared with `=`, not in constant time. NULL in, NULL out.
CREATE FUNCTION hooks.verify(payload text, secret text, signature text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN h ~ '^([0-9A-Fa-f]{2})*$'
                THEN decode(h, 'hex') = hooks._hmac_sha256(hooks._utf8($2), hooks._utf8($1))
                ELSE false END
      FROM (SELECT regexp_replace(CASE WHEN $3 LIKE 'sha256=%' THEN substr($3, 8) ELSE $3 END,
                                  '^[\u0009-\u000d\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+|[\u0009-\u000d\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+$',
                                  '', 'g') AS h) AS s
$$;

-- sign_standard's general case: any number of secrets, NULLs skipped.
CREATE FUNCTION hooks._sign_standard_all(msg_id text, "timestamp" bigint, body text, secrets text[]) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    m   bytea := hooks._utf8(msg_id || '.' || "timestamp" || '.' || body);
    s   text;
    out text[] := '{}';
BEGIN
    FOREACH s IN ARRAY secrets LOOP
        IF s IS NOT NULL THEN
            out := out || ('v1,' || encode(hooks._hmac_sha256(hooks._standard_key(s), m), 'base64'));
        END IF;
    END LOOP;
    RETURN array_to_string(out, ' ');
END
$$;

-- Twin of sign_standard (signing.rs): the Standard Webhooks `webhook-signature` header, one
-- `v1,<base64 HMAC-SHA256 of "msg_id.timestamp.body">` per secret, space-separated; NULL
-- secrets are skipped; other NULL arguments give NULL. One expression for the usual single
-- secret, so hooks.claim inlines it (not declared STRICT, which would stop the inlining; every
-- NULL argument still gives NULL).
CREATE FUNCTION hooks.sign_standard(msg_id text, "timestamp" bigint, body text, secrets text[]) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN cardinality($4) = 1 AND $4[1] IS NOT NULL
                THEN 'v1,' || encode(hooks._hmac_sha256(hooks._standard_key($4[1]),
                                                        hooks._utf8($1 || '.' || $2::text || '.' || $3)), 'base64')
                ELSE hooks._sign_standard_all($1, $2, $3, $4) END
$$;

-- Twin of verify_standard (signing.rs): does any `v1,` entry of a webhook-signature header
-- verify with this secret? Compared with `=`, not in constant time. NULL in, NULL out.
CREATE FUNCTION hooks.verify_standard(msg_id text, "timestamp" bigint, body text, secret text, signature text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT coalesce(bool_or(hooks._b64_decode(substr(e, 4))
                            = hooks._hmac_sha256(hooks._standard_key($4), hooks._utf8($1 || '.' || $2::text || '.' || $3))), false)
      FROM unnest(string_to_array($5, ' ')) AS e
     WHERE e LIKE 'v1,%'
$$;

-- Twin of generate_secret (signing.rs): `whsec_` and the base64 of 32 random bytes from
-- pgcrypto's strong random source.
CREATE FUNCTION hooks.generate_secret() RETURNS text
LANGUAGE sql STRICT VOLATILE PARALLEL SAFE AS $$
    SELECT 'whsec_' || encode(hooks._random_bytes(32), 'base64')
$$;
