#!/usr/bin/env bash
# Installs what the project needs on Debian (skipping what is there) and builds it:
# Postgres 15 with headers, clang for bindgen, cargo-pgrx 0.18.0, the extension (installed
# into the system Postgres) and the sender. Safe to run again.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$BEEMA_ROOT"

# 1. Debian packages.
packages=(postgresql-15 postgresql-server-dev-15 postgresql-contrib libclang-dev clang sudo pkg-config python3 curl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "apt-get install ${missing[*]}"
  apt_install "${missing[@]}"
else
  say "Debian packages present"
fi

# 2. cargo-pgrx, pinned (0.19 needs a newer rustc than this machine's).
if [ "$(cargo pgrx --version 2>/dev/null || true)" != "cargo-pgrx 0.18.0" ]; then
  say "cargo install cargo-pgrx 0.18.0 (about 8 minutes on 2 cores)"
  cargo install cargo-pgrx --version 0.18.0 --locked
else
  say "cargo-pgrx 0.18.0 present"
fi
if ! grep -qs '^pg15' "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
  say "cargo pgrx init against the system Postgres 15"
  cargo pgrx init --pg15 "$PG_CONFIG"
fi

# 3. Build and install the extension into the system Postgres, and build the sender.
# (scripts/install_ext.sh: a new .so file rather than one overwritten under running backends, and
# the install scripts of released versions and the upgrade scripts from sql/)
say "building and installing the beema_hooks extension (release)"
"$BEEMA_ROOT/scripts/install_ext.sh"
say "building the sender (release)"
cargo build --release -q -p beema-hooks-sender
say "setup done: extension installed, sender at $HOOKS_SENDER_BIN"
