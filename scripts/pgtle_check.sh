#!/usr/bin/env bash
# Checks dist/beema_hooks_pgtle.sql without pg_tle (which is not in Debian's archive):
#   scripts/pgtle_check.sh
# 1. structure: one pgtle.install_extension call for beema_hooks at the workspace version,
#    requiring pgcrypto, whose script is the plain-SQL flavor's install (same files, same order)
#    plus what only an extension script does (CREATE SCHEMA IF NOT EXISTS, extension config
#    marks);
# 2. the script itself, run the way pg_tle runs it: as the script of an extension
#    (CREATE EXTENSION), here under the name beema_hooks_pgtle_check from a control file
#    installed for the check, in a fresh database of the local cluster; then it publishes, and
#    claims a signed delivery, and DROP EXTENSION removes every object.
# With a Postgres that has pg_tle, run the file itself (README, "Installing").
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$BEEMA_ROOT"

work="$(mktemp -d "${TMPDIR:-/tmp}/beema-pgtle-check.XXXXXX")"
chmod 755 "$work"
extdir="$("$PG_CONFIG" --sharedir)/extension"
SUDO=""
[ "$(id -u)" != 0 ] && SUDO="sudo"
db=beema_pgtle_check
psql_admin() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$BEEMA_PGPORT" -U postgres "$@"; }
cleanup() {
  psql_admin -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  $SUDO rm -f "$extdir/beema_hooks_pgtle_check.control" "$extdir"/beema_hooks_pgtle_check--*.sql
  rm -rf "$work"
}
trap cleanup EXIT

"$BEEMA_ROOT/scripts/portable.sh" "$work" 2>/dev/null
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)"

python3 - "$work" "$version" <<'EOF'
import re, sys
work, version = sys.argv[1], sys.argv[2]
tle = open(f"{work}/beema_hooks_pgtle.sql", encoding="utf-8").read()
plain = open(f"{work}/beema_hooks.sql", encoding="utf-8").read()
tag = "$_beema_hooks_sql_$"
calls = re.findall(r"pgtle\.install_extension\(", tle)
assert len(calls) == 1, f"expected one pgtle.install_extension call, found {len(calls)}"
head, script, tail = tle.split(tag)
args = re.search(r"install_extension\(\s*'([^']*)',\s*'([^']*)',\s*'([^']*)',\s*$", head)
assert args, "install_extension's name, version and description are not literals before the script"
assert args.group(1) == "beema_hooks", f"name {args.group(1)!r}"
assert args.group(2) == version, f"version {args.group(2)!r}, workspace {version}"
assert re.match(r"^,\s*ARRAY\['pgcrypto'\]\s*\);\s*$", tail), f"requires: {tail!r}"
# the plain file's install branch, between "CREATE SCHEMA hooks;" and the version comment
install = plain.split("\\if :beema_fresh\nCREATE SCHEMA hooks;\n", 1)[1].split("COMMENT ON SCHEMA hooks IS", 1)[0]
core = "\n".join(l for l in script.splitlines() if not l.startswith("SELECT pg_catalog.pg_extension_config_dump("))
core = core.split("CREATE SCHEMA IF NOT EXISTS hooks;\n", 1)[1].split("COMMENT ON SCHEMA hooks IS", 1)[0]
assert core.strip() == install.strip(), "the pg_tle script is not the plain-SQL install"
assert "pg_extension_config_dump" in script, "the pg_tle script marks no extension config tables"
open(f"{work}/beema_hooks_pgtle_check--{version}.sql", "w", encoding="utf-8").write(script)
open(f"{work}/beema_hooks_pgtle_check.control", "w").write(
    "comment = 'beema_hooks pg_tle script, checked as an extension script'\n"
    f"default_version = '{version}'\nrelocatable = false\nrequires = 'pgcrypto'\n")
print(f"pg_tle file: one install_extension('beema_hooks', '{version}', ..., '{{pgcrypto}}'), "
      f"script of {len(script.splitlines())} lines = the plain-SQL install + extension marks")
EOF

$SUDO install -m 644 "$work/beema_hooks_pgtle_check.control" "$work/beema_hooks_pgtle_check--$version.sql" "$extdir/"
psql_admin -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
psql_admin -d "$db" >/dev/null <<'SQL'
CREATE EXTENSION beema_hooks_pgtle_check CASCADE;
INSERT INTO hooks.webhooks (tenant_id, webhook_name, event_type, url) VALUES ('acme', 'w', 'claim/*', 'https://a.example/');
SELECT hooks.publish('{"event": "claim/opened", "data": {"tenantId": "acme", "name": "Zoë"}}');
DO $$
DECLARE
    c record;
BEGIN
    SELECT * INTO STRICT c FROM hooks.claim('check', 10);
    IF NOT hooks.verify(c.body, (SELECT secret FROM hooks.webhooks), c.headers ->> 'X-Beema-Signature') THEN
        RAISE EXCEPTION 'the claimed delivery''s signature does not verify';
    END IF;
    IF (SELECT cardinality(extconfig) FROM pg_extension WHERE extname = 'beema_hooks_pgtle_check') IS NULL THEN
        RAISE EXCEPTION 'the extension marks no configuration tables for pg_dump';
    END IF;
END
$$;
DROP EXTENSION beema_hooks_pgtle_check;
DO $$
BEGIN
    IF to_regnamespace('hooks') IS NOT NULL THEN
        RAISE EXCEPTION 'DROP EXTENSION left schema hooks behind';
    END IF;
END
$$;
SQL
say "pg_tle file: structure and script check passed"
