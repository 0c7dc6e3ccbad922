//! The topics the service needs, checked at start: the input topic must
//! exist (its partition count is the unit of scale and is the user's
//! choice); missing output topics and the state changelog (compacted) are
//! created with the input's partition count and a replication factor of up
//! to 3. A changelog whose partition count differs from the input's stops
//! the start. While the brokers cannot be
//! reached the service waits, not ready; a missing input topic or a topic
//! that cannot be created stops the start, naming the key and the topic.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};
use tokio_util::sync::CancellationToken;

use crate::kafka::client::{client_config, ClientSettingsError, Role};
use crate::kafka::error::class_of;
use crate::kafka::settings::KafkaConfig;
use crate::pipeline::error::{Classify, ErrorClass};

/// Why the topics are not usable.
#[derive(Debug, thiserror::Error)]
#[error("config key `{key}`: topic {topic:?} {message}")]
pub struct TopicError {
    pub key: String,
    pub topic: String,
    pub message: String,
}

impl Classify for TopicError {
    /// A missing or mismatched topic is the operator's to fix.
    fn class(&self) -> ErrorClass {
        ErrorClass::Config
    }
}

/// Why the start cannot go on: a topic, or brokers that refuse this
/// client's security settings.
#[derive(Debug, thiserror::Error)]
pub enum EnsureError {
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error(transparent)]
    Refused(#[from] ClientSettingsError),
}

/// Whether the check finished or the service was asked to stop first.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked {
    Ready,
    Stopped,
}

fn admin(cfg: &KafkaConfig) -> Result<AdminClient<DefaultClientContext>, KafkaError> {
    client_config(cfg, Role::Admin, &[], &[]).create()
}

/// Keeps what librdkafka reports that no retry can fix: a TLS handshake
/// the client refuses (an unknown CA, a wrong host name) or failed
/// authentication.
#[derive(Default)]
struct Refusals(std::sync::Mutex<Option<String>>);

impl ClientContext for Refusals {
    fn error(&self, error: KafkaError, reason: &str) {
        // A socket that fails mid-handshake is a transport problem (it
        // passes); a certificate, a handshake alert or credentials do not.
        // (TLS spoken to a plaintext listener looks like a broker closing
        // connections, so it is waited for, as an outage is.)
        let refused =
            class_of(&error) == ErrorClass::Config && !reason.contains("SSL transport error");
        if refused {
            *self.0.lock().expect("not poisoned") = Some(reason.to_string());
        }
        // Said once, by the caller's warning (rdkafka calls this twice).
        tracing::debug!(%error, reason, "kafka client");
    }
}

impl ProducerContext for Refusals {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

/// Topic name → partition count, and the number of brokers.
type Metadata = (BTreeMap<String, usize>, usize);

/// The metadata; on failure, also the refusal librdkafka reported
/// meanwhile, if any.
fn metadata(cfg: &KafkaConfig) -> Result<Metadata, (KafkaError, Option<String>)> {
    // A producer client, whose poll serves the error callback.
    let p: BaseProducer<Refusals> = client_config(cfg, Role::Admin, &[], &[])
        .create_with_context(Refusals::default())
        .map_err(|e| (e, None))?;
    let md = match p.client().fetch_metadata(None, Duration::from_secs(5)) {
        Ok(md) => md,
        Err(e) => {
            // The refusal's report may land just after the failure.
            p.poll(Duration::from_millis(500));
            let refusal = p.context().0.lock().expect("not poisoned").take();
            return Err((e, refusal));
        }
    };
    let topics = md
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name().to_string(), t.partitions().len()))
        .collect();
    Ok((topics, md.brokers().len()))
}

/// Failed metadata reads in a row, each with a refusal, after which the
/// start stops instead of waiting.
const REFUSALS_TO_STOP: u32 = 3;

/// Checks and creates topics; waits while the brokers are unreachable.
/// Brokers that refuse the client's TLS or credentials every time stop the
/// start, with librdkafka's reason.
pub async fn ensure(
    cfg: &KafkaConfig,
    shutdown: &CancellationToken,
) -> Result<Checked, EnsureError> {
    let mut refused = 0;
    let (topics, brokers) = loop {
        let c = cfg.clone();
        match tokio::task::spawn_blocking(move || metadata(&c))
            .await
            .expect("metadata task does not panic")
        {
            Ok(m) => break m,
            Err((e, refusal)) => {
                match &refusal {
                    Some(reason) => {
                        refused += 1;
                        if refused >= REFUSALS_TO_STOP {
                            return Err(ClientSettingsError {
                                key: "kafka.client_properties".into(),
                                message: format!(
                                    "the brokers at {} cannot be used with these security settings: {reason} (check security.protocol, ssl.ca.location and the sasl.* settings)",
                                    cfg.brokers
                                ),
                            }
                            .into());
                        }
                    }
                    None => refused = 0,
                }
                tracing::warn!(error = %e, class = e.class().as_str(), refused = refusal.as_deref().unwrap_or("no"), "cannot read topic metadata; waiting for the brokers");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(Checked::Stopped),
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    };
    Ok(create_missing(cfg, &topics, brokers).await?)
}

/// What one look at the cluster found (`check-config --connect`).
#[derive(Debug)]
pub struct Inspection {
    /// Brokers in the cluster's metadata.
    pub brokers: usize,
    /// The input topic's partition count.
    pub partitions: usize,
    /// (config key, topic, partition count) of each output topic that
    /// exists.
    pub present: Vec<(&'static str, String, usize)>,
    /// (config key, topic) of each output topic the service would create
    /// at start (it needs the right to create topics for that).
    pub missing: Vec<(&'static str, String)>,
}

/// Why the cluster cannot serve this config, found without waiting.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// No broker answered, or they refused the client's security settings.
    #[error(transparent)]
    Unreachable(#[from] ClientSettingsError),
    #[error(transparent)]
    Topic(#[from] TopicError),
}

/// Reads the cluster's metadata once (no waiting, nothing created) and
/// checks the topics as the start would: the input exists, the changelog,
/// if there, has as many partitions as the input.
pub fn inspect(cfg: &KafkaConfig) -> Result<Inspection, InspectError> {
    let (topics, brokers) = metadata(cfg).map_err(|(e, refusal)| ClientSettingsError {
        key: if refusal.is_some() {
            "kafka.client_properties"
        } else {
            "kafka.brokers"
        }
        .into(),
        message: match refusal {
            Some(reason) => format!(
                "the brokers at {} refuse these security settings: {reason} (check security.protocol, ssl.ca.location and the sasl.* settings)",
                cfg.brokers
            ),
            None => format!("no broker at {} answered: {e}", cfg.brokers),
        },
    })?;
    let Some(&partitions) = topics.get(&cfg.input_topic) else {
        return Err(TopicError {
            key: "kafka.input_topic".into(),
            topic: cfg.input_topic.clone(),
            message: "does not exist: create it, keyed by customer id, with as many partitions as instances may ever share the work".into(),
        }
        .into());
    };
    check_changelog(cfg, &topics, partitions)?;
    let mut found = Inspection {
        brokers,
        partitions,
        present: Vec::new(),
        missing: Vec::new(),
    };
    for (key, topic) in outputs(cfg) {
        match topics.get(topic) {
            Some(&n) => found.present.push((key, topic.clone(), n)),
            None => found.missing.push((key, topic.clone())),
        }
    }
    Ok(found)
}

/// The topics the service writes, by config key.
fn outputs(cfg: &KafkaConfig) -> [(&'static str, &String); 5] {
    [
        ("kafka.alerts_topic", &cfg.alerts_topic),
        ("kafka.triggers_topic", &cfg.triggers_topic),
        ("kafka.outcomes_topic", &cfg.outcomes_topic),
        ("kafka.dlq_topic", &cfg.dlq_topic),
        ("kafka.changelog_topic", &cfg.changelog_topic),
    ]
}

/// Changelog partition p holds input partition p's state: a changelog
/// that exists must have the input's partition count.
fn check_changelog(
    cfg: &KafkaConfig,
    topics: &BTreeMap<String, usize>,
    partitions: usize,
) -> Result<(), TopicError> {
    match topics.get(&cfg.changelog_topic) {
        Some(&n) if n != partitions => Err(TopicError {
            key: "kafka.changelog_topic".into(),
            topic: cfg.changelog_topic.clone(),
            message: format!(
                "has {n} partitions but the input topic {:?} has {partitions}: they must match (partition p of the changelog holds input partition p's state); delete the changelog (the next start recreates it from local state as it changes) or add partitions to match",
                cfg.input_topic
            ),
        }),
        _ => Ok(()),
    }
}

/// Checks the input and changelog topics and creates the missing outputs.
async fn create_missing(
    cfg: &KafkaConfig,
    topics: &BTreeMap<String, usize>,
    brokers: usize,
) -> Result<Checked, TopicError> {
    let Some(&partitions) = topics.get(&cfg.input_topic) else {
        return Err(TopicError {
            key: "kafka.input_topic".into(),
            topic: cfg.input_topic.clone(),
            message: "does not exist: create it, keyed by customer id, with as many partitions as instances may ever share the work".into(),
        });
    };
    check_changelog(cfg, topics, partitions)?;
    /// 400 days.
    const OUTCOMES_RETENTION_MS: &str = "34560000000";
    let missing: Vec<(&str, &String)> = outputs(cfg)
        .into_iter()
        .filter(|(_, t)| !topics.contains_key(*t))
        .collect();
    if missing.is_empty() {
        return Ok(Checked::Ready);
    }
    let replication = brokers.clamp(1, 3) as i32;
    let new: Vec<NewTopic> = missing
        .iter()
        .map(|(key, t)| {
            let topic = NewTopic::new(t, partitions as i32, TopicReplication::Fixed(replication));
            if *key == "kafka.changelog_topic" {
                // Only the latest state of each customer is kept; erased
                // customers' tombstones go after a day.
                topic.set("cleanup.policy", "compact")
            } else if *key == "kafka.outcomes_topic" {
                // The experiment readout reads it whole from its start:
                // outcomes are kept 400 days (longer than an experiment
                // runs; an erased customer's records go then at the latest).
                topic.set("retention.ms", OUTCOMES_RETENTION_MS)
            } else {
                topic
            }
        })
        .collect();
    let fail = |key: &str, topic: &str, message: String| TopicError {
        key: key.into(),
        topic: topic.into(),
        message,
    };
    let a = admin(cfg).map_err(|e| fail(missing[0].0, missing[0].1, e.to_string()))?;
    let results = a
        .create_topics(
            &new,
            &AdminOptions::new()
                .operation_timeout(Some(Duration::from_secs(10)))
                .request_timeout(Some(Duration::from_secs(15))),
        )
        .await
        .map_err(|e| {
            fail(
                missing[0].0,
                missing[0].1,
                format!("cannot be created: {e}"),
            )
        })?;
    for ((key, topic), r) in missing.iter().zip(results) {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::info!(%topic, partitions, replication, "created missing topic");
            }
            Err((_, code)) => {
                return Err(fail(
                    key,
                    topic,
                    format!("does not exist and cannot be created ({code}); create it, keyed by customer id"),
                ))
            }
        }
    }
    Ok(Checked::Ready)
}
