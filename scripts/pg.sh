#!/usr/bin/env bash
# A local Postgres 15 cluster for the demo and the tests, on 127.0.0.1:$BEEMA_PGPORT.
#   scripts/pg.sh start   create (first time) and start it; prints the admin URL
#   scripts/pg.sh stop    stop it
#   scripts/pg.sh status  exit 0 when it runs
set -euo pipefail
source "$(dirname "$0")/env.sh"

start() {
  # ($BEEMA_RUN_DIR: created and checked by env.sh)
  if [ ! -f "$BEEMA_PGDATA/PG_VERSION" ]; then
    say "initdb $BEEMA_PGDATA"
    as_pg "$PG_BIN/initdb" -D "$BEEMA_PGDATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    cat >>"$BEEMA_PGDATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $BEEMA_PGPORT
unix_socket_directories = '$BEEMA_RUN_DIR'
max_connections = 300
shared_buffers = 256MB
log_min_messages = warning
CONF
  fi
  if as_pg "$PG_BIN/pg_ctl" -D "$BEEMA_PGDATA" status >/dev/null 2>&1; then
    say "postgres already running on port $BEEMA_PGPORT"
  else
    say "starting postgres on 127.0.0.1:$BEEMA_PGPORT"
    as_pg "$PG_BIN/pg_ctl" -D "$BEEMA_PGDATA" -l "$BEEMA_RUN_DIR/postgres.log" -w -t 60 start >/dev/null
  fi
  echo "$BEEMA_ADMIN_URL"
}

stop() {
  if [ -f "$BEEMA_PGDATA/PG_VERSION" ] && as_pg "$PG_BIN/pg_ctl" -D "$BEEMA_PGDATA" status >/dev/null 2>&1; then
    say "stopping postgres"
    as_pg "$PG_BIN/pg_ctl" -D "$BEEMA_PGDATA" -m fast -w stop >/dev/null
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) as_pg "$PG_BIN/pg_ctl" -D "$BEEMA_PGDATA" status >/dev/null 2>&1 ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
