#!/usr/bin/env bash
# Runs the pg_regress files in beema_hooks_ext/tests/pg_regress against the local cluster
# (scripts/pg.sh start) and compares with the expected output checked in beside them.
#   scripts/regress.sh            run every file
#   scripts/regress.sh --accept   run, then copy the actual output over the expected (review the diff!)
set -euo pipefail
source "$(dirname "$0")/env.sh"

dir="$BEEMA_ROOT/beema_hooks_ext/tests/pg_regress"
out="$BEEMA_RUN_DIR/regress"
mkdir -p "$out"
[ "$(id -u)" = 0 ] && chown -R postgres: "$out" 2>/dev/null || true
tests=(setup sign match publish filters envelopes watch errors plans manage storage retry breaker fairness retention security)

status=0
"$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/regress/pg_regress" \
  --inputdir="$dir" --outputdir="$out" \
  --bindir="$PG_BIN" --host=127.0.0.1 --port="$BEEMA_PGPORT" --user=postgres \
  --dbname=beema_regress "${tests[@]}" || status=$?

if [ "${1:-}" = "--accept" ]; then
  for t in "${tests[@]}"; do cp "$out/results/$t.out" "$dir/expected/$t.out"; done
  say "accepted: expected output updated from this run"
elif [ "$status" != 0 ] && [ -f "$out/regression.diffs" ]; then
  cat "$out/regression.diffs"
fi
exit "$status"
