//! A seeded generator of a customer population as event JSON, with the
//! ground truth of who churned and when.
//!
//! Customers belong to segments (frequent buyers, occasional buyers,
//! subscribers). Each has base rates of sessions, purchases, logins and email
//! engagement, modulated by weekly and yearly seasonality. A latent process
//! drives churn: some customers start to fade (their activity decays), and the
//! daily churn hazard rises with fading, recent complaints, failed payments,
//! a low NPS and price rises. A churned customer goes silent (a subscriber
//! cancels first). Events are generated day by day for the whole population,
//! so output is in event-time order and can be streamed for any size.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context as _;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Poisson};
use serde_json::json;

use crate::offline::flags::parse_time;
use crate::pipeline::event::{rfc3339, Millis, DAY_MS};

/// Simulation settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub customers: usize,
    pub days: u32,
    pub seed: u64,
    /// Event time at which the simulation ends (exclusive).
    pub end: Millis,
    /// Share of events sent twice (same event id).
    pub duplicate_rate: f64,
    /// Share of events delivered up to two days late (out of order).
    pub late_rate: f64,
    /// Dates (start of a day, inside the window) at which to record the
    /// oracle: every customer's true churn risk from the hidden state.
    pub oracle_at: Vec<Millis>,
    /// Horizon of the oracle's probabilities.
    pub oracle_horizon_days: i64,
    /// What a retention contact does, by variant (see [`Simulator::contact`]).
    pub effects: Vec<VariantEffect>,
}

/// A campaign variant's true effect on the customers it reaches. Each
/// customer has one latent draw `u` (uniform, stable per customer), and a
/// share multiplier by segment, so effects vary by customer and are
/// nested: a customer `saves` reaches is also reached by a variant that
/// saves more.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantEffect {
    /// The variant's name (`variant` on triggers); `*` for contacts with
    /// no variant or one not listed.
    pub variant: String,
    /// Share of customers whom a contact wins back if they are slipping
    /// away (`u` below it, before the segment's multiplier).
    pub saves: f64,
    /// Share a contact pushes away (`u` above 1 minus it): they
    /// unsubscribe and start to fade fast.
    pub pushes_away: f64,
}

impl std::str::FromStr for VariantEffect {
    type Err = String;

    /// `name=saves[:pushes_away]`, shares from 0 to 1, e.g. `discount=0.3:0.02`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, rest) = s.split_once('=').ok_or_else(|| {
            format!("{s:?}: expected VARIANT=SAVES[:PUSHES_AWAY], e.g. discount=0.3:0.02")
        })?;
        let (saves, pushes) = rest.split_once(':').unwrap_or((rest, "0"));
        let share = |x: &str, what: &str| {
            x.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| (0.0..=1.0).contains(v))
                .ok_or_else(|| format!("{s:?}: {what} must be a share from 0 to 1, got {x:?}"))
        };
        let (saves, pushes_away) = (share(saves, "saves")?, share(pushes, "pushes_away")?);
        if saves + pushes_away > 1.0 {
            return Err(format!("{s:?}: saves + pushes_away must be at most 1"));
        }
        Ok(Self {
            variant: name.trim().to_string(),
            saves,
            pushes_away,
        })
    }
}

/// What a contact did to a customer: the four kinds of uplift modelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactResult {
    /// Slipping away, and won back by the contact.
    Persuadable,
    /// Not slipping away; the contact changed nothing.
    SureThing,
    /// Slipping away; the contact could not stop it.
    LostCause,
    /// Pushed away by the contact: unsubscribes and fades.
    SleepingDog,
}

impl ContactResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Persuadable => "persuadable",
            Self::SureThing => "sure_thing",
            Self::LostCause => "lost_cause",
            Self::SleepingDog => "sleeping_dog",
        }
    }
}

/// A variant's latent effect on one customer, before knowing whether they
/// are slipping away when contacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// Wins the customer back if slipping away.
    Saves,
    /// Pushes the customer away.
    PushesAway,
    /// Does nothing.
    Unmoved,
}

impl Response {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Saves => "saves",
            Self::PushesAway => "pushes_away",
            Self::Unmoved => "unmoved",
        }
    }
}

impl SimConfig {
    /// Defaults ending at the start of the current UTC day.
    pub fn new(customers: usize, days: u32, seed: u64) -> Self {
        let now = crate::pipeline::event::wall_now();
        Self {
            customers,
            days,
            seed,
            end: now - now.rem_euclid(DAY_MS),
            duplicate_rate: 0.0,
            late_rate: 0.0,
            oracle_at: Vec::new(),
            oracle_horizon_days: 90,
            effects: Vec::new(),
        }
    }

    /// Event time of the first simulated day.
    pub fn start(&self) -> Millis {
        self.end - i64::from(self.days) * DAY_MS
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    Frequent,
    Occasional,
    Subscriber,
}

impl Segment {
    pub fn as_str(self) -> &'static str {
        match self {
            Segment::Frequent => "frequent",
            Segment::Occasional => "occasional",
            Segment::Subscriber => "subscriber",
        }
    }
}

/// One simulated customer's hidden state and ground truth.
#[derive(Debug, Clone)]
pub struct SimCustomer {
    pub id: String,
    pub segment: Segment,
    /// Day index the customer joins (negative: before the window).
    pub join_day: i64,
    sessions: f64,
    purchases: f64,
    logins: f64,
    email_engage: f64,
    aov: f64,
    consent: bool,
    complaint_prone: bool,
    /// Day the customer started to fade, and how fast (per day).
    fade: Option<(f64, f64)>,
    recent_complaints: f64,
    recent_failures: f64,
    nps_low: bool,
    price_rise: bool,
    plan_value: f64,
    seq: u64,
    /// Day index of churn, if it happened.
    pub churn_day: Option<i64>,
    /// Latest daily hazard (the oracle's raw input).
    pub hazard: f64,
    /// Pushed away by a contact: unsubscribes on the next day it is active.
    unsubscribe_next: bool,
}

impl SimCustomer {
    /// Activity multiplier on day index `day`: 1 until the customer starts
    /// to fade, then decaying.
    fn engagement(&self, day: i64) -> f64 {
        self.fade
            .map_or(1.0, |(d0, rate)| (-(day as f64 - d0) * rate).exp())
    }
}

/// One generated event: its time, customer and JSON text.
#[derive(Debug, Clone)]
pub struct SimEvent {
    pub at: Millis,
    pub customer_id: String,
    pub json: String,
}

/// The generator.
pub struct Simulator {
    pub cfg: SimConfig,
    rng: ChaCha8Rng,
    pub customers: Vec<SimCustomer>,
    day: i64,
    late: Vec<SimEvent>,
    /// Oracle rows recorded so far, by date.
    pub oracles: Vec<(Millis, Vec<OracleRow>)>,
}

/// One customer's true churn risk at an oracle date, from the hidden state.
#[derive(Debug, Clone, PartialEq)]
pub struct OracleRow {
    pub customer_id: String,
    /// Whether the customer had already churned (and gone silent).
    pub churned: bool,
    /// Today's daily churn hazard.
    pub hazard: f64,
    /// Probability of churning within the horizon.
    pub p_churn: f64,
    /// Probability of no purchase, session or activity within the horizon
    /// (the default training label).
    pub p_silent: f64,
}

/// Yearly seasonality of activity on day index `day`.
fn season(day: i64) -> f64 {
    1.0 + 0.15 * (2.0 * std::f64::consts::PI * day as f64 / 365.0).sin()
}

/// Weekend lift of activity.
fn weekly(day: i64, start: Millis) -> f64 {
    if (day + (start / DAY_MS)).rem_euclid(7) >= 5 {
        1.2
    } else {
        0.92
    }
}

/// Daily churn hazard from the latent drivers.
fn hazard(engagement: f64, complaints: f64, failures: f64, nps_low: bool, price_rise: bool) -> f64 {
    BASE_HAZARD
        * (3.0 * (1.0 - engagement)
            + 0.9 * complaints.min(3.0)
            + 0.8 * failures.min(2.0)
            + if nps_low { 0.6 } else { 0.0 }
            + if price_rise { 0.5 } else { 0.0 })
        .exp()
}

/// Daily chance of an "other activity" event at activity level `e`.
fn other_activity_chance(e: f64) -> f64 {
    (0.05 * e).min(1.0)
}

const BASE_HAZARD: f64 = 0.0012;

impl Simulator {
    pub fn new(cfg: SimConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let width = cfg.customers.max(1).to_string().len().max(5);
        let aov_dist = LogNormal::new(3.6, 0.6).expect("valid distribution");
        let customers = (0..cfg.customers)
            .map(|i| {
                let r: f64 = rng.gen();
                let segment = if r < 0.3 {
                    Segment::Frequent
                } else if r < 0.8 {
                    Segment::Occasional
                } else {
                    Segment::Subscriber
                };
                let (sessions, purchases, logins) = match segment {
                    Segment::Frequent => (0.8, 0.25, 0.6),
                    Segment::Occasional => (0.25, 0.05, 0.15),
                    Segment::Subscriber => (0.5, 0.02, 0.9),
                };
                let jitter = |rng: &mut ChaCha8Rng| 0.5 + rng.gen::<f64>();
                // Most customers exist before the window; some join during it.
                let join_day = if rng.gen::<f64>() < 0.75 {
                    -rng.gen_range(30..400)
                } else {
                    rng.gen_range(0..i64::from(cfg.days.max(1)))
                };
                SimCustomer {
                    id: format!("c-{:0width$}", i + 1),
                    segment,
                    join_day,
                    sessions: sessions * jitter(&mut rng),
                    purchases: purchases * jitter(&mut rng),
                    logins: logins * jitter(&mut rng),
                    email_engage: 0.1 + 0.4 * rng.gen::<f64>(),
                    aov: aov_dist.sample(&mut rng),
                    consent: rng.gen::<f64>() < 0.8,
                    complaint_prone: rng.gen::<f64>() < 0.15,
                    fade: None,
                    recent_complaints: 0.0,
                    recent_failures: 0.0,
                    nps_low: false,
                    price_rise: false,
                    plan_value: [9.0, 19.0, 49.0][rng.gen_range(0..3)],
                    seq: 0,
                    churn_day: None,
                    hazard: BASE_HAZARD,
                    unsubscribe_next: false,
                }
            })
            .collect();
        Self {
            cfg,
            rng,
            customers,
            day: 0,
            late: Vec::new(),
            oracles: Vec::new(),
        }
    }

    /// Day index of the next day [`Self::next_day`] generates.
    pub fn current_day(&self) -> i64 {
        self.day
    }

    /// Whether every day has been generated.
    pub fn done(&self) -> bool {
        self.day >= i64::from(self.cfg.days) && self.late.is_empty()
    }

    /// Generates the next day's events, sorted by delivery order (mostly
    /// event time; late and duplicate events as configured). Includes the
    /// initial profile events of customers who joined before the window on
    /// the first day.
    /// A retention campaign reaches customer `id`: with probability
    /// `effect` (a stable draw per customer and campaign) it wins them
    /// back: the fade stops and recent complaints, payment failures, a low
    /// NPS and a price rise are forgiven, so the customer is as engaged as
    /// before. Customers who already left are not reached. Returns whether
    /// the customer was won back. This is the known effect that outcome
    /// tracking must measure.
    pub fn treat(&mut self, id: &str, campaign: &str, effect: f64) -> bool {
        let Some(c) = self
            .customers
            .iter_mut()
            .find(|c| c.id == id)
            .filter(|c| c.churn_day.is_none())
        else {
            return false;
        };
        let draw =
            crate::pipeline::event::stable_hash(&[id.as_bytes(), campaign.as_bytes(), b"treat"])
                as f64
                / u64::MAX as f64;
        if draw >= effect {
            return false;
        }
        c.fade = None;
        c.recent_complaints = 0.0;
        c.recent_failures = 0.0;
        c.nps_low = false;
        c.price_rise = false;
        true
    }

    /// A variant's latent effect on customer `id` (see [`VariantEffect`]);
    /// `Unmoved` for a variant with no effect configured.
    pub fn response(&self, id: &str, variant: Option<&str>) -> Response {
        self.customers
            .iter()
            .find(|c| c.id == id)
            .map_or(Response::Unmoved, |c| self.response_of(c, variant))
    }

    fn response_of(&self, c: &SimCustomer, variant: Option<&str>) -> Response {
        let Some(e) = self
            .cfg
            .effects
            .iter()
            .find(|e| Some(e.variant.as_str()) == variant)
            .or_else(|| self.cfg.effects.iter().find(|e| e.variant == "*"))
        else {
            return Response::Unmoved;
        };
        let segment = match c.segment {
            // Occasional buyers are the easiest to win back.
            Segment::Frequent => 0.7,
            Segment::Occasional => 1.3,
            Segment::Subscriber => 1.0,
        };
        let u = crate::pipeline::event::stable_hash(&[c.id.as_bytes(), b"campaign-response"])
            as f64
            / u64::MAX as f64;
        if u < (e.saves * segment).min(1.0 - e.pushes_away) {
            Response::Saves
        } else if u > 1.0 - e.pushes_away {
            Response::PushesAway
        } else {
            Response::Unmoved
        }
    }

    /// A retention contact (a trigger of `variant`) reaches customer `id`,
    /// with the effects of [`SimConfig::effects`]: a customer slipping away
    /// (fading, or at a raised hazard) whom the variant `saves` is won back
    /// as [`Self::treat`] does; one it `pushes_away` unsubscribes and fades
    /// fast. `None` for customers who already left or are unknown.
    /// Customers never contacted keep the usual churn mechanics.
    pub fn contact(&mut self, id: &str, variant: Option<&str>) -> Option<ContactResult> {
        let response = self.response(id, variant);
        let day = self.day;
        let c = self
            .customers
            .iter_mut()
            .find(|c| c.id == id)
            .filter(|c| c.churn_day.is_none())?;
        let slipping = c.fade.is_some() || c.hazard > 2.0 * BASE_HAZARD;
        Some(match (response, slipping) {
            (Response::Saves, true) => {
                c.fade = None;
                c.recent_complaints = 0.0;
                c.recent_failures = 0.0;
                c.nps_low = false;
                c.price_rise = false;
                ContactResult::Persuadable
            }
            (Response::PushesAway, _) => {
                c.fade = Some((day as f64, 0.15));
                c.unsubscribe_next = c.consent;
                ContactResult::SleepingDog
            }
            (_, true) => ContactResult::LostCause,
            (_, false) => ContactResult::SureThing,
        })
    }

    /// Every customer's latent response to every variant with an effect
    /// (`customer_id,variant,response`: `saves`, `pushes_away`, `unmoved`),
    /// with the segment that scales it.
    pub fn campaign_truth_csv(&self) -> String {
        csv_string(|w| {
            w.write_record(["customer_id", "segment", "variant", "response"])?;
            for c in &self.customers {
                for e in &self.cfg.effects {
                    let r = self.response_of(c, Some(&e.variant));
                    w.write_record([
                        c.id.as_str(),
                        c.segment.as_str(),
                        e.variant.as_str(),
                        r.as_str(),
                    ])?;
                }
            }
            Ok(())
        })
    }

    /// Whether customer `id` has joined and not churned (ground truth).
    pub fn is_active(&self, id: &str) -> bool {
        self.customers
            .iter()
            .any(|c| c.id == id && c.churn_day.is_none() && c.join_day < self.day)
    }

    pub fn next_day(&mut self) -> Vec<SimEvent> {
        let mut out = Vec::new();
        let mut delayed = Vec::new();
        if self.day < i64::from(self.cfg.days) {
            let day = self.day;
            let day_start = self.cfg.start() + day * DAY_MS;
            if self.cfg.oracle_at.contains(&day_start) {
                let rows = self.oracle_rows(day);
                self.oracles.push((day_start, rows));
            }
            let season = season(day);
            let mut customers = std::mem::take(&mut self.customers);
            for c in customers.iter_mut() {
                self.customer_day(c, day, day_start, season, &mut out);
            }
            self.customers = customers;
            out.sort_by_key(|e| e.at);
            // Duplicates and late deliveries.
            let mut extra = Vec::new();
            let mut keep = Vec::with_capacity(out.len());
            for e in out {
                if self.cfg.duplicate_rate > 0.0 && self.rng.gen::<f64>() < self.cfg.duplicate_rate
                {
                    extra.push(e.clone());
                }
                if self.cfg.late_rate > 0.0 && self.rng.gen::<f64>() < self.cfg.late_rate {
                    delayed.push(e);
                } else {
                    keep.push(e);
                }
            }
            out = keep;
            out.extend(extra);
        }
        // Events delayed yesterday are delivered today, after today's.
        out.append(&mut self.late);
        self.late = delayed;
        self.day += 1;
        out
    }

    fn customer_day(
        &mut self,
        c: &mut SimCustomer,
        day: i64,
        day_start: Millis,
        season: f64,
        out: &mut Vec<SimEvent>,
    ) {
        let start = self.cfg.start();
        if c.churn_day.is_some() || day < c.join_day.max(0) {
            return;
        }
        let rng = &mut self.rng;
        let mut emit = |c: &mut SimCustomer, rng: &mut ChaCha8Rng, mut body: serde_json::Value| {
            c.seq += 1;
            let at = day_start + rng.gen_range(0..DAY_MS);
            body["event_id"] = json!(format!("{}-{}", c.id, c.seq));
            body["customer_id"] = json!(c.id);
            body["occurred_at"] = json!(rfc3339(at));
            out.push(SimEvent {
                at,
                customer_id: c.id.clone(),
                json: body.to_string(),
            });
        };
        if day == c.join_day.max(0) {
            // Profile at the start: consent, country, and a subscription start.
            let country = ["DE", "FR", "NL", "ES", "IT"][rng.gen_range(0..5)];
            emit(
                c,
                rng,
                json!({"type":"consent","marketing":c.consent,"attributes":{"country":country,"segment":c.segment.as_str()}}),
            );
            if c.segment == Segment::Subscriber {
                emit(
                    c,
                    rng,
                    json!({"type":"subscription","action":"start","plan":"standard","monthly_value":c.plan_value}),
                );
            }
        }
        // Fading: the latent decline that precedes most churn.
        if c.fade.is_none() && rng.gen::<f64>() < 0.004 {
            c.fade = Some((day as f64, 0.02 + 0.06 * rng.gen::<f64>()));
        }
        let engagement = c.engagement(day);
        let e = engagement * season * weekly(day, start);
        let poisson = |rng: &mut ChaCha8Rng, lambda: f64| -> u64 {
            if lambda <= 0.0 {
                0
            } else {
                Poisson::new(lambda)
                    .map(|p| p.sample(rng) as u64)
                    .unwrap_or(0)
            }
        };
        for _ in 0..poisson(rng, c.sessions * e) {
            let channel = if rng.gen::<bool>() { "web" } else { "app" };
            let (secs, views) = (rng.gen_range(20..1800), rng.gen_range(1..25));
            emit(
                c,
                rng,
                json!({"type":"session","duration_seconds":secs,"page_views":views,"channel":channel}),
            );
        }
        for _ in 0..poisson(rng, c.purchases * e) {
            let amount = (c.aov * (0.5 + rng.gen::<f64>()) * 100.0).round() / 100.0;
            let order = format!("o-{}-{}", c.id, c.seq);
            if rng.gen::<f64>() < 0.1 {
                let usd = (amount / 0.92 * 100.0).round() / 100.0;
                emit(
                    c,
                    rng,
                    json!({"type":"purchase","amount":usd,"currency":"USD","order_id":order}),
                );
            } else {
                emit(
                    c,
                    rng,
                    json!({"type":"purchase","amount":amount,"currency":"EUR","order_id":order}),
                );
            }
            if rng.gen::<f64>() < 0.04 {
                emit(
                    c,
                    rng,
                    json!({"type":"refund","amount":amount,"order_id":order}),
                );
            }
        }
        let logins = poisson(rng, c.logins * e);
        if logins > 0 {
            emit(
                c,
                rng,
                json!({"type":"activity","name":"login","count":logins}),
            );
        }
        if rng.gen::<f64>() < other_activity_chance(e) {
            let name = ["post", "share", "export"][rng.gen_range(0..3)];
            emit(c, rng, json!({"type":"activity","name":name}));
        }
        if day % 7 == 3 {
            emit(
                c,
                rng,
                json!({"type":"email","action":"delivered","campaign_id":"weekly"}),
            );
            if rng.gen::<f64>() < c.email_engage * engagement.sqrt() {
                emit(
                    c,
                    rng,
                    json!({"type":"email","action":"open","campaign_id":"weekly"}),
                );
                if rng.gen::<f64>() < 0.3 {
                    emit(
                        c,
                        rng,
                        json!({"type":"email","action":"click","campaign_id":"weekly"}),
                    );
                }
            }
        }
        // Support: fading and complaint-prone customers write in more.
        let ticket_rate =
            0.008 + if c.complaint_prone { 0.02 } else { 0.0 } + 0.02 * (1.0 - engagement);
        c.recent_complaints *= 0.97;
        c.recent_failures *= 0.97;
        if rng.gen::<f64>() < ticket_rate {
            let complaint = rng.gen::<f64>() < if c.complaint_prone { 0.6 } else { 0.2 };
            if complaint {
                c.recent_complaints += 1.0;
            }
            let severity = ["low", "medium", "high"][rng.gen_range(0..3)];
            let sat = if complaint {
                rng.gen_range(1..3)
            } else {
                rng.gen_range(3..6)
            };
            emit(
                c,
                rng,
                json!({"type":"support_ticket","severity":severity,"category":"orders","is_complaint":complaint,"satisfaction":sat}),
            );
        }
        if rng.gen::<f64>() < 0.01 {
            let nps = if engagement < 0.6 || c.recent_complaints > 0.5 {
                rng.gen_range(0..7)
            } else {
                rng.gen_range(6..11)
            };
            c.nps_low = nps <= 6;
            emit(c, rng, json!({"type":"survey","nps":nps}));
        }
        if c.segment == Segment::Subscriber
            && (day - c.join_day).rem_euclid(30) == 0
            && day != c.join_day
        {
            if rng.gen::<f64>() < 0.03 + 0.1 * (1.0 - engagement) {
                c.recent_failures += 1.0;
                emit(
                    c,
                    rng,
                    json!({"type":"subscription","action":"payment_failed","plan":"standard"}),
                );
            } else {
                emit(
                    c,
                    rng,
                    json!({"type":"subscription","action":"renew","plan":"standard","monthly_value":c.plan_value}),
                );
            }
            if !c.price_rise && rng.gen::<f64>() < 0.05 {
                c.price_rise = true;
                c.plan_value *= 1.3;
                emit(
                    c,
                    rng,
                    json!({"type":"subscription","action":"upgrade","plan":"standard","monthly_value":c.plan_value}),
                );
            }
        }
        if c.unsubscribe_next {
            c.unsubscribe_next = false;
            c.consent = false;
            emit(
                c,
                rng,
                json!({"type":"email","action":"unsubscribe","campaign_id":"retention"}),
            );
        }
        if c.consent && rng.gen::<f64>() < 0.0005 {
            emit(
                c,
                rng,
                json!({"type":"email","action":"unsubscribe","campaign_id":"weekly"}),
            );
        }
        // The latent churn hazard.
        c.hazard = hazard(
            engagement,
            c.recent_complaints,
            c.recent_failures,
            c.nps_low,
            c.price_rise,
        );
        if rng.gen::<f64>() < c.hazard {
            c.churn_day = Some(day);
            if c.segment == Segment::Subscriber {
                emit(
                    c,
                    rng,
                    json!({"type":"subscription","action":"cancel","plan":"standard"}),
                );
            }
        }
    }

    /// Every joined customer's true risk at the start of day index `day`,
    /// before that day's events: the churn hazard and, over the oracle
    /// horizon, the probability of churning and of staying silent (no
    /// purchase, session or activity). The future is projected from the
    /// hidden state: a fade under way continues, complaints and payment
    /// failures wear off as they do in the simulation; new fades, complaints
    /// and failures after the date are not foreseen.
    pub fn oracle_rows(&self, day: i64) -> Vec<OracleRow> {
        let start = self.cfg.start();
        let h = self.cfg.oracle_horizon_days.max(1);
        self.customers
            .iter()
            .filter(|c| c.join_day.max(0) <= day)
            .map(|c| {
                if c.churn_day.is_some() {
                    return OracleRow {
                        customer_id: c.id.clone(),
                        churned: true,
                        hazard: c.hazard,
                        p_churn: 1.0,
                        p_silent: 1.0,
                    };
                }
                // alive_quiet: alive at the start of day t and silent so far.
                let (mut alive_quiet, mut survive, mut p_silent) = (1.0, 1.0, 0.0);
                let (mut complaints, mut failures) = (c.recent_complaints, c.recent_failures);
                let mut first_hazard = None;
                for t in day..day + h {
                    let engagement = c.engagement(t);
                    let e = engagement * season(t) * weekly(t, start);
                    let quiet = (-(c.sessions + c.purchases + c.logins) * e).exp()
                        * (1.0 - other_activity_chance(e));
                    complaints *= 0.97;
                    failures *= 0.97;
                    let hz = hazard(engagement, complaints, failures, c.nps_low, c.price_rise);
                    first_hazard.get_or_insert(hz);
                    // Churning on day t after a quiet day t: silent from then on.
                    p_silent += alive_quiet * quiet * hz;
                    alive_quiet *= quiet * (1.0 - hz);
                    survive *= 1.0 - hz;
                }
                OracleRow {
                    customer_id: c.id.clone(),
                    churned: false,
                    hazard: first_hazard.unwrap_or(c.hazard),
                    p_churn: 1.0 - survive,
                    p_silent: p_silent + alive_quiet,
                }
            })
            .collect()
    }

    /// The oracle as CSV, for one recorded date.
    pub fn oracle_csv(&self, at: Millis, rows: &[OracleRow]) -> String {
        let h = self.cfg.oracle_horizon_days;
        let date = &rfc3339(at)[..10];
        csv_string(|w| {
            w.write_record([
                "customer_id".to_string(),
                "as_of".to_string(),
                "churned".to_string(),
                "hazard".to_string(),
                format!("p_churn_{h}d"),
                format!("p_silent_{h}d"),
            ])?;
            for r in rows {
                w.write_record([
                    r.customer_id.clone(),
                    date.to_string(),
                    r.churned.to_string(),
                    format!("{:.8}", r.hazard),
                    format!("{:.8}", r.p_churn),
                    format!("{:.8}", r.p_silent),
                ])?;
            }
            Ok(())
        })
    }

    /// The header of the daily oracle (`oracle-daily.csv`).
    pub fn daily_oracle_header(&self) -> [String; 3] {
        [
            "customer_id".to_string(),
            "date".to_string(),
            format!("p_churn_{}d", self.cfg.oracle_horizon_days),
        ]
    }

    /// The daily oracle's rows at the start of day index `day`: every
    /// living customer's probability of churning within the horizon.
    pub fn daily_oracle_rows(&self, day: i64) -> Vec<[String; 3]> {
        let date = rfc3339(self.day_start(day))[..10].to_string();
        self.oracle_rows(day)
            .into_iter()
            .filter(|r| !r.churned)
            .map(|r| [r.customer_id, date.clone(), format!("{:.5}", r.p_churn)])
            .collect()
    }

    /// Event time at the start of day index `day`.
    pub fn day_start(&self, day: i64) -> Millis {
        self.cfg.start() + day * DAY_MS
    }

    /// Ground truth as CSV: customer, segment, joined, churned_at (empty if
    /// not churned), final hazard.
    pub fn truth_csv(&self) -> String {
        csv_string(|w| {
            w.write_record(TRUTH_COLUMNS)?;
            for c in &self.customers {
                let churned = c
                    .churn_day
                    .map(|d| rfc3339(self.day_start(d)))
                    .unwrap_or_default();
                w.write_record([
                    c.id.clone(),
                    c.segment.as_str().to_string(),
                    c.join_day.to_string(),
                    churned,
                    format!("{:.6}", c.hazard),
                ])?;
            }
            Ok(())
        })
    }
}

/// The columns of the ground truth (`truth.csv`), of every `--kind`.
pub(crate) const TRUTH_COLUMNS: [&str; 5] = [
    "customer_id",
    "segment",
    // Day index of the first day as a customer; negative: before the window.
    "join_day",
    // RFC 3339; empty if the customer had not churned by the end.
    "churned_at",
    "hazard",
];

/// The text of a CSV file written with the csv crate: a field holding a
/// comma, a quote or a line break is quoted (customer ids are free text),
/// every other field is written as given. Writing to memory cannot fail,
/// and every record written here has as many fields as its header, which
/// is all the csv writer checks.
pub(crate) fn csv_string(
    write: impl FnOnce(&mut csv::Writer<Vec<u8>>) -> csv::Result<()>,
) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    write(&mut w).expect("a CSV written to memory");
    let bytes = w.into_inner().expect("a CSV written to memory");
    String::from_utf8(bytes).expect("a CSV of text fields is text")
}

/// Opens a CSV file the way the offline commands read the simulator's
/// files and files made like them: a header row, then rows that may be
/// shorter than it (missing fields read as empty) or longer (extra fields
/// are ignored); quoted fields are unquoted, and CRLF line ends read like
/// LF.
pub(crate) fn csv_reader(path: &Path) -> csv::Result<csv::Reader<std::fs::File>> {
    csv::ReaderBuilder::new().flexible(true).from_path(path)
}

/// A row's line in its file for messages, the header being line 1: its
/// record number (csv's own line count lags a line behind in CRLF files).
pub(crate) fn csv_line(row: &csv::StringRecord) -> u64 {
    row.position().map_or(0, |p| p.record() + 1)
}

/// Reads a truth CSV (`customer_id` and `churned_at` columns, the latter
/// RFC 3339 or empty): customer id -> churn time.
pub fn read_truth(path: &Path) -> anyhow::Result<HashMap<String, Option<Millis>>> {
    let reading = || format!("reading {}", path.display());
    let mut rows = csv_reader(path).with_context(reading)?;
    let header = rows.headers().with_context(reading)?.clone();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("{}: no {name} column", path.display()))
    };
    let (id, at) = (col("customer_id")?, col("churned_at")?);
    let mut out = HashMap::new();
    for row in rows.records() {
        let row = row.with_context(reading)?;
        let line = csv_line(&row);
        let t = match row.get(at).unwrap_or("") {
            "" => None,
            v => Some(parse_time(v).with_context(|| format!("{} line {line}", path.display()))?),
        };
        out.insert(row.get(id).unwrap_or("").to_string(), t);
    }
    Ok(out)
}

/// Fixtures of the CSV tests of the modules that write or read the
/// simulator's files.
#[cfg(test)]
pub(crate) mod csv_fixtures {
    use super::*;

    /// A customer id that needs every kind of CSV quoting.
    pub const AWKWARD_ID: &str = "c,1 \"the\"\nsecond line";

    /// A small simulation with 30 days of oracle horizon in which a
    /// customer there from the start is called [`AWKWARD_ID`].
    pub fn with_awkward_id() -> Simulator {
        let mut cfg = SimConfig::new(20, 30, 1);
        cfg.end = 1_790_000_000_000 - 1_790_000_000_000 % DAY_MS;
        cfg.oracle_horizon_days = 30;
        let mut sim = Simulator::new(cfg);
        let i = sim
            .customers
            .iter()
            .position(|c| c.join_day <= 0)
            .expect("a customer there from the start");
        sim.customers[i].id = AWKWARD_ID.to_string();
        sim
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seed: u64) -> (Vec<SimEvent>, Simulator) {
        let mut cfg = SimConfig::new(300, 120, seed);
        cfg.end = 1_790_000_000_000 - 1_790_000_000_000 % DAY_MS;
        let mut sim = Simulator::new(cfg);
        let mut all = Vec::new();
        while !sim.done() {
            all.extend(sim.next_day());
        }
        (all, sim)
    }

    #[test]
    fn is_seeded_and_valid_and_in_window() {
        let (a, sim) = run(7);
        let (b, _) = run(7);
        assert_eq!(a.len(), b.len());
        assert!(a.iter().zip(&b).all(|(x, y)| x.json == y.json));
        let v = crate::config::Config::default().validator();
        for e in &a {
            let ev = v
                .decode(
                    Some(e.customer_id.as_bytes()),
                    e.json.as_bytes(),
                    None,
                    sim.cfg.end,
                )
                .unwrap_or_else(|r| panic!("{}: {}", e.json, r.reason));
            assert!(ev.occurred_at >= sim.cfg.start() && ev.occurred_at < sim.cfg.end);
        }
        assert!(
            a.windows(2).all(|w| w[0].at <= w[1].at),
            "time-ordered without lateness"
        );
    }

    #[test]
    fn some_customers_churn_and_go_silent() {
        let (events, sim) = run(3);
        let churned: Vec<_> = sim
            .customers
            .iter()
            .filter(|c| c.churn_day.is_some())
            .collect();
        assert!(
            churned.len() > 10 && churned.len() < 250,
            "{} churned",
            churned.len()
        );
        for c in churned {
            let cutoff = sim.day_start(c.churn_day.unwrap() + 1);
            assert!(!events
                .iter()
                .any(|e| e.customer_id == c.id && e.at >= cutoff));
        }
    }

    #[test]
    fn duplicates_and_late_events_are_injected() {
        let mut cfg = SimConfig::new(200, 30, 1);
        cfg.duplicate_rate = 0.05;
        cfg.late_rate = 0.05;
        let mut sim = Simulator::new(cfg);
        let mut all = Vec::new();
        while !sim.done() {
            all.extend(sim.next_day());
        }
        let ids: std::collections::HashSet<_> = all.iter().map(|e| e.json.clone()).collect();
        assert!(ids.len() < all.len(), "some events are repeated");
        assert!(
            all.windows(2).any(|w| w[0].at > w[1].at),
            "some arrive out of order"
        );
    }

    #[test]
    fn truth_files_quote_awkward_ids_only() {
        let awkward = csv_fixtures::AWKWARD_ID;
        let mut cfg = SimConfig::new(20, 30, 3);
        cfg.effects = vec!["offer,1=0.3:0.1".parse().unwrap()];
        let mut sim = Simulator::new(cfg);
        sim.customers[0].churn_day = Some(2);
        sim.customers[1].id = awkward.to_string();
        sim.customers[1].churn_day = Some(5);
        let truth = sim.truth_csv();
        assert!(truth.starts_with("customer_id,segment,join_day,churned_at,hazard\n"));
        // Ordinary rows are written as they always were.
        let c = &sim.customers[0];
        let (seg, at) = (c.segment.as_str(), rfc3339(sim.day_start(2)));
        let plain = format!("\n{},{seg},{},{at},{:.6}\n", c.id, c.join_day, c.hazard);
        assert!(truth.contains(&plain), "{truth}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("truth.csv");
        std::fs::write(&path, truth).unwrap();
        let read = read_truth(&path).unwrap();
        assert_eq!(read.len(), sim.customers.len());
        assert_eq!(read[awkward], Some(sim.day_start(5)));
        assert_eq!(read[&sim.customers[0].id], Some(sim.day_start(2)));
        assert_eq!(read[&sim.customers[2].id], None);

        let campaign = sim.campaign_truth_csv();
        let mut r = csv::Reader::from_reader(campaign.as_bytes());
        let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), sim.customers.len());
        assert_eq!(&rows[1][0], awkward);
        assert_eq!(&rows[1][2], "offer,1");
    }

    #[test]
    fn truth_reader_keeps_its_tolerance() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("truth.csv");
        // CRLF line ends, extra and missing columns, a quoted id.
        std::fs::write(
            &path,
            "extra,customer_id,churned_at\r\nx,a,\r\ny,\"b,\"\"c\"\"\",1970-01-02\r\nz,c\r\n",
        )
        .unwrap();
        let read = read_truth(&path).unwrap();
        assert_eq!(read.len(), 3);
        assert_eq!(read["a"], None);
        assert_eq!(read["b,\"c\""], Some(DAY_MS));
        assert_eq!(read["c"], None);
        std::fs::write(&path, "customer_id,churned_at\na,\nb,yesterday\n").unwrap();
        let err = format!("{:#}", read_truth(&path).unwrap_err());
        assert!(err.contains("truth.csv line 3"), "{err}");
        std::fs::write(&path, "id,churned_at\n").unwrap();
        let err = read_truth(&path).unwrap_err().to_string();
        assert!(err.contains("no customer_id column"), "{err}");
    }
}
