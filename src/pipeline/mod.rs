//! The pure core: everything that turns events into state, scores and
//! decisions, with no I/O beyond reading a model file.
//!
//! - [`error`]: the class of an error: whether trying again can help.
//! - [`event`]: the validated event the core consumes, time helpers.
//! - [`decode`]: wire decoding (JSON, protobuf) and validation into events
//!   or rejections with a reason.
//! - [`contact`]: the policy's memory of a customer (alerts, contacts).
//! - [`features`]: per-customer state and the feature vector, in event time;
//!   [`feature_defs`]: the one table of the features, their behaviours and signs.
//! - [`model`]: the logistic model file and scoring with reasons.
//! - [`policy`]: thresholds, hysteresis, tiers and campaign choice.
//! - [`experiment`]: campaign variants, stable assignment, its memory.
//! - [`readout`]: experiment results from outcomes: lifts, sequential
//!   tests, sample-ratio checks, power.
//! - [`segments`]: RFM and lifecycle segments.
//! - [`bgnbd`]: the BG/NBD model: fit, P(alive), expected purchases.
//! - [`output`]: triggers, outcomes and the names they share with state;
//!   [`output_format`]: JSON, or Avro / JSON Schema in the registry's frame.
//! - [`onset`]: churn onsets read from the data, for labels and backtests.
//! - [`settings`]: the `[policy]` and `[segments]` config sections.
//! - [`step`]: the pure `step` and `rescore` functions.

pub mod bgnbd;
pub mod contact;
pub mod decode;
pub mod error;
pub mod event;
pub mod experiment;
pub mod feature_defs;
pub mod features;
pub mod model;
pub mod onset;
pub mod output;
pub mod output_format;
pub mod policy;
pub mod readout;
pub mod segments;
pub mod settings;
pub mod step;
pub mod wire;

/// Code generated from `proto/churn/v1/events.proto`.
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/churn.v1.rs"));
}
