//! Every record the service publishes besides the changelog's, encoded in
//! one place: alerts, triggers and outcomes (JSON with `schema_version`,
//! the `alert-id` header and CloudEvents headers), the tombstones of an
//! erasure, and dead letters (of an input the service cannot use, and of
//! an output the broker refused for good). The header names are the
//! constants in [`header`].

use crate::kafka::record::{
    cloudevents_headers, trace_context, InMessage, OutKind, OutRecord, Versioned, CE_ID, CE_SOURCE,
    CE_TIME,
};
use crate::pipeline::decode::Rejection;
use crate::pipeline::event::rfc3339;
use crate::pipeline::output::{OutcomeRecord, Trigger};
use crate::pipeline::output_format::{Format, Framing, Shape};
use crate::pipeline::step::Alert;

/// The names of the headers the service sets (CloudEvents' `ce_*` and
/// Trace Context's are in [`crate::kafka::record`]).
pub mod header {
    pub const CONTENT_TYPE: &str = "content-type";
    /// The id of the alert an alert, trigger or outcome belongs to.
    pub const ALERT_ID: &str = "alert-id";
    /// `true` on the tombstones an erasure publishes.
    pub const ERASURE: &str = "erasure";
    /// Why a record is a dead letter: a code (`invalid_json`, ...,
    /// `unpublishable`) and a sentence.
    pub const DLQ_REASON_CODE: &str = "dlq-reason-code";
    pub const DLQ_REASON: &str = "dlq-reason";
    /// Where a dead-lettered input came from.
    pub const DLQ_SOURCE_TOPIC: &str = "dlq-source-topic";
    pub const DLQ_SOURCE_PARTITION: &str = "dlq-source-partition";
    pub const DLQ_SOURCE_OFFSET: &str = "dlq-source-offset";
    pub const DLQ_ORIGINAL_TIMESTAMP: &str = "dlq-original-timestamp";
    /// Where a refused output was bound.
    pub const DLQ_OUTPUT_TOPIC: &str = "dlq-output-topic";
    /// What the payload was before it was cut to `kafka.dead_letter_max_bytes`.
    pub const DLQ_ORIGINAL_SIZE: &str = "dlq-original-size";
    pub const DLQ_ORIGINAL_SHA256: &str = "dlq-original-sha256";
    pub const DLQ_TRUNCATED: &str = "dlq-truncated";
    /// The prefix of a dead letter's copies of the original's own headers.
    pub const DLQ_HEADER_PREFIX: &str = "dlq-header-";
    pub const DLQ_HEADERS_TRUNCATED: &str = "dlq-headers-truncated";
    /// A dead letter the broker refused, sent again without its payload:
    /// the broker's error.
    pub const DLQ_PAYLOAD_DROPPED: &str = "dlq-payload-dropped";
}

/// Most bytes of the original's own headers a dead letter copies, so that
/// with the service's own headers they stay within the 16 KiB the config
/// check leaves beside the payload.
pub const ORIGINAL_HEADERS_MAX_BYTES: usize = 8 * 1024;

fn pair(name: &str, value: impl Into<Vec<u8>>) -> (String, Vec<u8>) {
    (name.to_string(), value.into())
}

/// Encodes the outputs of one input topic.
#[derive(Debug, Clone)]
pub struct Outputs {
    input_topic: String,
    /// The CloudEvents `ce_source`: `/churn-alert/` and the input topic.
    ce_source: String,
    /// Avro or JSON Schema in the registry's frame (`[outputs] format`);
    /// `None`: plain JSON.
    framing: Option<std::sync::Arc<Framing>>,
    /// Largest payload a dead letter carries (`kafka.dead_letter_max_bytes`).
    dead_letter_max_bytes: usize,
}

impl Outputs {
    pub fn new(input_topic: &str, dead_letter_max_bytes: usize) -> Self {
        Self {
            input_topic: input_topic.to_string(),
            ce_source: format!("/churn-alert/{input_topic}"),
            dead_letter_max_bytes,
            framing: None,
        }
    }

    /// Alerts, triggers and outcomes in a registry format from now on.
    pub fn with_framing(mut self, framing: Option<std::sync::Arc<Framing>>) -> Self {
        self.framing = framing;
        self
    }

    pub fn alert(&self, a: &Alert) -> OutRecord {
        self.keyed(
            OutKind::Alert,
            &a.customer_id,
            &a.alert_id,
            &a.alert_id,
            &a.as_of,
            a,
        )
    }

    /// A trigger's event time is when it was sent: when quiet hours
    /// released it, or its alert's.
    pub fn trigger(&self, t: &Trigger) -> OutRecord {
        let time = t.released_at.as_deref().unwrap_or(&t.as_of);
        self.keyed(
            OutKind::Trigger,
            &t.customer_id,
            &t.alert_id,
            &t.trigger_id,
            time,
            t,
        )
    }

    pub fn outcome(&self, o: &OutcomeRecord) -> OutRecord {
        self.keyed(
            OutKind::Outcome,
            &o.customer_id,
            &o.alert_id,
            &o.outcome_id,
            &o.decided_at,
            o,
        )
    }

    /// An output keyed by customer id: JSON with its `schema_version`, the
    /// `alert-id` header and CloudEvents headers (`ce_id` = `id`, `ce_time`
    /// = `time`, the event time it refers to).
    fn keyed(
        &self,
        kind: OutKind,
        customer_id: &str,
        alert_id: &str,
        id: &str,
        time: &str,
        body: &impl serde::Serialize,
    ) -> OutRecord {
        let payload = serde_json::to_vec(&Versioned {
            schema_version: super::record::schema_version(kind),
            body,
        })
        .expect("outputs serialise");
        let mut headers = vec![
            pair(header::CONTENT_TYPE, Format::Json.content_type()),
            pair(header::ALERT_ID, alert_id),
        ];
        headers.extend(cloudevents_headers(kind, id, &self.ce_source, time));
        let record = OutRecord {
            kind,
            key: Some(customer_id.as_bytes().to_vec()),
            payload,
            headers,
            partition: None,
        };
        let (Some(framing), Some(shape)) = (&self.framing, shape_of(kind)) else {
            return record;
        };
        match framing.encode(shape, &record.payload) {
            Ok(framed) => {
                let mut record = record;
                record.payload = framed;
                record.headers[0].1 = framing.format().content_type().into();
                record
            }
            // Never an output its readers cannot decode: a dead letter
            // with the JSON, saying why.
            Err(e) => self.unpublishable(&record, &e, kind.as_str()),
        }
    }

    /// What an erasure publishes: a tombstone (null value) for the
    /// customer's key on the alert, trigger and outcome topics, so
    /// compaction removes what was published about them.
    pub fn tombstones(&self, customer_id: &str) -> [OutRecord; 3] {
        [OutKind::Alert, OutKind::Trigger, OutKind::Outcome].map(|kind| OutRecord {
            kind,
            key: Some(customer_id.as_bytes().to_vec()),
            payload: Vec::new(),
            headers: vec![pair(header::ERASURE, b"true".to_vec())],
            partition: None,
        })
    }

    /// The dead letter of an input the service cannot use: its payload
    /// (cut to the limit), the reason, where it came from, its own headers
    /// and timestamp to trace it back to its producer. (The record's Kafka
    /// timestamp stays the time it was dead-lettered, so the topic's
    /// retention counts from then.)
    pub fn dead_letter(&self, m: &InMessage, rej: &Rejection) -> OutRecord {
        let mut headers = vec![
            pair(header::DLQ_REASON_CODE, rej.code.as_str()),
            pair(header::DLQ_REASON, rej.reason.as_str()),
            pair(header::DLQ_SOURCE_TOPIC, self.input_topic.as_str()),
            pair(header::DLQ_SOURCE_PARTITION, m.partition.to_string()),
            pair(header::DLQ_SOURCE_OFFSET, m.offset.to_string()),
        ];
        if let Some(ct) = &m.content_type {
            headers.push(pair(header::CONTENT_TYPE, ct.as_str()));
        }
        if let Some(ts) = m.timestamp {
            headers.push(pair(header::DLQ_ORIGINAL_TIMESTAMP, ts.to_string()));
        }
        headers.extend(original_headers(&m.headers));
        headers.extend(trace_context(&m.headers));
        let (payload, about) = dead_letter_body(
            m.payload.as_deref().unwrap_or(&[]),
            self.dead_letter_max_bytes,
        );
        headers.extend(about);
        let id = format!("{}-{}-{}", self.input_topic, m.partition, m.offset);
        let time = m.timestamp.map(rfc3339).unwrap_or_default();
        headers.extend(cloudevents_headers(
            OutKind::DeadLetter,
            &id,
            &self.ce_source,
            &time,
        ));
        OutRecord {
            kind: OutKind::DeadLetter,
            key: m.key.clone(),
            payload,
            headers,
            partition: None,
        }
    }

    /// The dead letter that stands for an alert, trigger or outcome bound
    /// for `topic` that the broker refused for good with `error`.
    pub fn unpublishable(
        &self,
        record: &OutRecord,
        error: &dyn std::fmt::Display,
        topic: &str,
    ) -> OutRecord {
        let (payload, about) = dead_letter_body(&record.payload, self.dead_letter_max_bytes);
        let reason = format!(
            "this {} cannot be published, for good: {error}",
            record.kind.as_str()
        );
        let mut headers = vec![
            pair(header::DLQ_REASON_CODE, "unpublishable"),
            pair(header::DLQ_REASON, reason),
            pair(header::DLQ_OUTPUT_TOPIC, topic),
        ];
        headers.extend(about);
        let own = |name: &str| {
            record
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        let (id, source, time) = (own(CE_ID), own(CE_SOURCE), own(CE_TIME));
        headers.extend(original_headers(&record.headers));
        headers.extend(trace_context(&record.headers));
        headers.extend(cloudevents_headers(
            OutKind::DeadLetter,
            &format!("unpublishable-{id}"),
            &source,
            &time,
        ));
        OutRecord {
            kind: OutKind::DeadLetter,
            key: record.key.clone(),
            payload,
            headers,
            partition: None,
        }
    }
}

/// The registry shape of an output kind; `None` for those never framed.
pub fn shape_of(kind: OutKind) -> Option<Shape> {
    match kind {
        OutKind::Alert => Some(Shape::Alert),
        OutKind::Trigger => Some(Shape::Trigger),
        OutKind::Outcome => Some(Shape::Outcome),
        _ => None,
    }
}

/// A dead letter the broker refused, to send again without its payload
/// and the original's own headers (either may be what is too large); the
/// headers keep its size and hash, and `dlq-payload-dropped` the broker's
/// `error`. `None` when it was sent so already.
pub fn without_payload(
    dead_letter: &OutRecord,
    error: &dyn std::fmt::Display,
) -> Option<OutRecord> {
    if dead_letter
        .headers
        .iter()
        .any(|(k, _)| k == header::DLQ_PAYLOAD_DROPPED)
    {
        return None;
    }
    let mut bare = dead_letter.clone();
    bare.payload.clear();
    bare.headers.retain(|(k, _)| {
        !k.starts_with(header::DLQ_HEADER_PREFIX) && k != header::DLQ_HEADERS_TRUNCATED
    });
    bare.headers
        .push(pair(header::DLQ_PAYLOAD_DROPPED, error.to_string()));
    Some(bare)
}

/// The payload of a dead letter: the original bytes, cut to at most `max`
/// so that the dead-letter topic can always take it, with headers that
/// say what was cut: the original size, the SHA-256 of the original bytes
/// (to find and check the original in the source topic) and whether the
/// payload was truncated.
fn dead_letter_body(original: &[u8], max: usize) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(original);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let truncated = original.len() > max;
    let kept = original[..original.len().min(max)].to_vec();
    let headers = vec![
        pair(header::DLQ_ORIGINAL_SIZE, original.len().to_string()),
        pair(header::DLQ_ORIGINAL_SHA256, hex),
        pair(header::DLQ_TRUNCATED, truncated.to_string()),
    ];
    (kept, headers)
}

/// A dead letter's copies of the original's headers, prefixed, in order,
/// while they fit in [`ORIGINAL_HEADERS_MAX_BYTES`]; then
/// `dlq-headers-truncated: true`.
fn original_headers(headers: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::with_capacity(headers.len());
    let mut size = 0;
    for (k, v) in headers {
        size += header::DLQ_HEADER_PREFIX.len() + k.len() + v.len();
        if size > ORIGINAL_HEADERS_MAX_BYTES {
            out.push(pair(header::DLQ_HEADERS_TRUNCATED, b"true".to_vec()));
            break;
        }
        out.push((format!("{}{k}", header::DLQ_HEADER_PREFIX), v.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(h: &'a [(String, Vec<u8>)], k: &str) -> &'a str {
        let v = &h.iter().find(|(n, _)| n == k).expect(k).1;
        std::str::from_utf8(v).unwrap()
    }

    #[test]
    fn a_dead_letter_copies_the_original_headers_within_a_bound() {
        let small = vec![("trace".to_string(), b"abc".to_vec())];
        assert_eq!(
            original_headers(&small),
            vec![("dlq-header-trace".to_string(), b"abc".to_vec())]
        );
        let big: Vec<(String, Vec<u8>)> = (0..10)
            .map(|i| (format!("h{i}"), vec![b'x'; 2000]))
            .collect();
        let h = original_headers(&big);
        let copied: usize = h.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(copied <= ORIGINAL_HEADERS_MAX_BYTES + 64, "{copied}");
        assert_eq!(h.last().unwrap().0, "dlq-headers-truncated");
        assert_eq!(h.len(), 5, "four whole headers, then the marker");
    }

    #[test]
    fn a_dead_letter_body_is_cut_to_its_limit_and_says_what_it_was() {
        let big = vec![b'x'; 2_000_000];
        let (kept, h) = dead_letter_body(&big, 1000);
        assert_eq!(kept.len(), 1000);
        assert_eq!(header(&h, "dlq-original-size"), "2000000");
        assert_eq!(header(&h, "dlq-truncated"), "true");
        let sha = header(&h, "dlq-original-sha256");
        assert_eq!(sha.len(), 64);
        // The hash is of the original, not of what was kept.
        let (_, h_kept) = dead_letter_body(&kept, 1000);
        assert_ne!(header(&h_kept, "dlq-original-sha256"), sha);
        let (small, h) = dead_letter_body(b"{}", 1000);
        assert_eq!(small, b"{}");
        assert_eq!(header(&h, "dlq-truncated"), "false");
        assert_eq!(
            header(&h, "dlq-original-sha256"),
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }
}
