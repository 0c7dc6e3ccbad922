//! What the service starts with, and how it starts: the store, the model,
//! the admin server, the Kafka clients, and then the main loop.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio_util::sync::CancellationToken;

use crate::admin::control::{Command, Control};

use crate::config::{Config, ConfigError, StoreEngine};
use crate::kafka::source::{Assignment, Input, Publisher, Shared};
use crate::kafka::KafkaError;
use crate::pipeline::error::{Classify, ErrorClass};
use crate::pipeline::model::{Model, ModelError};
use crate::pipeline::output_format::{Format, Framing, Shape};
use crate::service::committer::Committer;
use crate::service::main_loop::MainLoop;
use crate::service::partitions::Partitions;
use crate::service::processor::{Outputs, Processor, Rules};
use crate::service::staged_store::StagedStore;
use crate::store::{FjallStore, MemStore, SledStore, Store, StoreError};
use crate::telemetry::events::ModelInUse;
use crate::telemetry::health::Health;
use crate::telemetry::metrics::Metrics;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("kafka client: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Topic(#[from] crate::kafka::topics::EnsureError),
    #[error(transparent)]
    ClientSettings(#[from] crate::kafka::client::ClientSettingsError),
    #[error("stopped: {0}; the uncommitted batch is replayed at the next start")]
    Halted(#[from] crate::service::committer::Halted),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error("admin server cannot listen on {addr}: {source}")]
    Admin {
        addr: String,
        source: std::io::Error,
    },
}

impl Classify for StartError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Store(e) => e.class(),
            Self::Kafka(e) => e.class(),
            Self::Halted(e) => e.class(),
            Self::Registry(e) => e.class(),
            Self::Config(_)
            | Self::Model(_)
            | Self::Topic(_)
            | Self::ClientSettings(_)
            | Self::Admin { .. } => ErrorClass::Config,
        }
    }
}

/// The outputs' registry framing (`[outputs] format`): the schema ids
/// configured, or the shipped schemas registered under `<topic>-value`
/// (TopicNameStrategy). While the registry cannot be reached the start
/// waits, not ready; a registry that refuses stops it. `Ok(None)`: asked to
/// stop while waiting; `Ok(Some(None))`: plain JSON.
async fn output_framing(
    config: &Config,
    registry: Option<&crate::registry::Registry>,
    shutdown: &CancellationToken,
) -> Result<Option<Option<Arc<Framing>>>, StartError> {
    let format = config.outputs.format;
    if format == Format::Json {
        return Ok(Some(None));
    }
    let ids = match (config.outputs.schema_ids, registry) {
        (Some(ids), _) => [ids.alert, ids.trigger, ids.outcome],
        (None, None) => {
            return Err(ConfigError::Key {
                key: "outputs.format".into(),
                message: "needs schema_registry.url to register its schemas".into(),
            }
            .into())
        }
        (None, Some(r)) => {
            let k = &config.kafka;
            let mut ids = [0u32; 3];
            for (shape, topic) in
                Shape::ALL
                    .into_iter()
                    .zip([&k.alerts_topic, &k.triggers_topic, &k.outcomes_topic])
            {
                let subject = format!("{topic}-value");
                let mut attempt = 0;
                ids[shape as usize] = loop {
                    match r
                        .register(&subject, format.schema_type(), shape.schema_text(format))
                        .await
                    {
                        Ok(id) => break id,
                        Err(e) if e.class() == ErrorClass::Config => return Err(e.into()),
                        Err(e) => {
                            let wait = crate::service::committer::retry_delay(attempt);
                            attempt += 1;
                            tracing::warn!(error = %e, %subject, wait_ms = wait.as_millis() as u64, "cannot register the output schema; waiting for the registry");
                            tokio::select! {
                                _ = shutdown.cancelled() => return Ok(None),
                                _ = tokio::time::sleep(wait) => {}
                            }
                        }
                    }
                };
                tracing::info!(%subject, id = ids[shape as usize], ?format, "output schema registered");
            }
            ids
        }
    };
    Ok(Some(Framing::new(format, ids).map(Arc::new)))
}

/// Everything the service runs with.
pub struct Service {
    pub config: Config,
    pub model: Arc<Model>,
    pub store: Arc<dyn Store>,
    pub metrics: Metrics,
    pub health: Arc<Health>,
    /// What the admin server's operator endpoints work with.
    pub control: Arc<Control>,
    /// The input partitions this instance holds: the consumer's, shown to
    /// the admin server.
    assignment: Arc<Mutex<Assignment>>,
    /// Reloads into the main loop: the admin server's and the model
    /// watcher's.
    commands: (UnboundedSender<Command>, UnboundedReceiver<Command>),
}

/// Opens the configured store.
pub fn open_store(config: &Config) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match config.store.engine {
        StoreEngine::Memory => Arc::new(MemStore::default()),
        StoreEngine::Sled => Arc::new(SledStore::open_with(
            &config.store.path,
            Some(config.store.flush_every_ms),
        )?),
        // With a flush at each commit a background one adds nothing.
        StoreEngine::Fjall => Arc::new(FjallStore::open_with(
            &config.store.path,
            (!config.store.flush_on_commit).then_some(config.store.flush_every_ms),
        )?),
    })
}

impl Service {
    /// Loads the model named in the config (refused if it does not match the
    /// feature spec) and opens the store.
    pub fn new(config: Config) -> Result<Self, StartError> {
        let model = Model::load(&config.model.path, &config.feature_spec())?;
        Self::with_model(config, model)
    }

    /// Like [`Service::new`] with a model already in hand.
    pub fn with_model(config: Config, model: Model) -> Result<Self, StartError> {
        let store = open_store(&config)?;
        let model = Arc::new(model);
        let metrics = Metrics::new();
        let assignment = Arc::default();
        let commands = tokio::sync::mpsc::unbounded_channel();
        let control = Arc::new(Control::new(
            config.clone(),
            store.clone(),
            metrics.clone(),
            model.clone(),
            Arc::clone(&assignment),
            commands.0.clone(),
        ));
        Ok(Self {
            config,
            model,
            store,
            metrics,
            health: Arc::new(Health::default()),
            control,
            assignment,
            commands,
        })
    }

    /// Starts the admin HTTP server; returns its address.
    pub async fn serve_admin(
        &self,
        shutdown: CancellationToken,
    ) -> Result<std::net::SocketAddr, StartError> {
        let (addr, _task) = crate::admin::serve(
            &self.config.admin.listen,
            self.metrics.clone(),
            self.health.clone(),
            self.control.clone(),
            shutdown,
        )
        .await
        .map_err(|source| StartError::Admin {
            addr: self.config.admin.listen.clone(),
            source,
        })?;
        tracing::info!(%addr, "admin server listening (/metrics, /healthz, /readyz, /customers, /model, /policy)");
        Ok(addr)
    }

    /// Runs until `shutdown` is cancelled; then finishes the batch in hand,
    /// writes state and offsets, flushes and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), StartError> {
        let cfg = self.config.kafka.clone();
        // Settings librdkafka refuses stop the start here, named, instead
        // of failing every retry below.
        let c = cfg.clone();
        tokio::task::spawn_blocking(move || crate::kafka::client::check(&c))
            .await
            .expect("the check does not panic")?;
        if crate::kafka::topics::ensure(&cfg, &shutdown).await?
            == crate::kafka::topics::Checked::Stopped
        {
            return Ok(());
        }
        let registry = crate::registry::Registry::new(&self.config.schema_registry)?;
        // Before the consumer joins the group: waiting for the registry
        // must not hold up the group's rebalances.
        let Some(framing) = output_framing(&self.config, registry.as_ref(), &shutdown).await?
        else {
            return Ok(());
        };
        let shared = Shared {
            store: self.store.clone(),
            health: self.health.clone(),
            metrics: self.metrics.clone(),
            assignment: self.assignment.clone(),
        };
        let input = Input::new(&cfg, self.config.admin.advertised_url.as_deref(), shared)?;
        let publisher = Publisher::new(&cfg)?;
        self.control.connected(publisher.clone());
        let clock = self.config.clock.mode;
        let outputs =
            Outputs::new(&cfg.input_topic, cfg.dead_letter_max_bytes).with_framing(framing);
        let processor = Processor::new(
            Rules {
                spec: self.config.feature_spec(),
                model: self.model.clone(),
                policy: self.config.policy_for(Some(self.model.file())),
            },
            self.config.validator(),
            self.metrics.clone(),
            clock,
            outputs.clone(),
        );
        self.health.committing.store(true, Ordering::Relaxed);
        self.health
            .stall_after(Duration::from_secs(self.config.service.stall_seconds));
        tracing::info!(
            brokers = %cfg.brokers,
            topic = %cfg.input_topic,
            group = %cfg.group_id,
            model = %self.model.version(),
            model_path = %self.config.model.path.display(),
            store = %self.config.store.path.display(),
            clock = %clock,
            schema_registry = registry.as_ref().map(|r| r.describe()),
            "churn-alert started"
        );
        self.metrics.emit(ModelInUse {
            from: None,
            to: self.model.version(),
        });
        self.metrics.emit(crate::telemetry::events::PolicyInUse {
            policy: &processor.rules.policy,
        });
        let (command_tx, commands) = self.commands;
        crate::service::reload::ModelWatcher {
            path: self.config.model.path.clone(),
            spec: self.config.feature_spec(),
            metrics: self.metrics.clone(),
            every: Duration::from_secs_f64(self.config.model.reload_check_seconds),
            requests: self.control.model_reload.clone(),
            commands: command_tx,
        }
        .spawn(self.model.clone(), shutdown.clone());
        // The experiment readout: the outcomes topic, read whole on a
        // thread of its own.
        self.metrics
            .experiments
            .set_settings(self.config.experiments.clone());
        let readout_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readout = {
            let (cfg, board, stop) = (
                cfg.clone(),
                self.metrics.experiments.clone(),
                readout_stop.clone(),
            );
            std::thread::Builder::new()
                .name("experiment-readout".into())
                .spawn(move || crate::kafka::outcomes::follow(&cfg, &board, &stop))
                .expect("a thread starts")
        };
        let owner = self.config.admin.advertised_url.clone();
        let committer = Committer {
            // Kafka's committed offsets are for lag only (starts use the
            // stored or restored offsets); the memory engine keeps the old
            // behaviour of not committing them.
            commit_to_kafka: self.config.store.engine != StoreEngine::Memory,
            flush_on_commit: self.config.store.flush_on_commit,
            input: &input,
            publisher: &publisher,
            health: &self.health,
            metrics: &self.metrics,
            shutdown: &shutdown,
            owner: owner.clone(),
            outputs,
            registry: registry.as_ref(),
            view: StagedStore::new(self.store.clone(), self.metrics.clone()).with_backup(Arc::new(
                crate::kafka::changelog::ChangelogBackup(cfg.clone()),
            )),
            in_flight: Default::default(),
        };
        let partitions = Partitions::new(
            cfg.clone(),
            self.store.clone(),
            self.metrics.clone(),
            owner,
            Duration::from_secs(cfg.release_unowned_after_seconds),
        );
        let halted = MainLoop {
            config: self.config.clone(),
            control: &self.control,
            commands,
            processor,
            committer,
            partitions,
            shutdown: &shutdown,
        }
        .run()
        .await;
        match &halted {
            Ok(()) => tracing::info!("stopping: flushing state"),
            Err(e) => {
                tracing::error!(error = %e, class = e.class().as_str(), "stopping: a failure no retry can fix")
            }
        }
        if let Err(e) = self.store.flush() {
            tracing::error!(error = %e, "final flush failed; the next start replays from the last durable commit");
        }
        publisher.flush(Duration::from_secs(5));
        readout_stop.store(true, Ordering::Relaxed);
        let _ = tokio::task::spawn_blocking(move || readout.join()).await;
        tracing::info!("stopped");
        Ok(halted?)
    }
}
