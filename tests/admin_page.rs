//! The admin port as a person and a client meet it, on the real binary
//! against tansu after some traffic: the status page at `/` in headless
//! Chromium (Debian's), and the OpenAPI description at `/openapi.json`
//! checked by schemathesis (PyPI's) against the live API. Both tools are
//! installed by `scripts/page_tools.sh install` (the README's test command
//! runs it).

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use churn_alert::offline::simulate::{SimConfig, Simulator};
use common::*;

const ADMIN_TOKEN: &str = "admin-secret-token";
const READ_TOKEN: &str = "read-secret-token";

/// A tool's path from `scripts/page_tools.sh`.
fn tool(which: &str) -> PathBuf {
    let out = std::process::Command::new("scripts/page_tools.sh")
        .arg(which)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        out.status.success() && path.is_file(),
        "{which} is not installed: run `scripts/page_tools.sh install` (the README's test command does)"
    );
    path
}

/// Runs a command to its end, killed (and failing the test) after `limit`.
fn run_within(cmd: &mut std::process::Command, limit: Duration) -> Output {
    use std::os::unix::process::CommandExt;
    // A group of its own, so that a browser's helper processes go with it.
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{id}")])
                .status();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
    }
}

/// The real binary on tansu with both tokens set, after simulated traffic
/// that raised alerts.
struct Live {
    _broker: Broker,
    _dir: tempfile::TempDir,
    _service: Proc,
    addr: std::net::SocketAddr,
}

async fn live() -> Live {
    let broker = Broker::tansu();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = process_config(&broker, dir.path());
    cfg.admin.token = Some(ADMIN_TOKEN.into());
    cfg.admin.read_token = Some(READ_TOKEN.into());
    // The demo's two-variant experiment, its outcomes read at 14 days.
    cfg.policy.holdout.share = 0.2;
    cfg.policy.outcome_window_days = 14.0;
    cfg.policy
        .run_experiment(&churn_alert::offline::demo::demo_experiment());
    broker.create_topics(&cfg).await;
    let port = free_port();
    let service = spawn_service(&cfg, port, &dir.path().join("service.log"));
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut sim = Simulator::new(SimConfig::new(300, 90, 11));
    let mut events = Vec::new();
    while !sim.done() {
        events.extend(sim.next_day());
    }
    let producer = one_record_batches(&broker);
    let mut high = std::collections::BTreeMap::new();
    produce_events(&producer, &cfg.kafka.input_topic, &events, &mut high).await;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some((200, body)) = http_get(addr, "/metrics").await {
            if metric_value(&body, "churn_alert_alerts_published_total", "") >= 3.0
                && metric_value(&body, "churn_alert_experiment_customers", "") >= 10.0
            {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no alerts and experiment outcomes within 180 s; the service's log:\n{}",
            std::fs::read_to_string(dir.path().join("service.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Live {
        _broker: broker,
        _dir: dir,
        _service: service,
        addr,
    }
}

/// The page's DOM after its scripts ran, or a screenshot into `png`.
fn chromium(url: &str, profile: &std::path::Path, png: Option<&std::path::Path>) -> String {
    let mut cmd = std::process::Command::new(tool("chromium"));
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--virtual-time-budget=6000",
        "--window-size=1280,1100",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    match png {
        Some(p) => cmd.arg(format!("--screenshot={}", p.display())),
        None => cmd.arg("--dump-dom"),
    };
    let out = run_within(cmd.arg(url), Duration::from_secs(120));
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the element with `id` in a dumped DOM.
fn element<'a>(dom: &'a str, id: &str) -> &'a str {
    let open = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page"));
    let start = open + dom[open..].find('>').unwrap() + 1;
    let end = start + dom[start..].find('<').unwrap();
    &dom[start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs tansu and chromium: --features e2e (scripts/test.sh)"
)]
async fn the_status_page_shows_the_service_in_a_browser() {
    let live = live().await;
    let base = format!("http://{}", live.addr);
    let profile = tempfile::tempdir().unwrap();
    let (_, model) = http_get(live.addr, "/model").await.unwrap();
    let version = serde_json::from_str::<serde_json::Value>(&model).unwrap()["version"]
        .as_str()
        .unwrap()
        .to_string();

    // Without the read token: everything but customer ids.
    let dom = chromium(&format!("{base}/"), profile.path(), None);
    assert_eq!(element(&dom, "model"), version);
    assert!(element(&dom, "thresholds").starts_with("alert at ≥ 0."));
    assert_eq!(element(&dom, "partitions"), format!("{PARTITIONS} owned"));
    assert_eq!(element(&dom, "health"), "ready");
    assert!(element(&dom, "lag").replace(',', "").parse::<f64>().is_ok());
    assert!(element(&dom, "alerts-total").ends_with("alerts since start"));
    assert!(
        dom.matches("title=\"≤ ").count() == 20,
        "a bar per score bucket"
    );
    let rows = dom.split("<tbody id=\"alerts\">").nth(1).unwrap();
    let rows = &rows[..rows.find("</tbody>").unwrap()];
    assert!(
        rows.matches("<tr>").count() >= 3,
        "the latest alerts:\n{rows}"
    );
    assert!(
        rows.contains("hidden"),
        "customer ids hidden without the token"
    );
    assert!(!rows.contains(">c-"), "no customer id without the token");
    assert!(
        rows.contains("silence") || rows.contains("sessions"),
        "alerts list their reasons:\n{rows}"
    );

    // The experiment panel: a table and an interval plot per experiment.
    let (_, readout) = http_get(live.addr, "/experiments").await.unwrap();
    let readout: serde_json::Value = serde_json::from_str(&readout).unwrap();
    let e = &readout["experiments"][0];
    assert_eq!(e["experiment"], "winback-offer", "{readout:#}");
    let panel = dom.split("<div id=\"experiments\">").nth(1).unwrap();
    let panel = &panel[..panel.find("id=\"no-experiments\"").unwrap()];
    assert!(
        panel.contains("data-experiment=\"winback-offer\""),
        "{panel}"
    );
    assert!(panel.contains("winback-offer · "), "{panel}");
    for arm in ["holdout", "discount", "reminder"] {
        assert!(
            panel.contains(&format!("<td>{arm}</td>")),
            "{arm} row:\n{panel}"
        );
    }
    assert!(panel.contains("<svg class=\"interval\""), "{panel}");
    assert!(
        panel.matches("<circle").count() <= 2,
        "an estimate per variant with a lift, none for the holdout"
    );

    // Nor anything else of the customer's, over the API.
    let (_, body) = http_get(live.addr, "/alerts/recent").await.unwrap();
    let plain: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(plain["customer_ids_shown"], false);
    for a in plain["alerts"].as_array().unwrap() {
        for k in a.as_object().unwrap().keys() {
            assert!(
                [
                    "alert_id",
                    "probability",
                    "risk_tier",
                    "cause",
                    "as_of",
                    "model_version",
                    "reasons",
                    "raised_at"
                ]
                .contains(&k.as_str()),
                "{k} shown without the token"
            );
        }
        for r in a["reasons"].as_array().unwrap() {
            let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
            assert_eq!(
                keys,
                ["feature", "top_feature"],
                "a reason without the token"
            );
        }
    }

    // With it (given in the fragment, which never leaves the browser).
    let dom = chromium(&format!("{base}/#token={READ_TOKEN}"), profile.path(), None);
    let rows = dom.split("<tbody id=\"alerts\">").nth(1).unwrap();
    assert!(rows.contains(">c-"), "customer ids with the read token");

    // A screenshot, as docs/operations.md shows it (docs/status-page.png
    // is a copy of one).
    let png = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&png);
    chromium(&format!("{base}/"), profile.path(), Some(&png));
    let bytes = std::fs::read(&png).expect("a screenshot");
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000);
    eprintln!("screenshot: {}", png.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs tansu and schemathesis: --features e2e (scripts/test.sh)"
)]
async fn the_openapi_description_holds_for_the_live_api() {
    let live = live().await;
    let (status, body) = http_get(live.addr, "/openapi.json").await.unwrap();
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    // Every route the router serves is described.
    for p in [
        "/",
        "/metrics",
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/alerts/recent",
        "/customers/{id}",
        "/model",
        "/model/reload",
        "/policy",
        "/policy/reload",
    ] {
        assert!(paths.contains(&p), "{p} is not described: {paths:?}");
    }
    // Every success answer in JSON has a named shape (not a bare object),
    // so schemathesis below checks its fields and types.
    let mut typed = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            for code in ["200", "202"] {
                let Some(json) = op["responses"][code]["content"].get("application/json") else {
                    continue;
                };
                let schema = &json["schema"];
                assert!(
                    schema["$ref"].is_string(),
                    "{method} {path} {code} is not typed: {schema}"
                );
                typed += 1;
            }
        }
    }
    assert!(typed >= 9, "{typed} typed answers");
    // schemathesis sends generated requests (valid and invalid) to every
    // operation and checks each answer against the description: status
    // codes, content types, headers, bodies, no server error, 405 for
    // methods not described. (Accepting every generated request is not
    // expected: most customer ids are unknown.)
    let out = run_within(
        std::process::Command::new(tool("schemathesis"))
            .args(["run", &format!("http://{}/openapi.json", live.addr)])
            .args(["--checks", "all"])
            .args(["--exclude-checks", "positive_data_acceptance"])
            .args(["--max-examples", "15"])
            .args(["--header", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
            .args(["--seed", "1"])
            .env("NO_COLOR", "1")
            .current_dir(env!("CARGO_TARGET_TMPDIR")),
        Duration::from_secs(600),
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found the API and its description apart:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "{}",
        report.lines().rev().take(12).collect::<Vec<_>>().join("\n")
    );
}
