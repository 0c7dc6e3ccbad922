//! The `churn-alert` binary: parses flags, starts logging, dispatches.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use churn_alert::config::Config;
use churn_alert::event::{Millis, DAY_MS};

#[derive(Parser)]
#[command(
    name = "churn-alert",
    version,
    about = "Finds customers about to churn from their Kafka events and publishes alerts and retention triggers."
)]
struct Cli {
    /// TOML config file (defaults are used for anything it leaves out;
    /// CHURN_ALERT__SECTION__KEY environment variables override both).
    #[arg(long, short, global = true, env = "CHURN_ALERT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default).
    Run,
    /// Run the whole pipeline on an in-process mock Kafka cluster with a simulated population.
    Demo(churn_alert::demo::DemoOptions),
    /// Generate a synthetic customer population as event JSONL plus ground truth.
    Simulate {
        #[arg(long, default_value_t = 10_000)]
        customers: usize,
        #[arg(long, default_value_t = 180)]
        days: u32,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Last simulated day (exclusive), YYYY-MM-DD; default today (UTC).
        #[arg(long)]
        end: Option<String>,
        /// Share of events repeated with the same event id.
        #[arg(long, default_value_t = 0.0)]
        duplicates: f64,
        /// Share of events delivered a day late.
        #[arg(long, default_value_t = 0.0)]
        late: f64,
        /// Directory for events.jsonl and truth.csv.
        #[arg(long)]
        out: PathBuf,
    },
    /// Fit the churn model from event history (JSONL of the event contract).
    Train {
        #[arg(long)]
        events: PathBuf,
        /// Training cut-off, YYYY-MM-DD: labels must be known, so the last
        /// observation date is as-of minus the horizon.
        #[arg(long)]
        as_of: String,
        /// Label horizon, e.g. 90d.
        #[arg(long, default_value = "90d")]
        horizon: String,
        /// Number of observation dates, 14 days apart.
        #[arg(long, default_value_t = 4)]
        snapshots: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// Check the config (and the model it names) and exit.
    CheckConfig,
}

fn parse_date(s: &str) -> anyhow::Result<Millis> {
    let d = time::Date::parse(
        s,
        &time::macros::format_description!("[year]-[month]-[day]"),
    )
    .with_context(|| format!("{s:?} is not a date like 2026-06-30"))?;
    Ok(d.midnight().assume_utc().unix_timestamp() * 1000)
}

fn parse_days(s: &str) -> anyhow::Result<Millis> {
    let n: f64 = s
        .strip_suffix('d')
        .unwrap_or(s)
        .parse()
        .with_context(|| format!("{s:?} is not a number of days like 90d"))?;
    Ok((n * DAY_MS as f64) as Millis)
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,librdkafka=warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

/// First SIGINT/SIGTERM cancels the token (graceful stop); a second exits at once.
fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        for i in 0.. {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if i == 0 {
                tracing::info!(
                    "stop requested: finishing the batch in hand (signal again to exit at once)"
                );
                t.cancel();
            } else {
                tracing::warn!(
                    "second signal: exiting now; uncommitted work is replayed at next start"
                );
                std::process::exit(130);
            }
        }
    });
    token
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    init_logging(config.log.format == "json");
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let service = churn_alert::service::Service::new(config)?;
            let shutdown = shutdown_on_signals();
            service.serve_admin(shutdown.clone()).await?;
            service.run(shutdown).await?;
        }
        Command::CheckConfig => {
            let spec = config.feature_spec();
            let model = churn_alert::model::Model::load(&config.model.path, &spec)?;
            println!(
                "config ok; model {} ({} features) matches the feature code",
                model.version(),
                model.file().features.len()
            );
        }
        Command::Demo(opts) => {
            churn_alert::demo::run(opts, shutdown_on_signals()).await?;
        }
        Command::Simulate {
            customers,
            days,
            seed,
            end,
            duplicates,
            late,
            out,
        } => {
            let mut cfg = churn_alert::simulate::SimConfig::new(customers, days, seed);
            if let Some(e) = end {
                cfg.end = parse_date(&e)?;
            }
            cfg.duplicate_rate = duplicates;
            cfg.late_rate = late;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let mut sim = churn_alert::simulate::Simulator::new(cfg);
            let path = out.join("events.jsonl");
            let mut w = std::io::BufWriter::new(
                std::fs::File::create(&path)
                    .with_context(|| format!("creating {}", path.display()))?,
            );
            let mut n = 0u64;
            while !sim.done() {
                for e in sim.next_day() {
                    w.write_all(e.json.as_bytes())?;
                    w.write_all(b"\n")?;
                    n += 1;
                }
            }
            w.flush()?;
            std::fs::write(out.join("truth.csv"), sim.truth_csv())?;
            eprintln!(
                "wrote {n} events to {} and ground truth to {}",
                path.display(),
                out.join("truth.csv").display()
            );
        }
        Command::Train {
            events,
            as_of,
            horizon,
            snapshots,
            out,
        } => {
            let as_of = parse_date(&as_of)?;
            let mut tc = churn_alert::train::TrainConfig::new(as_of, parse_days(&horizon)?);
            tc.snapshots = snapshots;
            let spec = config.feature_spec();
            let v = config.validator();
            let f = std::fs::File::open(&events)
                .with_context(|| format!("opening {}", events.display()))?;
            let (mut history, mut refused) = (Vec::new(), 0u64);
            for line in std::io::BufReader::new(f).lines() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let key = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| {
                        v.get("customer_id")
                            .and_then(|c| c.as_str())
                            .map(str::to_string)
                    });
                match v.decode(
                    key.as_deref().map(str::as_bytes),
                    line.as_bytes(),
                    None,
                    Millis::MAX / 2,
                ) {
                    Ok(e) if e.occurred_at < as_of => history.push(e),
                    Ok(_) => {}
                    Err(_) => refused += 1,
                }
            }
            eprintln!(
                "read {} events before as-of ({refused} refused by validation)",
                history.len()
            );
            let examples = churn_alert::train::build_examples(history, &spec, &tc);
            eprintln!("built {} labelled snapshots", examples.len());
            let t = churn_alert::train::fit(&examples, &spec, &tc)?;
            if let Some(dir) = out.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&out, serde_json::to_string_pretty(&t.model)? + "\n")?;
            println!(
                "wrote {} ({}): validation ROC AUC {:.3}, Brier {:.4}, churn rate {:.3}, L2 alpha {}",
                out.display(),
                t.model.version,
                t.validation.roc_auc,
                t.validation.brier,
                t.validation.churn_rate,
                t.alpha
            );
        }
    }
    Ok(())
}
