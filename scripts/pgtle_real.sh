#!/usr/bin/env bash
# Runs dist/beema_hooks_pgtle.sql under a real pg_tle, built from its source, on a Postgres 15
# without the native beema_hooks files (pg_tle refuses an extension name whose control file the
# server has), and delivers one signed webhook with the real sender:
#   scripts/pgtle_real.sh PG_TLE_SOURCE_DIR
# pg_tle is not in Debian's archive, so this is not a step of scripts/test.sh (which runs
# scripts/pgtle_check.sh instead). What it does:
# 1. copies the system Postgres 15 (binaries, share, headers) to $BEEMA_RUN_DIR/pgtle/pg, without
#    beema_hooks' files; builds and installs pg_tle there (needs flex, bison, libkrb5-dev);
# 2. starts a cluster of it on 127.0.0.1:28819 with shared_preload_libraries = pg_tle;
# 3. as tle_owner (owns the database, CREATEROLE, member of pgtle_admin, not a superuser):
#    psql -f dist/beema_hooks_pgtle.sql, CREATE EXTENSION beema_hooks, a webhook, a publish;
# 4. the release sender delivers it to a receiver on 127.0.0.1 that checks X-Beema-Signature.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$BEEMA_ROOT"

src="${1:?usage: scripts/pgtle_real.sh PG_TLE_SOURCE_DIR}"
[ -f "$src/pg_tle.control.in" ] || { say "$src is not a pg_tle source tree"; exit 2; }
root="$BEEMA_RUN_DIR/pgtle"
pg="$root/pg"
port=28819
rm -rf "$root" && mkdir -p "$pg/usr/lib/postgresql" "$pg/usr/share/postgresql" "$pg/usr/include"
cp -a /usr/lib/postgresql/15 "$pg/usr/lib/postgresql/"
cp -a /usr/share/postgresql/15 "$pg/usr/share/postgresql/"
cp -a /usr/include/postgresql "$pg/usr/include/"
rm -f "$pg/usr/share/postgresql/15/extension"/beema_hooks* "$pg/usr/lib/postgresql/15/lib/beema_hooks.so"
bin="$pg/usr/lib/postgresql/15/bin"

say "building pg_tle from $src"
build="$root/pg_tle-src"
cp -a "$src" "$build"
make -C "$build" PG_CONFIG="$bin/pg_config" >"$root/pg_tle-build.log" 2>&1
make -C "$build" PG_CONFIG="$bin/pg_config" install >>"$root/pg_tle-build.log" 2>&1

say "a cluster with pg_tle on 127.0.0.1:$port"
[ "$(id -u)" = 0 ] && chown -R postgres: "$root"
as_pg "$bin/initdb" -D "$root/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
printf "port = %s\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\nshared_preload_libraries = 'pg_tle'\n" \
  "$port" "$root" >>"$root/data/postgresql.conf"
as_pg "$bin/pg_ctl" -D "$root/data" -l "$root/postgres.log" -w start >/dev/null
receiver_pid=""
sender_pid=""
cleanup() {
  [ -n "$sender_pid" ] && kill "$sender_pid" 2>/dev/null || true
  [ -n "$receiver_pid" ] && kill "$receiver_pid" 2>/dev/null || true
  as_pg "$bin/pg_ctl" -D "$root/data" -m fast -w stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

q() { "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" "$@"; }
q -U postgres -d postgres -c "CREATE ROLE tle_owner LOGIN CREATEROLE" -c "CREATE DATABASE app OWNER tle_owner"
q -U postgres -d app -c "CREATE EXTENSION pg_tle" -c "GRANT pgtle_admin TO tle_owner"

"$BEEMA_ROOT/scripts/portable.sh" "$root/dist" 2>/dev/null
say "as tle_owner: psql -f beema_hooks_pgtle.sql, then CREATE EXTENSION beema_hooks"
q -U tle_owner -d app -f "$root/dist/beema_hooks_pgtle.sql" >/dev/null
q -U tle_owner -d app -c "CREATE EXTENSION beema_hooks"
q -U tle_owner -d app -Atc "SELECT 'installed: ' || string_agg(extname || ' ' || extversion, ', ' ORDER BY extname) FROM pg_extension"

# a receiver that checks the X-Beema-Signature of what it gets, and exits 0 on the first good one
secret="pgtle-check-secret"
python3 - "$secret" >"$root/receiver.log" 2>&1 <<'EOF' &
import hashlib, hmac, http.server, sys, threading
secret = sys.argv[1].encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        want = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(want, self.headers.get("X-Beema-Signature", ""))
        self.send_response(200 if ok else 400); self.end_headers()
        print(("verified " if ok else "BAD SIGNATURE ") + body.decode(), flush=True)
        if ok:
            threading.Thread(target=self.server.shutdown).start()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", 28820), H).serve_forever()
EOF
receiver_pid=$!
q -U tle_owner -d app -c "INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url, secret)
                          VALUES ('acme', 'check', 'claim/*', 'http://127.0.0.1:28820/hook', '$secret')"
"$HOOKS_SENDER_BIN" --database-url "postgres://tle_owner@127.0.0.1:$port/app" --allow-private-targets \
  --admin-addr 127.0.0.1:28821 >"$root/sender.log" 2>&1 &
sender_pid=$!
q -U tle_owner -d app -Atc "SELECT 'published event ' || hooks.publish('{\"event\": \"claim/opened\", \"data\": {\"tenantId\": \"acme\", \"name\": \"Zoë\"}}')"
for _ in $(seq 1 100); do
  [ "$(q -U tle_owner -d app -Atc "SELECT count(*) FROM hooks.delivery_log WHERE status = 'success'")" = 1 ] && break
  sleep 0.1
done
grep -q '^verified ' "$root/receiver.log" || { say "no verified delivery (see $root/*.log)"; exit 1; }
say "pg_tle: the package installed by a non-superuser, and the sender delivered a signed webhook: $(head -1 "$root/receiver.log")"
