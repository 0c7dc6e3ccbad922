//! churn-alert: finds customers who are about to churn from their Kafka
//! event stream, and publishes alerts and retention triggers.
//!
//! Module map:
//! - [`config`]: layered configuration, refused with the key at fault.
//! - [`event`]: the validated event the core consumes, time helpers.
//! - [`decode`]: wire decoding (JSON, protobuf) and validation into events
//!   or rejections with a reason.
//! - [`features`]: per-customer state and the feature vector, in event time.
//! - [`model`]: the logistic model file and scoring with reasons.
//! - [`policy`]: thresholds, hysteresis, tiers and campaign choice.
//! - [`pipeline`]: the pure `step` and `rescore` functions.
//! - [`processor`]: batches of messages → outputs and per-partition commits.
//! - [`store`]: per-partition state storage (sled, memory), offsets with state.
//! - [`changelog`]: the compacted changelog every state change is written
//!   to, and the restore of a partition from it on assignment.
//! - [`partitioner`]: which input partition a customer id belongs to;
//!   [`owner`]: which group member holds it.
//! - [`train`], [`report`], [`commands`]: fitting and evaluating the model
//!   from event history, its report, and the `train` and `score` commands.
//! - [`simulate`]: the seeded population generator with ground truth.
//! - [`history`]: event histories in any order or split, read back sorted
//!   by event time (external sort); [`onset`]: churn onsets read from the
//!   data, for labels and backtests; [`backtest`]: the service's own
//!   processing replayed over a history, with lead times.

pub mod admin;
pub mod backtest;
pub mod changelog;
pub mod commands;
pub mod config;
pub mod control;
pub mod decode;
pub mod demo;
pub mod event;
pub mod features;
pub mod history;
pub mod kafka;
pub mod metrics;
pub mod model;
pub mod onset;
pub mod owner;
pub mod partitioner;
pub mod pipeline;
pub mod policy;
pub mod processor;
pub mod reload;
pub mod report;
pub mod segments;
pub mod service;
pub mod simulate;
pub mod store;
pub mod topics;
pub mod train;

/// Code generated from `proto/churn/v1/events.proto`.
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/churn.v1.rs"));
}
