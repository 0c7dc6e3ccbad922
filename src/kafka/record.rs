//! The Kafka edge's records: an input message detached from the client,
//! and an output record with the topic it goes to.

use crate::pipeline::event::Millis;

/// An input message, detached from the Kafka client.
#[derive(Debug, Clone, PartialEq)]
pub struct InMessage {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// The `content-type` header, if any.
    pub content_type: Option<String>,
    /// Kafka timestamp (ms), if any.
    pub timestamp: Option<Millis>,
    /// Every header of the message, in order (a dead letter keeps them).
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A record to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct OutRecord {
    pub kind: OutKind,
    /// The customer id; for a dead letter, the original key (if any).
    pub key: Option<Vec<u8>>,
    /// Empty for an alert, trigger or outcome: a tombstone (null value)
    /// for the key, published on erasure.
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// The partition to write to (changelog records: the input partition);
    /// `None`: the producer's partitioner picks by key.
    pub partition: Option<i32>,
}

/// Which topic a record goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutKind {
    Alert,
    Trigger,
    Outcome,
    DeadLetter,
    /// The state changelog (see [`crate::kafka::changelog`]).
    Changelog,
}

/// The W3C Trace Context headers of an input (`traceparent`, with
/// `tracestate` when present), copied onto the outputs it causes so they
/// continue its trace. A `traceparent` that is not well-formed is left out,
/// and its `tracestate` with it, as the specification says.
pub fn trace_context(headers: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let Some(parent) = get("traceparent").filter(|v| valid_traceparent(v)) else {
        return Vec::new();
    };
    let mut out = vec![("traceparent".to_string(), parent.clone())];
    if let Some(state) = get("tracestate").filter(|v| v.len() <= 512) {
        out.push(("tracestate".to_string(), state.clone()));
    }
    out
}

/// `version-traceid-parentid-flags` in lowercase hex: version `ff` and
/// all-zero ids are invalid; version `00` has exactly four fields, later
/// versions may append more.
fn valid_traceparent(v: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(v) else {
        return false;
    };
    let f: Vec<&str> = s.split('-').collect();
    let hex = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |p: &str| p.bytes().any(|b| b != b'0');
    f.len() >= 4
        && hex(f[0], 2)
        && f[0] != "ff"
        && (f[0] != "00" || f.len() == 4)
        && hex(f[1], 32)
        && nonzero(f[1])
        && hex(f[2], 16)
        && nonzero(f[2])
        && hex(f[3], 2)
}

/// The version of an output's layout: the JSON payload's `schema_version`
/// and the `v` of its `ce_type`; the schemas are `schemas/<kind>.v<N>.json`.
/// Triggers and outcomes are at 2 since they carry experiment arms (see
/// docs/outputs.md, "Versions").
pub fn schema_version(kind: OutKind) -> u32 {
    match kind {
        OutKind::Trigger | OutKind::Outcome => 2,
        OutKind::Alert | OutKind::DeadLetter | OutKind::Changelog => 1,
    }
}

/// A JSON payload with its `schema_version` first.
#[derive(serde::Serialize)]
pub struct Versioned<'a, T> {
    pub schema_version: u32,
    #[serde(flatten)]
    pub body: &'a T,
}

/// The CloudEvents headers' names that outputs and dead letters read back.
pub const CE_ID: &str = "ce_id";
pub const CE_SOURCE: &str = "ce_source";
pub const CE_TIME: &str = "ce_time";

/// CloudEvents 1.0 headers in the Kafka protocol binding's binary mode
/// (the payload is the event's data; `content-type` is set beside them):
/// `ce_id` is the output's deterministic id, so a redelivered record has
/// the same one; `ce_time` is the event time it refers to (left out when
/// empty).
pub fn cloudevents_headers(
    kind: OutKind,
    id: &str,
    source: &str,
    time: &str,
) -> impl Iterator<Item = (String, Vec<u8>)> {
    [
        ("ce_specversion".into(), b"1.0".to_vec()),
        (CE_ID.into(), id.as_bytes().to_vec()),
        (CE_SOURCE.into(), source.as_bytes().to_vec()),
        (
            "ce_type".into(),
            format!("churn-alert.{}.v{}", kind.as_str(), schema_version(kind)).into_bytes(),
        ),
        (CE_TIME.into(), time.as_bytes().to_vec()),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
}

impl OutKind {
    /// The kind's name (for logs, metric labels and dead-letter headers).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alert => "alert",
            Self::Trigger => "trigger",
            Self::Outcome => "outcome",
            Self::DeadLetter => "dead_letter",
            Self::Changelog => "changelog",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_well_formed_traceparent_is_carried() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let h = |v: &str| {
            vec![
                ("traceparent".to_string(), v.as_bytes().to_vec()),
                ("tracestate".to_string(), b"congo=t61rcWkgMzE".to_vec()),
                ("other".to_string(), b"x".to_vec()),
            ]
        };
        let got = trace_context(&h(tp));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], ("traceparent".into(), tp.as_bytes().to_vec()));
        assert_eq!(got[1].0, "tracestate");
        // A later version may carry more fields.
        assert_eq!(trace_context(&h(&format!("01{}-more", &tp[2..]))).len(), 2);
        for bad in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "",
        ] {
            assert!(trace_context(&h(bad)).is_empty(), "{bad}");
        }
        assert!(trace_context(&[("tracestate".into(), b"a=b".to_vec())]).is_empty());
    }
}
