//! Confluent's Schema Registry wire format against real processes: events
//! serialized by Confluent's own serializers (PyPI's confluent-kafka, run
//! by `scripts/sr_fixtures.sh`) as Avro, protobuf and JSON Schema, through
//! a real tansu broker, into the service, which fetches their schemas from
//! a registry. No registry server can be installed here, so the test
//! serves the registry's REST endpoint (`GET /schemas/ids/{id}`, basic
//! auth) from the files the fixtures saved; a folder of those files is the
//! other source the service supports.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use churn_alert::pipeline::error::{Classify, ErrorClass};
use churn_alert::pipeline::event::DAY_MS;
use common::*;

const USER: &str = "fixture-key";
const SECRET: &str = "fixture-secret";

/// One fixture message.
struct Fixture {
    format: String,
    key: String,
    value: Vec<u8>,
}

/// Runs Confluent's serializers: the messages, and the folder of the
/// registry's answers by schema id.
fn fixtures(dir: &Path) -> (Vec<Fixture>, PathBuf) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = dir.join("fixtures");
    let status = std::process::Command::new(root.join("scripts/sr_fixtures.sh"))
        .arg(&out)
        .status()
        .expect("scripts/sr_fixtures.sh runs");
    assert!(status.success(), "scripts/sr_fixtures.sh failed");
    let text = std::fs::read_to_string(out.join("messages.jsonl")).unwrap();
    let msgs = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Fixture {
                format: v["format"].as_str().unwrap().into(),
                key: v["key"].as_str().unwrap().into(),
                value: base64::engine::general_purpose::STANDARD
                    .decode(v["value_b64"].as_str().unwrap())
                    .unwrap(),
            }
        })
        .collect();
    (msgs, out.join("registry"))
}

/// The registry's `GET /schemas/ids/{id}`, served from a folder, with basic
/// auth; it can be taken down (503) and counts the schemas it served.
struct Registry {
    url: String,
    up: Arc<AtomicBool>,
    served: Arc<Mutex<BTreeMap<u32, usize>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Registry {
    fn serve(dir: PathBuf, up: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let up = Arc::new(AtomicBool::new(up));
        let served = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (u, s, st) = (up.clone(), served.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let auth = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{SECRET}"))
            );
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        conn.set_nonblocking(false).unwrap();
                        answer(conn, &dir, &auth, &u, &s);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Registry {
            url,
            up,
            served,
            stop,
            thread: Some(thread),
        }
    }

    fn served(&self) -> BTreeMap<u32, usize> {
        self.served.lock().unwrap().clone()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn answer(
    mut conn: std::net::TcpStream,
    dir: &Path,
    auth: &str,
    up: &AtomicBool,
    served: &Mutex<BTreeMap<u32, usize>>,
) {
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let mut authorized = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") && value.trim() == auth {
                authorized = true;
            }
        }
    }
    let id = request
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.strip_prefix("/schemas/ids/"))
        .and_then(|i| i.parse::<u32>().ok());
    let (status, body) = if !up.load(Ordering::Relaxed) {
        (
            "503 Service Unavailable",
            r#"{"error_code":50302,"message":"down"}"#.to_string(),
        )
    } else if !authorized {
        (
            "401 Unauthorized",
            r#"{"error_code":401,"message":"Unauthorized"}"#.to_string(),
        )
    } else {
        match id.map(|i| (i, std::fs::read_to_string(dir.join(format!("{i}.json"))))) {
            Some((i, Ok(b))) => {
                *served.lock().unwrap().entry(i).or_default() += 1;
                ("200 OK", b)
            }
            Some((i, Err(_))) => {
                *served.lock().unwrap().entry(i).or_default() += 1;
                (
                    "404 Not Found",
                    r#"{"error_code":40403,"message":"Schema not found"}"#.to_string(),
                )
            }
            None => (
                "404 Not Found",
                r#"{"error_code":404,"message":"HTTP 404 Not Found"}"#.to_string(),
            ),
        }
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.flush();
}

/// A framed message: schema `id`, then `rest`.
fn framed(id: u32, rest: &[u8]) -> Vec<u8> {
    let mut v = vec![0];
    v.extend(id.to_be_bytes());
    v.extend(rest);
    v
}

fn schema_id(value: &[u8]) -> u32 {
    u32::from_be_bytes(value[1..5].try_into().unwrap())
}

/// The fixtures, then the bad cases made from them: (message, expected
/// dead-letter reason or None).
fn cases(fx: &[Fixture]) -> Vec<(Msg, Option<&'static str>)> {
    let msg = |key: &str, payload: Vec<u8>| Msg {
        key: Some(key.into()),
        payload,
        content_type: None,
        partition: None,
    };
    let of = |f: &str| fx.iter().find(|m| m.format == f).unwrap();
    let (avro, proto, json) = (of("avro"), of("protobuf"), of("json"));
    let mut out: Vec<(Msg, Option<&str>)> = fx
        .iter()
        .map(|m| (msg(&m.key, m.value.clone()), None))
        .collect();
    let json_event = |ty: &str, extra: &str| {
        framed(
            schema_id(&json.value),
            format!(
                r#"{{"event_id":"sr-json-bad","customer_id":"sr-json","type":"{ty}","occurred_at":"2023-11-15T00:00:00Z"{extra}}}"#
            )
            .as_bytes(),
        )
    };
    out.extend([
        // An id the registry does not know.
        (
            msg(&avro.key, framed(4242, &avro.value[5..])),
            Some("unknown_schema"),
        ),
        // An Avro datum cut short.
        (
            msg(&avro.key, avro.value[..8].to_vec()),
            Some("schema_mismatch"),
        ),
        // Protobuf message indexes [5]: the schema has one message.
        (
            msg(
                &proto.key,
                framed(schema_id(&proto.value), &[2, 10, 0x0a, 1, b'x']),
            ),
            Some("schema_mismatch"),
        ),
        // JSON that the registered JSON Schema refuses (amount minimum 0).
        (
            msg(&json.key, json_event("purchase", r#","amount":-5"#)),
            Some("schema_mismatch"),
        ),
        // JSON that fits the schema but not the event contract.
        (
            msg(&json.key, json_event("teleport", "")),
            Some("unknown_type"),
        ),
        // The magic byte with no room for a schema id.
        (msg(&json.key, vec![0, 0, 1]), Some("undecodable")),
    ]);
    out
}

async fn run(broker: Broker, source: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (fx, folder) = fixtures(dir.path());
    assert_eq!(fx.len(), 9, "three events in each of three formats");
    let registry = Registry::serve(folder.clone(), source == "dir");
    let mut cfg = test_config(&broker, dir.path());
    // Small batches: a schema id met again in a later batch is served
    // from what was fetched, not fetched again.
    cfg.kafka.batch_max_messages = 4;
    if source == "dir" {
        cfg.schema_registry.dir = Some(folder);
    } else {
        cfg.schema_registry.url = Some(registry.url.clone());
        cfg.schema_registry.basic_auth_user_info = Some(format!("{USER}:{SECRET}"));
    }
    broker.create_topics(&cfg).await;
    let svc = start(&cfg).await;
    let cases = cases(&fx);
    let msgs: Vec<Msg> = cases.iter().map(|(m, _)| m.clone()).collect();
    let (positions, high) = produce(&broker, &cfg.kafka.input_topic, &msgs).await;

    if source == "url" {
        // The registry is down: the service waits, unready, and neither
        // applies nor dead-letters anything.
        let deadline = Instant::now() + Duration::from_secs(60);
        while svc
            .metric(
                "churn_alert_dependency_failures_total",
                "dependency=\"schema_registry\"",
            )
            .await
            < 2.0
        {
            assert!(Instant::now() < deadline, "no registry failure counted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_ne!(svc.http_get("/readyz").await.0, 200, "ready while waiting");
        assert!(read_all(&broker, &cfg.kafka.dlq_topic).is_empty());
        assert!(customer(svc.store.as_ref(), "sr-avro").is_none());
        registry.up.store(true, Ordering::Relaxed);
    }
    svc.wait_committed(&high).await;

    let dlq = read_all(&broker, &cfg.kafka.dlq_topic);
    let expected: Vec<(usize, &str)> = cases
        .iter()
        .enumerate()
        .filter_map(|(i, (_, code))| code.map(|c| (i, c)))
        .collect();
    assert_eq!(
        dlq.len(),
        expected.len(),
        "one dead letter per bad message: {dlq:#?}"
    );
    for (i, code) in expected {
        let (p, o) = positions[i];
        let r = dlq
            .iter()
            .find(|r| {
                r.headers.get("dlq-source-partition") == Some(&p.to_string())
                    && r.headers.get("dlq-source-offset") == Some(&o.to_string())
            })
            .unwrap_or_else(|| panic!("no dead letter for case {i} ({code})"));
        assert_eq!(
            r.headers["dlq-reason-code"], code,
            "case {i}: {}",
            r.headers["dlq-reason"]
        );
        assert_eq!(r.payload, cases[i].0.payload, "original bytes kept");
        assert_matches_schema("dead-letter", r, None);
    }
    // Each format's three events applied: two purchases (12.50 EUR and
    // 20 USD) and a session.
    for c in ["sr-avro", "sr-protobuf", "sr-json"] {
        let s = customer(svc.store.as_ref(), c).unwrap_or_else(|| panic!("{c} has no state"));
        assert_eq!(s.purchases, 2, "{c}");
        assert!(
            (s.gross - (12.5 + 20.0 * 0.92)).abs() < 1e-9,
            "{c}: gross {}",
            s.gross
        );
        assert_eq!(s.last_seen, 1_700_000_000_000 + 3 * DAY_MS, "{c}");
    }
    assert_eq!(
        svc.metric("churn_alert_dlq_total", "reason=\"schema_mismatch\"")
            .await,
        3.0
    );
    assert_eq!(svc.http_get("/readyz").await.0, 200);
    if source == "url" {
        // Each schema fetched once (the unknown id too): ids are cached.
        let served = registry.served();
        assert_eq!(
            served.values().copied().collect::<Vec<_>>(),
            vec![1; 4],
            "{served:?}"
        );
        assert!(served.contains_key(&4242));
    } else {
        assert!(registry.served().is_empty());
    }
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs tansu and the Python fixtures: --features e2e (scripts/test.sh)"
)]
async fn framed_events_decode_with_schemas_from_the_registry_which_is_waited_for() {
    run(Broker::tansu(), "url").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs tansu and the Python fixtures: --features e2e (scripts/test.sh)"
)]
async fn framed_events_decode_with_schemas_from_a_folder() {
    run(Broker::tansu(), "dir").await;
}

/// What no retry can fix stops the service (a config error, exit code 2)
/// naming the setting to fix, instead of waiting forever or
/// dead-lettering: `path` is appended to the registry's URL, `secret` is
/// the basic-auth secret.
async fn stops_for_good(path: &str, secret: &str, expect: &[&str]) {
    let broker = Broker::tansu();
    let dir = tempfile::tempdir().unwrap();
    let (fx, folder) = fixtures(dir.path());
    let registry = Registry::serve(folder, true);
    let mut cfg = test_config(&broker, dir.path());
    cfg.schema_registry.url = Some(format!("{}{path}", registry.url));
    cfg.schema_registry.basic_auth_user_info = Some(format!("{USER}:{secret}"));
    broker.create_topics(&cfg).await;
    let svc = start(&cfg).await;
    let m = &fx[0];
    let msg = Msg {
        key: Some(m.key.clone()),
        payload: m.value.clone(),
        content_type: None,
        partition: None,
    };
    produce(&broker, &cfg.kafka.input_topic, &[msg]).await;
    let err = svc.finished().await.expect_err("the service stops");
    assert_eq!(err.class(), ErrorClass::Config, "{err}");
    let text = err.to_string();
    for e in expect {
        assert!(text.contains(e), "{e:?} in {text}");
    }
    assert!(!text.contains(secret), "the secret is not shown: {text}");
    assert!(
        read_all(&broker, &cfg.kafka.dlq_topic).is_empty(),
        "nothing dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs tansu and the Python fixtures: --features e2e (scripts/test.sh)"
)]
async fn refused_credentials_stop_the_service_naming_the_setting() {
    stops_for_good(
        "",
        "wrong-secret",
        &["answered 401", "basic_auth_user_info"],
    )
    .await;
}

/// A URL that does not lead to a registry (a 404 without the registry's
/// schema-not-found code) is not taken for "schema unknown", which would
/// dead-letter every framed message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs tansu and the Python fixtures: --features e2e (scripts/test.sh)"
)]
async fn a_url_that_is_no_registry_stops_the_service_naming_it() {
    stops_for_good(
        "/not-the-registry",
        SECRET,
        &["answered 404", "schema_registry.url"],
    )
    .await;
}

/// Schemas registered, by id: subject and the registration's body.
type Registered = Arc<Mutex<BTreeMap<u32, (String, serde_json::Value)>>>;

/// A Schema Registry in memory: `POST /subjects/{subject}/versions`
/// registers (the same schema text keeps its id), `GET /schemas/ids/{id}`
/// and `GET /subjects` answer as Confluent's do. Returns its URL and the
/// subjects registered, by id.
fn registry_in_memory() -> (String, Registered) {
    let schemas: Registered = Default::default();
    let kept = schemas.clone();
    let port = serve_http(move |req| {
        let mut schemas = kept.lock().unwrap();
        let path = req.path.split('?').next().unwrap_or("");
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (req.method.as_str(), segments.as_slice()) {
            ("POST", ["subjects", subject, "versions"]) => {
                let body: serde_json::Value = serde_json::from_str(&req.body).unwrap();
                let id = schemas
                    .iter()
                    .find(|(_, (_, b))| b["schema"] == body["schema"])
                    .map(|(id, _)| *id)
                    .unwrap_or(schemas.len() as u32 + 1);
                schemas.insert(id, (subject.to_string(), body));
                (200, format!("{{\"id\":{id}}}"))
            }
            ("GET", ["schemas", "ids", id]) => match schemas.get(&id.parse().unwrap_or(0)) {
                Some((_, body)) => {
                    let mut answer = serde_json::json!({"schema": body["schema"]});
                    if body["schemaType"] != "AVRO" {
                        answer["schemaType"] = body["schemaType"].clone();
                    }
                    (200, answer.to_string())
                }
                None => (
                    404,
                    r#"{"error_code":40403,"message":"Schema not found"}"#.into(),
                ),
            },
            ("GET", ["subjects"]) => {
                let subjects: Vec<&String> = schemas.values().map(|(s, _)| s).collect();
                (200, serde_json::to_string(&subjects).unwrap())
            }
            _ => (404, r#"{"error_code":404,"message":"not found"}"#.into()),
        }
    });
    (format!("http://127.0.0.1:{port}"), schemas)
}

/// Drops null fields, which JSON leaves out where Avro has a null branch.
fn without_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.into_iter().map(without_nulls).collect())
        }
        other => other,
    }
}

/// The same run in JSON (the default), Avro and JSON Schema, each with its
/// own topics on one tansu broker: every alert, trigger and outcome of each
/// framed run is read by confluent-kafka's own deserializer
/// (`AvroDeserializer`, `JSONDeserializer`) with the schema the service
/// registered under `<topic>-value`, and equals the JSON run's record; the
/// experiment readout reads the framed outcomes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs tansu and the Python fixtures: --features e2e (scripts/test.sh)"
)]
async fn avro_and_json_schema_outputs_are_read_by_confluents_deserializers() {
    let broker = Broker::tansu();
    let dir = tempfile::tempdir().unwrap();
    let (url, schemas) = registry_in_memory();
    let mut records = BTreeMap::new();
    for run in ["json", "avro", "json_schema"] {
        let mut cfg = named_run(&test_config(&broker, dir.path()), run, dir.path());
        cfg.kafka.input_topic = format!("{run}-events");
        cfg.policy.outcome_window_days = 10.0;
        if run != "json" {
            cfg.outputs.format = serde_json::from_value(serde_json::json!(run)).unwrap();
            cfg.schema_registry.url = Some(url.clone());
        }
        broker.create_topics(&cfg).await;
        let svc = start(&cfg).await;
        let (_, high) = produce(&broker, &cfg.kafka.input_topic, &three_go_silent()).await;
        svc.wait_committed(&high).await;
        svc.stop().await;
        let k = &cfg.kafka;
        let mut of_run = Vec::new();
        for (kind, topic) in [
            ("alert", &k.alerts_topic),
            ("trigger", &k.triggers_topic),
            ("outcome", &k.outcomes_topic),
        ] {
            for r in read_all(&broker, topic) {
                of_run.push((kind, topic.clone(), r.payload.clone()));
            }
        }
        records.insert(run, (of_run, cfg));
    }
    let id_of = |v: &serde_json::Value| {
        ["outcome_id", "trigger_id", "alert_id"]
            .iter()
            .find_map(|k| v[*k].as_str().map(String::from))
            .unwrap()
    };
    let plain: BTreeMap<String, serde_json::Value> = records["json"]
        .0
        .iter()
        .map(|(_, _, p)| {
            let v: serde_json::Value = serde_json::from_slice(p).unwrap();
            (id_of(&v), without_nulls(v))
        })
        .collect();
    assert_eq!(plain.len(), 7, "3 alerts, 1 trigger, 3 outcomes");
    for format in ["avro", "json_schema"] {
        let (framed_run, cfg) = &records[format];
        let count = |kind: &str| framed_run.iter().filter(|(k, _, _)| *k == kind).count();
        assert_eq!(
            (count("alert"), count("trigger"), count("outcome")),
            (3, 1, 3)
        );
        // Registered under TopicNameStrategy subjects.
        let subjects: Vec<String> = schemas
            .lock()
            .unwrap()
            .values()
            .map(|(s, _)| s.clone())
            .collect();
        for topic in [
            &cfg.kafka.alerts_topic,
            &cfg.kafka.triggers_topic,
            &cfg.kafka.outcomes_topic,
        ] {
            assert!(subjects.contains(&format!("{topic}-value")), "{subjects:?}");
        }
        // Confluent's deserializers read every record.
        let job = serde_json::json!({
            "registry": url,
            "format": format,
            "records": framed_run.iter().map(|(_, topic, value)| serde_json::json!({
                "topic": topic,
                "value_b64": base64::engine::general_purpose::STANDARD.encode(value),
            })).collect::<Vec<_>>(),
        });
        let job_file = dir.path().join(format!("decode-{format}.json"));
        std::fs::write(&job_file, job.to_string()).unwrap();
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let out = std::process::Command::new(root.join("scripts/sr_fixtures.sh"))
            .arg("decode")
            .arg(&job_file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "confluent-kafka could not read the {format} outputs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let decoded: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["value"].clone())
            .collect();
        assert_eq!(decoded.len(), framed_run.len());
        // Each equals the JSON run's record of the same id.
        for d in decoded {
            let d = without_nulls(d);
            assert_eq!(Some(&d), plain.get(&id_of(&d)), "{format}: {d}");
        }
        // The readout reads the framed outcomes as it reads JSON ones.
        let (changes, skipped) = churn_alert::kafka::outcomes::read_all(&cfg.kafka).unwrap();
        assert_eq!((changes.len(), skipped), (3, 0), "{format}");
    }
}
