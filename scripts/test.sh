#!/usr/bin/env bash
# The whole test suite, as the README gives it: installs the tansu broker if
# missing (the integration tests start and stop their own brokers), checks
# formatting and lints, then runs every test, the crash loop, the scale-out
# test, a short soak and a short fuzzing run of the event decoders.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each step's start, with the minutes since the script began, so a slow
# step shows in the log.
step() { printf '== %dm%02ds: %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*" >&2; }

step installs

scripts/tansu.sh install
export TANSU_BIN="$(scripts/tansu.sh bin)"
# stunnel (a real TLS terminator in front of tansu) and openssl (the test's
# own CA) for tests/tls.rs, from Debian's packages when missing.
need=()
command -v stunnel4 >/dev/null 2>&1 || command -v stunnel >/dev/null 2>&1 || need+=(stunnel4)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# libcurl's headers: librdkafka is built with OAUTHBEARER/OIDC only when it
# finds a system libcurl (tests/cli.rs signs in with OIDC).
pkg-config --exists libcurl 2>/dev/null || need+=(libcurl4-openssl-dev pkg-config)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} from Debian's packages..."
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# confluent-kafka (Confluent's serializers, for tests/schema_registry.rs's
# wire-format fixtures) from PyPI, into a virtualenv under target/.
scripts/sr_fixtures.sh install
# Debian's chromium (the status page, headless) and PyPI's schemathesis (the
# OpenAPI description against the real binary) for tests/admin_page.rs.
scripts/page_tools.sh install
# Debian's prometheus (promtool for the alert rules' tests, and the server
# for tests/dashboard_live.rs's two deployments in one Prometheus).
scripts/promtool.sh install

step fmt, clippy
cargo fmt --check
cargo clippy --release --all-targets --features e2e -- -D warnings
step "cargo test (every target)"
cargo test --release --all-targets --features e2e
# The crash loop (about 3 minutes: 12 SIGKILLs against a real broker), then
# 4 on the fjall engine (about 2 minutes); one at a time, each with its
# own broker.
step "crash loop"
# tansu 0.6 now and then never assigns partitions to a restarted static
# member (the dead member is kept); the test kills and restarts such a
# process every 60 s, and gives up after 240 s. A loop that failed so is
# run once more, alone, saying so; any other failure fails the suite.
crash_log=$(mktemp)
if ! cargo test --release --features e2e --test crash_loop -- --ignored --nocapture --test-threads=1 2>&1 | tee "$crash_log"; then
  failed=$(sed -n '/^failures:$/,/^test result/p' "$crash_log" | grep -oE '^    sigkill_[a-z_]+$' | sort -u | tr -d ' ')
  unassigned=yes
  for t in $failed; do
    grep -A1 "^thread '$t' .*panicked at" "$crash_log" | grep -q 'not ready within 240 s of restart' || unassigned=no
  done
  if [ -n "$failed" ] && [ "$unassigned" = yes ]; then
    for t in $failed; do
      echo "crash loop: $t: tansu never assigned the restarted static member its partitions (known tansu 0.6 bug: a dead member kept); running it once more" >&2
      cargo test --release --features e2e --test crash_loop -- --ignored --nocapture --test-threads=1 --exact "$t"
    done
  else
    rm -f "$crash_log"
    exit 1
  fi
fi
rm -f "$crash_log"
# Scale-out (about 1-3 minutes a run, on fjall and on sled): three
# instances, one SIGKILLed, an empty-disk joiner and an empty-disk
# replacement restore from the changelog.
# tansu 0.6 can hold the group's rebalance for good after the SIGKILL (its
# known bug: a dead static member that led the group is expired but stays
# its leader; the test's long session timeout makes this rare), and the
# test fails with "b's replacement never got its partitions". That failure,
# and only that one, is said and retried once on a fresh broker; any other
# failure, or the same one twice, fails the run.
step scale-out
scale_log=$(mktemp)
if ! cargo test --release --features e2e --test scale_out -- --ignored --nocapture --test-threads=1 2>&1 | tee "$scale_log"; then
  if grep -q "b's replacement never got its partitions" "$scale_log"; then
    echo "scale-out: tansu left the consumer group stuck after the SIGKILL (known tansu 0.6 bug: a dead leader kept); running the test once more" >&2
    cargo test --release --features e2e --test scale_out -- --ignored --nocapture --test-threads=1
  else
    rm -f "$scale_log"
    exit 1
  fi
fi
rm -f "$scale_log"
# A short soak (about 1 minute): 20 s of simulated events with poison
# pills, SIGKILLs and broker restarts, compared with a clean run
# (scripts/soak.sh runs a longer one).
step soak
SOAK_SECONDS=20 cargo test --release --features e2e --test soak -- --ignored --nocapture
# The decoders under libFuzzer for 60 s, in an unoptimised build (it builds
# in ~7 minutes instead of ~12; scripts/fuzz.sh N runs longer, optimised).
step fuzz
scripts/fuzz.sh 60 --dev
step done
