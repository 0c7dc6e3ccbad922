//! churn-alert: finds customers who are about to churn from their Kafka
//! event stream, and publishes alerts and retention triggers.
//!
//! The folder tree is the architecture. Each folder is a layer and may
//! import only from the layers listed before it (a test in
//! `tests/architecture.rs` reads the tree and enforces this):
//!
//! 1. [`pipeline`]: the pure core. Events and their decoding, per-customer
//!    features, scoring, policy, segments and the `step`/`rescore`
//!    functions. No tokio, rdkafka, sled or prometheus.
//! 2. [`store`]: per-partition state storage (sled, memory), offsets
//!    written with the state they produced. [`telemetry`]: metrics,
//!    health and the typed events that change them.
//! 3. [`kafka`]: the only folder that speaks to Kafka: client settings,
//!    record types, the consumer and its rebalances, the changelog,
//!    topics, the partitioner and partition owners.
//!    [`registry`]: the other edge of input decoding, fetching Schema
//!    Registry schemas by id.
//! 4. [`config`]: layered configuration, refused with the key at fault.
//! 5. [`admin`]: the admin HTTP server and its endpoints.
//! 6. [`service`]: the running service: its loop, the processor that turns
//!    batches into outputs, the publish→changelog→commit protocol,
//!    partition restore/release and model reload.
//! 7. [`offline`]: the commands that run beside the service: train, score,
//!    backtest, report, simulate and demo.
//!
//! Rule: `pipeline ← store, telemetry ← kafka, registry ← config ← admin ← service ←
//! offline ← main`. Nothing imports upward and nothing imports in a cycle.

pub mod pipeline;

pub mod store;
pub mod telemetry;

pub mod kafka;
pub mod registry;

pub mod config;

pub mod admin;

pub mod service;

pub mod offline;
