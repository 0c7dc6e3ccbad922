#!/usr/bin/env bash
# The closed loop on several seeds: `churn-alert demo` runs the real
# service on the in-process mock cluster; its triggers reach the simulated
# customers, whose true response differs by variant (the discount wins back
# more). Prints each seed's readout and fails if the readout's leader is
# not the variant the simulation made better.
#   scripts/experiment_seeds.sh [SEED ...]     default: 42 1 2
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
seeds=("$@")
[ ${#seeds[@]} -eq 0 ] && seeds=(42 1 2)
failed=0
for seed in "${seeds[@]}"; do
  echo "== seed $seed"
  out=$(./target/release/churn-alert demo --seed "$seed" --admin 127.0.0.1:0 2>/dev/null)
  printf '%s\n' "$out" | sed -n '/== experiment/,/leader by retention/p'
  line=$(printf '%s\n' "$out" | grep 'leader by retention')
  leader=$(printf '%s\n' "$line" | sed -E 's/.*leader by retention: ([^ ]+) .*/\1/')
  better=$(printf '%s\n' "$line" | sed -E 's/.*by the simulation: ([^)]+)\).*/\1/')
  if [ "$leader" != "$better" ]; then
    echo "seed $seed: the readout's leader is $leader, the simulation's better variant $better" >&2
    failed=1
  fi
done
exit $failed
