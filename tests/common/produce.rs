//! Producing test input.

use super::*;

/// One message to produce.
#[derive(Clone, Debug)]
pub struct Msg {
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub content_type: Option<&'static str>,
    /// Explicit partition (else the producer's partitioner picks by key).
    pub partition: Option<i32>,
}

impl Msg {
    pub fn with_key(mut self, key: &str) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn with_key_none(mut self) -> Self {
        self.key = None;
        self
    }

    pub fn on_partition(mut self, p: i32) -> Self {
        self.partition = Some(p);
        self
    }
}

pub fn json(key: &str, payload: String) -> Msg {
    Msg {
        key: Some(key.into()),
        payload: payload.into_bytes(),
        content_type: None,
        partition: None,
    }
}

pub fn event(cust: &str, id: &str, day: f64, ty: &str, extra: &str) -> Msg {
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(",{extra}")
    };
    json(
        cust,
        format!(
            r#"{{"event_id":"{id}","customer_id":"{cust}","type":"{ty}","occurred_at":"{}"{extra}}}"#,
            at(day)
        ),
    )
}

/// Produces messages in order; returns each one's (partition, offset) and
/// the high watermark per partition.
pub async fn produce(
    broker: &Broker,
    topic: &str,
    msgs: &[Msg],
) -> (Vec<(i32, i64)>, BTreeMap<i32, i64>) {
    let producer = broker.producer();
    let mut out = Vec::new();
    let mut high = BTreeMap::new();
    for m in msgs {
        let mut rec = FutureRecord::to(topic).payload(&m.payload);
        if let Some(k) = &m.key {
            rec = rec.key(k);
        }
        if let Some(p) = m.partition.or(if m.key.is_none() { Some(0) } else { None }) {
            rec = rec.partition(p);
        }
        if let Some(ct) = m.content_type {
            rec = rec.headers(OwnedHeaders::new().insert(Header {
                key: "content-type",
                value: Some(ct),
            }));
        }
        let d = producer
            .send(rec, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        out.push((d.partition, d.offset));
        let h = high.entry(d.partition).or_insert(0);
        *h = (*h).max(d.offset + 1);
    }
    (out, high)
}

/// Produces simulated events keyed by customer and raises `high` (the next
/// offset per partition) to cover them.
pub async fn produce_events(
    producer: &FutureProducer,
    topic: &str,
    events: &[churn_alert::offline::simulate::SimEvent],
    high: &mut BTreeMap<i32, i64>,
) {
    let sends = events.iter().map(|e| {
        producer.send(
            FutureRecord::to(topic).key(&e.customer_id).payload(&e.json),
            Duration::from_secs(30),
        )
    });
    for r in futures::future::join_all(sends).await {
        let d = r.map_err(|(e, _)| e).unwrap();
        let h = high.entry(d.partition).or_insert(0);
        *h = (*h).max(d.offset + 1);
    }
}

/// A producer that sends each record in a batch of its own (tansu 0.6
/// answers a fetch from an offset inside a record batch with the next
/// batch, so every offset a consumer may resume at must start a batch).
pub fn one_record_batches(broker: &Broker) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap()
}

/// Three customers who act on day 0 and go silent, one per partition:
/// `quiet-consent` (marketing consent: alerted and triggered),
/// `quiet-no-consent` and `quiet-unsub` (alerted, never triggered); and a
/// busy customer in every partition whose sessions move event time on for
/// 30 days. In event-time order, as a live source is.
pub fn three_go_silent() -> Vec<Msg> {
    // The quiet customers, one per partition, act on day 0 and go silent.
    let mut msgs = vec![
        event("quiet-consent", "q1", 0.0, "consent", r#""marketing":true"#).on_partition(0),
        event("quiet-consent", "q2", 0.1, "session", "").on_partition(0),
        event("quiet-no-consent", "n1", 0.1, "session", "").on_partition(1),
        event("quiet-unsub", "u0", 0.0, "consent", r#""marketing":true"#).on_partition(2),
        event(
            "quiet-unsub",
            "u1",
            0.1,
            "email",
            r#""action":"unsubscribe""#,
        )
        .on_partition(2),
    ];
    // A busy customer in every partition keeps its event time moving for 30
    // days; the stream is in event-time order, as a live source is.
    for d in 0..30 {
        for p in 0..PARTITIONS {
            msgs.push(
                event(
                    &format!("busy-{p}"),
                    &format!("b{p}-{d}"),
                    d as f64 + 0.5,
                    "session",
                    "",
                )
                .on_partition(p),
            );
        }
    }
    msgs
}
