//! What the service tells its operators: Prometheus metrics, health and
//! readiness, the typed events that change them, and traces.

pub mod events;
pub mod experiments;
pub mod health;
pub mod metrics;
pub mod recent;
pub mod trace;
