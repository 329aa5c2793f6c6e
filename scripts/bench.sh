#!/usr/bin/env bash
# The benchmark suite (BENCHMARKS.md): figures as ratios against this machine's own limits.
#   scripts/bench.sh [--smoke] [--own-cluster] [--runs N] [--keep-dbs] [p1|p2|p3|p4|p5|fanout|cost|watch|flavors|ordering ...]
# Runs the named benchmarks (all by default) against the local cluster (scripts/pg.sh) with the
# installed extension and the release sender, and prints each figure as the median of 3 runs
# beside its baseline from the same run. --smoke: tiny sizes, 1 run, well under a minute; exits
# non-zero only when the benchmark code breaks, never for slowness.
# Installs what is missing (wrk from Debian; scripts/setup.sh when the extension is not
# installed) and builds the release sender and the suite. Output and logs go to
# $BEEMA_RUN_DIR/bench/<time>/ (summary.txt at the end).
set -euo pipefail

# --own-cluster: a cluster of the suite's own (127.0.0.1:28817, data in /tmp/beema-hooks-bench),
# same settings as scripts/pg.sh, so that nothing else runs in it or stops it mid-run.
args=()
for a in "$@"; do
  if [ "$a" = --own-cluster ]; then
    export BEEMA_RUN_DIR=/tmp/beema-hooks-bench BEEMA_PGPORT=28817
    unset BEEMA_PGDATA BEEMA_ADMIN_URL
  else
    args+=("$a")
  fi
done
set -- ${args[@]+"${args[@]}"}
source "$(dirname "$0")/env.sh"
cd "$BEEMA_ROOT"

# The benchmarks named on the command line (options such as --smoke are not names); with none
# named, every benchmark runs. `runs B...`: whether any of the benchmarks B runs.
names=()
for a in "$@"; do
  case "$a" in p1|p2|p3|p4|p5|fanout|cost|watch|flavors|ordering) names+=("$a") ;; esac
done
runs() {
  [ ${#names[@]} -eq 0 ] && return 0
  local n b
  for n in "${names[@]}"; do for b in "$@"; do [ "$n" = "$b" ] && return 0; done; done
  return 1
}

# wrk: the raw HTTP load generator of P2 (Debian's package).
if runs p2 && ! command -v wrk >/dev/null 2>&1; then
  say "installing wrk"
  apt_install wrk >/dev/null
fi

# nginx: the independent fast receiver of COST (Debian's package; only the binary is used,
# with a config of the suite's own on a free loopback port).
if runs cost flavors && ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  say "installing nginx"
  apt_install --no-install-recommends nginx >/dev/null
fi

# Postgres, the extension and the sender: scripts/setup.sh when the extension is not installed
# (run it yourself after changing the extension: the suite uses whatever is installed).
if [ ! -x "$PG_BIN/pgbench" ] || [ ! -f "$("$PG_CONFIG" --sharedir 2>/dev/null)/extension/beema_hooks.control" ]; then
  "$BEEMA_ROOT/scripts/setup.sh"
fi

# The sender and the suite, as of this checkout (no-ops when up to date).
say "building the sender and the benchmark suite (release)"
cargo build --release -q -p beema-hooks-sender -p beema_hooks_bench

# The cluster: started here when it is not running (and stopped again at the end).
started_pg=0
if ! "$BEEMA_ROOT/scripts/pg.sh" status; then
  "$BEEMA_ROOT/scripts/pg.sh" start >/dev/null
  started_pg=1
fi
cleanup() { if [ "$started_pg" = 1 ]; then "$BEEMA_ROOT/scripts/pg.sh" stop || true; fi; }
trap cleanup EXIT

out="$BEEMA_RUN_DIR/bench/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
say "benchmarks: output in $out"
"$CARGO_TARGET_DIR/release/beema-hooks-bench" --out "$out" "$@"
