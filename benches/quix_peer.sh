#!/usr/bin/env bash
# Runs the Quix Streams peer benchmark (benches/quix_peer.py) in a virtualenv
# under target/ that is made on first use. Install output goes to stderr, so
# stdout carries only the script's result line.
#   benches/quix_peer.sh --bootstrap HOST:PORT --topic NAME --total N [--alerts-topic NAME]
#   benches/quix_peer.sh install      only install the packages
set -euo pipefail
cd "$(dirname "$0")/.."
venv="target/quix-venv"
QUIXSTREAMS_VERSION=3.28.1
mkdir -p target
# Parallel callers: one installs, the others wait for it.
exec 9>target/quix-venv.lock
flock 9
if [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("quixstreams"))' 2>/dev/null)" != "$QUIXSTREAMS_VERSION" ]; then
  echo "installing quixstreams $QUIXSTREAMS_VERSION from PyPI into $venv..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "quixstreams==$QUIXSTREAMS_VERSION" >&2
fi
exec 9>&-
if [ "${1:-}" = install ]; then
  exit 0
fi
exec "$venv/bin/python" benches/quix_peer.py "$@"
