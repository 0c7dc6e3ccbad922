//! The shapes of the admin API's JSON answers, for its OpenAPI
//! description (`/openapi.json`), so that a client generator or
//! schemathesis sees every field and type. The handlers in `control.rs`
//! build these answers; `tests/admin_page.rs` runs schemathesis against
//! the live service, which fails when an answer leaves its shape.
//! Objects may carry more fields than listed (new fields are not a
//! breaking change); nested parts the service passes through from the
//! model file or the policy (features, segments, rules) are open objects.

#![allow(dead_code)] // Describes the JSON the handlers build.

use utoipa::ToSchema;

/// `GET /customers/{id}`: one customer as this instance holds them.
#[derive(ToSchema)]
pub struct CustomerView {
    customer_id: String,
    /// The input partition holding the customer.
    partition: i32,
    /// When the view is computed (event time: the partition's watermark).
    as_of: String,
    model_version: String,
    /// `active`, or `churned` past the churn gap.
    status: String,
    probability: Option<f64>,
    risk_tier: String,
    /// The behaviours behind the score, strongest first.
    #[schema(value_type = Vec<Object>)]
    reasons: Vec<serde_json::Value>,
    silent_days: Option<f64>,
    return_probability: Option<f64>,
    #[schema(value_type = Object)]
    rfm: serde_json::Value,
    segment: String,
    lifecycle: String,
    clv: f64,
    value_band: String,
    holdout: bool,
    marketing_consent: bool,
    alert: AlertState,
    contact: ContactState,
    last_events: LastEvents,
    totals: Totals,
    /// Every model feature by name.
    #[schema(value_type = Object)]
    features: serde_json::Value,
    next_rescore: Option<String>,
}

#[derive(ToSchema)]
pub struct AlertState {
    active: bool,
    alerts_published: u64,
    last_alert_at: Option<String>,
    last_probability: Option<f64>,
    last_scored_at: Option<String>,
}

#[derive(ToSchema)]
pub struct ContactState {
    triggers_sent_at: Vec<String>,
    held_until: Option<String>,
    #[schema(value_type = Vec<Object>)]
    alert_history: Vec<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    awaiting_outcome: Option<serde_json::Value>,
}

#[derive(ToSchema)]
pub struct LastEvents {
    first_seen: Option<String>,
    last_seen: Option<String>,
    last_engaged: Option<String>,
    last_purchase: Option<String>,
    returned_at: Option<String>,
}

#[derive(ToSchema)]
pub struct Totals {
    purchases: u64,
    net_spend: f64,
    refunds: u64,
    tickets: u64,
    complaints: u64,
    payment_failures: u64,
}

/// `DELETE /customers/{id}`: the erasure is queued.
#[derive(ToSchema)]
pub struct ErasureQueued {
    /// The erasure event's id on the input topic.
    event_id: String,
    status: String,
}

/// `GET /alerts/recent`.
#[derive(ToSchema)]
pub struct RecentAlerts {
    /// Whether the alerts are whole (a read or admin token was given).
    customer_ids_shown: bool,
    /// Newest first; whole alerts as published (schemas/alert.v1.json)
    /// or, without a token, their id, score, tier, cause, times, model and
    /// which behaviours drove them.
    alerts: Vec<RecentAlert>,
}

#[derive(ToSchema)]
pub struct RecentAlert {
    alert_id: String,
    probability: f64,
    risk_tier: String,
    cause: String,
    as_of: String,
    model_version: String,
    /// Wall-clock time the alert was raised.
    raised_at: String,
    #[schema(value_type = Vec<Object>)]
    reasons: Vec<serde_json::Value>,
}

/// `GET /model`.
#[derive(ToSchema)]
pub struct ModelView {
    version: String,
    path: String,
    /// The features, in the model file's order.
    features: Vec<String>,
    thresholds_in_use: Thresholds,
    #[schema(value_type = Option<Object>)]
    thresholds_in_file: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    segments: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    training: Option<serde_json::Value>,
}

#[derive(ToSchema)]
pub struct Thresholds {
    enter: f64,
    exit: f64,
}

/// `POST /model/reload`: accepted.
#[derive(ToSchema)]
pub struct ModelReloaded {
    version: String,
    status: String,
}

/// `GET /policy`.
#[derive(ToSchema)]
pub struct PolicyView {
    enter_threshold: f64,
    exit_threshold: f64,
    #[schema(value_type = Vec<Object>)]
    tiers: Vec<serde_json::Value>,
    #[schema(value_type = Vec<Object>)]
    campaigns: Vec<serde_json::Value>,
    #[schema(value_type = Object)]
    contact: serde_json::Value,
    #[schema(value_type = Object)]
    holdout: serde_json::Value,
    outcome_window_days: f64,
    #[schema(value_type = Object)]
    rfm: serde_json::Value,
    expected_lifetime_years: f64,
}

/// `POST /policy/reload`: accepted.
#[derive(ToSchema)]
pub struct PolicyReloaded {
    status: String,
    /// Campaign rules in the new policy.
    campaign_rules: u64,
}

/// `GET /openapi.json`: an OpenAPI 3.1 document.
#[derive(ToSchema)]
pub struct ApiDescription {
    openapi: String,
    #[schema(value_type = Object)]
    info: serde_json::Value,
    #[schema(value_type = Object)]
    paths: serde_json::Value,
}
