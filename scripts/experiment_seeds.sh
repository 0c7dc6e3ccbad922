#!/usr/bin/env bash
# The closed loop on several seeds: `churn-alert demo` runs the real
# service on the in-process mock cluster; its triggers reach the simulated
# customers, whose true response differs by variant (the discount wins back
# more). Prints each seed's readout, and on how many seeds the readout's
# leader is the variant the simulation made better. (At the demo's size,
# 100-170 customers, the ranking is noisy; tests/uplift.rs checks it on
# 20,000 customers.)
#   scripts/experiment_seeds.sh [SEED ...]     default: 42 1 2 3
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
seeds=("$@")
[ ${#seeds[@]} -eq 0 ] && seeds=(42 1 2 3)
won=0
for seed in "${seeds[@]}"; do
  echo "== seed $seed"
  out=$(./target/release/churn-alert demo --seed "$seed" --admin 127.0.0.1:0 2>/dev/null)
  printf '%s\n' "$out" | sed -n '/== experiment/,/leader by retention/p'
  line=$(printf '%s\n' "$out" | grep 'leader by retention')
  leader=$(printf '%s\n' "$line" | sed -E 's/.*leader by retention: ([^ ]+) .*/\1/')
  better=$(printf '%s\n' "$line" | sed -E 's/.*by the simulation: ([^)]+)\).*/\1/')
  if [ "$leader" = "$better" ]; then
    won=$((won + 1))
  else
    echo "seed $seed: the readout's leader is $leader, the simulation's better variant $better"
  fi
done
echo "the better variant leads on $won of ${#seeds[@]} seeds"
