//! What the service tells its operators: Prometheus metrics, health and
//! readiness, the typed events that change them, and traces.

pub mod events;
pub mod experiments;
pub mod health;
pub mod metrics;
pub mod recent;
pub mod trace;

/// The crate's version (semver, from Cargo.toml).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit the binary was built from (12 hex digits), or "unknown"
/// when built outside a checkout without `CHURN_ALERT_COMMIT` (build.rs).
pub const COMMIT: &str = env!("CHURN_ALERT_COMMIT");
/// What `--version` prints after the name: version and commit.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CHURN_ALERT_COMMIT"),
    ")"
);
