//! `churn-alert produce`: sends an event history (JSONL of the event
//! contract, such as `simulate` writes or an export of your own) to the
//! input topic, keyed by customer id with the configured partitioner and
//! the configured security settings, so a local run has input.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::Context;

use crate::config::Config;
use crate::kafka::source::Publisher;

/// Flags of `churn-alert produce`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProduceOptions {
    /// JSONL files of events, one event a line (e.g. `events.jsonl` from
    /// `simulate`), sent in file and line order.
    #[arg(long, required = true, num_args = 1..)]
    pub events: Vec<PathBuf>,
    /// Topic to send to (default: the config's `kafka.input_topic`).
    #[arg(long)]
    pub topic: Option<String>,
}

/// Records sent and awaited at a time.
const CHUNK: usize = 5_000;

/// Sends every line; a line whose `customer_id` cannot be read is sent
/// without a key (the service dead-letters it, as it would from any
/// producer).
pub async fn run(opts: ProduceOptions, config: &Config) -> anyhow::Result<()> {
    let mut cfg = config.kafka.clone();
    if let Some(t) = opts.topic {
        cfg.input_topic = t;
    }
    crate::kafka::client::check(&cfg)?;
    let publisher = Publisher::new(&cfg)?;
    let (mut sent, mut chunk) = (0usize, Vec::with_capacity(CHUNK));
    for path in &opts.events {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            let key = serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|v| {
                    v.get("customer_id")?
                        .as_str()
                        .map(|s| s.as_bytes().to_vec())
                });
            chunk.push((key, line.into_bytes()));
            if chunk.len() == CHUNK {
                sent += send(&publisher, &cfg.input_topic, &mut chunk)
                    .await
                    .with_context(|| {
                        format!(
                            "{sent} events were delivered before the {CHUNK} up to {} line {}; some of those may be delivered too",
                            path.display(),
                            n + 1
                        )
                    })?;
                if sent % 100_000 == 0 {
                    eprintln!("sent {sent} events to {}", cfg.input_topic);
                }
            }
        }
    }
    sent += send(&publisher, &cfg.input_topic, &mut chunk)
        .await
        .with_context(|| {
            format!(
                "{sent} events were delivered before the last {}",
                chunk.len()
            )
        })?;
    eprintln!(
        "sent {sent} events to {} at {}",
        cfg.input_topic, cfg.brokers
    );
    Ok(())
}

async fn send(
    publisher: &Publisher,
    topic: &str,
    chunk: &mut Vec<(Option<Vec<u8>>, Vec<u8>)>,
) -> anyhow::Result<usize> {
    let n = publisher
        .send_inputs(chunk)
        .await
        .with_context(|| format!("sending to {topic}"))?;
    chunk.clear();
    Ok(n)
}
