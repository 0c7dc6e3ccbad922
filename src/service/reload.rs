//! Model updates while the service runs: the model file is checked every
//! `model.reload_check_seconds` and on SIGHUP. A new valid model replaces
//! the old one between batches; an invalid one (unreadable, or features the
//! code does not compute) is refused with an error log and
//! `churn_alert_model_reloads_total{result="error"}`, and the old model
//! stays in use.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::admin::control::Command;
use crate::pipeline::features::FeatureSpec;
use crate::pipeline::model::Model;
use crate::telemetry::events::{ModelInUse, ReloadRefused, Reloadable};
use crate::telemetry::metrics::Metrics;

/// What identifies a version of the file without reading it.
type Signature = Option<(SystemTime, u64)>;

fn signature(path: &std::path::Path) -> Signature {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Watches the model file; sends each new valid model to the service loop
/// as a [`Command::ReloadModel`].
pub struct ModelWatcher {
    pub path: PathBuf,
    pub spec: FeatureSpec,
    pub metrics: Metrics,
    /// Zero: only on SIGHUP.
    pub every: Duration,
    /// Reload requests (`POST /model/reload`), like SIGHUP.
    pub requests: Arc<tokio::sync::Notify>,
    /// The service loop's commands.
    pub commands: UnboundedSender<Command>,
}

impl ModelWatcher {
    /// Runs until `shutdown`, from the model in use (`current`).
    pub fn spawn(self, mut current: Arc<Model>, shutdown: CancellationToken) {
        tokio::spawn(async move {
            let mut hup = match tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::hangup(),
            ) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "no SIGHUP handler; model reloads by polling only");
                    None
                }
            };
            let mut seen = signature(&self.path);
            loop {
                let poll = async {
                    if self.every.is_zero() {
                        std::future::pending::<()>().await
                    } else {
                        tokio::time::sleep(self.every).await
                    }
                };
                let hup_recv = async {
                    match hup.as_mut() {
                        Some(h) => {
                            h.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                let forced = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = poll => false,
                    _ = hup_recv => true,
                    _ = self.requests.notified() => true,
                };
                let now = signature(&self.path);
                if !forced && now == seen {
                    continue;
                }
                seen = now;
                self.try_load(&mut current, forced);
            }
        });
    }

    fn try_load(&self, current: &mut Arc<Model>, forced: bool) {
        let old = current.clone();
        match Model::load(&self.path, &self.spec) {
            Ok(m) if m.file() == old.file() => {
                if forced {
                    tracing::info!(version = %m.version(), "SIGHUP: the model file is unchanged");
                }
            }
            Ok(m) => {
                // Sent before it is reported: whoever sees the new version
                // in the metrics can count on the next batch using it.
                let m = Arc::new(m);
                if self.commands.send(Command::ReloadModel(m.clone())).is_err() {
                    return; // the service is stopping
                }
                *current = m.clone();
                self.metrics.emit(ModelInUse {
                    from: Some(old.version()),
                    to: m.version(),
                });
            }
            Err(e) => {
                self.metrics.emit(ReloadRefused {
                    what: Reloadable::Model,
                    error: &e,
                });
            }
        }
    }
}
