#!/usr/bin/env bash
# Moves a database's beema_hooks to the other flavor, in place, with every row kept
# (README, "Moving between flavors"):
#   scripts/move_flavor.sh native   DATABASE_URL    portable (plain SQL) -> native extension
#   scripts/move_flavor.sh portable DATABASE_URL    native extension -> portable (plain SQL)
# One transaction (psql --single-transaction): the old install's schema hooks is renamed
# hooks_moving, the other flavor is installed into a new schema hooks (CREATE EXTENSION
# beema_hooks, or dist/beema_hooks.sql of scripts/portable.sh), sql/flavor_move.sql copies every
# row and sequence and attaches the watched tables' triggers again, and the old install is
# dropped. Stop the senders first (they would wait on the renamed objects' locks); they need no
# change. Needs a superuser (CREATE EXTENSION of the native flavor; the copy runs with triggers
# off) on a server that has the native files: where a database on RDS or another managed service
# should move, move it here first and dump and restore it (the portable flavor restores as
# plain SQL objects; pgcrypto and the three hooks_ roles must exist there).
# Views or functions of your own over objects of schema hooks: drop them first, create them
# again after (the old objects they name are dropped).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$BEEMA_ROOT"

to="${1:-}"
url="${2:-}"
case "$to" in native|portable) ;; *) say "usage: scripts/move_flavor.sh native|portable DATABASE_URL"; exit 2 ;; esac
[ -n "$url" ] || { say "usage: scripts/move_flavor.sh native|portable DATABASE_URL"; exit 2; }
psql=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$url")

native="$("${psql[@]}" -Atc "SELECT count(*) FROM pg_extension WHERE extname = 'beema_hooks'")"
portable="$("${psql[@]}" -Atc "SELECT count(*) FROM pg_namespace WHERE nspname = 'hooks'
                                  AND obj_description(oid, 'pg_namespace') LIKE 'beema_hooks % portable'")"
if [ "$to" = native ] && [ "$portable" != 1 ]; then say "this database has no portable (plain SQL) beema_hooks to move"; exit 1; fi
if [ "$to" = portable ] && [ "$native" != 1 ]; then say "this database has no native beema_hooks extension to move"; exit 1; fi

work="$(mktemp -d "${TMPDIR:-/tmp}/beema-move.XXXXXX")"
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
guard="$work/guard.sql"
# Views of the user's own over the old install would be dropped with it: refuse instead.
cat >"$guard" <<'SQL'
DO $$
DECLARE
    v text;
BEGIN
    SELECT string_agg(DISTINCT r.ev_class::regclass::text, ', ') INTO v
      FROM pg_catalog.pg_depend d
      JOIN pg_catalog.pg_rewrite r ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
      JOIN pg_catalog.pg_class c ON d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid = c.oid
     WHERE c.relnamespace = 'hooks_moving'::regnamespace
       AND (SELECT relnamespace FROM pg_catalog.pg_class WHERE oid = r.ev_class) <> 'hooks_moving'::regnamespace;
    IF v IS NOT NULL THEN
        RAISE EXCEPTION 'views outside schema hooks use it: %', v
            USING ERRCODE = 'dependent_objects_still_exist', HINT = 'Drop them first, create them again after the move.';
    END IF;
END
$$;
SQL

if [ "$to" = native ]; then
  say "moving to the native flavor"
  "${psql[@]}" --single-transaction \
    -c 'ALTER SCHEMA hooks RENAME TO hooks_moving' \
    -c 'CREATE EXTENSION beema_hooks' \
    -f sql/flavor_move.sql -f "$guard" \
    -c 'DROP SCHEMA hooks_moving CASCADE'
else
  "$BEEMA_ROOT/scripts/portable.sh" "$work" 2>/dev/null
  say "moving to the portable flavor"
  "${psql[@]}" --single-transaction -v beema_outer_txn=1 \
    -c 'ALTER SCHEMA hooks RENAME TO hooks_moving' \
    -f "$work/beema_hooks.sql" \
    -f sql/flavor_move.sql -f "$guard" \
    -c 'DROP EXTENSION beema_hooks' \
    -c 'DROP SCHEMA IF EXISTS hooks_moving'
fi
say "moved to the $to flavor"
