#!/usr/bin/env bash
# Makes the Schema Registry wire-format fixtures (scripts/sr_fixtures.py)
# in OUT with Confluent's own serializers: PyPI's confluent-kafka, in a
# virtualenv under target/ that is made on first use.
#   scripts/sr_fixtures.sh OUT        make the fixtures
#   scripts/sr_fixtures.sh install    only install the packages
#   scripts/sr_fixtures.sh decode F   decode the outputs listed in F with
#                                     Confluent's deserializers (sr_decode.py)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="target/sr-fixtures-venv"
mkdir -p target
# Tests run in parallel: one installs, the others wait for it.
exec 9>target/sr-fixtures-venv.lock
flock 9
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import confluent_kafka, fastavro, grpc_tools" 2>/dev/null; then
  echo "installing confluent-kafka and its serializers' packages from PyPI into $venv..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    "confluent-kafka[avro,json,protobuf,schemaregistry]==2.16.1" "grpcio-tools==1.85.1" >&2
fi
if [ "${1:-}" = install ]; then
  exit 0
fi
if [ "${1:-}" = decode ]; then
  exec "$venv/bin/python" scripts/sr_decode.py "$2"
fi
exec "$venv/bin/python" scripts/sr_fixtures.py "$@"
