//! The offline commands' flag values: dates, spans of days, `auto`, and
//! the [`Usage`] error a value the command cannot use gives (exit code 2).
//! The parsers are clap's value parsers, so a bad value is refused naming
//! its flag before any work.

use std::path::PathBuf;

use crate::config::Config;
use crate::pipeline::event::{Millis, DAY_MS};
use crate::pipeline::model::Model;

/// `--model`, shared by the commands that score with a model file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ModelArg {
    /// Model file (default: `model.path` of the config).
    #[arg(long = "model", value_name = "MODEL")]
    pub path: Option<PathBuf>,
}

impl ModelArg {
    /// The model file named, or the config's, loaded and checked against
    /// the config's feature spec.
    pub fn load(&self, config: &Config) -> Result<Model, crate::pipeline::model::ModelError> {
        let path = self.path.as_ref().unwrap_or(&config.model.path);
        Model::load(path, &config.feature_spec())
    }
}

/// Reads `YYYY-MM-DD` (midnight UTC) or an RFC 3339 timestamp (also the
/// value parser of the offline commands' date flags).
pub fn parse_time(s: &str) -> Result<Millis, Usage> {
    if let Ok(d) = time::Date::parse(
        s,
        &time::macros::format_description!("[year]-[month]-[day]"),
    ) {
        return Ok(d.midnight().assume_utc().unix_timestamp() * 1000);
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            Usage(format!(
                "{s:?} is not a date like 2026-06-30 or a time like 2026-06-30T12:00:00Z"
            ))
        })?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as Millis)
}

/// Reads a span like `90d` (days; the `d` is optional; also the value
/// parser of the offline commands' span flags).
pub fn parse_days(s: &str) -> Result<Millis, Usage> {
    let n: f64 = s
        .strip_suffix('d')
        .unwrap_or(s)
        .parse()
        .map_err(|_| Usage(format!("{s:?} is not a number of days like 90d")))?;
    if n <= 0.0 || !n.is_finite() {
        return Err(Usage(format!(
            "{s:?}: the span must be a positive number of days"
        )));
    }
    Ok((n * DAY_MS as f64) as Millis)
}

/// A span that may also be 0 (`0` or `0d`: off).
pub fn parse_days_or_zero(s: &str) -> Result<Millis, Usage> {
    match s {
        "0" | "0d" => Ok(0),
        s => parse_days(s),
    }
}

/// A span left to the data (`auto`) or given in days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoDays {
    Auto,
    Days(Millis),
}

/// Reads `auto` or a span like `30d`.
pub fn parse_auto_days(s: &str) -> Result<AutoDays, Usage> {
    match s {
        "auto" => Ok(AutoDays::Auto),
        s => parse_days(s).map(AutoDays::Days),
    }
}

/// A flag's value the command cannot use (exit code 2, as a flag clap
/// itself refuses).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);
