#!/usr/bin/env bash
# Runs the pg_regress files in beema_hooks_ext/tests/pg_regress against the local cluster
# (scripts/pg.sh start), once per flavor, and compares with the expected output checked in
# beside them: both flavors must print the same. Then, for what differs by flavor (v1a
# signatures: ed25519 is native only), the files of pg_regress/<flavor>/ against that flavor.
#   scripts/regress.sh                     both flavors
#   scripts/regress.sh native|portable     one flavor
#   scripts/regress.sh [flavor] --accept   run, then copy the actual output over the expected
#                                          (review the diff!)
# native: CREATE EXTENSION beema_hooks in database beema_regress, as the superuser.
# portable: dist/beema_hooks.sql (scripts/portable.sh) run by beema_owner, a role that is not a
# superuser but owns database beema_regress_portable and may create roles, as on managed
# Postgres; pgcrypto created by that owner (it is a trusted extension).
set -euo pipefail
source "$(dirname "$0")/env.sh"

flavors=(native portable)
accept=""
for a in "$@"; do
  case "$a" in
    native|portable) flavors=("$a") ;;
    --accept) accept=1 ;;
    *) say "usage: scripts/regress.sh [native|portable] [--accept]"; exit 2 ;;
  esac
done

dir="$BEEMA_ROOT/beema_hooks_ext/tests/pg_regress"
tests=(setup sign match publish filters envelopes watch errors plans manage storage retry breaker fairness retention security ordering)
psql_admin() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$BEEMA_PGPORT" -U postgres "$@"; }

# A fresh database of one flavor, named on stdout.
prepare() {
  case "$1" in
    native)
      psql_admin -d postgres -c 'DROP DATABASE IF EXISTS beema_regress WITH (FORCE)' -c 'CREATE DATABASE beema_regress'
      psql_admin -d beema_regress -c 'CREATE EXTENSION beema_hooks'
      echo beema_regress ;;
    portable)
      "$BEEMA_ROOT/scripts/portable.sh" "$BEEMA_RUN_DIR/dist" 2>/dev/null
      psql_admin -d postgres -c 'DROP DATABASE IF EXISTS beema_regress_portable WITH (FORCE)' \
        -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'beema_owner') THEN
                CREATE ROLE beema_owner LOGIN CREATEROLE; END IF; END \$\$" \
        -c 'CREATE DATABASE beema_regress_portable OWNER beema_owner'
      psql_admin -U beema_owner -d beema_regress_portable -f "$BEEMA_RUN_DIR/dist/beema_hooks.sql" >/dev/null
      echo beema_regress_portable ;;
  esac
}

status=0
for flavor in "${flavors[@]}"; do
  out="$BEEMA_RUN_DIR/regress/$flavor"
  mkdir -p "$out"
  [ "$(id -u)" = 0 ] && chown -R postgres: "$BEEMA_RUN_DIR/regress" 2>/dev/null || true
  db="$(prepare "$flavor")"
  say "pg_regress, $flavor flavor (database $db)"
  rc=0
  "$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/regress/pg_regress" \
    --inputdir="$dir" --outputdir="$out" --use-existing \
    --bindir="$PG_BIN" --host=127.0.0.1 --port="$BEEMA_PGPORT" --user=postgres \
    --dbname="$db" "${tests[@]}" || rc=$?
  if [ -n "$accept" ]; then
    for t in "${tests[@]}"; do cp "$out/results/$t.out" "$dir/expected/$t.out"; done
    say "accepted: expected output updated from the $flavor run"
  elif [ "$rc" != 0 ] && [ -f "$out/regression.diffs" ]; then
    cat "$out/regression.diffs"
  fi
  [ "$rc" = 0 ] || status=$rc
  # the files of this flavor only, in the same database (setup.sql's helpers)
  own=()
  for f in "$dir/$flavor"/sql/*.sql; do [ -e "$f" ] && own+=("$(basename "$f" .sql)"); done
  if [ "${#own[@]}" -gt 0 ]; then
    mkdir -p "$out/$flavor-only"
    [ "$(id -u)" = 0 ] && chown -R postgres: "$out/$flavor-only" 2>/dev/null || true
    say "pg_regress, $flavor flavor only: ${own[*]}"
    rc=0
    "$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/regress/pg_regress" \
      --inputdir="$dir/$flavor" --outputdir="$out/$flavor-only" --use-existing \
      --bindir="$PG_BIN" --host=127.0.0.1 --port="$BEEMA_PGPORT" --user=postgres \
      --dbname="$db" "${own[@]}" || rc=$?
    if [ -n "$accept" ]; then
      for t in "${own[@]}"; do cp "$out/$flavor-only/results/$t.out" "$dir/$flavor/expected/$t.out"; done
    elif [ "$rc" != 0 ] && [ -f "$out/$flavor-only/regression.diffs" ]; then
      cat "$out/$flavor-only/regression.diffs"
    fi
    [ "$rc" = 0 ] || status=$rc
  fi
done
exit "$status"
