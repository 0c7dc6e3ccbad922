//! `GET /experiments`: the experiment readout (see
//! [`crate::telemetry::experiments`]). It names no customer, so it is open
//! like `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;

use crate::admin::control::Control;
use crate::pipeline::readout::ExperimentReadout;

/// The readout of every experiment seen on the outcomes topic.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ExperimentsBody {
    /// Whether the outcomes topic has been read to its end since this
    /// instance started (until then the counts are still rising).
    pub complete: bool,
    /// Significance level of every interval and test.
    pub alpha: f64,
    /// By experiment name.
    pub experiments: Vec<ExperimentReadout>,
}

/// `GET /experiments`.
#[utoipa::path(
    get,
    path = "/experiments",
    tag = "status",
    responses((status = 200, description = "Per experiment and arm (the holdout first): customers, retention, lifts against the holdout with fixed-horizon and always-valid 95% intervals and p-values, the verdict of the sequential test, guardrails, the sample-ratio check and the customers still needed to find `minimum_lift`.", body = ExperimentsBody)),
)]
pub async fn get_experiments(State(c): State<Arc<Control>>) -> Json<ExperimentsBody> {
    let (experiments, complete) = c.metrics.experiments.readout();
    Json(ExperimentsBody {
        complete,
        alpha: c.config.experiments.alpha,
        experiments,
    })
}
