#!/usr/bin/env bash
# Proves that the upgrade scripts bring every released version to exactly the current one:
#   scripts/upgrade_test.sh [--own-cluster] [--keep]
# For each released version V (a frozen install script sql/beema_hooks--V.sql):
#   1. database beema_upgrade_from_V: CREATE EXTENSION beema_hooks VERSION 'V', data written
#      through V's API (webhooks incl. a wildcard one, a paused one and a disabled one; publish,
#      claim, complete: rows in every table, deliveries in every state: pending, in_flight,
#      retrying, success, failed, cancelled), a snapshot of every row, then ALTER EXTENSION beema_hooks UPDATE (to the current
#      version, through the chain of sql/beema_hooks--A--B.sql);
# then database beema_upgrade_fresh: a fresh CREATE EXTENSION beema_hooks;
#   2. both are dumped by scripts/upgrade_catalog.sql (tables, columns, constraints, indexes,
#      triggers, functions, views, sequences, policies, ACLs, roles, comments, members...) and
#      the dumps must be identical: a unified diff is printed otherwise;
#   3. the upgraded database still holds every row of the snapshot (the columns V had, same
#      values), and publish + claim + complete work in it.
# Exits non-zero when anything differs or fails. Needs the extension installed with its
# versioned scripts (scripts/install_ext.sh, which scripts/setup.sh runs) and, by default, the
# local cluster running (scripts/pg.sh start); the same connection as scripts/regress.sh.
#   --own-cluster  a new throwaway cluster (127.0.0.1:28818, in a new private directory of
#                  mktemp -d), removed afterwards. The extension's roles are cluster-wide: only in a cluster where no
#                  fresh install ran first does the upgrade have to create them itself, so only
#                  this mode proves the upgrade scripts create the roles a new version adds.
#   --keep         keep the databases (and the cluster's data) for a look afterwards
# Output: $BEEMA_RUN_DIR/upgrade/ (the dumps, the diff).
set -euo pipefail

own_cluster=0 keep=0
for a in "$@"; do
  case "$a" in
    --own-cluster) own_cluster=1 ;;
    --keep) keep=1 ;;
    *) echo "usage: $0 [--own-cluster] [--keep]" >&2; exit 2 ;;
  esac
done
if [ "$own_cluster" = 1 ]; then
  BEEMA_RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/beema-hooks-upgrade.XXXXXX")"
  [ "$(id -u)" = 0 ] && chown postgres: "$BEEMA_RUN_DIR"
  export BEEMA_RUN_DIR BEEMA_PGPORT=28818
  unset BEEMA_PGDATA BEEMA_ADMIN_URL
fi
source "$(dirname "$0")/env.sh"
cd "$BEEMA_ROOT"

psql_() {
  PGOPTIONS='-c client_min_messages=warning' \
    "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$BEEMA_PGPORT" -U postgres -v ON_ERROR_STOP=1 "$@"
}
fail() { say "upgrade test: $*"; exit 1; }

# --- what is installed must be what is checked in
extdir="$("$PG_CONFIG" --sharedir)/extension"
current="$(sed -n "s/^default_version *= *'\(.*\)'.*/\1/p" "$extdir/beema_hooks.control" 2>/dev/null || true)"
workspace="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)"
[ -n "$current" ] || fail "beema_hooks is not installed (scripts/install_ext.sh)"
[ "$current" = "$workspace" ] ||
  fail "installed beema_hooks is $current, the workspace is $workspace: run scripts/install_ext.sh"
released=()
for f in sql/beema_hooks--*.sql; do
  name="$(basename "$f")"
  cmp -s "$f" "$extdir/$name" ||
    fail "$extdir/$name is missing or differs from sql/$name: run scripts/install_ext.sh"
  v="${name#beema_hooks--}"; v="${v%.sql}"
  case "$v" in *--*) ;; "$current") ;; *) released+=("$v") ;; esac
done
[ "${#released[@]}" -gt 0 ] || fail "no frozen install script sql/beema_hooks--<released version>.sql"

# --- the cluster and the databases
fresh_db=beema_upgrade_fresh
dbs=("$fresh_db")
for v in "${released[@]}"; do dbs+=("beema_upgrade_from_${v//[^0-9a-zA-Z]/_}"); done
drop_dbs() { for db in "${dbs[@]}"; do psql_ -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"; done; }
cleanup() {
  if [ "$own_cluster" = 1 ]; then
    "$BEEMA_ROOT/scripts/pg.sh" stop || true
    if [ "$keep" = 1 ]; then say "kept $BEEMA_RUN_DIR"; else rm -rf "$BEEMA_RUN_DIR"; fi
  elif [ "$keep" != 1 ]; then
    drop_dbs || true
  fi
}
if [ "$own_cluster" = 1 ]; then
  trap cleanup EXIT
  "$BEEMA_ROOT/scripts/pg.sh" start >/dev/null
else
  "$BEEMA_ROOT/scripts/pg.sh" status ||
    fail "no cluster on port $BEEMA_PGPORT: scripts/pg.sh start (or use --own-cluster)"
  drop_dbs
  trap cleanup EXIT
fi

out="$BEEMA_RUN_DIR/upgrade"
rm -rf "$out" && mkdir -p "$out"

# --- data written through the old version's API, and a snapshot of every row
load_sql=$(cat <<'SQL'
-- initech: one delivery failed for good (maxAttempts 1), which also opens its webhook's breaker
-- (threshold 1 for this session: the webhook is paused), and one cancelled (webhook disabled)
SET hooks.breaker_failure_threshold = 1;
SELECT 1 FROM hooks.create_webhook('initech', 'one-shot', 'report/*', 'http://127.0.0.1:9/once',
                                   retry_config => '{"maxAttempts": 1, "backoffMs": 100}');
SELECT 1 FROM hooks.create_webhook('initech', 'switched-off', 'report/*', 'http://127.0.0.1:9/off');
SELECT 1 FROM hooks.publish('{"event": "report/filed", "data": {"tenantId": "initech"}, "id": "upgrade-0"}');
SELECT (hooks.disable_webhook(webhook_id, 'upgrade test')).enabled FROM hooks.webhooks WHERE webhook_name = 'switched-off';
SELECT 1 FROM hooks.complete('upgrade-test-sender', (
    SELECT jsonb_agg(jsonb_build_object('delivery_id', delivery_id, 'attempt_number', attempt_number,
                                        'status_code', 500, 'error', 'HTTP 500', 'response_body', 'down',
                                        'duration_ms', 5, 'retry_after_ms', NULL))
      FROM hooks.claim('upgrade-test-sender', 10)));
RESET hooks.breaker_failure_threshold;
INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url)
VALUES ('acme', 'claims-to-crm', 'claim/*', 'http://127.0.0.1:9/crm'),
       ('acme', 'bound-policies', 'policy/bound', 'http://127.0.0.1:9/policies');
SELECT 1 FROM hooks.create_webhook('acme', 'everything', '*', 'http://127.0.0.1:9/all',
                                   headers => '{"X-Env": "upgrade-test"}',
                                   retry_config => '{"maxAttempts": 5, "backoffMs": 500}');
SELECT 1 FROM hooks.create_webhook('globex', 'globex-claims', 'claim/*', 'http://127.0.0.1:9/globex');
-- acme claim/opened -> claims-to-crm + everything; acme policy/bound -> bound-policies +
-- everything; globex claim/opened -> globex-claims: 3 events, 5 deliveries
SELECT 1 FROM hooks.publish('{"event": "claim/opened", "data": {"tenantId": "acme", "claimId": "C-1"}, "id": "upgrade-1"}');
SELECT 1 FROM hooks.publish('{"event": "policy/bound", "data": {"tenantId": "acme", "policyId": "P-1"}}');
SELECT 1 FROM hooks.publish('{"event": "claim/opened", "data": {"tenantId": "globex", "claimId": "G-1"}}');
-- a sender claims 3: one succeeds, one fails (retrying), one stays in flight under its lease
CREATE TEMP TABLE claimed AS
SELECT row_number() OVER (ORDER BY delivery_id) AS n, * FROM hooks.claim('upgrade-test-sender', 3);
SELECT 1 FROM hooks.complete('upgrade-test-sender', (
    SELECT jsonb_agg(jsonb_build_object(
               'delivery_id', delivery_id, 'attempt_number', attempt_number,
               'status_code', CASE n WHEN 1 THEN 200 ELSE 503 END,
               'error', CASE n WHEN 1 THEN NULL ELSE 'HTTP 503' END,
               'response_body', CASE n WHEN 1 THEN 'ok' ELSE 'busy' END,
               'duration_ms', 12, 'retry_after_ms', NULL))
      FROM claimed WHERE n <= 2));
DO $$
DECLARE
    got text := (SELECT string_agg(status || '=' || c, ' ' ORDER BY status)
                   FROM (SELECT status, count(*) AS c FROM hooks.deliveries GROUP BY status) s);
BEGIN
    IF (SELECT count(*) FROM hooks.webhooks) <> 6 OR (SELECT count(*) FROM hooks.events) <> 4
       OR (SELECT count(*) FROM hooks.attempts) <> 3
       OR got IS DISTINCT FROM 'cancelled=1 failed=1 in_flight=1 pending=2 retrying=1 success=1'
       OR NOT EXISTS (SELECT 1 FROM hooks.webhooks WHERE webhook_name = 'one-shot' AND paused_until > now()) THEN
        RAISE EXCEPTION 'unexpected data before the upgrade: %', got;
    END IF;
END
$$;
-- every row of every table of the extension, as it is now
CREATE TABLE public.upgrade_snapshot (tbl text, row jsonb);
DO $$
DECLARE
    t text;
BEGIN
    FOR t IN SELECT c.relname FROM pg_class c
              WHERE c.relnamespace = 'hooks'::regnamespace AND c.relkind IN ('r', 'p') LOOP
        EXECUTE format('INSERT INTO public.upgrade_snapshot SELECT %L, to_jsonb(t) FROM hooks.%I t', t, t);
    END LOOP;
END
$$;
SQL
)

# --- after the upgrade: every snapshot row still there (the columns it had, same values), and
# the extension still works. Prints one line per problem; nothing when all is well.
check_sql=$(cat <<'SQL'
-- 0.3.0 keeps no due time for a finished delivery: its next_attempt_at reads as when it
-- finished (README, "Storage"), so that column of finished deliveries is not compared.
UPDATE public.upgrade_snapshot SET row = row - 'next_attempt_at'
 WHERE tbl = 'deliveries' AND row->>'status' IN ('success', 'failed', 'cancelled')
   AND to_regclass('hooks.outcomes') IS NOT NULL;
CREATE FUNCTION pg_temp.problems() RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    t text;
    n bigint;
    r record;
BEGIN
    FOR t IN SELECT DISTINCT tbl FROM public.upgrade_snapshot ORDER BY 1 LOOP
        IF to_regclass(format('hooks.%I', t)) IS NULL THEN
            RETURN NEXT format('table hooks.%s is gone', t);
            CONTINUE;
        END IF;
        FOR r IN EXECUTE format(
            'SELECT s.row FROM public.upgrade_snapshot s
              WHERE s.tbl = %L
                AND NOT EXISTS (SELECT 1 FROM hooks.%I t
                                 WHERE (SELECT jsonb_object_agg(e.key, e.value)
                                          FROM jsonb_each(to_jsonb(t)) e WHERE s.row ? e.key) = s.row)',
            t, t) LOOP
            RETURN NEXT format('hooks.%s: row lost or changed by the upgrade: %s', t, r.row);
        END LOOP;
        EXECUTE format('SELECT count(*) FROM hooks.%I', t) INTO n;
        IF n <> (SELECT count(*) FROM public.upgrade_snapshot WHERE tbl = t) THEN
            RETURN NEXT format('hooks.%s: %s rows after the upgrade, %s before', t, n,
                               (SELECT count(*) FROM public.upgrade_snapshot WHERE tbl = t));
        END IF;
    END LOOP;
END
$$;
SELECT * FROM pg_temp.problems();

-- publishers keep publishing for every tenant: the roles that could before are granted every
-- tenant (hooks.tenant_grants) by the upgrade
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'beema_upgrade_publisher') THEN
        CREATE ROLE beema_upgrade_publisher IN ROLE hooks_publisher;
    END IF;
END
$$;
SET ROLE beema_upgrade_publisher;
SELECT hooks.publish('{"event": "claim/opened", "data": {"tenantId": "globex"}, "id": "upgrade-3"}') IS NOT NULL AS member_published \gset
RESET ROLE;
SELECT format('after the upgrade: %s may not act for every tenant', r)
  FROM unnest(ARRAY['hooks_publisher', 'hooks_admin']) AS r
 WHERE NOT EXISTS (SELECT 1 FROM hooks.tenant_grants g WHERE g.role_name = r AND g.tenant_id IS NULL);

-- publish, claim and complete on the upgraded database
SELECT hooks.publish('{"event": "claim/settled", "data": {"tenantId": "acme", "claimId": "C-1"}, "id": "upgrade-2"}') AS new_event \gset
CREATE TEMP TABLE claimed2 AS SELECT * FROM hooks.claim('upgrade-test-sender-2', 100);
SELECT hooks.complete('upgrade-test-sender-2', (
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'delivery_id', delivery_id, 'attempt_number', attempt_number, 'status_code', 200,
               'error', NULL, 'response_body', 'ok', 'duration_ms', 7, 'retry_after_ms', NULL)), '[]')
      FROM claimed2)) AS applied \gset
SELECT format('after the upgrade: %s', p) FROM (
    SELECT 'claim returned nothing' AS p WHERE NOT EXISTS (SELECT 1 FROM claimed2)
    UNION ALL
    SELECT format('complete applied %s of %s results', :applied, count(*)) FROM claimed2
    HAVING count(*) <> :applied
    UNION ALL
    SELECT format('the new event has %s deliveries (claims-to-crm and everything expected)', count(*))
      FROM hooks.deliveries WHERE event_id = :new_event HAVING count(*) <> 2
    UNION ALL
    SELECT format('delivery %s of the new event is %s, not claimed and delivered', d.delivery_id, d.status)
      FROM hooks.deliveries d WHERE d.event_id = :new_event AND d.status <> 'success'
    UNION ALL
    SELECT format('delivery %s: no success attempt recorded', d.delivery_id)
      FROM hooks.deliveries d
     WHERE d.event_id = :new_event
       AND NOT EXISTS (SELECT 1 FROM hooks.attempts a WHERE a.delivery_id = d.delivery_id AND a.outcome = 'success')
    UNION ALL
    SELECT format('delivery %s: X-Beema-Signature does not verify with the webhook secret', c.delivery_id)
      FROM claimed2 c JOIN hooks.webhooks w USING (webhook_id)
     WHERE hooks.verify(c.body, w.secret, c.headers->>'X-Beema-Signature') IS NOT TRUE
) AS problems;
SQL
)

status=0
for v in "${released[@]}"; do
  db="beema_upgrade_from_${v//[^0-9a-zA-Z]/_}"
  say "upgrade test: $v -> $current in database $db"
  psql_ -d postgres -c "CREATE DATABASE $db"
  psql_ -d "$db" -c "CREATE EXTENSION beema_hooks VERSION '$v'" || fail "CREATE EXTENSION beema_hooks VERSION '$v' failed"
  psql_ -d "$db" -o /dev/null <<<"$load_sql" || fail "loading data through the $v API failed"
  psql_ -d "$db" -c "ALTER EXTENSION beema_hooks UPDATE TO '$current'" ||
    fail "ALTER EXTENSION beema_hooks UPDATE TO '$current' failed in $db (from $v)"
  got="$(psql_ -d "$db" -At -c "SELECT extversion FROM pg_extension WHERE extname = 'beema_hooks'")"
  [ "$got" = "$current" ] || fail "$db: extversion is '$got' after the update, not $current"
  # dumped before the fresh install exists, so that its roles are the upgrade's own (--own-cluster)
  psql_ -d "$db" -At -f scripts/upgrade_catalog.sql >"$out/from-$v.txt"
done

say "upgrade test: fresh CREATE EXTENSION beema_hooks ($current) in database $fresh_db"
psql_ -d postgres -c "CREATE DATABASE $fresh_db"
psql_ -d "$fresh_db" -c "CREATE EXTENSION beema_hooks" || fail "CREATE EXTENSION beema_hooks failed"
got="$(psql_ -d "$fresh_db" -At -c "SELECT extversion FROM pg_extension WHERE extname = 'beema_hooks'")"
[ "$got" = "$current" ] || fail "$fresh_db: extversion is '$got', not $current"
psql_ -d "$fresh_db" -At -f scripts/upgrade_catalog.sql >"$out/fresh.txt"

for v in "${released[@]}"; do
  db="beema_upgrade_from_${v//[^0-9a-zA-Z]/_}"
  if diff -u --label "fresh install of $current" --label "upgraded from $v" \
      "$out/fresh.txt" "$out/from-$v.txt" >"$out/from-$v.diff"; then
    say "upgrade test: $v -> $current: catalog identical to a fresh install ($(wc -l <"$out/fresh.txt") lines compared)"
  else
    cat "$out/from-$v.diff"
    say "upgrade test: FAILED: $v -> $current differs from a fresh install ($out/from-$v.diff)"
    status=1
  fi

  problems="$(psql_ -d "$db" -At <<<"$check_sql" 2>&1)" || problems="${problems:-psql failed}"
  if [ -n "$problems" ]; then
    printf '%s\n' "$problems"
    say "upgrade test: FAILED: data or API after the upgrade from $v"
    status=1
  else
    say "upgrade test: $v -> $current: every row kept; publish, claim and complete work"
  fi
done

exit "$status"
