//! The offline commands' flag values: dates, spans of days, `auto`, and
//! the [`Usage`] error a value the command cannot use gives (exit code 2).
//! The parsers are clap's value parsers, so a bad value is refused naming
//! its flag before any work.

use std::path::PathBuf;

use crate::config::Config;
use crate::pipeline::event::{parse_rfc3339, Millis, DAY_MS};
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
    if let Some(ms) = parse_date(s) {
        return Ok(ms);
    }
    parse_rfc3339(s).map_err(|_| {
        Usage(format!(
            "{s:?} is not a date like 2026-06-30 or a time like 2026-06-30T12:00:00Z"
        ))
    })
}

/// Midnight UTC of a date `YYYY-MM-DD`, the year optionally signed
/// (`-0001-01-01`), as the date flags have always read it; `None` if the
/// text is not such a date or the date does not exist.
fn parse_date(s: &str) -> Option<Millis> {
    let (sign, rest) = match s.as_bytes() {
        [b'-', rest @ ..] => (-1, rest),
        [b'+', rest @ ..] => (1, rest),
        rest => (1, rest),
    };
    let &[y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1] = rest else {
        return None;
    };
    let mut n = [0u32; 8];
    for (slot, c) in n.iter_mut().zip([y0, y1, y2, y3, m0, m1, d0, d1]) {
        *slot = u32::from(c.checked_sub(b'0').filter(|d| *d <= 9)?);
    }
    let year = sign * (n[0] * 1000 + n[1] * 100 + n[2] * 10 + n[3]) as i32;
    let date = chrono::NaiveDate::from_ymd_opt(year, n[4] * 10 + n[5], n[6] * 10 + n[7])?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp() * 1000)
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
