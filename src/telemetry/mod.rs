//! What the service tells its operators: Prometheus metrics, health and
//! readiness, and the typed events that change them.

pub mod events;
pub mod health;
pub mod metrics;
