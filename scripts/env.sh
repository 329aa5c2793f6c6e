# Shared settings for the scripts; source it, don't run it.
# Every value can be overridden from the environment.
BEEMA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export BEEMA_ROOT
export PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
export PG_CONFIG="${PG_CONFIG:-$PG_BIN/pg_config}"
# One build directory for every checkout (clones reuse it instead of rebuilding the world).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/beema-hooks/target}"
export BEEMA_RUN_DIR="${BEEMA_RUN_DIR:-/tmp/beema-hooks}"
export BEEMA_PGDATA="${BEEMA_PGDATA:-$BEEMA_RUN_DIR/pgdata}"
export BEEMA_PGPORT="${BEEMA_PGPORT:-28815}"
export BEEMA_ADMIN_URL="${BEEMA_ADMIN_URL:-postgres://postgres@127.0.0.1:$BEEMA_PGPORT/postgres}"
export HOOKS_SENDER_BIN="${HOOKS_SENDER_BIN:-$CARGO_TARGET_DIR/release/beema-hooks-sender}"

# Run a command as the postgres OS user when we are root (Postgres refuses to run as root).
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
