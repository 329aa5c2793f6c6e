#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh), then runs every test against a real Postgres:
#   1. unit and property tests (hooks_core, sender)
#   2. #[pg_test]s of the extension (cargo pgrx test, its own throwaway cluster)
#   3. pg_regress files (user-facing SQL, expected output checked in), against both flavors:
#      native, and portable (scripts/portable.sh's plain SQL, installed by a non-superuser owner);
#      the pg_tle file's structure and its script run as an extension script (pgtle_check.sh)
#   4. upgrade test: every released version, with data, upgraded to the current one must equal
#      a fresh install (scripts/upgrade_test.sh); the alert rules (promtool check/test rules)
#   5. end-to-end tests (tests/): the extension, the real sender binary, local HTTP receivers;
#      then the delivery tests again against the portable flavor (BEEMA_FLAVOR=portable)
#   6. the benchmarks in smoke mode (tiny sizes; they fail only when their code breaks)
# Exits non-zero when anything fails.
set -uo pipefail
source "$(dirname "$0")/env.sh"
cd "$BEEMA_ROOT"

"$BEEMA_ROOT/scripts/setup.sh" || { say "setup failed"; exit 1; }

# What only the tests use, from Debian: PgBouncer (tests/tests/poolers.rs), Prometheus'
# promtool (the alert rules' tests in deploy/prometheus) and PyNaCl (an ed25519 implementation
# independent of ours, for delivery.rs's v1a signatures).
test_packages=()
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || test_packages+=(pgbouncer)
command -v promtool >/dev/null || test_packages+=(prometheus)
/usr/bin/python3 -c 'import nacl.signing' 2>/dev/null || test_packages+=(python3-nacl)
if [ "${#test_packages[@]}" -gt 0 ]; then
  say "apt-get install ${test_packages[*]} (for the tests)"
  apt_install --no-install-recommends "${test_packages[@]}" ||
    { say "could not install ${test_packages[*]}"; exit 1; }
fi

failed=()
step() {
  local name="$1"; shift
  say "$name"
  if ! "$@"; then failed+=("$name"); say "FAILED: $name"; fi
}

runas=()
[ "$(id -u)" = 0 ] && runas=(--runas postgres)
pgrx_tests() {
  # cargo pgrx test installs its test build system-wide, with `sudo cp` over the installed .so
  # when it runs as another user: remove that first, so running backends keep their old file
  # (overwritten in place, it crashes them with SIGBUS). Until the test build is installed, new
  # sessions of other clusters cannot load the extension; the test clusters are not up yet.
  rm -f "$("$PG_CONFIG" --pkglibdir)/beema_hooks.so"
  (cd beema_hooks_ext && cargo pgrx test pg15 "${runas[@]}" --pgdata "$BEEMA_RUN_DIR/pgrx-data")
  local rc=$?
  # put the release build back
  "$BEEMA_ROOT/scripts/install_ext.sh" || rc=1
  return $rc
}

step "unit and property tests" cargo test --release -q -p hooks_core -p beema-hooks-sender
step "extension #[pg_test]s" pgrx_tests

"$BEEMA_ROOT/scripts/pg.sh" start >/dev/null || { say "could not start postgres"; exit 1; }
trap '"$BEEMA_ROOT/scripts/pg.sh" stop' EXIT
step "pg_regress" "$BEEMA_ROOT/scripts/regress.sh"
step "pg_tle file check" "$BEEMA_ROOT/scripts/pgtle_check.sh"
step "upgrade test" "$BEEMA_ROOT/scripts/upgrade_test.sh"
step "alert rules (promtool)" bash -c 'cd deploy/prometheus && promtool check rules beema-hooks.rules.yml && promtool test rules beema-hooks.rules.test.yml'
step "end-to-end tests" cargo test --release -q -p beema_hooks_e2e
step "end-to-end tests, portable flavor" env BEEMA_FLAVOR=portable cargo test --release -q -p beema_hooks_e2e \
  --test delivery --test faults --test wakeups --test senders --test sql_concurrency --test tenants \
  --test poolers --test ordering
# benchmarks never fail for slowness; the smoke run only proves their code still works
step "benchmark smoke run" "$BEEMA_ROOT/scripts/bench.sh" --smoke

if [ "${#failed[@]}" -gt 0 ]; then
  say "FAILED: ${failed[*]}"
  exit 1
fi
say "all tests passed"
