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

# $BEEMA_RUN_DIR is reused across runs and by default lies in /tmp, where any user can create a
# name first: it is created here when missing (owned by postgres when run as root, so that the
# cluster can use it), and must otherwise be a real directory, not a link, owned by this user
# or postgres. Nothing writes, chowns or removes anything in it otherwise.
if [ -L "$BEEMA_RUN_DIR" ] || { [ -e "$BEEMA_RUN_DIR" ] && [ ! -d "$BEEMA_RUN_DIR" ]; }; then
  printf '\033[1m==> %s\033[0m\n' "$BEEMA_RUN_DIR is not a directory of ours (a link or a file): remove it or set BEEMA_RUN_DIR" >&2
  exit 1
fi
if [ ! -d "$BEEMA_RUN_DIR" ]; then
  mkdir -m 0755 "$BEEMA_RUN_DIR"
  if [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1; then chown -h postgres: "$BEEMA_RUN_DIR"; fi
fi
case "$(stat -c %U "$BEEMA_RUN_DIR")" in
  "$(id -un)"|postgres) ;;
  *) printf '\033[1m==> %s\033[0m\n' "$BEEMA_RUN_DIR belongs to $(stat -c %U "$BEEMA_RUN_DIR"), not to $(id -un) or postgres: refusing to use it" >&2
     exit 1 ;;
esac

# Run a command as the postgres OS user when we are root (Postgres refuses to run as root).
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# apt_install [apt-get install options] PKG...: Debian packages, through sudo when not root; the
# package lists are updated first (a fresh machine has none).
apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "$@"
}
