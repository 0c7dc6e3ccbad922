//! The dashboard and the alert rules against a live scrape: the real
//! binary runs against tansu, takes some traffic, and every selector of
//! every dashboard and rule query (label values included) must match a
//! series its `/metrics` exports. A query whose selector matches nothing
//! shows "no data" or never fires; checking metric names alone missed
//! that once (`le="0.7"` against a bound printed `0.7000000000000001`).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;

/// A series of the exposition text: its name and labels.
type Series = (String, BTreeMap<String, String>);

/// A label matcher: label, operator, value.
type Matcher = (String, String, String);

fn series_of(body: &str) -> Vec<Series> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let head = l.rsplit_once(' ').unwrap().0;
            match head.split_once('{') {
                None => (head.to_string(), BTreeMap::new()),
                Some((name, rest)) => (
                    name.to_string(),
                    matchers(rest.trim_end_matches('}'))
                        .into_iter()
                        .map(|(k, _, v)| (k, v))
                        .collect(),
                ),
            }
        })
        .collect()
}

/// `label op "value"` pairs of a selector's braces (values hold no commas
/// or quotes here).
fn matchers(inside: &str) -> Vec<Matcher> {
    inside
        .split(',')
        .filter(|m| !m.trim().is_empty())
        .map(|m| {
            let m = m.trim();
            let at = m
                .find(['=', '!'])
                .unwrap_or_else(|| panic!("matcher {m:?}"));
            let (label, rest) = m.split_at(at);
            let op_len =
                if rest.starts_with("=~") || rest.starts_with("!=") || rest.starts_with("!~") {
                    2
                } else {
                    1
                };
            let (op, value) = rest.split_at(op_len);
            (
                label.trim().to_string(),
                op.to_string(),
                value.trim().trim_matches('"').to_string(),
            )
        })
        .collect()
}

/// Every `name{matchers}` selector of a query.
fn selectors(query: &str) -> Vec<(String, Vec<Matcher>)> {
    let mut out = Vec::new();
    let mut rest = query;
    while let Some(open) = rest.find('{') {
        let name_start = rest[..open]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .map_or(0, |i| i + 1);
        let name = &rest[name_start..open];
        let close = open + rest[open..].find('}').unwrap();
        if !name.is_empty() {
            out.push((name.to_string(), matchers(&rest[open + 1..close])));
        }
        rest = &rest[close + 1..];
    }
    out
}

fn matches(s: &Series, name: &str, ms: &[Matcher]) -> bool {
    s.0 == name
        && ms.iter().all(|(label, op, value)| {
            let got = s.1.get(label).map(String::as_str).unwrap_or("");
            // Regexes here are alternations of plain values.
            assert!(
                value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.|-".contains(c)),
                "a regex this test cannot read: {value}"
            );
            let any = || value.split('|').any(|v| v == got);
            match op.as_str() {
                "=" => got == value,
                "!=" => got != value,
                "=~" => any(),
                "!~" => !any(),
                other => panic!("operator {other}"),
            }
        })
}

/// The dashboard's variables select namespace, job and instance: labels
/// Prometheus adds when it scrapes, which no series of /metrics has.
fn without_grafana_variables(ms: Vec<Matcher>) -> Vec<Matcher> {
    ms.into_iter()
        .filter(|(label, _, value)| {
            if !value.starts_with('$') {
                return true;
            }
            assert!(
                ["namespace", "job", "instance"].contains(&label.as_str()),
                "a Grafana variable selects {label}, not a target label"
            );
            false
        })
        .collect()
}

/// The dashboard's queries alone.
fn dashboard_queries() -> Vec<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/churn-alert-dashboard.json")).unwrap(),
    )
    .unwrap();
    dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().clone())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect()
}

/// The dashboard's queries and the alert rules' expressions.
fn queries() -> Vec<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut out = dashboard_queries();
    let rules: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root.join("deploy/prometheus-rules.yml")).unwrap(),
    )
    .unwrap();
    out.extend(
        rules["groups"][0]["rules"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|r| r["expr"].as_str().unwrap().to_string()),
    );
    out
}

#[test]
fn the_selector_reader_reads_what_the_queries_use() {
    let s = selectors(r#"1 - sum(rate(a_bucket{le="0.7"}[1h])) / sum(b{x=~"p|q",y!="z"})"#);
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].0, "a_bucket");
    assert_eq!(s[1].1[0], ("x".into(), "=~".into(), "p|q".into()));
    let series =
        series_of("# HELP a x\na_bucket{le=\"0.7\",cause=\"event\"} 3\nb{x=\"q\",y=\"w\"} 1\n");
    assert!(matches(&series[0], "a_bucket", &s[0].1));
    assert!(matches(&series[1], "b", &s[1].1));
    assert!(!matches(
        &series[0],
        "a_bucket",
        &[("le".into(), "=".into(), "0.70".into())]
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs tansu: --features e2e (scripts/test.sh)"
)]
async fn every_dashboard_and_rule_selector_matches_a_live_series() {
    let broker = Broker::tansu();
    let dir = tempfile::tempdir().unwrap();
    let cfg = process_config(&broker, dir.path());
    broker.create_topics(&cfg).await;
    let port = free_port();
    let _service = spawn_service(&cfg, port, &dir.path().join("service.log"));
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Some traffic: events of a few customers and a bad message.
    let mut msgs: Vec<Msg> = (0..5)
        .map(|i| {
            event(
                &format!("c-{i}"),
                &format!("e-{i}"),
                1.0 + i as f64,
                "purchase",
                r#""amount":10,"currency":"EUR""#,
            )
        })
        .collect();
    msgs.push(json("c-0", "not an event".into()));
    produce(&broker, &cfg.kafka.input_topic, &msgs).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let body = loop {
        if let Some((200, body)) = http_get(addr, "/metrics").await {
            if metric_value(&body, "churn_alert_events_consumed_total", "") >= 5.0
                && metric_value(&body, "churn_alert_dlq_total", "") >= 1.0
            {
                break body;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the service did not take the traffic (see its log)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The standard process metrics and the build's version are there too.
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "churn_alert_build_info",
    ] {
        assert!(
            body.lines().any(|l| l.starts_with(name)),
            "{name} is not exported"
        );
    }
    let series = series_of(&body);
    let mut checked = 0;
    for q in queries() {
        for (name, ms) in selectors(&q) {
            // Prometheus' own series of the scrape job.
            if name == "up" {
                continue;
            }
            let ms = without_grafana_variables(ms);
            // A bare name: checked below, where metrics set by periodic
            // work (lag) are waited for.
            if ms.is_empty() {
                continue;
            }
            assert!(
                series.iter().any(|s| matches(s, &name, &ms)),
                "no live series matches {name}{ms:?} (in `{q}`)"
            );
            checked += 1;
        }
    }
    assert!(checked >= 3, "{checked} selectors checked");
    // And every metric a query names, with or without a selector, has a
    // live series (histograms by their _bucket, _sum and _count). Some are
    // set by periodic work (lag from the client's statistics): waited for.
    let mut wanted = std::collections::BTreeSet::new();
    for q in queries() {
        let mut rest = q.as_str();
        while let Some(i) = rest.find("churn_alert_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(tail.len());
            wanted.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    assert!(wanted.len() >= 20, "{} metric names", wanted.len());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = http_get(addr, "/metrics").await.unwrap();
        let live = series_of(&body);
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|w| !live.iter().any(|(n, _)| n == *w))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics the dashboard or rules use have no live series: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A real Prometheus (Debian's, installed by scripts/promtool.sh) on
/// 127.0.0.1, started with a config of its own and stopped when dropped.
struct Prometheus {
    _proc: Proc,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes each (namespace, admin port) every second, as job
    /// "churn-alert", and evaluates the shipped alert rules.
    fn scraping(targets: &[(&str, u16)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut cfg = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [\"{}\"]\nscrape_configs:\n  - job_name: churn-alert\n    static_configs:\n",
            root.join("deploy/prometheus-rules.yml").display()
        );
        for (ns, port) in targets {
            cfg.push_str(&format!(
                "      - targets: [\"127.0.0.1:{port}\"]\n        labels: {{namespace: {ns}}}\n"
            ));
        }
        std::fs::write(dir.path().join("prometheus.yml"), cfg).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = std::process::Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian's prometheus package: scripts/promtool.sh install)");
        Self {
            _proc: Proc(child),
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            _dir: dir,
        }
    }

    /// GET an API path with query parameters: its `data`, or `None` while
    /// Prometheus does not answer. An API error fails the test, naming it.
    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Option<serde_json::Value> {
        let resp = reqwest::Client::new()
            .get(format!("http://{}{path}", self.addr))
            .query(params)
            .send()
            .await
            .ok()?;
        let body: serde_json::Value = serde_json::from_str(&resp.text().await.ok()?).ok()?;
        assert_eq!(body["status"], "success", "{path} {params:?}: {body}");
        Some(body["data"].clone())
    }

    async fn query(&self, q: &str) -> Vec<serde_json::Value> {
        self.api("/api/v1/query", &[("query", q)])
            .await
            .unwrap_or_else(|| panic!("prometheus did not answer `{q}`"))["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// Two deployments (namespaces "prod" and "staging") of the real binary
/// scraped by one real Prometheus: the dashboard's variables list both;
/// with "prod" chosen, every panel's query runs without error and shows
/// prod's series only; the alert rules evaluate without error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs tansu and prometheus: --features e2e (scripts/test.sh)"
)]
async fn the_dashboard_shows_one_of_two_deployments_in_one_prometheus() {
    let broker = Broker::tansu();
    let dir = tempfile::tempdir().unwrap();
    let base = process_config(&broker, dir.path());
    broker.create_topics(&base).await;
    let mut services = Vec::new();
    let mut targets = Vec::new();
    for ns in ["prod", "staging"] {
        let cfg = named_run(&base, ns, dir.path());
        let port = free_port();
        services.push(spawn_service(
            &cfg,
            port,
            &dir.path().join(format!("{ns}.log")),
        ));
        targets.push((ns, port));
    }
    let msgs: Vec<Msg> = (0..5)
        .map(|i| {
            event(
                &format!("c-{i}"),
                &format!("e-{i}"),
                1.0 + i as f64,
                "purchase",
                r#""amount":10,"currency":"EUR""#,
            )
        })
        .collect();
    produce(&broker, &base.kafka.input_topic, &msgs).await;
    let prom = Prometheus::scraping(&targets);
    // Both deployments consumed the events, and Prometheus has scraped
    // each a few times (rates need two samples).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let consumed = prom
            .api(
                "/api/v1/query",
                &[("query", "count(count_over_time(churn_alert_events_consumed_total[1m]) >= 3 and churn_alert_events_consumed_total >= 5)")],
            )
            .await;
        if consumed
            .as_ref()
            .and_then(|d| d["result"][0]["value"][1].as_str())
            == Some("2")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never scraped both deployments' traffic: {consumed:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The variables: namespace lists both, job the scrape job.
    let namespaces = prom
        .api(
            "/api/v1/label/namespace/values",
            &[("match[]", "churn_alert_build_info")],
        )
        .await
        .unwrap();
    assert_eq!(namespaces, serde_json::json!(["prod", "staging"]));
    let mut with_data = 0;
    let queries = dashboard_queries();
    for q in &queries {
        // Grafana's substitution: one namespace, the job, every instance.
        let q = q
            .replace("$namespace", "prod")
            .replace("$job", "churn-alert")
            .replace("$instance", ".*");
        let result = prom.query(&q).await;
        for series in &result {
            let ns = &series["metric"]["namespace"];
            assert!(
                ns.is_null() || ns == "prod",
                "`{q}` shows another deployment: {series}"
            );
        }
        with_data += usize::from(!result.is_empty());
    }
    assert!(
        with_data * 2 >= queries.len(),
        "only {with_data} of {} panel queries show data for one deployment",
        queries.len()
    );
    // The events each deployment consumed are its own, not the sum.
    let consumed = prom
        .query("sum by (namespace, job) (churn_alert_events_consumed_total)")
        .await;
    assert_eq!(consumed.len(), 2, "{consumed:?}");
    // Every alert rule evaluates (no error, e.g. a many-to-many match).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rules = prom.api("/api/v1/rules", &[]).await.unwrap();
        let all: Vec<&serde_json::Value> = rules["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .collect();
        assert!(all.len() >= 10, "{} rules loaded", all.len());
        if all.iter().all(|r| r["health"] == "ok") {
            break;
        }
        let bad: Vec<_> = all.iter().filter(|r| r["health"] != "ok").collect();
        assert!(
            Instant::now() < deadline && bad.iter().all(|r| r["health"] == "unknown"),
            "rules that do not evaluate: {bad:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(services);
}
