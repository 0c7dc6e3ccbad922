#!/usr/bin/env bash
# Profiles the end-to-end path: a real `churn-alert run` (event-time clock,
# sled state flushed at each commit, changelog on) reads a simulated topic
# from a tansu broker while `perf record` samples it, then prints where the
# time went, by function, with what each one calls included.
#
#   scripts/profile.sh [CUSTOMERS] [DAYS]     (default 5000 customers, 180 days)
#
# Needs perf (Debian's linux-perf, installed when missing) and tansu
# (scripts/tansu.sh install). Everything listens on 127.0.0.1 only; the
# broker and the service are stopped at the end. Output goes to
# target/profile/.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CUSTOMERS=${1:-5000}
DAYS=${2:-180}
OUT="$ROOT/target/profile"
PORT=${PROFILE_PORT:-19692}
ADMIN=${PROFILE_ADMIN:-127.0.0.1:19698}

if ! command -v perf >/dev/null 2>&1; then
  echo "installing linux-perf..." >&2
  apt-get install -y -qq linux-perf >/dev/null
fi
"$ROOT/scripts/tansu.sh" install >&2
cargo build --release --manifest-path "$ROOT/Cargo.toml" >&2
BIN="$ROOT/target/release/churn-alert"
rm -rf "$OUT" && mkdir -p "$OUT"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

TANSU=$("$ROOT/scripts/tansu.sh" bin)
(cd "$OUT" && RUST_LOG=warn exec "$TANSU" broker \
  --listener-url "tcp://127.0.0.1:$PORT" --advertised-listener-url "tcp://127.0.0.1:$PORT" \
  --storage-engine memory://tansu/ >tansu.log 2>&1) &
pids+=($!)
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done

"$BIN" simulate --customers "$CUSTOMERS" --days "$DAYS" --out "$OUT/sim" >/dev/null 2>&1
TOTAL=$(wc -l <"$OUT/sim/events.jsonl")
"$TANSU" topic create --broker "tcp://127.0.0.1:$PORT" --partitions 4 profile-in >/dev/null
export CHURN_ALERT__KAFKA__BROKERS="127.0.0.1:$PORT" CHURN_ALERT__KAFKA__INPUT_TOPIC=profile-in \
  CHURN_ALERT__CLOCK__MODE=event CHURN_ALERT__STORE__PATH="$OUT/state" \
  CHURN_ALERT__ADMIN__LISTEN="$ADMIN" CHURN_ALERT__MODEL__PATH="$ROOT/models/churn-model.json"
"$BIN" produce --events "$OUT/sim/events.jsonl" >/dev/null

perf record -F 499 --call-graph dwarf,32768 -o "$OUT/perf.data" -- "$BIN" run >"$OUT/service.log" 2>&1 &
perf_pid=$!
pids+=("$perf_pid")
start=$(date +%s.%N)
deadline=$((SECONDS + 900))
while :; do
  sleep 0.5
  if ! kill -0 "$perf_pid" 2>/dev/null || [ "$SECONDS" -gt "$deadline" ]; then
    echo "the service stopped or did not finish in 15 minutes; see $OUT/service.log" >&2
    exit 1
  fi
  done_=$(curl -s "http://$ADMIN/metrics" | awk '/^churn_alert_committed_offset\{/ {s += $2} END {print s + 0}' || true)
  [ "${done_%.*}" -ge "$TOTAL" ] && break
done
end=$(date +%s.%N)
# SIGINT to the service only (perf's child): it stops cleanly, then perf.
kill -INT "$(pgrep -P "$perf_pid")" 2>/dev/null || true
wait "$perf_pid" || true
python3 -c "print('$TOTAL events in %.1f s under perf: %.0f events/s' % ($end - $start, $TOTAL / ($end - $start)))"
perf report -i "$OUT/perf.data" --children --sort sym -g none 2>/dev/null |
  grep -E '^ +[0-9]' | grep -E 'churn_alert::(service|pipeline|store)|sled::tree::Tree::(apply_batch|get)|serde_json::de::from_slice|__ieee754_log|malloc' |
  head -40 | tee "$OUT/summary.txt"
