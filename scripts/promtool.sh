#!/usr/bin/env bash
# Checks and renders the Prometheus alert rules with promtool.
#
#   scripts/promtool.sh install                  promtool (Debian's prometheus package) and jq, if missing
#   scripts/promtool.sh bin                      print promtool's path
#   scripts/promtool.sh check                    promtool check rules and test rules (deploy/prometheus-tests/),
#                                                every runbook link, the PrometheusRule against the rules,
#                                                and the dashboard's queries
#   scripts/promtool.sh render-rules BASE_URL    deploy/prometheus-rules.yml, runbook links under BASE_URL
#   scripts/promtool.sh render-prometheusrule [BASE_URL]
#                                                the PrometheusRule manifest made from the rules file
#
# deploy/prometheus-rules.yml is the one source of the rules:
# deploy/k8s/monitoring/prometheusrule.yaml is made from it
# (`scripts/promtool.sh render-prometheusrule > deploy/k8s/monitoring/prometheusrule.yaml`)
# and `check` fails when the two differ.
#
# Every runbook_url is DEFAULT_RUNBOOK_BASE#<the alert's name in lower case>,
# a heading of docs/runbooks.md as GitHub anchors it. BASE_URL replaces
# DEFAULT_RUNBOOK_BASE where the docs are hosted elsewhere (a fork, an
# internal mirror, a wiki page with the same headings).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RULES="$ROOT/deploy/prometheus-rules.yml"
TESTS="$ROOT/deploy/prometheus-tests/rules-test.yml"
OPERATOR_RULE="$ROOT/deploy/k8s/monitoring/prometheusrule.yaml"
RUNBOOKS="$ROOT/docs/runbooks.md"
DASHBOARD="$ROOT/deploy/grafana/churn-alert-dashboard.json"
DEFAULT_RUNBOOK_BASE="https://github.com/churn-alert/churn-alert/blob/main/docs/runbooks.md"

bin() {
  if [ -n "${PROMTOOL_BIN:-}" ]; then echo "$PROMTOOL_BIN"; return; fi
  if command -v promtool >/dev/null 2>&1; then command -v promtool; return; fi
  echo "promtool is not installed (scripts/promtool.sh install)" >&2
  return 1
}

install() {
  # The prometheus package brings promtool and the server
  # (/usr/bin/prometheus); without the recommends it leaves out the node
  # exporter, which nothing here uses. Where systemd runs, the package
  # also starts prometheus.service on port 9090 (in a container it starts
  # nothing). jq reads the dashboard's queries.
  local need=()
  if command -v promtool >/dev/null 2>&1; then
    echo "promtool already installed at $(command -v promtool)"
  else
    need+=(prometheus)
  fi
  command -v jq >/dev/null 2>&1 || need+=(jq)
  [ ${#need[@]} -eq 0 ] && return
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  echo "installing ${need[*]} from Debian's packages: ${sudo:+$sudo }apt-get install -y --no-install-recommends ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
  echo "promtool at $(command -v promtool), jq at $(command -v jq)"
}

# The rules file with BASE_URL in place of the default runbook base. A
# runbook_url under another base would keep it silently: refused instead.
render_rules() {
  local base="$1"
  # Through the environment: awk -v would read backslashes as escapes.
  FROM="$DEFAULT_RUNBOOK_BASE" TO="$base" awk '
    BEGIN { from = ENVIRON["FROM"]; to = ENVIRON["TO"] }
    /runbook_url:/ {
      i = index($0, from)
      if (i == 0) { printf "line %d: runbook_url not under %s\n", NR, from > "/dev/stderr"; bad = 1 }
      else $0 = substr($0, 1, i - 1) to substr($0, i + length(from))
    }
    { print }
    END { exit bad }
  ' "$RULES"
}

# The PrometheusRule: the rules file's groups (comments and all) under
# spec:, so the file that Prometheus loads and the one the Operator loads
# cannot drift apart.
render_operator_rule() {
  local base="$1"
  cat <<'EOF'
# Made from deploy/prometheus-rules.yml by
# `scripts/promtool.sh render-prometheusrule > deploy/k8s/monitoring/prometheusrule.yaml`:
# edit the rules there, then run that again (`scripts/promtool.sh check`
# fails while the two differ).
#
# For the Prometheus Operator (kubectl apply -f deploy/k8s/monitoring/),
# beside the ServiceMonitor whose job, churn-alert, the rules read.
# kube-prometheus-stack selects PrometheusRules by its release label: add
# `release: <your release>` to the labels. The rules see every namespace
# that Prometheus scrapes (unless it sets enforcedNamespaceLabel) and keep
# deployments apart by their namespace and job labels: one copy per
# Prometheus is enough, and copies applied beside several deployments
# evaluate to the same alerts (which Alertmanager merges).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: churn-alert
  labels:
    app: churn-alert
spec:
EOF
  # Everything from `groups:` on, indented under spec:.
  render_rules "$base" | awk '/^groups:/ { on = 1 } on { print ($0 == "" ? "" : "  " $0) }'
}

# Every rule's runbook_url is the default base and an anchor that a heading
# of docs/runbooks.md has on GitHub (lower case, punctuation dropped,
# spaces to hyphens).
check_runbooks() {
  local anchors
  anchors=$(sed -n 's/^#\{1,6\} //p' "$RUNBOOKS" |
    tr '[:upper:]' '[:lower:]' | sed -e 's/[^a-z0-9 _-]//g' -e 's/ /-/g')
  awk '
    /- alert:/ { alert = $3 }
    /runbook_url:/ { url = $2; gsub(/"/, "", url); print alert, url }
  ' "$RULES" | while read -r alert url; do
    local want="$DEFAULT_RUNBOOK_BASE#$(echo "$alert" | tr '[:upper:]' '[:lower:]')"
    if [ "$url" != "$want" ]; then
      echo "$alert: runbook_url $url, expected $want" >&2
      return 1
    fi
    if ! grep -qxF "${url#*#}" <<<"$anchors"; then
      echo "$alert: docs/runbooks.md has no heading with the anchor #${url#*#}" >&2
      return 1
    fi
  done
  local rules links
  rules=$(grep -c -- '- alert:' "$RULES")
  links=$(grep -c 'runbook_url:' "$RULES")
  if [ "$rules" != "$links" ]; then
    echo "$rules rules but $links runbook links in $RULES" >&2
    return 1
  fi
  echo "runbook links: $rules rules, each an anchor of docs/runbooks.md under $DEFAULT_RUNBOOK_BASE"
}

# The dashboard's queries, with its variables at All (as Grafana sends them
# when every namespace, job and instance is chosen).
dashboard_queries() {
  jq -r '.panels[] | .id as $id | .targets[] | "\($id) \(.refId) \(.expr)"' "$DASHBOARD" |
    sed -e 's/\$__rate_interval/5m/g' -e 's/\$__interval/1m/g' \
      -e 's/\${[a-z_]*}/.*/g' -e 's/\$[a-z_]*/.*/g'
}

# Every churn_alert_* and process_* selector of the dashboard selects the
# namespace, job and instances chosen (a panel without them would add up
# every deployment the Prometheus sees); promtool parses every query; and
# the queries deploy/prometheus-tests/ tests are the dashboard's.
check_dashboard() {
  local tmp="$1" unscoped
  unscoped=$(jq -r '.panels[].targets[].expr' "$DASHBOARD" |
    grep -oE '(churn_alert|process)_[a-z_]+(\{[^}]*\})?' |
    grep -vF 'namespace=~"$namespace", job=~"$job", instance=~"$instance"' || true)
  if [ -n "$unscoped" ]; then
    echo "dashboard selectors without the namespace, job and instance variables:" >&2
    echo "$unscoped" >&2
    return 1
  fi
  {
    echo "groups:"
    echo "  - name: dashboard"
    echo "    rules:"
    dashboard_queries | while read -r id ref expr; do
      echo "      - record: dashboard:panel_${id}_${ref}"
      printf "        expr: '%s'\n" "$(sed "s/'/''/g" <<<"$expr")"
    done
  } >"$tmp/dashboard-rules.yml"
  "$(bin)" check rules "$tmp/dashboard-rules.yml" >/dev/null
  dashboard_queries | cut -d' ' -f3- >"$tmp/dashboard-queries"
  local tested=0 expr
  while read -r expr; do
    if ! grep -qxF "$expr" "$tmp/dashboard-queries"; then
      echo "deploy/prometheus-tests/rules-test.yml tests a query the dashboard does not have:" >&2
      echo "  $expr" >&2
      return 1
    fi
    tested=$((tested + 1))
  done < <(sed -n "s/^ *- expr: '\(.*\)'\$/\1/p" "$TESTS")
  echo "dashboard: $(wc -l <"$tmp/dashboard-queries") queries parse, each selector scoped by the variables; $tested tested in deploy/prometheus-tests/"
}

check() {
  local promtool tmp
  promtool=$(bin)
  "$promtool" --version 2>&1 | head -1
  (cd "$ROOT" && "$promtool" check rules deploy/prometheus-rules.yml)
  (cd "$ROOT" && "$promtool" test rules deploy/prometheus-tests/rules-test.yml)
  check_runbooks
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  render_operator_rule "$DEFAULT_RUNBOOK_BASE" >"$tmp/prometheusrule.yaml"
  if ! diff -u "$OPERATOR_RULE" "$tmp/prometheusrule.yaml"; then
    echo "deploy/k8s/monitoring/prometheusrule.yaml is not made from deploy/prometheus-rules.yml:" >&2
    echo "  scripts/promtool.sh render-prometheusrule > deploy/k8s/monitoring/prometheusrule.yaml" >&2
    return 1
  fi
  # The manifest's spec is itself a rules file: promtool reads it back.
  awk '/^spec:/ { on = 1; next } on { sub(/^  /, ""); print }' "$OPERATOR_RULE" >"$tmp/spec.yml"
  "$promtool" check rules "$tmp/spec.yml" >/dev/null
  echo "deploy/k8s/monitoring/prometheusrule.yaml: the groups of deploy/prometheus-rules.yml"
  # Another base renders to rules promtool still accepts.
  render_rules "https://docs.example.com/churn-alert/runbooks" >"$tmp/other-base.yml"
  grep -q 'runbook_url: "https://docs.example.com/churn-alert/runbooks#churnalertdown"' "$tmp/other-base.yml"
  "$promtool" check rules "$tmp/other-base.yml" >/dev/null
  echo "render-rules: another base renders to valid rules"
  check_dashboard "$tmp"
}

case "${1:-}" in
  install) install ;;
  bin) bin ;;
  check) check ;;
  render-rules)
    if [ -z "${2:-}" ]; then echo "usage: $0 render-rules BASE_URL" >&2; exit 2; fi
    render_rules "$2"
    ;;
  render-prometheusrule) render_operator_rule "${2:-$DEFAULT_RUNBOOK_BASE}" ;;
  *)
    echo "usage: $0 install|bin|check|render-rules BASE_URL|render-prometheusrule [BASE_URL]" >&2
    exit 2
    ;;
esac
