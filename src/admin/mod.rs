//! The admin HTTP server: `/metrics`, `/healthz`, `/readyz`, and the
//! operator's view: `GET /customers/{id}`, `DELETE /customers/{id}`,
//! `GET /model`, `POST /model/reload`, `GET /policy`, `POST /policy/reload`.
//!
//! Mutating endpoints need `Authorization: Bearer <admin.token>`; with no
//! token configured they answer 403 (disabled), never open. Reading a
//! customer needs `admin.read_token` (or the admin token) when it is set.

pub mod control;

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

async fn metrics_handler(
    State(s): State<AppState>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        s.metrics.render(),
    )
}

/// Live unless the loop has held a batch without committing it for
/// longer than `service.stall_seconds`.
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
