#!/usr/bin/env bash
# Writes the experiment statistics' reference numbers with GrowthBook's own
# engine: PyPI's gbstats, in a virtualenv under target/ made on first use.
#   scripts/gbstats_fixtures.sh     rewrite src/pipeline/readout/gbstats.json
# The readout's tests (src/pipeline/readout/tests.rs) check every number
# against ours within 1e-3.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="target/gbstats-venv"
mkdir -p target
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import gbstats" 2>/dev/null; then
  echo "installing gbstats from PyPI into $venv..." >&2
  python3 -m venv "$venv"
  # gbstats 0.8.0 pins pandas < 2, whose wheels stop at Python 3.11.
  "$venv/bin/pip" install -q --disable-pip-version-check "gbstats==0.8.0" >&2
fi
exec "$venv/bin/python" scripts/gbstats_fixtures.py src/pipeline/readout/gbstats.json
