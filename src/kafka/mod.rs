//! The Kafka edge, the only folder that imports rdkafka.
//!
//! - [`settings`]: the `[kafka]` config section; [`client`]: the one
//!   builder of librdkafka client settings.
//! - [`error`]: which Kafka errors a retry can fix.
//! - [`mock`]: the in-process mock cluster the demo runs on.
//! - [`record`]: input messages and output records; [`outputs`]: the
//!   encoding of alerts, triggers, outcomes, tombstones and dead letters.
//! - [`source`]: the input consumer (rebalance callbacks, assignment) and
//!   the publisher of outputs.
//! - [`changelog`]: the compacted changelog every state change is written
//!   to, and the restore of a partition from it on assignment.
//! - [`outcomes`]: the outcomes topic read whole, for the experiment
//!   readout.
//! - [`topics`]: creation and checking of the service's topics.
//! - [`partitioner`]: which input partition a customer id belongs to;
//!   [`owner`]: which group member holds it.

pub use rdkafka::error::{KafkaError, RDKafkaErrorCode};

pub mod changelog;
pub mod client;
pub mod error;
pub mod mock;
pub mod outcomes;
pub mod outputs;
pub mod owner;
pub mod partitioner;
pub mod record;
pub mod settings;
pub mod source;
pub mod topics;
