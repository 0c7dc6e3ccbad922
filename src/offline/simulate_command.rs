//! `churn-alert simulate`: the behaviour simulator ([`crate::offline::simulate`],
//! with its ground truth and oracles) or, with another `--kind`, a
//! purchase-only or subscription history ([`crate::offline::histories`]),
//! written to a folder.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context;

use crate::offline::simulate::{SimConfig, Simulator};
use crate::pipeline::event::{Millis, DAY_MS};

/// Flags of `churn-alert simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateOptions {
    #[arg(long, default_value_t = 10_000)]
    pub customers: usize,
    #[arg(long, default_value_t = 180)]
    pub days: u32,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Last simulated day (exclusive), YYYY-MM-DD; default today (UTC).
    #[arg(long, value_parser = crate::offline::flags::parse_time)]
    pub end: Option<Millis>,
    /// What to generate: `behaviour` (sessions, purchases, emails,
    /// tickets, subscriptions; weekly engagement, much churn), `bgnbd`
    /// or `paretonbd` (purchase-only retail from a BG/NBD or Pareto/NBD
    /// process), `saas` (subscriptions with a low monthly cancel rate).
    #[arg(long, value_enum, default_value_t = crate::offline::histories::Kind::Behaviour)]
    pub kind: crate::offline::histories::Kind,
    /// Retail preset by mean days between purchases (7, 30, 90, 180);
    /// default monthly. For --kind bgnbd and paretonbd.
    #[arg(long, value_enum)]
    pub cadence: Option<crate::offline::histories::Cadence>,
    /// Explicit BG/NBD parameters instead of a preset: r,alpha,a,b
    /// (purchase rate per day ~ Gamma(r, rate alpha), dropout after
    /// each repeat purchase with p ~ Beta(a, b)).
    #[arg(long, value_name = "R,ALPHA,A,B")]
    pub bgnbd: Option<String>,
    /// Explicit Pareto/NBD parameters instead of a preset: r,alpha,s,beta
    /// (lifetime ~ Exponential(mu) days, mu ~ Gamma(s, rate beta)).
    #[arg(long, value_name = "R,ALPHA,S,BETA")]
    pub paretonbd: Option<String>,
    /// Share of subscribers who cancel in a month, for --kind saas
    /// (default 0.03).
    #[arg(long)]
    pub monthly_cancel: Option<f64>,
    /// Share of events repeated with the same event id.
    #[arg(long, default_value_t = 0.0)]
    pub duplicates: f64,
    /// Share of events delivered a day late.
    #[arg(long, default_value_t = 0.0)]
    pub late: f64,
    /// Also write the oracle (each customer's true churn risk from the
    /// hidden state) at the start of this date, YYYY-MM-DD, to
    /// oracle-DATE.csv. Repeatable.
    #[arg(long, value_parser = crate::offline::flags::parse_time)]
    pub oracle_at: Vec<Millis>,
    /// Horizon of the oracle's probabilities (default 30d, as `train`'s).
    #[arg(long, value_parser = crate::offline::flags::parse_days)]
    pub oracle_horizon: Option<Millis>,
    /// Also write every living customer's true probability of churning
    /// within the oracle horizon at the start of every day, to
    /// oracle-daily.csv (for `backtest --oracle`).
    #[arg(long)]
    pub oracle_daily: bool,
    /// A campaign variant's true effect: of the customers a contact by
    /// VARIANT reaches, the share won back if slipping away and the share
    /// pushed away (`*` for any other variant). Repeatable. Writes every
    /// customer's response to every variant to campaign-truth.csv (the
    /// loop closes where a service's triggers reach the simulated
    /// customers: `demo`, scripts/experiment_seeds.sh).
    #[arg(long = "effect", value_name = "VARIANT=SAVES[:PUSHES_AWAY]")]
    pub effects: Vec<crate::offline::simulate::VariantEffect>,
    /// Directory for events.jsonl, truth.csv and oracle files.
    #[arg(long)]
    pub out: PathBuf,
}

/// `churn-alert simulate`: the behaviour simulator (with its ground truth
/// and oracles), or, with another `--kind`, a purchase-only or
/// subscription history ([`crate::offline::histories`]).
pub fn run_command(opts: SimulateOptions) -> anyhow::Result<()> {
    let SimulateOptions {
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
        effects,
        out,
    } = opts;
    use crate::offline::histories;
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
        if !oracle_at.is_empty() || oracle_horizon.is_some() || oracle_daily || !effects.is_empty()
        {
            return Err(crate::offline::flags::Usage(format!(
                "--oracle-at, --oracle-horizon, --oracle-daily and --effect are for --kind behaviour, not --kind {}",
                kind.as_str()
            ))
            .into());
        }
        let end = end.unwrap_or(SimConfig::new(customers, days, seed).end);
        let window = histories::Window {
            customers,
            days,
            seed,
            end,
        };
        histories::run(window, &shape, &out)?;
        return Ok(());
    }
    let mut cfg = SimConfig::new(customers, days, seed);
    if let Some(e) = end {
        cfg.end = e;
    }
    cfg.duplicate_rate = duplicates;
    cfg.late_rate = late;
    cfg.effects = effects;
    cfg.oracle_horizon_days = oracle_horizon.unwrap_or(30 * DAY_MS) / DAY_MS;
    for at in oracle_at {
        if at < cfg.start() || at >= cfg.end {
            return Err(crate::offline::flags::Usage(format!(
                "--oracle-at {} is outside the simulated days {} .. {}",
                &crate::pipeline::event::rfc3339(at)[..10],
                &crate::pipeline::event::rfc3339(cfg.start())[..10],
                &crate::pipeline::event::rfc3339(cfg.end)[..10]
            ))
            .into());
        }
        cfg.oracle_at.push(at);
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut sim = Simulator::new(cfg);
    let path = out.join("events.jsonl");
    let mut w = std::io::BufWriter::new(
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
    );
    let (mut n, mut day) = (0u64, 0u32);
    let mut progress = crate::offline::progress::Progress::new(
        "simulating",
        crate::offline::progress::Unit::Days,
        Some(u64::from(days)),
    );
    let mut daily = match oracle_daily {
        true => {
            let p = out.join("oracle-daily.csv");
            let mut w =
                csv::Writer::from_path(&p).with_context(|| format!("creating {}", p.display()))?;
            w.write_record(sim.daily_oracle_header())?;
            Some(w)
        }
        false => None,
    };
    while !sim.done() {
        if let Some(w) = daily
            .as_mut()
            .filter(|_| u32::try_from(sim.current_day()).is_ok_and(|d| d < days))
        {
            for row in sim.daily_oracle_rows(sim.current_day()) {
                w.write_record(row)?;
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
    if !sim.cfg.effects.is_empty() {
        std::fs::write(out.join("campaign-truth.csv"), sim.campaign_truth_csv())?;
        eprintln!("wrote every customer's response to every variant to campaign-truth.csv");
    }
    for (at, rows) in &sim.oracles {
        let name = format!("oracle-{}.csv", &crate::pipeline::event::rfc3339(*at)[..10]);
        std::fs::write(out.join(&name), sim.oracle_csv(*at, rows))?;
        eprintln!(
            "wrote the oracle at {} to {name}",
            &crate::pipeline::event::rfc3339(*at)[..10]
        );
    }
    eprintln!(
        "wrote {n} events to {} and ground truth to {}",
        path.display(),
        out.join("truth.csv").display()
    );
    Ok(())
}
