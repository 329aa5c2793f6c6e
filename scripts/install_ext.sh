#!/usr/bin/env bash
# Builds the extension (release) and installs it into the system Postgres ($PG_CONFIG), with the
# install scripts of released versions and every upgrade script:
#   scripts/install_ext.sh
# What `cargo pgrx install` does, in two steps that keep running backends safe:
# 1. cargo pgrx package into a staging directory: the .so, the control file, the generated
#    beema_hooks--<version>.sql and every sql/beema_hooks--A--B.sql (through the symlink
#    beema_hooks_ext/sql -> ../sql); scripts/install_sql.sh adds the frozen install scripts
#    sql/beema_hooks--<released version>.sql, which pgrx does not copy;
# 2. rm -f and install(1) of each file: a new file (a new inode), and only once the build is done. `cargo pgrx install --sudo` copies over the installed .so in place
#    instead, and backends that have it mapped die with SIGBUS; removing it before the build
#    would leave Postgres without the library while cargo builds.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$BEEMA_ROOT"

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

stage="$(mktemp -d "${TMPDIR:-/tmp}/beema-hooks-install.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
(cd beema_hooks_ext && cargo pgrx package --pg-config "$PG_CONFIG" --out-dir "$stage" >/dev/null)
pkglibdir="$("$PG_CONFIG" --pkglibdir)"
extdir="$("$PG_CONFIG" --sharedir)/extension"
"$BEEMA_ROOT/scripts/install_sql.sh" "$stage$extdir"

[ -f "$stage$pkglibdir/beema_hooks.so" ] || { say "cargo pgrx package made no $stage$pkglibdir/beema_hooks.so"; exit 1; }
# (GNU install unlinks the old file anyway; the rm says so, and holds for any install(1))
$SUDO rm -f "$pkglibdir/beema_hooks.so"
$SUDO install -m 755 "$stage$pkglibdir/beema_hooks.so" "$pkglibdir/beema_hooks.so"
for f in "$stage$extdir"/*; do
  $SUDO install -m 644 "$f" "$extdir/"
done
