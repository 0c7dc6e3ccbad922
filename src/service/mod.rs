//! The long-running service: consume, process, publish, commit.
//!
//! Order of every batch, which gives exact state and at-least-once outputs:
//! 1. process the messages (pure steps, state loaded from the store);
//! 2. publish alerts, triggers, dead letters and the changed states to the
//!    changelog, and wait for delivery; then one meta record per partition
//!    closing the batch in the changelog (see [`crate::kafka::changelog`]);
//! 3. write the state, due index, next offsets and changelog position of
//!    each partition in one atomic store commit;
//! 4. commit the offsets to Kafka (for lag tracking only: on assignment the
//!    consumer starts from the offsets in the store, after bringing the
//!    partition up to date from the changelog).
//!
//! A failing dependency (broker, disk) stops the loop at the step that failed;
//! it retries with backoff, reports not ready, and never skips data.
//!
//! - [`wiring`]: the [`Service`], what it starts with and how it starts.
//! - [`main_loop`]: the `select!` loop over messages, ticks, restores and
//!   shutdown.
//! - [`processor`]: the fold: batches of messages → outputs and
//!   per-partition commits.
//! - [`committer`]: publish → changelog → store commit, with retries; it
//!   owns the [`staged_store`] the processor reads and the write under way.
//! - [`side_by_side`]: a large batch's partitions on threads of their own.
//! - [`partitions`]: restores from the changelog and release of partitions
//!   owned elsewhere.
//! - [`reload`]: model file reloads.

pub mod committer;
pub mod main_loop;
pub mod partitions;
pub mod processor;
pub mod reload;
pub mod side_by_side;
pub mod staged_store;
pub mod wiring;

pub use wiring::{open_store, Service, StartError};
