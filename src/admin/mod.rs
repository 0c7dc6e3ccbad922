//! The admin HTTP server: `/metrics`, `/healthz`, `/readyz`, and the
//! operator's view: `GET /customers/{id}`, `DELETE /customers/{id}`,
//! `GET /model`, `POST /model/reload`, `GET /policy`, `POST /policy/reload`;
//! their OpenAPI description, made from the handlers' annotations, at
//! `GET /openapi.json`; and a status page at `GET /` (with
//! `GET /alerts/recent`, the latest alerts it lists, and
//! `GET /experiments`, the experiment readout its panel draws).
//!
//! Mutating endpoints need `Authorization: Bearer <admin.token>`; with no
//! token configured they answer 403 (disabled), never open. Reading a
//! customer (personal data) needs `admin.read_token` or the admin token;
//! with neither configured it answers 401, never open.

pub mod control;
pub mod experiments;
pub mod schemas;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::telemetry::events::Readiness;
pub use crate::telemetry::health::Health;
use crate::telemetry::metrics::Metrics;

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    health: Arc<Health>,
    control: Arc<crate::admin::control::Control>,
}

/// The admin routes.
pub fn router(
    metrics: Metrics,
    health: Arc<Health>,
    control: Arc<crate::admin::control::Control>,
) -> Router {
    use crate::admin::control as c;
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(live_handler))
        .route("/readyz", get(ready_handler))
        .route(
            "/customers/{id}",
            get(c::get_customer).delete(c::delete_customer),
        )
        .route("/model", get(c::get_model))
        .route("/model/reload", axum::routing::post(c::reload_model))
        .route("/policy", get(c::get_policy))
        .route("/policy/reload", axum::routing::post(c::reload_policy))
        .route("/openapi.json", get(openapi_handler))
        .route("/alerts/recent", get(c::recent_alerts))
        .route("/experiments", get(experiments::get_experiments))
        .route("/", get(status_page))
        .with_state(AppState {
            metrics,
            health,
            control,
        })
}

impl axum::extract::FromRef<AppState> for Arc<crate::admin::control::Control> {
    fn from_ref(s: &AppState) -> Self {
        s.control.clone()
    }
}

/// The admin API's description (OpenAPI 3.1).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "churn-alert admin API",
        description = "Metrics, health, one customer's view and erasure, and the model and policy in use with their reloads. Mutating endpoints need `Authorization: Bearer <admin.token>` and answer 403 while no token is set; reading a customer (personal data) needs `admin.read_token` or the admin token, and answers 401 while neither is set."
    ),
    paths(
        metrics_handler,
        live_handler,
        ready_handler,
        openapi_handler,
        status_page,
        control::recent_alerts,
        experiments::get_experiments,
        control::get_customer,
        control::delete_customer,
        control::get_model,
        control::reload_model,
        control::get_policy,
        control::reload_policy,
    ),
    components(schemas(control::ErrorBody, experiments::ExperimentsBody)),
    modifiers(&BearerTokens),
)]
pub struct ApiDoc;

/// The two bearer tokens as security schemes.
struct BearerTokens;

impl utoipa::Modify for BearerTokens {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        for (name, about) in [
            ("admin_token", "`admin.token`: mutating endpoints"),
            ("read_token", "`admin.read_token`: reading a customer"),
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(about))
                        .build(),
                ),
            );
        }
    }
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "This description", body = schemas::ApiDescription)),
)]
async fn openapi_handler() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(<ApiDoc as utoipa::OpenApi>::openapi())
}

/// The status page, for a person who opens the admin port in a browser:
/// throughput, lag, partitions and restores, the model and its thresholds,
/// the score distribution, alerts per hour and the latest alerts (from
/// `/metrics` and `/alerts/recent`, polled by the page).
#[utoipa::path(
    get,
    path = "/",
    tag = "status",
    responses((status = 200, description = "The status page", body = String, content_type = "text/html")),
)]
async fn status_page() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("status.html"))
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus metrics, text format 0.0.4", body = String, content_type = "text/plain")),
)]
async fn metrics_handler(
    State(s): State<AppState>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        {
            s.metrics.set_stalled(s.health.live().is_err());
            s.metrics.render()
        },
    )
}

/// Live unless the loop has held a batch without committing it for
/// longer than `service.stall_seconds`.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "Live", body = String, content_type = "text/plain"),
        (status = 503, description = "Stalled: a batch held longer than `service.stall_seconds`", body = String, content_type = "text/plain"),
    ),
)]
async fn live_handler(State(s): State<AppState>) -> (StatusCode, String) {
    match s.health.live() {
        Ok(()) => (StatusCode::OK, "ok\n".into()),
        Err(held) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "stalled: a batch has been in hand for {} s without being committed (service.stall_seconds)\n",
                held.as_secs()
            ),
        ),
    }
}

/// Ready when every partition is restored and no dependency is failing.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = String, content_type = "text/plain"),
        (status = 503, description = "Not ready, with the reasons", body = String, content_type = "text/plain"),
    ),
)]
async fn ready_handler(State(s): State<AppState>) -> (StatusCode, String) {
    match s.health.check() {
        Ok(()) => {
            s.metrics.emit(Readiness { ready: true });
            (StatusCode::OK, "ready\n".into())
        }
        Err(why) => {
            s.metrics.emit(Readiness { ready: false });
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {}\n", why.join("; ")),
            )
        }
    }
}

/// Binds the admin server; returns the bound address and the serving task.
pub async fn serve(
    listen: &str,
    metrics: Metrics,
    health: Arc<Health>,
    control: Arc<crate::admin::control::Control>,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = router(metrics, health, control);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    });
    Ok((addr, task))
}
