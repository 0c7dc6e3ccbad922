//! `churn-alert check-config --connect`: what the config leads to, reached
//! for real before a start: the brokers (with the client's security
//! settings), the topics, the Schema Registry and the store's folder. The
//! first problem stops the check, naming its config key (exit code 2).

use std::path::Path;

use crate::config::{Config, StoreEngine};
use crate::kafka::topics::{inspect, InspectError};
use crate::registry::Registry;

/// A dependency this config cannot use.
#[derive(Debug, thiserror::Error)]
#[error("config key `{key}`: {message}")]
pub struct Unusable {
    pub key: String,
    pub message: String,
}

/// Reaches every dependency of the config; prints what it found.
pub async fn check(config: &Config) -> anyhow::Result<()> {
    let kafka = config.kafka.clone();
    let found = tokio::task::spawn_blocking(move || inspect(&kafka))
        .await
        .expect("the metadata read does not panic")
        .map_err(|e| match e {
            InspectError::Unreachable(e) => Unusable {
                key: e.key,
                message: e.message,
            },
            InspectError::Topic(e) => Unusable {
                key: e.key,
                message: format!("topic {:?} {}", e.topic, e.message),
            },
        })?;
    println!(
        "kafka: {} broker(s) at {}; input topic {:?} has {} partition(s)",
        found.brokers, config.kafka.brokers, config.kafka.input_topic, found.partitions
    );
    for (key, topic, n) in &found.present {
        println!("  {key} {topic:?}: {n} partition(s)");
    }
    for (key, topic) in &found.missing {
        println!(
            "  {key} {topic:?}: missing; created at start with {} partition(s) (needs the right to create topics)",
            found.partitions
        );
    }
    match Registry::new(&config.schema_registry) {
        Ok(Some(r)) => {
            r.reach().await.map_err(|e| Unusable {
                key: if config.schema_registry.url.is_some() {
                    "schema_registry.url"
                } else {
                    "schema_registry.dir"
                }
                .into(),
                message: e.to_string(),
            })?;
            println!("schema registry: {} answers", r.describe());
        }
        Ok(None) => println!("schema registry: none configured"),
        Err(e) => {
            return Err(Unusable {
                key: "schema_registry".into(),
                message: e.to_string(),
            }
            .into())
        }
    }
    if config.store.engine != StoreEngine::Memory {
        writable(&config.store.path).map_err(|message| Unusable {
            key: "store.path".into(),
            message,
        })?;
        println!("store: {} is writable", config.store.path.display());
    }
    println!("connect ok");
    Ok(())
}

/// Whether the service could create its database in `dir`: a file is
/// written and removed in `dir`, or in its nearest existing parent where
/// the service would create it (nothing is left behind, so a check run as
/// another user makes no folder the service cannot use).
fn writable(dir: &Path) -> Result<(), String> {
    let existing = dir
        .ancestors()
        .map(|a| {
            if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            }
        })
        .find(|a| a.is_dir())
        .unwrap_or(Path::new("."));
    tempfile::tempfile_in(existing).map(drop).map_err(|e| {
        if existing == dir {
            format!("{} is not writable: {e}", dir.display())
        } else {
            format!(
                "{} cannot be created: {} is not writable: {e}",
                dir.display(),
                existing.display()
            )
        }
    })
}
