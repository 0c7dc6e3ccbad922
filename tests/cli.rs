//! The real binary's command line: bad config, model files and client
//! settings are refused at start with the field at fault, failures exit
//! with their documented codes, output suits pipes and terminals, and the
//! configuration docs' SASL_SSL example passes `check-config`.

mod common;

use std::path::Path;
use std::process::Command;

use common::{churn_alert, repo_root as root, stderr_of as stderr};

#[test]
fn bad_config_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        "[kafka]\nbrokers = \"127.0.0.1:9\"\nbatch_max_mesages = 5\n",
    )
    .unwrap();
    let o = churn_alert(&["--config", p.to_str().unwrap(), "check-config"], &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("kafka.batch_max_mesages"),
        "{}",
        stderr(&o)
    );

    let o = churn_alert(
        &["check-config"],
        &[("CHURN_ALERT__POLICY__ENTER_THRESHOLD", "2")],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("policy.enter_threshold"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn model_that_does_not_match_the_features_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.json");
    let mut m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("models/churn-model.json")).unwrap(),
    )
    .unwrap();
    m["features"][3] = "shoe_size".into();
    std::fs::write(&model, m.to_string()).unwrap();
    let state = dir.path().join("state");
    let o = churn_alert(
        &["run"],
        &[
            ("CHURN_ALERT__MODEL__PATH", model.to_str().unwrap()),
            ("CHURN_ALERT__STORE__PATH", state.to_str().unwrap()),
            ("CHURN_ALERT__KAFKA__BROKERS", "127.0.0.1:9"),
        ],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("features[3]") && err.contains("shoe_size"),
        "{err}"
    );
    assert!(!Path::new(&state).exists(), "refused before touching state");
}

/// `churn-alert check-config | head -0`: the reader is gone before the
/// command prints. The command ends quietly (SIGPIPE, or success when it
/// printed first), never with a panic.
#[test]
fn a_closed_stdout_pipe_ends_a_command_without_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    let mut child = Command::new(env!("CARGO_BIN_EXE_churn-alert"))
        .arg("check-config")
        .current_dir(root())
        .env_remove("CHURN_ALERT_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run churn-alert");
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        out.status.success() || out.status.signal() == Some(13),
        "{:?}: {err}",
        out.status
    );
}

/// `score --as-of` before the history starts is refused with a non-zero
/// exit that says why, not "scored 0 customers".
#[test]
fn score_before_the_history_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &events,
        concat!(
            r#"{"event_id":"e1","customer_id":"c-1","type":"session","occurred_at":"2026-03-01T10:00:00Z"}"#,
            "\n",
            r#"{"event_id":"e2","customer_id":"c-2","type":"session","occurred_at":"2026-03-02T10:00:00Z"}"#,
            "\n",
        ),
    )
    .unwrap();
    let ev = events.to_str().unwrap();
    let out = churn_alert(&["score", "--events", ev, "--as-of", "2020-01-01"], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("no valid event at or before --as-of")
            && err.contains("2 valid events after it"),
        "{err}"
    );
    let ok = churn_alert(&["score", "--events", ev, "--as-of", "2026-04-01"], &[]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("c-2,"));
}

/// Logs written to a pipe or file carry no terminal colour codes.
#[test]
fn redirected_logs_have_no_colour_codes() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_churn-alert"))
        .arg("run")
        .current_dir(root())
        .env_remove("CHURN_ALERT_CONFIG")
        .env("CHURN_ALERT__STORE__PATH", dir.path().join("state"))
        .env("CHURN_ALERT__KAFKA__BROKERS", "127.0.0.1:9")
        .env("CHURN_ALERT__ADMIN__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run churn-alert");
    let stderr = child.stderr.take().unwrap();
    // The first info line (the admin server listening) comes at start.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        let Ok(line) = rx.recv_timeout(left) else {
            break;
        };
        let done = line.contains("admin server listening");
        seen.push(line);
        if done {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        seen.iter().any(|l| l.contains("admin server listening")),
        "no start-up log line: {seen:?}"
    );
    assert!(
        seen.iter().all(|l| !l.contains('\u{1b}')),
        "colour codes in redirected logs: {seen:?}"
    );
}

#[test]
fn a_bare_command_prints_help_and_run_is_explicit() {
    let o = churn_alert(&[], &[]);
    assert_eq!(o.status.code(), Some(2), "usage");
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(text.contains("Usage:") && text.contains("  run "), "{text}");
    assert!(text.contains("Exit codes:"), "{text}");
}

#[test]
fn failures_exit_with_their_documented_code_and_say_the_cause_once() {
    // A config file that is not there: 2, and the OS error once.
    let o = churn_alert(&["--config", "/nonexistent/c.toml", "check-config"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
    assert!(err.contains("/nonexistent/c.toml"), "{err}");
    // A flag value the command cannot use: 2.
    let o = churn_alert(
        &["score", "--events", "x.jsonl", "--as-of", "yesterday"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("\"yesterday\""), "{}", stderr(&o));
    // A model file that is not there: 2, naming it.
    let o = churn_alert(
        &["check-config"],
        &[("CHURN_ALERT__MODEL__PATH", "/nonexistent/m.json")],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        stderr(&o).matches("os error 2").count(),
        1,
        "{}",
        stderr(&o)
    );
}

/// Kafka client settings librdkafka refuses stop `run` at once with exit
/// code 2 and the key (they used to be retried every 2 s, forever), and
/// `check-config` finds them too.
#[test]
fn refused_client_settings_stop_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(
        &p,
        "[store]\npath = \"state\"\n[kafka]\nbrokers = \"127.0.0.1:9\"\n[kafka.client_properties]\n\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = \"certs/missing-ca.pem\"\n",
    )
    .unwrap();
    let model = root().join("models/churn-model.json");
    let env = [
        ("CHURN_ALERT__MODEL__PATH", model.to_str().unwrap()),
        ("CHURN_ALERT__ADMIN__LISTEN", "127.0.0.1:0"),
    ];
    for cmd in ["check-config", "run"] {
        let o = churn_alert(&["--config", p.to_str().unwrap(), cmd], &env);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("kafka.client_properties.\"ssl.ca.location\""),
            "{cmd}: {err}"
        );
        // The relative CA path was read beside the config file.
        assert!(
            err.contains(
                &dir.path()
                    .join("certs/missing-ca.pem")
                    .display()
                    .to_string()
            ),
            "{cmd}: {err}"
        );
    }
}

#[test]
fn the_effective_config_prints_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(
        &p,
        "[model]\npath = \"m/model.json\"\n[kafka]\nbrokers = \"pkc-1.example:9092\"\n[kafka.client_properties]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"PLAIN\"\n\"sasl.username\" = \"API_KEY\"\n\"sasl.password\" = \"not-to-be-printed\"\n",
    )
    .unwrap();
    let o = churn_alert(
        &["--config", p.to_str().unwrap(), "config"],
        &[("CHURN_ALERT__ADMIN__TOKEN", "also-not-to-be-printed")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!out.contains("not-to-be-printed"), "{out}");
    assert!(out.contains("\"sasl.username\" = \"API_KEY\""), "{out}");
    assert!(out.contains("brokers = \"pkc-1.example:9092\""), "{out}");
    assert!(out.contains("token = \"***\""), "{out}");
    // Paths in the file are relative to it.
    let model = dir.path().join("m/model.json");
    assert!(
        out.contains(&format!("path = \"{}\"", model.display())),
        "{out}"
    );
}

/// The SASL_SSL example (Confluent Cloud style) of docs/configuration.md,
/// "Connecting to your cluster", is accepted by `check-config` as written,
/// and the same without its password is refused naming the key.
#[test]
fn the_configuration_docs_sasl_ssl_example_passes_check_config() {
    let doc = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    let section = &doc[doc
        .find("\n## Connecting to your cluster\n")
        .expect("section")..];
    let start = section.find("```toml\n").expect("toml block") + "```toml\n".len();
    let example = &section[start..start + section[start..].find("```").unwrap()];
    assert!(
        example.contains("\"security.protocol\" = \"SASL_SSL\""),
        "{example}"
    );
    assert!(example.contains("[schema_registry]"), "{example}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cloud.toml");
    std::fs::write(&p, example).unwrap();
    let o = churn_alert(&["--config", p.to_str().unwrap(), "check-config"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let without: String = example
        .lines()
        .filter(|l| !l.starts_with("\"sasl.password\""))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&p, without).unwrap();
    let o = churn_alert(&["--config", p.to_str().unwrap(), "check-config"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("kafka.client_properties.\"sasl.password\""),
        "{}",
        stderr(&o)
    );
}

/// `simulate` and `train` draw progress bars at a terminal (a pty from
/// util-linux's `script`) and write no bar's control codes when stderr is
/// redirected.
#[test]
fn progress_bars_at_a_terminal_plain_lines_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let hist = dir.path().join("hist");
    let bin = env!("CARGO_BIN_EXE_churn-alert");
    let sim = format!(
        "{bin} simulate --customers 1000 --days 240 --end 2026-09-01 --seed 5 --out {}",
        hist.display()
    );
    let train = format!(
        "{bin} train --events {} --as-of 2026-09-01 --out {}",
        hist.join("events.jsonl").display(),
        dir.path().join("model.json").display()
    );
    // Redirected: no bar, no carriage returns, no escape codes.
    for cmd in [&sim, &train] {
        let out = Command::new("sh")
            .args(["-c", cmd])
            .current_dir(root())
            .env_remove("CHURN_ALERT_CONFIG")
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(out.status.success(), "{cmd}: {err}");
        assert!(
            !err.contains('\u{1b}') && !err.contains('\r'),
            "control codes in redirected output of {cmd}: {err:?}"
        );
    }
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("util-linux's script is not installed: the terminal half is not checked");
        return;
    }
    for (cmd, bar) in [(&sim, "simulating"), (&train, "replaying")] {
        let out = Command::new("script")
            .args(["-q", "-e", "-c", &format!("{cmd} >/dev/null"), "/dev/null"])
            .current_dir(root())
            .env_remove("CHURN_ALERT_CONFIG")
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{cmd}: {shown}");
        assert!(
            shown.contains(bar) && shown.contains('\u{1b}'),
            "no {bar} bar at a terminal: {shown:?}"
        );
    }
}

/// `churn-alert experiments` over a file of outcome records: the table, the
/// same numbers as JSON and one CSV row per arm; a line that is not an
/// outcome record is refused, naming the line.
#[test]
fn the_experiments_command_reads_a_file_of_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outcomes.jsonl");
    let mut lines = String::new();
    for c in 0..400 {
        let arm = ["holdout", "discount", "discount", "reminder", "reminder"][c % 5];
        // Retained: holdout 25%, discount 87.5%, reminder 37.5%.
        let retained = match arm {
            "holdout" => c % 20 == 0,
            "discount" => c % 20 < 17,
            _ => c % 20 < 9,
        };
        lines.push_str(&serde_json::json!({
            "schema_version": 2, "outcome_id": format!("o-{c}"), "alert_id": format!("a-{c}"),
            "customer_id": format!("c-{c}"), "outcome": if retained { "retained" } else { "churned" },
            "group": if arm == "holdout" { "holdout" } else { "treated" }, "campaign_id": "winback",
            "alerted_at": "2026-10-01T00:00:00.000Z", "decided_at": "2026-10-31T00:00:00.000Z",
            "experiment": "offer", "variant": arm,
            "split": {"holdout": 0.2, "discount": 0.4, "reminder": 0.4},
            "unsubscribed": false, "complained": c == 7
        }).to_string());
        lines.push('\n');
    }
    // A version 1 record belongs to no experiment.
    lines.push_str(r#"{"schema_version":1,"outcome_id":"o-x","alert_id":"a-x","customer_id":"c-x","outcome":"retained","group":"treated","campaign_id":null,"alerted_at":"2026-10-01T00:00:00.000Z","decided_at":"2026-10-31T00:00:00.000Z"}"#);
    lines.push('\n');
    std::fs::write(&path, &lines).unwrap();
    let file = path.to_str().unwrap();

    let o = churn_alert(&["experiments", "--outcomes", file], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("experiment offer: 400 customers"), "{table}");
    assert!(
        table.contains("discount") && table.contains("better"),
        "{table}"
    );

    let o = churn_alert(
        &["experiments", "--outcomes", file, "--format", "json"],
        &[],
    );
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let arms = json[0]["arms"].as_array().unwrap();
    let names: Vec<&str> = arms.iter().map(|a| a["arm"].as_str().unwrap()).collect();
    assert_eq!(names, ["holdout", "discount", "reminder"]);
    assert_eq!(arms[1]["customers"], 160);
    assert_eq!(arms[1]["verdict"], "better");
    let complained: Vec<u64> = arms
        .iter()
        .map(|a| a["complained"].as_u64().unwrap())
        .collect();
    assert_eq!(complained, [0, 1, 0], "customer 7 is in the discount arm");

    let o = churn_alert(&["experiments", "--outcomes", file, "--format", "csv"], &[]);
    let csv = String::from_utf8_lossy(&o.stdout);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 4, "{csv}");
    assert!(rows[0].starts_with("experiment,arm,customers,retained,"));
    assert!(rows[2].starts_with("offer,discount,160,"), "{csv}");

    std::fs::write(&path, format!("{lines}{{\"outcome\":\"maybe\"}}\n")).unwrap();
    let o = churn_alert(&["experiments", "--outcomes", file], &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("line 402") && err.contains("not an outcome record"),
        "{err}"
    );
}

/// The other documented codes, each from the real binary: 2 for a demo too
/// short to train, 3 for a record the broker (here the client, before
/// sending) refuses for good, 130 for a second stop signal.
#[test]
fn usage_refused_data_and_a_second_signal_exit_2_3_and_130() {
    let o = churn_alert(&["demo", "--days", "100"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--days 100 is too short"),
        "{}",
        stderr(&o)
    );

    // An event larger than the producer's message.max.bytes: refused by
    // librdkafka for good, without a broker; no retry can send it.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.jsonl");
    std::fs::write(
        &big,
        format!(
            "{{\"event_id\":\"e1\",\"customer_id\":\"c1\",\"type\":\"session\",\"occurred_at\":\"2026-07-20T00:00:00Z\",\"note\":\"{}\"}}\n",
            "x".repeat(2_000_000)
        ),
    )
    .unwrap();
    let o = churn_alert(
        &["produce", "--events", big.to_str().unwrap()],
        &[("CHURN_ALERT__KAFKA__BROKERS", "127.0.0.1:9")],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).to_lowercase().contains("size"), "{}", stderr(&o));

    // SIGTERM then SIGINT (two signals, so they cannot merge into one)
    // once the demo has started: the second exits at once with 130.
    use std::io::BufRead;
    let mut demo = std::process::Command::new(env!("CARGO_BIN_EXE_churn-alert"))
        .args(["demo", "--customers", "300"])
        .current_dir(root())
        .env_remove("CHURN_ALERT_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kept open until the exit: a closed pipe would end it by SIGPIPE.
    let mut out = std::io::BufReader::new(demo.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.starts_with("churn-alert demo:"), "{first}");
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(demo.id() as i32, sig) };
    }
    let status = demo.wait().unwrap();
    drop(out);
    assert_eq!(status.code(), Some(130), "{status}");
}

/// A token endpoint on 127.0.0.1: answers client-credentials requests
/// with `token` (a JWT whose payload has `sub` and `exp`, as librdkafka
/// reads them) and passes each request on.
fn token_endpoint(token: String) -> (u16, std::sync::mpsc::Receiver<common::Request>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let port = common::serve_http(move |req| {
        let _ = tx.lock().unwrap().send(req.clone());
        (
            200,
            format!(
                "{{\"access_token\":\"{token}\",\"token_type\":\"Bearer\",\"expires_in\":3600}}"
            ),
        )
    });
    (port, rx)
}

/// Just enough of a Kafka broker for SASL/OAUTHBEARER: it answers
/// ApiVersions, the SASL handshake (OAUTHBEARER) and the authentication,
/// and keeps the bearer token each client presents; then it closes.
fn oauthbearer_broker() -> (u16, std::sync::mpsc::Receiver<String>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || loop {
                let mut size = [0u8; 4];
                if conn.read_exact(&mut size).is_err() {
                    return;
                }
                let mut req = vec![0u8; i32::from_be_bytes(size) as usize];
                if conn.read_exact(&mut req).is_err() {
                    return;
                }
                let key = i16::from_be_bytes([req[0], req[1]]);
                let version = i16::from_be_bytes([req[2], req[3]]);
                let mut out = req[4..8].to_vec(); // correlation id
                let apis: [(i16, i16, i16); 4] = [(18, 0, 3), (17, 0, 1), (36, 0, 1), (3, 0, 4)];
                match key {
                    18 if version >= 3 => {
                        out.extend(0i16.to_be_bytes());
                        out.push(apis.len() as u8 + 1);
                        for (k, min, max) in apis {
                            out.extend(k.to_be_bytes());
                            out.extend(min.to_be_bytes());
                            out.extend(max.to_be_bytes());
                            out.push(0);
                        }
                        out.extend(0i32.to_be_bytes());
                        out.push(0);
                    }
                    18 => {
                        out.extend(0i16.to_be_bytes());
                        out.extend((apis.len() as i32).to_be_bytes());
                        for (k, min, max) in apis {
                            out.extend(k.to_be_bytes());
                            out.extend(min.to_be_bytes());
                            out.extend(max.to_be_bytes());
                        }
                        if version >= 1 {
                            out.extend(0i32.to_be_bytes());
                        }
                    }
                    17 => {
                        out.extend(0i16.to_be_bytes());
                        out.extend(1i32.to_be_bytes());
                        out.extend(11i16.to_be_bytes());
                        out.extend(b"OAUTHBEARER");
                    }
                    36 => {
                        // RFC 7628: "n,,\x01auth=Bearer <token>\x01\x01".
                        let text = String::from_utf8_lossy(&req).to_string();
                        if let Some(t) = text.split("auth=Bearer ").nth(1) {
                            let _ = tx.send(t.split('\u{1}').next().unwrap_or("").to_string());
                        }
                        out.extend(0i16.to_be_bytes());
                        out.extend((-1i16).to_be_bytes());
                        out.extend(0i32.to_be_bytes());
                        if version >= 1 {
                            out.extend(0i64.to_be_bytes());
                        }
                    }
                    _ => return,
                }
                let mut frame = (out.len() as i32).to_be_bytes().to_vec();
                frame.extend(out);
                if conn.write_all(&frame).is_err() {
                    return;
                }
            });
        }
    });
    (port, rx)
}

/// SASL/OAUTHBEARER with OIDC client credentials: librdkafka fetches a
/// token from the identity provider's endpoint (here the test's, on
/// 127.0.0.1) with the client's id and secret (the secret read from a
/// file), and presents it to the broker.
#[test]
fn oauthbearer_oidc_fetches_a_token_and_presents_it_to_the_broker() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let jwt = format!(
        "{}.{}.{}",
        b64(r#"{"alg":"RS256","typ":"JWT"}"#),
        b64(&format!(
            r#"{{"sub":"churn-alert","exp":{exp},"iat":{}}}"#,
            exp - 3600
        )),
        b64("signature")
    );
    let (idp, requests) = token_endpoint(jwt.clone());
    let (broker, presented) = oauthbearer_broker();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, "s3cret-value\n").unwrap();
    let url = format!("http://127.0.0.1:{idp}/oauth2/token");
    let secret_path = secret.display().to_string();
    let p = "CHURN_ALERT__KAFKA__CLIENT_PROPERTIES__";
    let env: Vec<(String, String)> = [
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanism", "OAUTHBEARER"),
        ("sasl.oauthbearer.method", "oidc"),
        ("sasl.oauthbearer.client.id", "churn-alert"),
        ("sasl.oauthbearer.client.secret_file", secret_path.as_str()),
        ("sasl.oauthbearer.token.endpoint.url", url.as_str()),
        ("sasl.oauthbearer.scope", "kafka"),
    ]
    .iter()
    .map(|(k, v)| (format!("{p}{k}"), v.to_string()))
    .chain([(
        "CHURN_ALERT__KAFKA__BROKERS".to_string(),
        format!("127.0.0.1:{broker}"),
    )])
    .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // The config is accepted, and --connect makes a client that signs in.
    let o = churn_alert(&["check-config", "--connect"], &env);
    let request = requests
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("no token request: {}", stderr(&o)));
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/oauth2/token")
    );
    let basic = base64::engine::general_purpose::STANDARD.encode("churn-alert:s3cret-value");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Basic {basic}").as_str()),
        "the client's id and secret (from the file) are not sent: {request:?}"
    );
    assert!(
        request.body.contains("grant_type=client_credentials"),
        "{request:?}"
    );
    assert!(request.body.contains("scope=kafka"), "{request:?}");
    let token = presented
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("no token presented to the broker: {}", stderr(&o)));
    assert_eq!(token, jwt, "the broker got another token");
}

/// `check-config --connect` against a real broker: passes with the topics
/// created (listing them), and otherwise exits 2 naming the first problem
/// and its key: a broker that is not there, a missing input topic, a
/// changelog with the wrong partition count, an unreachable registry, a
/// store folder that cannot be written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs tansu: --features e2e (scripts/test.sh)"
)]
async fn check_config_connect_names_the_first_problem_and_passes_against_a_ready_cluster() {
    let broker = common::Broker::tansu();
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::test_config(&broker, dir.path());
    broker.create_topics(&cfg).await;
    let store = dir.path().join("state").display().to_string();
    let bootstrap = broker.bootstrap();
    let check = |extra: &[(&str, &str)]| {
        let mut env = vec![
            ("CHURN_ALERT__KAFKA__BROKERS", bootstrap.as_str()),
            ("CHURN_ALERT__STORE__PATH", store.as_str()),
        ];
        env.extend_from_slice(extra);
        churn_alert(&["check-config", "--connect"], &env)
    };
    let ok = check(&[]);
    let out = String::from_utf8_lossy(&ok.stdout).to_string();
    assert_eq!(ok.status.code(), Some(0), "{out}{}", stderr(&ok));
    assert!(
        out.contains("input topic \"customer-events\" has 3 partition(s)"),
        "{out}"
    );
    assert!(
        out.contains("kafka.changelog_topic \"churn-alert-state-changelog\": 3 partition(s)"),
        "{out}"
    );
    assert!(out.contains("connect ok"), "{out}");

    let closed = common::free_port().to_string();
    let nowhere = format!("127.0.0.1:{closed}");
    let registry = format!("http://127.0.0.1:{closed}");
    broker.create_with(&["short-changelog"], 1).await;
    for (extra, key, says) in [
        (
            vec![("CHURN_ALERT__KAFKA__BROKERS", nowhere.as_str())],
            "kafka.brokers",
            "no broker at",
        ),
        (
            vec![("CHURN_ALERT__KAFKA__INPUT_TOPIC", "no-such-topic")],
            "kafka.input_topic",
            "does not exist",
        ),
        (
            vec![("CHURN_ALERT__KAFKA__CHANGELOG_TOPIC", "short-changelog")],
            "kafka.changelog_topic",
            "has 1 partitions",
        ),
        (
            vec![("CHURN_ALERT__SCHEMA_REGISTRY__URL", registry.as_str())],
            "schema_registry.url",
            "unavailable",
        ),
        (
            vec![("CHURN_ALERT__STORE__PATH", "/proc/churn-alert-state")],
            "store.path",
            "cannot be created",
        ),
    ] {
        let o = check(&extra);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        assert!(
            err.contains(&format!("config key `{key}`")) && err.contains(says),
            "{extra:?}: {err}"
        );
    }
}
