//! The one table of the model's features: each entry's name (or the
//! pattern its names follow), the behaviour it describes (which reasons
//! are grouped by), and what it means. The spec's names, each feature's
//! behaviour, the sign `train` holds a weight to and the feature table in
//! `docs/model.md` are all derived from it; [`FEATURES`] is in the order of
//! [`crate::pipeline::features::FeatureSpec::extract`]'s output.

/// Windows (days) of the `active_share_*` features: the share of days with
/// engagement.
pub const ACTIVE_WINDOWS: [i64; 3] = [7, 28, 112];

/// The behaviour that sums every engagement signal (sessions, purchases,
/// activity).
pub const ENGAGEMENT: &str = "engagement";

/// A behaviour that reasons name, and the direction in which its
/// features may move the churn risk where the meaning is not in doubt.
#[derive(Debug, Clone, Copy)]
pub struct Behaviour {
    pub name: &'static str,
    /// `+1`: never lowers the risk; `-1`: never raises it; `None`: either.
    pub sign: Option<f64>,
    pub doc: &'static str,
}

/// Every behaviour but the configured activities' (`activity_{name}`,
/// engagement: sign -1).
pub const BEHAVIOURS: &[Behaviour] = &[
    b(
        "silence",
        Some(1.0),
        "time without engagement, against the customer's own habits",
    ),
    b(
        "purchase_rhythm",
        Some(1.0),
        "BG/NBD's odds that no purchase comes within the horizon",
    ),
    b(
        "active_days",
        Some(-1.0),
        "the share of days with engagement, and its change",
    ),
    b("sessions", Some(-1.0), "sessions"),
    b("purchases", Some(-1.0), "purchases"),
    b("email_opens", Some(-1.0), "emails opened"),
    b("email_clicks", Some(-1.0), "emails clicked"),
    b("support_tickets", Some(1.0), "support tickets"),
    b("complaints", Some(1.0), "complaints"),
    b("payment_failures", Some(1.0), "failed payments"),
    b(
        "activity_other",
        Some(-1.0),
        "activity events of names not configured",
    ),
    b(
        ENGAGEMENT,
        Some(-1.0),
        "all engagement together (sessions, purchases, activity)",
    ),
    b("purchase_recency", None, "time since the last purchase"),
    b("tenure", None, "time since the first event"),
    b("spend", None, "purchase count and value"),
    b("refunds", None, "the share of spend refunded"),
    b("subscription", None, "the subscription's status and value"),
    b("nps", None, "net promoter score answers"),
    b("marketing", None, "marketing consent"),
];

const fn b(name: &'static str, sign: Option<f64>, doc: &'static str) -> Behaviour {
    Behaviour { name, sign, doc }
}

/// The sign of a behaviour (see [`Behaviour::sign`]); configured
/// activities are engagement.
pub fn sign_of(behaviour: &str) -> Option<f64> {
    match BEHAVIOURS.iter().find(|b| b.name == behaviour) {
        Some(b) => b.sign,
        None if behaviour.starts_with("activity_") => Some(-1.0),
        None => None,
    }
}

/// How an entry of [`FEATURES`] names its features.
#[derive(Debug, Clone, Copy)]
pub enum Names {
    /// One feature of this name.
    One(&'static str),
    /// Per signal, `{signal}_rate_{h}d` at each half-life, then
    /// `{signal}_trend` when there is more than one.
    RawRates,
    /// `active_share_{w}d` per window of [`ACTIVE_WINDOWS`].
    ActiveShares,
    /// Per signal and engagement, `{signal}_rate_{long}d_log` at the
    /// longest half-life, then `{signal}_change_{h}d` at each other.
    Levels,
    /// `engagement_{what}_{h}d` at each half-life but the longest.
    Engagement(&'static str),
}

/// The behaviour of an entry's features.
#[derive(Debug, Clone, Copy)]
pub enum Of {
    /// This behaviour.
    Behaviour(&'static str),
    /// Each feature's signal (`sessions`, `activity_login`, `engagement`).
    Signal,
}

/// One feature, or one family of features named by a pattern.
#[derive(Debug, Clone, Copy)]
pub struct FeatureDef {
    pub names: Names,
    pub of: Of,
    pub doc: &'static str,
}

const fn one(name: &'static str, behaviour: &'static str, doc: &'static str) -> FeatureDef {
    FeatureDef {
        names: Names::One(name),
        of: Of::Behaviour(behaviour),
        doc,
    }
}

/// The features, in the order of the spec's names.
pub const FEATURES: &[FeatureDef] = &[
    one("recency_days", "silence", "days since the last engagement (or the first event)"),
    one("purchase_recency_days", "purchase_recency", "days since the last purchase (tenure without one)"),
    one("tenure_days", "tenure", "days since the first event"),
    one("purchase_count_log", "spend", "purchases, log(1 + n)"),
    one("monetary_log", "spend", "net spend (gross less refunds), log(1 + x)"),
    one("avg_order_value_log", "spend", "gross spend per purchase, log(1 + x)"),
    one("refund_share", "refunds", "refunded share of gross spend"),
    FeatureDef {
        names: Names::RawRates,
        of: Of::Signal,
        doc: "decayed rate per day at each half-life, and the short rate's trend against the long one (raw; for model files that name them)",
    },
    one("subscription_active", "subscription", "1 while the newest subscription event is not a cancel"),
    one("subscription_cancelled", "subscription", "1 after a cancel"),
    one("subscription_monthly_value", "subscription", "the plan's value"),
    one("nps_known", "nps", "1 once an NPS answer came"),
    one("nps_detractor", "nps", "1 when the newest answer is 6 or less"),
    one("nps_promoter", "nps", "1 when the newest answer is 9-10"),
    one("marketing_consent", "marketing", "1 while marketing consent is given"),
    one("unsubscribed", "marketing", "1 after an unsubscribe"),
    one("recency_days_log", "silence", "days since the last engagement, log(1 + d)"),
    one("purchase_recency_days_log", "purchase_recency", "days since the last purchase, log(1 + d)"),
    one("tenure_days_log", "tenure", "tenure, log(1 + d)"),
    FeatureDef {
        names: Names::ActiveShares,
        of: Of::Behaviour("active_days"),
        doc: "share of days with engagement in the last w days (a 128-day bitmap in the state)",
    },
    one("active_share_change", "active_days", "the 28-day share against the 112-day share (log ratio)"),
    one("active_share_ratio", "active_days", "the 28-day share over the 112-day share (capped at 4)"),
    one("active_share_recent_ratio", "active_days", "the 7-day share over the 28-day share (capped at 4)"),
    one("active_share_vs_life", "active_days", "the 28-day share against the lifetime share (log ratio)"),
    one("silence_surprise", "silence", "active days the silence has cost at the lifetime share, log(1 + x)"),
    one("recency_vs_gap_log", "silence", "the silence over the usual gap between active days, log(1 + x)"),
    one("plan_value_change", "subscription", "the plan's value against the first plan's (log ratio: a price rise)"),
    FeatureDef {
        names: Names::Levels,
        of: Of::Signal,
        doc: "the long-run decayed rate on a log scale, and the change of each shorter rate against it (log ratio)",
    },
    FeatureDef {
        names: Names::Engagement("ratio"),
        of: Of::Behaviour(ENGAGEMENT),
        doc: "all engagement's shorter rate over its long rate (capped at 4)",
    },
    FeatureDef {
        names: Names::Engagement("deviation"),
        of: Of::Behaviour(ENGAGEMENT),
        doc: "all engagement's events in the shorter window against those its long rate expects, in standard deviations",
    },
    FeatureDef {
        names: Names::Engagement("vs_life"),
        of: Of::Behaviour(ENGAGEMENT),
        doc: "all engagement's shorter rate against the customer's lifetime rate (log ratio)",
    },
    one("active_days_deviation_14d", "active_days", "active days in the last 14 against those the 112-day share expects, in standard deviations"),
];

/// Each feature's name and behaviour, in order, for the given signals
/// (stored ones and configured activities, without engagement) and
/// half-lives (days, shortest first; `fmt` writes one).
pub fn expand(
    signals: &[String],
    half_lives: &[f64],
    fmt: impl Fn(f64) -> String,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let shorter = &half_lives[..half_lives.len().saturating_sub(1)];
    for def in FEATURES {
        let group = |signal: &str| match def.of {
            Of::Behaviour(b) => b.to_string(),
            Of::Signal => signal.to_string(),
        };
        match def.names {
            Names::One(n) => out.push((n.to_string(), group(n))),
            Names::RawRates => {
                for s in signals {
                    for h in half_lives {
                        out.push((format!("{s}_rate_{}d", fmt(*h)), group(s)));
                    }
                    if half_lives.len() > 1 {
                        out.push((format!("{s}_trend"), group(s)));
                    }
                }
            }
            Names::ActiveShares => {
                for w in ACTIVE_WINDOWS {
                    out.push((format!("active_share_{w}d"), group("")));
                }
            }
            Names::Levels => {
                let engagement = ENGAGEMENT.to_string();
                for s in signals.iter().chain([&engagement]) {
                    if let Some(long) = half_lives.last() {
                        out.push((format!("{s}_rate_{}d_log", fmt(*long)), group(s)));
                    }
                    for h in shorter {
                        out.push((format!("{s}_change_{}d", fmt(*h)), group(s)));
                    }
                }
            }
            Names::Engagement(what) => {
                for h in shorter {
                    out.push((format!("{ENGAGEMENT}_{what}_{}d", fmt(*h)), group("")));
                }
            }
        }
    }
    out
}

/// How a sign reads in the docs.
fn risk(sign: Option<f64>) -> &'static str {
    match sign {
        Some(s) if s > 0.0 => "never lowers it",
        Some(_) => "never raises it",
        None => "either way",
    }
}

/// The feature table of `docs/model.md`: each entry's name (a pattern for
/// families), behaviour and meaning, then the behaviours with their signs.
pub fn markdown() -> String {
    let mut md = String::from("| feature | behaviour | what it is |\n|---|---|---|\n");
    for def in FEATURES {
        let name = match def.names {
            Names::One(n) => format!("`{n}`"),
            Names::RawRates => "`{signal}_rate_{h}d` (each half-life), `{signal}_trend`".into(),
            Names::ActiveShares => {
                let w: Vec<String> = ACTIVE_WINDOWS.iter().map(|w| w.to_string()).collect();
                format!("`active_share_{{{}}}d`", w.join(","))
            }
            Names::Levels => {
                "`{signal}_rate_{longest h}d_log`, `{signal}_change_{shorter h}d`; also for `engagement`"
                    .into()
            }
            Names::Engagement(what) => format!("`{ENGAGEMENT}_{what}_{{shorter h}}d`"),
        };
        let of = match def.of {
            Of::Behaviour(b) => format!("`{b}`"),
            Of::Signal => "its signal".into(),
        };
        md.push_str(&format!("| {name} | {of} | {} |\n", def.doc));
    }
    md.push_str("\n| behaviour | risk | what it is |\n|---|---|---|\n");
    for b in BEHAVIOURS {
        md.push_str(&format!(
            "| `{}` | {} | {} |\n",
            b.name,
            risk(b.sign),
            b.doc
        ));
    }
    md.push_str(&format!(
        "| `activity_{{name}}` | {} | each configured activity name |\n",
        risk(sign_of("activity_name"))
    ));
    md
}
