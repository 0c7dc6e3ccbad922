//! The commands that run beside the service, on event histories.
//!
//! - [`history`]: event histories in any order or split, read back sorted
//!   by event time (external sort).
//! - [`train`], [`report`], [`commands`]: fitting and evaluating the model
//!   from event history, its report, and the `train` and `score` commands.
//! - [`connect`]: `check-config --connect`: the brokers, topics, registry
//!   and store folder of a config, reached for real.
//! - [`evaluate`]: ROC/PR AUC, calibration, thresholds.
//! - [`flags`]: the offline commands' dates, spans, `--model` and usage errors.
//! - [`gap`]: the churn gap read from the history's return curve.
//! - [`backtest`]: the service's own processing replayed over a history,
//!   with lead times.
//! - [`simulate`]: the seeded population generator with ground truth;
//!   [`simulate_command`]: the `simulate` command over it and [`histories`].
//! - [`histories`]: purchase-only retail (BG/NBD, Pareto/NBD) and SaaS
//!   subscription histories with ground truth.
//! - [`demo`]: the whole service on an in-process mock cluster.
//! - [`experiments`]: the `experiments` command: the experiment readout
//!   from the outcomes topic or a file, as a table, JSON or CSV.
//! - [`healthcheck`]: the `healthcheck` command: is the service on this
//!   host ready (container healthchecks without shell tools).
//! - [`progress`]: progress bars at a terminal, plain lines otherwise.

pub mod backtest;
pub mod commands;
pub mod connect;
pub mod demo;
pub mod evaluate;
pub mod experiments;
pub mod flags;
pub mod gap;
pub mod healthcheck;
pub mod histories;
pub mod history;
pub mod produce;
pub mod progress;
pub mod report;
pub mod simulate;
pub mod simulate_command;
pub mod train;
