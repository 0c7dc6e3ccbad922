#!/usr/bin/env bash
# Installs the tools of the admin API tests (tests/admin_page.rs) when
# missing: Debian's chromium (the status page in a headless browser) and
# PyPI's schemathesis (the OpenAPI description checked against the real
# binary), the latter in a virtualenv under target/.
#   scripts/page_tools.sh install      install both
#   scripts/page_tools.sh chromium     print the browser's path
#   scripts/page_tools.sh schemathesis print schemathesis's path
set -euo pipefail
cd "$(dirname "$0")/.."
venv="target/schemathesis-venv"
SCHEMATHESIS_VERSION=4.32.5

chromium_bin() {
  for b in chromium chromium-browser; do
    if command -v "$b" >/dev/null 2>&1; then command -v "$b"; return; fi
  done
  return 1
}

case "${1:-}" in
  install)
    if ! chromium_bin >/dev/null; then
      echo "installing chromium from Debian's packages..." >&2
      sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
      $sudo apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >&2
    fi
    mkdir -p target
    exec 9>target/schemathesis-venv.lock
    flock 9
    if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
      echo "installing schemathesis $SCHEMATHESIS_VERSION from PyPI into $venv..." >&2
      python3 -m venv "$venv"
      "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" >&2
    fi
    ;;
  chromium)
    chromium_bin
    ;;
  schemathesis)
    echo "$PWD/$venv/bin/schemathesis"
    ;;
  *)
    echo "usage: $0 install|chromium|schemathesis" >&2
    exit 2
    ;;
esac
