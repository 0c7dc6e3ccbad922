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
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio_util::sync::CancellationToken;

use crate::kafka::client::{client_config, Role};
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

/// Whether the check finished or the service was asked to stop first.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked {
    Ready,
    Stopped,
}

fn admin(cfg: &KafkaConfig) -> Result<AdminClient<DefaultClientContext>, KafkaError> {
    client_config(cfg, Role::Admin, &[], &[]).create()
}

/// Topic name → partition count, and the number of brokers.
fn metadata(cfg: &KafkaConfig) -> Result<(BTreeMap<String, usize>, usize), KafkaError> {
    let a = admin(cfg)?;
    let md = a.inner().fetch_metadata(None, Duration::from_secs(5))?;
    let topics = md
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name().to_string(), t.partitions().len()))
        .collect();
    Ok((topics, md.brokers().len()))
}

/// Checks and creates topics; waits while the brokers are unreachable.
pub async fn ensure(
    cfg: &KafkaConfig,
    shutdown: &CancellationToken,
) -> Result<Checked, TopicError> {
    let (topics, brokers) = loop {
        let c = cfg.clone();
        match tokio::task::spawn_blocking(move || metadata(&c))
            .await
            .expect("metadata task does not panic")
        {
            Ok(m) => break m,
            Err(e) => {
                tracing::warn!(error = %e, class = e.class().as_str(), "cannot read topic metadata; waiting for the brokers");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(Checked::Stopped),
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    };
    let Some(&partitions) = topics.get(&cfg.input_topic) else {
        return Err(TopicError {
            key: "kafka.input_topic".into(),
            topic: cfg.input_topic.clone(),
            message: "does not exist: create it, keyed by customer id, with as many partitions as instances may ever share the work".into(),
        });
    };
    // Changelog partition p holds input partition p's state.
    if let Some(&n) = topics.get(&cfg.changelog_topic) {
        if n != partitions {
            return Err(TopicError {
                key: "kafka.changelog_topic".into(),
                topic: cfg.changelog_topic.clone(),
                message: format!(
                    "has {n} partitions but the input topic {:?} has {partitions}: they must match (partition p of the changelog holds input partition p's state); delete the changelog (the next start recreates it from local state as it changes) or add partitions to match",
                    cfg.input_topic
                ),
            });
        }
    }
    let wanted = [
        ("kafka.alerts_topic", &cfg.alerts_topic),
        ("kafka.triggers_topic", &cfg.triggers_topic),
        ("kafka.outcomes_topic", &cfg.outcomes_topic),
        ("kafka.dlq_topic", &cfg.dlq_topic),
        ("kafka.changelog_topic", &cfg.changelog_topic),
    ];
    let missing: Vec<(&str, &String)> = wanted
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
