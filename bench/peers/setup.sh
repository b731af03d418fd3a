#!/usr/bin/env bash
# Skein benchmark: installs the comparison peers' dependencies (idempotent).
#   - bench/peers/node-ws: `npm ci` (ws pinned by package-lock.json)
#   - a Python venv at ${BENCH_VENV:-target/bench-venv} with autogen/requirements.txt
# Relative BENCH_VENV paths are taken from the repository root.
set -euo pipefail

PEERS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$PEERS/../.." && pwd)"
VENV="${BENCH_VENV:-target/bench-venv}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac

for tool in node npm python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "setup.sh: '$tool' not found; install Node.js (with npm) and Python 3" >&2; exit 1; }
done

# Node peer: `npm ci` unless node_modules was installed from this very lock file.
NODE_DIR="$PEERS/node-ws"
if ! cmp -s "$NODE_DIR/package-lock.json" "$NODE_DIR/node_modules/.installed-lock.json"; then
  echo "setup.sh: npm ci in $NODE_DIR (ws $(sed -n 's/.*"ws": "\(.*\)".*/\1/p' "$NODE_DIR/package.json"))"
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  cp "$NODE_DIR/package-lock.json" "$NODE_DIR/node_modules/.installed-lock.json"
fi

# Python peer: (re)install only when requirements.txt differs from the one last installed.
REQ="$PEERS/autogen/requirements.txt"
if ! cmp -s "$REQ" "$VENV/.installed-requirements.txt"; then
  if [ ! -x "$VENV/bin/python" ]; then
    echo "setup.sh: creating venv $VENV"
    python3 -m venv "$VENV"
  fi
  echo "setup.sh: pip install into $VENV: $(grep -v '^#' "$REQ" | tr '\n' ' ')"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
  cp "$REQ" "$VENV/.installed-requirements.txt"
fi
