//! The `churn-alert` binary: parses flags, starts logging, dispatches.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use churn_alert::config::Config;
use churn_alert::pipeline::event::DAY_MS;

#[derive(Parser)]
#[command(
    name = "churn-alert",
    version,
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
        /// What to generate: `behaviour` (sessions, purchases, emails,
        /// tickets, subscriptions; weekly engagement, much churn), `bgnbd`
        /// or `paretonbd` (purchase-only retail from a BG/NBD or Pareto/NBD
        /// process), `saas` (subscriptions with a low monthly cancel rate).
        #[arg(long, value_enum, default_value_t = churn_alert::offline::histories::Kind::Behaviour)]
        kind: churn_alert::offline::histories::Kind,
        /// Retail preset by mean days between purchases (7, 30, 90, 180);
        /// default monthly. For --kind bgnbd and paretonbd.
        #[arg(long, value_enum)]
        cadence: Option<churn_alert::offline::histories::Cadence>,
        /// Explicit BG/NBD parameters instead of a preset: r,alpha,a,b
        /// (purchase rate per day ~ Gamma(r, rate alpha), dropout after
        /// each repeat purchase with p ~ Beta(a, b)).
        #[arg(long, value_name = "R,ALPHA,A,B")]
        bgnbd: Option<String>,
        /// Explicit Pareto/NBD parameters instead of a preset: r,alpha,s,beta
        /// (lifetime ~ Exponential(mu) days, mu ~ Gamma(s, rate beta)).
        #[arg(long, value_name = "R,ALPHA,S,BETA")]
        paretonbd: Option<String>,
        /// Share of subscribers who cancel in a month, for --kind saas
        /// (default 0.03).
        #[arg(long)]
        monthly_cancel: Option<f64>,
        /// Share of events repeated with the same event id.
        #[arg(long, default_value_t = 0.0)]
        duplicates: f64,
        /// Share of events delivered a day late.
        #[arg(long, default_value_t = 0.0)]
        late: f64,
        /// Also write the oracle (each customer's true churn risk from the
        /// hidden state) at the start of this date, YYYY-MM-DD, to
        /// oracle-DATE.csv. Repeatable.
        #[arg(long)]
        oracle_at: Vec<String>,
        /// Horizon of the oracle's probabilities (default 30d, as `train`'s).
        #[arg(long)]
        oracle_horizon: Option<String>,
        /// Also write every living customer's true probability of churning
        /// within the oracle horizon at the start of every day, to
        /// oracle-daily.csv (for `backtest --oracle`).
        #[arg(long)]
        oracle_daily: bool,
        /// Directory for events.jsonl, truth.csv and oracle files.
        #[arg(long)]
        out: PathBuf,
    },
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
    /// Check the config (and the model it names, and the Kafka client
    /// settings, by creating each client) and exit.
    CheckConfig,
    /// Print the effective config (defaults, then the file, then the
    /// environment) as TOML, with secrets masked.
    Config,
}

const EXIT_CODES: &str = "Exit codes: 0 ok; 2 bad config, credentials, model file or usage (the message names the key or flag); 3 data a dependency refuses for good (a record the broker refuses, corrupt stored state); 1 anything else (a dependency still failing included); 124 a stop that outlasted service.stop_timeout_seconds; 130 a second stop signal.";

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
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", message(&e));
            std::process::ExitCode::from(exit_code(&e))
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
        {
            return Some(ErrorClass::Config);
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
        Command::CheckConfig => {
            let spec = config.feature_spec();
            let model = churn_alert::pipeline::model::Model::load(&config.model.path, &spec)?;
            churn_alert::kafka::client::check(&config.kafka)?;
            let policy = config.policy_for(Some(model.file()));
            println!(
                "config ok; model {} ({} features) matches the feature code; alerts at {:.3}, re-armed below {:.3} ({})",
                model.version(),
                model.file().features.len(),
                policy.enter,
                policy.exit,
                if config.policy.enter_threshold.is_some() || config.policy.exit_threshold.is_some() {
                    "from the config"
                } else if model.file().thresholds.is_some() {
                    "from the model"
                } else {
                    "defaults"
                }
            );
            let c = &policy.contact;
            println!(
                "policy: {} campaign rules cover every case; holdout {:.0}% ({:?}); triggers at most {} per {} days, {} days apart, quiet hours {:?} ({} by default); outcomes after {} days; mutating admin endpoints {}",
                policy.campaigns.len(),
                policy.holdout.share * 100.0,
                policy.holdout.experiment,
                c.max_triggers,
                c.period_days,
                c.cooldown_days,
                c.quiet_hours,
                c.default_timezone,
                config.policy.outcome_window_days,
                if config.admin.token.is_some() { "enabled (token set)" } else { "disabled (no admin.token)" }
            );
        }
        Command::Demo(opts) => {
            let stop_timeout = std::time::Duration::from_secs(config.service.stop_timeout_seconds);
            churn_alert::offline::demo::run(opts, shutdown_on_signals(stop_timeout)).await?;
        }
        Command::Simulate {
            customers,
            days,
            seed,
            end,
            kind,
            cadence,
            bgnbd,
            paretonbd,
            monthly_cancel,
            duplicates,
            late,
            oracle_at,
            oracle_horizon,
            oracle_daily,
            out,
        } => {
            use churn_alert::offline::histories;
            let shape = histories::Options {
                kind,
                cadence,
                bgnbd,
                paretonbd,
                monthly_cancel,
                duplicates,
                late,
            };
            shape.check()?;
            if kind != histories::Kind::Behaviour {
                if !oracle_at.is_empty() || oracle_horizon.is_some() || oracle_daily {
                    return Err(churn_alert::offline::commands::Usage(format!(
                        "--oracle-at, --oracle-horizon and --oracle-daily are for --kind behaviour, not --kind {}",
                        kind.as_str()
                    ))
                    .into());
                }
                let end = match end {
                    Some(e) => churn_alert::offline::commands::parse_time(&e)?,
                    None => {
                        churn_alert::offline::simulate::SimConfig::new(customers, days, seed).end
                    }
                };
                let window = histories::Window {
                    customers,
                    days,
                    seed,
                    end,
                };
                histories::run(window, &shape, &out)?;
                return Ok(());
            }
            let mut cfg = churn_alert::offline::simulate::SimConfig::new(customers, days, seed);
            if let Some(e) = end {
                cfg.end = churn_alert::offline::commands::parse_time(&e)?;
            }
            cfg.duplicate_rate = duplicates;
            cfg.late_rate = late;
            cfg.oracle_horizon_days = churn_alert::offline::commands::parse_days(
                oracle_horizon.as_deref().unwrap_or("30d"),
            )? / DAY_MS;
            for d in &oracle_at {
                let at = churn_alert::offline::commands::parse_time(d)?;
                if at < cfg.start() || at >= cfg.end {
                    return Err(churn_alert::offline::commands::Usage(format!(
                        "--oracle-at {d} is outside the simulated days {} .. {}",
                        &churn_alert::pipeline::event::rfc3339(cfg.start())[..10],
                        &churn_alert::pipeline::event::rfc3339(cfg.end)[..10]
                    ))
                    .into());
                }
                cfg.oracle_at.push(at);
            }
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let mut sim = churn_alert::offline::simulate::Simulator::new(cfg);
            let path = out.join("events.jsonl");
            let mut w = std::io::BufWriter::new(
                std::fs::File::create(&path)
                    .with_context(|| format!("creating {}", path.display()))?,
            );
            let (mut n, mut day) = (0u64, 0u32);
            let mut progress = churn_alert::offline::progress::Progress::new(
                "simulating",
                churn_alert::offline::progress::Unit::Days,
                Some(u64::from(days)),
            );
            let mut daily = match oracle_daily {
                true => {
                    let p = out.join("oracle-daily.csv");
                    let mut w = std::io::BufWriter::new(
                        std::fs::File::create(&p)
                            .with_context(|| format!("creating {}", p.display()))?,
                    );
                    writeln!(
                        w,
                        "customer_id,date,p_churn_{}d",
                        sim.cfg.oracle_horizon_days
                    )?;
                    Some(w)
                }
                false => None,
            };
            while !sim.done() {
                if let Some(w) = daily
                    .as_mut()
                    .filter(|_| u32::try_from(sim.current_day()).is_ok_and(|d| d < days))
                {
                    let d = sim.current_day();
                    let date = churn_alert::pipeline::event::rfc3339(sim.day_start(d));
                    for r in sim.oracle_rows(d).iter().filter(|r| !r.churned) {
                        writeln!(w, "{},{},{:.5}", r.customer_id, &date[..10], r.p_churn)?;
                    }
                }
                for e in sim.next_day() {
                    w.write_all(e.json.as_bytes())?;
                    w.write_all(b"\n")?;
                    n += 1;
                }
                day += 1;
                progress.set(u64::from(day), || format!("{n} events"));
            }
            progress.finish();
            w.flush()?;
            if let Some(mut d) = daily {
                d.flush()?;
                eprintln!("wrote the daily oracle to oracle-daily.csv");
            }
            std::fs::write(out.join("truth.csv"), sim.truth_csv())?;
            for (at, rows) in &sim.oracles {
                let name = format!(
                    "oracle-{}.csv",
                    &churn_alert::pipeline::event::rfc3339(*at)[..10]
                );
                std::fs::write(out.join(&name), sim.oracle_csv(*at, rows))?;
                eprintln!(
                    "wrote the oracle at {} to {name}",
                    &churn_alert::pipeline::event::rfc3339(*at)[..10]
                );
            }
            eprintln!(
                "wrote {n} events to {} and ground truth to {}",
                path.display(),
                out.join("truth.csv").display()
            );
        }
        Command::Train(opts) => churn_alert::offline::commands::train(opts, &config)?,
        Command::Score(opts) => churn_alert::offline::commands::score(opts, &config)?,
        Command::Backtest(opts) => churn_alert::offline::backtest::run(opts, &config)?,
    }
    Ok(())
}
