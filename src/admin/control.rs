//! The operator's side of the admin server: one customer's view, erasure,
//! and the model and policy in use with their reloads.
//!
//! The service loop owns the processor; it publishes the model and policy
//! it uses here, and reloads reach it as [`Command`]s on a channel it reads
//! between batches, so an HTTP request never changes state in the middle
//! of a batch. Erasure is queued
//! as an `erasure` event on the input topic, keyed by the customer: it
//! reaches the instance that owns the customer's partition, in order with
//! the customer's other events, and goes through the same exactly-once path
//! (state removed, tombstones published, offsets committed together).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::Notify;

use crate::config::Config;
use crate::pipeline::error::Classify;
use crate::pipeline::event::{rfc3339, stable_hash, wall_now, Millis};
use crate::pipeline::features::{CustomerState, FeatureSpec};
use crate::pipeline::model::Model;
use crate::pipeline::policy::Policy;
use crate::store::Store;
use crate::telemetry::events::{PolicyReloaded, ReloadRefused, Reloadable};
use crate::telemetry::metrics::Metrics;

/// What the admin server and the model watcher ask of the service loop,
/// which applies each between batches.
#[derive(Debug)]
pub enum Command {
    /// A config file accepted by `POST /policy/reload`: its `[policy]` and
    /// `[segments]` apply from the next batch.
    ReloadPolicy(Box<Config>),
    /// A new valid model file (changed, SIGHUP or `POST /model/reload`):
    /// it scores from the next batch.
    ReloadModel(Arc<Model>),
}

/// Shared between the service loop and the admin server.
pub struct Control {
    /// The config file, re-read by `POST /policy/reload` (None: defaults
    /// and environment only).
    pub config_path: Option<PathBuf>,
    /// The config the service started with.
    pub config: Config,
    pub spec: FeatureSpec,
    pub store: Arc<dyn Store>,
    pub metrics: Metrics,
    /// Model and policy in use, as the service last applied them.
    pub current: RwLock<(Arc<Model>, Policy)>,
    /// `POST /model/reload` wakes the model watcher.
    pub model_reload: Arc<Notify>,
    /// Into the service loop.
    commands: UnboundedSender<Command>,
    /// Producer and input topic for erasure events, handed over once the
    /// service is connected.
    producer: OnceLock<crate::kafka::source::Publisher>,
    /// The input partitions this instance holds (the consumer's).
    assignment: Arc<Mutex<crate::kafka::source::Assignment>>,
}

type Reply = (StatusCode, Json<Value>);

/// An error answer: `error` says what; some answers add fields (the
/// customer's `partition`, its `owner`, the failure's `class`, a `status`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the JSON the handlers build.
pub struct ErrorBody {
    error: String,
}

fn reply(status: StatusCode, body: Value) -> Reply {
    (status, Json(body))
}

impl Control {
    /// `assignment` is the consumer's; `commands` goes to the service loop.
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        metrics: Metrics,
        model: Arc<Model>,
        assignment: Arc<Mutex<crate::kafka::source::Assignment>>,
        commands: UnboundedSender<Command>,
    ) -> Self {
        let policy = config.policy_for(Some(model.file()));
        Self {
            spec: config.feature_spec(),
            config_path: config.source.clone(),
            config,
            store,
            metrics,
            current: RwLock::new((model, policy)),
            model_reload: Arc::new(Notify::new()),
            commands,
            producer: OnceLock::new(),
            assignment,
        }
    }

    /// Hands over the publisher once the service is connected to Kafka
    /// (erasure requests are refused as not connected until then).
    pub fn connected(&self, publisher: crate::kafka::source::Publisher) {
        let _ = self.producer.set(publisher);
    }

    /// The publisher, once connected.
    pub fn publisher(&self) -> Option<&crate::kafka::source::Publisher> {
        self.producer.get()
    }

    /// Records what the service now uses.
    pub fn set_current(&self, model: Arc<Model>, policy: Policy) {
        *self.current.write().expect("not poisoned") = (model, policy);
    }

    /// Checks the bearer token of a mutating request.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), Reply> {
        let Some(token) = self.config.admin.token.as_deref() else {
            return Err(reply(
                StatusCode::FORBIDDEN,
                json!({"error": "disabled: set admin.token to enable mutating endpoints"}),
            ));
        };
        if bearer_is(headers, token) {
            Ok(())
        } else {
            Err(wrong_token())
        }
    }

    /// Checks the bearer token of a read of personal data: open when no
    /// `admin.read_token` is set; else that token or the admin token.
    fn authorize_read(&self, headers: &HeaderMap) -> Result<(), Reply> {
        let (read, admin) = (
            self.config.admin.read_token.as_deref(),
            self.config.admin.token.as_deref(),
        );
        if read.is_none() && admin.is_none() {
            // Personal data is never open: with no token there is no way
            // to read it, and the answer says how to allow it.
            return Err(reply(
                StatusCode::UNAUTHORIZED,
                json!({"error": "reading a customer needs a bearer token, and none is configured: set admin.read_token (or admin.token)"}),
            ));
        }
        // Both are checked, so timing does not tell which one matched.
        let as_reader = read.is_some_and(|t| bearer_is(headers, t));
        let as_admin = admin.is_some_and(|t| bearer_is(headers, t));
        if as_reader | as_admin {
            Ok(())
        } else {
            Err(wrong_token())
        }
    }

    /// The partition and state of a customer held on this instance (only
    /// partitions it owns and has restored: state left from partitions that
    /// moved away is not current).
    fn find(&self, id: &str) -> Result<Option<(i32, CustomerState)>, crate::store::StoreError> {
        let active = self
            .assignment
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .active();
        for p in active {
            if let Some(s) = self.store.get(p, id)? {
                return Ok(Some((p, s)));
            }
        }
        Ok(None)
    }

    /// The operator's view of one customer as of `now`.
    pub fn customer_view(&self, id: &str, p: i32, s: &CustomerState, now: Millis) -> Value {
        let (model, policy) = self.current.read().expect("not poisoned").clone();
        let (x, assessment) = crate::pipeline::step::features_and_score(
            s,
            now,
            &model,
            policy.top_reasons,
            &self.spec,
        );
        let (status, probability, tier, reasons, silent, comeback) = match assessment {
            crate::pipeline::model::Assessment::Scored(sc) => (
                "active",
                Some(sc.probability),
                policy.tier(sc.probability).to_string(),
                sc.reasons,
                None,
                None,
            ),
            crate::pipeline::model::Assessment::Churned {
                silent_days,
                return_probability,
                probability,
            } => (
                "churned",
                Some(probability),
                "churned".to_string(),
                Vec::new(),
                Some(silent_days),
                Some(return_probability),
            ),
        };
        let profile = policy.segments.profile(s, now);
        let time = |t: Option<Millis>| t.map(rfc3339);
        let features: serde_json::Map<String, Value> = self
            .spec
            .names()
            .iter()
            .cloned()
            .zip(x.into_iter().map(Value::from))
            .collect();
        json!({
            "customer_id": id,
            "partition": p,
            "as_of": rfc3339(now),
            "model_version": model.version(),
            "status": status,
            "probability": probability,
            "risk_tier": tier,
            "reasons": reasons,
            "silent_days": silent,
            "return_probability": comeback,
            "rfm": profile.rfm,
            "segment": profile.segment,
            "lifecycle": profile.lifecycle,
            "clv": profile.clv,
            "value_band": profile.value_band,
            "holdout": policy.holdout.contains(id),
            "marketing_consent": s.has_marketing_consent(),
            "alert": {
                "active": s.alert.active,
                "alerts_published": s.alert.count,
                "last_alert_at": time(s.alert.last_alert_at),
                "last_probability": s.alert.last_probability,
                "last_scored_at": time(Some(s.alert.last_scored_at).filter(|t| *t > 0)),
            },
            "contact": {
                "triggers_sent_at": s.contact.sent.iter().map(|t| rfc3339(*t)).collect::<Vec<_>>(),
                "held_until": time(s.contact.held.as_ref().map(|h| h.release_at)),
                "alert_history": s.contact.history.iter().map(|h| json!({
                    "alert_id": h.alert_id,
                    "at": rfc3339(h.at),
                    "probability": h.probability,
                    "risk_tier": h.risk_tier,
                    "campaign_id": h.campaign_id,
                    "group": h.group,
                    "outcome": h.outcome,
                })).collect::<Vec<_>>(),
                "awaiting_outcome": s.contact.awaiting.as_ref().map(|a| json!({
                    "alert_id": a.alert_id,
                    "group": a.group,
                    "campaign_id": a.campaign_id,
                    "due": rfc3339(a.due),
                })),
            },
            "last_events": {
                "first_seen": time(Some(s.first_seen)),
                "last_seen": time(Some(s.last_seen)),
                "last_engaged": time(s.last_engaged),
                "last_purchase": time(s.last_purchase),
                "returned_at": time(s.returned_at),
            },
            "totals": {
                "purchases": s.purchases,
                "net_spend": s.gross - s.refunded,
                "refunds": s.refunds,
                "tickets": s.tickets,
                "complaints": s.complaints,
                "payment_failures": s.payment_failures,
            },
            "features": features,
            "next_rescore": time(s.next_due),
        })
    }
}

fn wrong_token() -> Reply {
    reply(
        StatusCode::UNAUTHORIZED,
        json!({"error": "missing or wrong bearer token"}),
    )
}

/// Whether the request's `Authorization: Bearer` token is `token`. The
/// SHA-256 digests are compared in constant time, so neither the time
/// taken nor the lengths tell how much of a guess matched.
fn bearer_is(headers: &HeaderMap, token: &str) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let (a, b) = (Sha256::digest(given), Sha256::digest(token));
    a.as_slice().ct_eq(b.as_slice()).into()
}

/// `GET /customers/{id}`: the view on the owning instance; elsewhere the
/// owner (see [`elsewhere`]). Needs `admin.read_token` when it is set.
#[utoipa::path(
    get,
    path = "/customers/{id}",
    tag = "customers",
    params(("id" = String, Path, description = "The customer id, as in events' `customer_id`")),
    responses(
        (status = 200, description = "The customer's state, features, probability, reasons, alert and contact history, as held by this instance", body = crate::admin::schemas::CustomerView),
        (status = 307, description = "Held by another instance: `Location` is the owner's admin URL for the customer", body = ErrorBody,
            headers(("Location" = String, description = "The owner's `/customers/{id}`"))),
        (status = 400, description = "A malformed path", body = String, content_type = "text/plain"),
        (status = 401, description = "The bearer token (`admin.read_token` or `admin.token`) is missing or wrong, or neither is configured", body = ErrorBody),
        (status = 404, description = "Unknown customer (its partition's owner has no state for it)", body = ErrorBody),
        (status = 500, description = "The owner lookup failed unexpectedly", body = ErrorBody),
        (status = 503, description = "State or the owner cannot be read for now, or the partition is restoring or moving", body = ErrorBody),
    ),
    security(("read_token" = []), ("admin_token" = [])),
)]
pub async fn get_customer(
    State(c): State<Arc<Control>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = c.authorize_read(&headers) {
        return denied.into_response();
    }
    let found = match c.find(&id) {
        Ok(f) => f,
        Err(e) => {
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": e.to_string(), "class": e.class().as_str()}),
            )
            .into_response()
        }
    };
    let Some((p, s)) = found else {
        return elsewhere(&c, &id).await;
    };
    // In event time the customer is seen as of the partition's watermark.
    let now = if c.config.clock.mode == crate::config::ClockMode::Event {
        c.store
            .meta(p)
            .ok()
            .flatten()
            .map_or(s.last_seen, |m| m.watermark.max(s.last_seen))
    } else {
        wall_now()
    };
    reply(StatusCode::OK, c.customer_view(&id, p, &s, now)).into_response()
}

/// The answer for a customer this instance does not hold: which partition
/// the customer's events go to and, when another instance owns it, that
/// instance (a redirect to its admin address when it advertises one).
async fn elsewhere(c: &Control, id: &str) -> Response {
    let (k, key) = (c.config.kafka.clone(), id.as_bytes().to_vec());
    let found = tokio::task::spawn_blocking(move || crate::kafka::owner::locate(&k, &key)).await;
    let located =
        match found {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": format!("not held here, and the owner cannot be looked up: {e}")}),
            )
            .into_response(),
            Err(e) => {
                return reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"error": e.to_string()}),
                )
                .into_response()
            }
        };
    let p = located.partition;
    let (owned, restoring) = {
        let a = c.assignment.lock().unwrap_or_else(|e| e.into_inner());
        (a.owned.contains(&p), a.restoring.contains(&p))
    };
    if restoring {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "this instance owns the customer's partition and is restoring it; try again shortly", "partition": p}),
        )
        .into_response();
    }
    if owned {
        return reply(
            StatusCode::NOT_FOUND,
            json!({"error": "unknown customer: no state in its partition, which this instance owns", "partition": p}),
        )
        .into_response();
    }
    // The changelog still names this instance until the new owner has
    // taken the partition over: no redirect to ourselves.
    let named = located.owner.is_some();
    let owner = located
        .owner
        .filter(|url| Some(url) != c.config.admin.advertised_url.as_ref());
    if owner.is_none() && named {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "the customer's partition is moving to another instance; try again shortly", "partition": p}),
        )
        .into_response();
    }
    let body = json!({
        "error": "held by another instance",
        "partition": p,
        "owner": {"admin_url": owner},
    });
    match owner {
        Some(url) => {
            let location = format!(
                "{}/customers/{}",
                url.trim_end_matches('/'),
                percent_encode(id)
            );
            let mut r = (StatusCode::TEMPORARY_REDIRECT, Json(body)).into_response();
            if let Ok(v) = axum::http::HeaderValue::from_str(&location) {
                r.headers_mut().insert(axum::http::header::LOCATION, v);
            }
            r
        }
        None => reply(StatusCode::NOT_FOUND, body).into_response(),
    }
}

/// Encodes a customer id for a URL path segment: everything but RFC 3986's
/// unreserved characters.
fn percent_encode(id: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(id, SEGMENT).to_string()
}

/// `DELETE /customers/{id}`: queues an erasure event for the customer.
#[utoipa::path(
    delete,
    path = "/customers/{id}",
    tag = "customers",
    params(("id" = String, Path, description = "The customer id, as in events' `customer_id`")),
    responses(
        (status = 202, description = "The erasure is queued on the input topic: state removed and tombstones published when the owner processes it", body = crate::admin::schemas::ErasureQueued),
        (status = 400, description = "A malformed path", body = String, content_type = "text/plain"),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 403, description = "Mutating endpoints are disabled: no `admin.token` is set", body = ErrorBody),
        (status = 503, description = "Not connected to Kafka yet, or the erasure could not be queued", body = ErrorBody),
    ),
    security(("admin_token" = [])),
)]
pub async fn delete_customer(
    State(c): State<Arc<Control>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Reply {
    if let Err(r) = c.authorize(&headers) {
        return r;
    }
    let Some(publisher) = c.publisher().cloned() else {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "not connected to Kafka yet"}),
        );
    };
    let now = wall_now();
    let event_id = format!(
        "erasure-{:016x}",
        stable_hash(&[id.as_bytes(), &now.to_be_bytes()])
    );
    let event = json!({
        "event_id": event_id,
        "customer_id": id,
        "type": "erasure",
        "occurred_at": rfc3339(now),
    })
    .to_string();
    match publisher.send_input(id.as_bytes(), event.as_bytes()).await {
        Ok(_) => {
            // Audit without personal data: the request's event id only.
            tracing::info!(target: "audit", %event_id, "erasure requested over HTTP");
            reply(
                StatusCode::ACCEPTED,
                json!({
                    "event_id": event_id,
                    "status": "queued: the customer's state is removed and tombstones are published on the alerts, triggers and outcomes topics when the owning instance processes it",
                }),
            )
        }
        Err(e) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": format!("could not queue the erasure: {e}")}),
        ),
    }
}

/// `GET /alerts/recent`: the latest alerts this instance raised, with
/// their reasons, newest first. Whole alerts (customer id, features, value)
/// only for a reader who gives `admin.read_token` or the admin token;
/// anyone else gets the alert's id, score, tier, cause, time and model, and
/// which behaviours drove it without the customer's values of them.
#[utoipa::path(
    get,
    path = "/alerts/recent",
    tag = "status",
    responses((status = 200, description = "`alerts`: the latest alerts (at most 50, with `raised_at`, the wall-clock time), newest first; whole, as published, with `customer_ids_shown: true` for a reader who gave the read or admin token; else only `alert_id`, `probability`, `risk_tier`, `cause`, `as_of`, `model_version`, `raised_at` and `reasons` with only their `feature` and `top_feature`", body = crate::admin::schemas::RecentAlerts)),
    security((), ("read_token" = []), ("admin_token" = [])),
)]
pub async fn recent_alerts(State(c): State<Arc<Control>>, headers: HeaderMap) -> Reply {
    let given = |t: Option<&str>| t.is_some_and(|t| bearer_is(&headers, t));
    // Both are checked, so timing does not tell which one matched.
    let (as_reader, as_admin) = (
        given(c.config.admin.read_token.as_deref()),
        given(c.config.admin.token.as_deref()),
    );
    let shown = as_reader | as_admin;
    const PLAIN: [&str; 8] = [
        "alert_id",
        "probability",
        "risk_tier",
        "cause",
        "as_of",
        "model_version",
        "reasons",
        "raised_at",
    ];
    let mut alerts = c.metrics.recent_alerts.list();
    if !shown {
        for a in &mut alerts {
            if let Some(o) = a.as_object_mut() {
                o.retain(|k, _| PLAIN.contains(&k.as_str()));
                // Which behaviours, not the customer's values of them.
                if let Some(Value::Array(reasons)) = o.get_mut("reasons") {
                    for r in reasons.iter_mut().filter_map(Value::as_object_mut) {
                        r.retain(|k, _| k == "feature" || k == "top_feature");
                    }
                }
            }
        }
    }
    reply(
        StatusCode::OK,
        json!({"customer_ids_shown": shown, "alerts": alerts}),
    )
}

/// `GET /model`
#[utoipa::path(
    get,
    path = "/model",
    tag = "model and policy",
    responses((status = 200, description = "The model in use: version, path, features, thresholds in use and in the file, segments, training report", body = crate::admin::schemas::ModelView)),
)]
pub async fn get_model(State(c): State<Arc<Control>>) -> Reply {
    let (model, policy) = c.current.read().expect("not poisoned").clone();
    let f = model.file();
    reply(
        StatusCode::OK,
        json!({
            "version": f.version,
            "path": c.config.model.path,
            "features": f.features,
            "thresholds_in_use": {"enter": policy.enter, "exit": policy.exit},
            "thresholds_in_file": f.thresholds,
            "segments": f.segments,
            "training": f.training,
        }),
    )
}

/// `POST /model/reload`: validates the file now and has the watcher apply
/// it from the next batch.
#[utoipa::path(
    post,
    path = "/model/reload",
    tag = "model and policy",
    responses(
        (status = 200, description = "Accepted: scores use it from the next batch", body = crate::admin::schemas::ModelReloaded),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 403, description = "Mutating endpoints are disabled: no `admin.token` is set", body = ErrorBody),
        (status = 422, description = "The file is refused (the error names the field); the previous model stays", body = ErrorBody),
    ),
    security(("admin_token" = [])),
)]
pub async fn reload_model(State(c): State<Arc<Control>>, headers: HeaderMap) -> Reply {
    if let Err(r) = c.authorize(&headers) {
        return r;
    }
    match Model::load(&c.config.model.path, &c.spec) {
        Ok(m) => {
            c.model_reload.notify_one();
            reply(
                StatusCode::OK,
                json!({"version": m.version(), "status": "accepted; scores from the next batch on"}),
            )
        }
        Err(e) => {
            c.metrics.emit(ReloadRefused {
                what: Reloadable::Model,
                error: &e,
            });
            reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": e.to_string(), "status": "refused; the previous model stays in use"}),
            )
        }
    }
}

/// `GET /policy`
#[utoipa::path(
    get,
    path = "/policy",
    tag = "model and policy",
    responses((status = 200, description = "The alert and retention policy in use: thresholds, tiers, campaign and contact rules, holdout, segments", body = crate::admin::schemas::PolicyView)),
)]
pub async fn get_policy(State(c): State<Arc<Control>>) -> Reply {
    let (_, p) = c.current.read().expect("not poisoned").clone();
    reply(
        StatusCode::OK,
        json!({
            "enter_threshold": p.enter,
            "exit_threshold": p.exit,
            "tiers": p.tiers,
            "campaigns": p.campaigns,
            "contact": p.contact,
            "holdout": p.holdout,
            "outcome_window_days": p.outcome_window_ms as f64 / crate::pipeline::event::DAY_MS as f64,
            "rfm": p.segments.rfm,
            "expected_lifetime_years": p.segments.expected_lifetime_years,
        }),
    )
}

/// `POST /policy/reload`: re-reads the config file; a valid `[policy]` and
/// `[segments]` apply from the next batch, an invalid file is refused
/// naming the key and the policy in use stays.
#[utoipa::path(
    post,
    path = "/policy/reload",
    tag = "model and policy",
    responses(
        (status = 200, description = "Accepted: applies from the next batch", body = crate::admin::schemas::PolicyReloaded),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 403, description = "Mutating endpoints are disabled: no `admin.token` is set", body = ErrorBody),
        (status = 422, description = "The config file is refused (the error names the key); the policy in use stays", body = ErrorBody),
        (status = 503, description = "The service is stopping; the policy in use stays", body = ErrorBody),
    ),
    security(("admin_token" = [])),
)]
pub async fn reload_policy(State(c): State<Arc<Control>>, headers: HeaderMap) -> Reply {
    if let Err(r) = c.authorize(&headers) {
        return r;
    }
    match Config::load(c.config_path.as_deref()) {
        Ok(new) => {
            let rules = new.policy.campaigns.len();
            if c.commands
                .send(Command::ReloadPolicy(Box::new(new)))
                .is_err()
            {
                return reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": "the service is stopping", "status": "refused; the policy in use stays"}),
                );
            }
            c.metrics.emit(PolicyReloaded {
                campaign_rules: rules,
            });
            reply(
                StatusCode::OK,
                json!({"status": "accepted; applies from the next batch", "campaign_rules": rules}),
            )
        }
        Err(e) => {
            c.metrics.emit(ReloadRefused {
                what: Reloadable::Policy,
                error: &e,
            });
            reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": e.to_string(), "status": "refused; the policy in use stays"}),
            )
        }
    }
}
