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
