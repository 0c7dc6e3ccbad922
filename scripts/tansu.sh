#!/usr/bin/env bash
# Installs and runs the tansu Kafka-compatible broker used by the tests and
# benchmarks. Everything listens on 127.0.0.1 only.
#
#   scripts/tansu.sh install          install tansu 0.6.0 with cargo if missing
#   scripts/tansu.sh start [PORT]     start a broker (memory engine) in the background
#   scripts/tansu.sh stop             stop the broker started by `start`
#   scripts/tansu.sh bin              print the binary's path
set -euo pipefail

VERSION=0.6.0
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN_DIR="$ROOT/.tansu"
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"

bin() {
  if [ -n "${TANSU_BIN:-}" ]; then echo "$TANSU_BIN"; return; fi
  if command -v tansu >/dev/null 2>&1; then command -v tansu; return; fi
  echo "$CARGO_BIN/tansu"
}

installed() {
  local b; b=$(bin)
  [ -x "$b" ] && "$b" --version 2>/dev/null | grep -q "tansu $VERSION"
}

case "${1:-}" in
  install)
    if installed; then
      echo "tansu $VERSION already installed at $(bin)"
    else
      echo "installing tansu $VERSION (first time: about 10 minutes)..."
      cargo install tansu --version "$VERSION" --locked --features dynostore,libsql
    fi
    ;;
  start)
    port="${2:-19092}"
    mkdir -p "$RUN_DIR"
    url="tcp://127.0.0.1:$port"
    (cd "$RUN_DIR" && nohup "$(bin)" broker --listener-url "$url" --advertised-listener-url "$url" \
      --storage-engine memory://tansu/ >"$RUN_DIR/broker.log" 2>&1 & echo $! >"$RUN_DIR/broker.pid")
    for _ in $(seq 1 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "tansu listening on 127.0.0.1:$port"; exit 0; fi
      sleep 0.1
    done
    echo "tansu did not start; see $RUN_DIR/broker.log" >&2
    exit 1
    ;;
  stop)
    if [ -f "$RUN_DIR/broker.pid" ]; then
      kill "$(cat "$RUN_DIR/broker.pid")" 2>/dev/null || true
      rm -f "$RUN_DIR/broker.pid"
    fi
    ;;
  bin)
    bin
    ;;
  *)
    echo "usage: $0 install|start [PORT]|stop|bin" >&2
    exit 2
    ;;
esac
