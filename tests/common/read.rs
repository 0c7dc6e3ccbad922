//! Reading back what the service published and stored.

use super::*;

/// A record read back from an output topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

impl Record {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap()
    }
}

/// Reads every record of a topic: all partitions from the start until no
/// new record has arrived for a quiet period. Callers read only after
/// everything they expect was acknowledged by the broker. (The broker's high
/// watermark is not used: tansu 0.6 reports it as the last record batch's
/// base offset + 1, short of the end when records were batched.)
pub fn read_all(broker: &Broker, topic: &str) -> Vec<Record> {
    read_all_of(broker, topic, PARTITIONS)
}

/// [`read_all`] for a topic of `partitions` partitions.
pub fn read_all_of(broker: &Broker, topic: &str, partitions: i32) -> Vec<Record> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", format!("reader-{}", free_port()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let quiet = Duration::from_millis(1500);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Instant::now();
    let mut out = Vec::new();
    while last.elapsed() < quiet {
        assert!(Instant::now() < deadline, "{topic} kept growing");
        let Some(m) = c.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.unwrap();
        last = Instant::now();
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Record {
            partition: m.partition(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().unwrap_or_default().to_vec(),
            headers,
        });
    }
    out
}

/// The committed state of one customer (searching all partitions).
pub fn customer(
    store: &dyn Store,
    id: &str,
) -> Option<churn_alert::pipeline::features::CustomerState> {
    (0..PARTITIONS).find_map(|p| store.get(p, id).unwrap())
}

/// Every customer's state in partitions `0..partitions` of a store.
pub fn states(
    store: &dyn Store,
    partitions: i32,
) -> BTreeMap<String, churn_alert::pipeline::features::CustomerState> {
    (0..partitions)
        .flat_map(|p| store.customers(p).unwrap())
        .collect()
}

/// The group's committed offsets of the input topic (the service commits
/// them after each state commit, for lag): partition → next offset.
pub fn committed(broker: &Broker, cfg: &Config, partitions: i32) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", &cfg.kafka.group_id)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(&cfg.kafka.input_topic, p);
    }
    let Ok(got) = c.committed_offsets(tpl, Duration::from_secs(5)) else {
        return BTreeMap::new();
    };
    got.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// Checks a published record against the repository's JSON Schema for its
/// kind (`alert`, `trigger`, `outcome`: the payload; `dead-letter`: the
/// headers) and its CloudEvents headers: `ce_type` names the kind and
/// schema version, `ce_id` is `id_field` of the payload (alerts, triggers,
/// outcomes).
pub fn assert_matches_schema(kind: &str, r: &Record, id_field: Option<&str>) {
    // Triggers and outcomes are at version 2 (they carry experiment arms).
    let version = if matches!(kind, "trigger" | "outcome") {
        2
    } else {
        1
    };
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("schemas/{kind}.v{version}.json"));
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let instance = match id_field {
        Some(_) => r.json(),
        None => serde_json::to_value(&r.headers).unwrap(),
    };
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{kind} does not match its schema: {errors:#?}\n{instance:#}"
    );
    assert_eq!(r.headers["ce_specversion"], "1.0");
    let ce_kind = kind.replace('-', "_");
    assert_eq!(
        r.headers["ce_type"],
        format!("churn-alert.{ce_kind}.v{version}")
    );
    assert!(r.headers["ce_source"].starts_with("/churn-alert/"));
    if let Some(f) = id_field {
        let body = r.json();
        assert_eq!(r.headers["ce_id"], body[f].as_str().unwrap());
        assert_eq!(body["schema_version"], version);
        assert_eq!(r.headers["content-type"], "application/json");
    }
}
