#!/usr/bin/env bash
# Copies the frozen install scripts of released versions, sql/beema_hooks--<version>.sql, into an
# extension directory where `cargo pgrx install`/`package` has just put the current version:
#   scripts/install_sql.sh EXTDIR      (EXTDIR: "$(pg_config --sharedir)/extension", or a package's)
# pgrx writes the control file, the generated beema_hooks--<current>.sql and, through the symlink
# beema_hooks_ext/sql -> ../sql, every upgrade script beema_hooks--A--B.sql; it does not copy
# install scripts of other versions (cargo-pgrx 0.18.0, src/command/install.rs, copy_sql_files:
# only names matching ^beema_hooks--.+--.+\.sql$). They are what `CREATE EXTENSION beema_hooks
# VERSION '0.1.0'` needs (scripts/upgrade_test.sh). Needs write access to EXTDIR.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
extdir="${1:?usage: $0 EXTDIR}"

control="$extdir/beema_hooks.control"
current="$(sed -n "s/^default_version *= *'\(.*\)'.*/\1/p" "$control" 2>/dev/null || true)"
if [ -z "$current" ]; then
  echo "install_sql.sh: no default_version in $control (run cargo pgrx install first)" >&2
  exit 1
fi

for f in "$root"/sql/beema_hooks--*.sql; do
  name="$(basename "$f")"
  version="${name#beema_hooks--}"
  version="${version%.sql}"
  case "$version" in *--*) continue ;; esac   # an upgrade script: pgrx installs those
  if [ "$version" = "$current" ]; then
    # the generated script of the current version must not be replaced by a copy
    echo "install_sql.sh: sql/$name freezes the current version $current;" \
      "freeze a version only after the workspace version moved past it" >&2
    exit 1
  fi
  install -m 644 "$f" "$extdir/$name"
done
