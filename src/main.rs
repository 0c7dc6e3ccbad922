//! The `churn-alert` binary: parses flags, starts logging, dispatches.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use churn_alert::config::Config;

#[derive(Parser)]
#[command(
    name = "churn-alert",
    version = churn_alert::telemetry::LONG_VERSION,
    about = "Finds customers about to churn from their Kafka events and publishes alerts and retention triggers.",
    arg_required_else_help = true,
    after_help = EXIT_CODES
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
    /// Run the service.
    Run,
    /// Run the whole pipeline on an in-process mock Kafka cluster with a simulated population.
    Demo(churn_alert::offline::demo::DemoOptions),
    /// Generate a synthetic customer population as event JSONL plus ground truth.
    Simulate(churn_alert::offline::simulate_command::SimulateOptions),
    /// Fit the churn model from event history (JSONL of the event contract)
    /// and write it with a report and plots.
    Train(churn_alert::offline::commands::TrainOptions),
    /// Score every customer in an event history as of a time, as the service would.
    Score(churn_alert::offline::commands::ScoreOptions),
    /// Replay an event history through the service's own processing and
    /// report how early its alerts came before churn onset.
    Backtest(churn_alert::offline::backtest::BacktestOptions),
    /// Send an event history (JSONL, e.g. from `simulate`) to the input
    /// topic, keyed by customer id, with the config's Kafka settings.
    Produce(churn_alert::offline::produce::ProduceOptions),
    /// Print the readout of the campaign experiments: per variant, lift
    /// against the holdout with fixed and always-valid intervals, the
    /// sample-ratio check, guardrails and the customers still needed.
    Experiments(churn_alert::offline::experiments::ExperimentsOptions),
    /// Check the config (and the model it names, and the Kafka client
    /// settings, by creating each client) and exit; with --connect, also
    /// reach the brokers, topics, Schema Registry and store folder.
    CheckConfig(CheckConfigOptions),
    /// Ask the admin server of the service on this host whether it is
    /// ready (exit 0) or not (exit 1): a container healthcheck that needs
    /// no shell or curl.
    Healthcheck(churn_alert::offline::healthcheck::HealthcheckOptions),
    /// Print the effective config (defaults, then the file, then the
    /// environment) as TOML, with secrets masked.
    Config,
}

#[derive(clap::Args)]
struct CheckConfigOptions {
    /// Also reach what the config names: the brokers (with its security
    /// settings), the input, output, changelog and dead-letter topics and
    /// their partition counts, the Schema Registry, and whether the store's
    /// folder is writable. The first problem exits 2, naming its key.
    #[arg(long)]
    connect: bool,
}

const EXIT_CODES: &str = "Exit codes: 0 ok; 2 bad config, credentials, model file or usage (the message names the key or flag), or a history too short to train on; 3 data a dependency refuses for good (a record the broker refuses, corrupt stored state); 1 anything else (a dependency still failing included); 124 a stop that outlasted service.stop_timeout_seconds; 130 a second stop signal.";

/// Logs to stderr and, with `log.otlp_endpoint`, spans by OTLP; the
/// tracer provider returned is shut down at exit so its last spans go out.
fn init_logging(
    log: &churn_alert::config::LogConfig,
) -> anyhow::Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>> {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,librdkafka=warn"));
    // Colour only for a person at a terminal who has not set NO_COLOR,
    // never in redirected logs.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let fmt = match log.format {
        churn_alert::config::LogFormat::Json => fmt.json().boxed(),
        churn_alert::config::LogFormat::Text => fmt.boxed(),
    };
    let provider = match &log.otlp_endpoint {
        Some(url) => Some(churn_alert::telemetry::trace::otlp_provider(url)?),
        None => None,
    };
    let spans = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("churn-alert")));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(spans)
        .init();
    if let Some(url) = &log.otlp_endpoint {
        tracing::info!(endpoint = %url, "spans are exported by OTLP");
    }
    Ok(provider)
}

/// First SIGINT/SIGTERM cancels the token (graceful stop), which may take
/// at most `stop_timeout`; a second signal, or the end of that time, exits
/// at once (work not committed is replayed by the next start).
fn shutdown_on_signals(stop_timeout: std::time::Duration) -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    // Both listeners are made here, before this returns, and live for the
    // whole run: a signal that comes before the task first runs, or while
    // the first is handled, is kept, not missed.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("signal handler");
    let mut int = signal(SignalKind::interrupt()).expect("signal handler");
    tokio::spawn(async move {
        for i in 0.. {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            if i == 0 {
                tracing::info!(
                    "stop requested: finishing the batch in hand (signal again to exit at once)"
                );
                t.cancel();
                tokio::spawn(async move {
                    tokio::time::sleep(stop_timeout).await;
                    tracing::error!(
                        seconds = stop_timeout.as_secs(),
                        "stop did not finish within service.stop_timeout_seconds: exiting now; uncommitted work is replayed at next start"
                    );
                    std::process::exit(124);
                });
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
    let cli = Cli::parse();
    // A healthcheck says healthy (0) or not (1), whatever the reason: 2 is
    // reserved by Docker.
    let healthcheck = matches!(cli.command, Some(Command::Healthcheck(_)));
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", message(&e));
            std::process::ExitCode::from(if healthcheck { 1 } else { exit_code(&e) })
        }
    }
}

/// The error and its causes, each said once: a cause whose text the
/// message already holds (an I/O error shown by its context) is not
/// repeated.
fn message(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}

/// The exit code for an error (see [`EXIT_CODES`]), from the class of the
/// first error in the chain that knows it.
fn exit_code(e: &anyhow::Error) -> u8 {
    use churn_alert::pipeline::error::{Classify, ErrorClass};
    let class = e.chain().find_map(|c| {
        if c.is::<churn_alert::offline::commands::Usage>()
            || c.is::<churn_alert::config::ConfigError>()
            || c.is::<churn_alert::pipeline::model::ModelError>()
            || c.is::<churn_alert::kafka::client::ClientSettingsError>()
            || c.is::<churn_alert::offline::connect::Unusable>()
        {
            return Some(ErrorClass::Config);
        }
        // A history that cannot train a model (too short, one outcome) is
        // the input the user gave, as a flag is.
        if let Some(t) = c.downcast_ref::<churn_alert::offline::train::TrainError>() {
            use churn_alert::offline::train::TrainError;
            return Some(match t {
                TrainError::NoData(_) | TrainError::OneClass(_) => ErrorClass::Config,
                TrainError::Fit(_) => ErrorClass::Transient,
            });
        }
        if let Some(s) = c.downcast_ref::<churn_alert::service::StartError>() {
            return Some(s.class());
        }
        if let Some(s) = c.downcast_ref::<churn_alert::store::StoreError>() {
            return Some(s.class());
        }
        c.downcast_ref::<churn_alert::kafka::KafkaError>()
            .map(Classify::class)
    });
    match class {
        Some(ErrorClass::Config) => 2,
        Some(ErrorClass::Rejected | ErrorClass::Corrupt) => 3,
        Some(ErrorClass::Transient) | None => 1,
    }
}

/// A closed pipe ends a command that prints, as it ends Unix tools
/// (`churn-alert demo | head -3`), instead of a panic in `println!`. Rust
/// ignores SIGPIPE by default; sockets are written with MSG_NOSIGNAL, so
/// only writes to a closed stdout or stderr pipe are affected. Not for
/// `run`, which prints nothing itself.
fn quiet_on_closed_pipe() {
    // SAFETY: setting a signal's disposition to its default is
    // process-wide and has no memory effects.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    let provider = init_logging(&config.log)?;
    let done = command(cli, config).await;
    if let Some(p) = provider {
        // Off the runtime's threads, and bounded: a collector that is down
        // must not hold up the exit.
        let flushed = tokio::task::spawn_blocking(move || {
            p.shutdown_with_timeout(std::time::Duration::from_secs(5))
        })
        .await;
        if let Ok(Err(e)) = flushed {
            tracing::warn!(error = %e, "the last spans could not be exported");
        }
    }
    done
}

async fn command(cli: Cli, config: Config) -> anyhow::Result<()> {
    // `arg_required_else_help` prints the help for a bare `churn-alert`.
    let command = cli.command.expect("clap requires a subcommand");
    if !matches!(command, Command::Run) {
        quiet_on_closed_pipe();
    }
    match command {
        Command::Run => {
            let stop_timeout = std::time::Duration::from_secs(config.service.stop_timeout_seconds);
            // Refused client settings stop the start before the store is
            // opened or the admin port taken.
            churn_alert::kafka::client::check(&config.kafka)?;
            let service = churn_alert::service::Service::new(config)?;
            let shutdown = shutdown_on_signals(stop_timeout);
            service.serve_admin(shutdown.clone()).await?;
            service.run(shutdown).await?;
        }
        Command::Config => print!("{}", config.masked_toml()),
        Command::Produce(opts) => churn_alert::offline::produce::run(opts, &config).await?,
        Command::CheckConfig(opts) => {
            churn_alert::offline::commands::check_config(&config)?;
            if opts.connect {
                churn_alert::offline::connect::check(&config).await?;
            }
        }
        Command::Healthcheck(opts) => churn_alert::offline::healthcheck::run(opts, &config)?,
        Command::Experiments(opts) => churn_alert::offline::experiments::run(opts, &config)?,
        Command::Demo(opts) => {
            let stop_timeout = std::time::Duration::from_secs(config.service.stop_timeout_seconds);
            churn_alert::offline::demo::run(opts, shutdown_on_signals(stop_timeout)).await?;
        }
        Command::Simulate(opts) => churn_alert::offline::simulate_command::run_command(opts)?,
        Command::Train(opts) => churn_alert::offline::commands::train(opts, &config)?,
        Command::Score(opts) => churn_alert::offline::commands::score(opts, &config)?,
        Command::Backtest(opts) => churn_alert::offline::backtest::run(opts, &config)?,
    }
    Ok(())
}
