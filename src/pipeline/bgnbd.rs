//! The BG/NBD model of Fader, Hardie & Lee (2005), "'Counting your
//! customers' the easy way: an alternative to the Pareto/NBD model",
//! Marketing Science 24(2): how many purchases a customer will make, and
//! whether they are still a customer at all, from three numbers per customer.
//!
//! The model: while alive, a customer buys at Poisson rate λ; after each
//! repeat purchase they drop out for good with probability p. Across
//! customers λ ~ Gamma(r, α) (shape r, rate α) and p ~ Beta(a, b). A
//! customer is summarised by [`Rfm`]: x repeat purchases, the time t_x of
//! the last one and the age T, both counted from the first purchase.
//!
//! - [`BgNbd::log_likelihood`]: the individual likelihood, eq. (6), in log
//!   space.
//! - [`BgNbd::fit`]: maximum likelihood over (r, α, a, b), Nelder–Mead
//!   (argmin) on the log-parameters.
//! - [`BgNbd::p_alive`]: P(alive at T | x, t_x, T), the reciprocal of the
//!   denominator of eq. (10).
//! - [`BgNbd::expected_purchases`]: E[Y(t) | x, t_x, T], eq. (10).
//! - [`BgNbd::p_no_purchase`]: the probability of no purchase in (T, T + t].
//! - [`BgNbd::expected_purchases_new`]: E[X(t)] for a new customer, eq. (9).
//!
//! The formulas do not depend on the unit of time as long as α, t_x, T and
//! t share it; this project uses days. Pure math: no I/O.

use argmin::core::{CostFunction, Error as ArgminError, Executor, State};
use argmin::solver::neldermead::NelderMead;
use serde::{Deserialize, Serialize};
use statrs::function::beta::ln_beta;
use statrs::function::gamma::ln_gamma;

/// Fewest customers [`BgNbd::fit`] accepts: below that the four parameters
/// are not identified.
pub const MIN_CUSTOMERS: usize = 10;

/// L2 penalty on the log-parameters, added to the mean negative
/// log-likelihood (as lifetimes' `penalizer_coef`, which is per customer
/// too): it keeps a flat direction (say a, b → ∞ when nobody seems to drop
/// out) from running away. 10⁻⁴ was measurably too much: on 20,000 simulated
/// customers with a = 2, b = 10 it pulled the fit to a ≈ 1, b ≈ 4, 1.7 log-
/// likelihood units below the truth; at 10⁻⁶ every fit tried beats the truth.
const PENALIZER: f64 = 1e-6;

/// Log-parameters beyond ±this are refused by the cost (e^25 ≈ 7·10^10):
/// the special functions lose meaning long before.
const MAX_LOG_PARAM: f64 = 25.0;

/// The cost of a refused or non-finite point: finite, so that Nelder–Mead
/// still orders it, and worse than any real mean log-likelihood.
const WALL: f64 = 1e12;

/// Iteration caps of the first run and of the polishing restart. One
/// iteration costs one or two likelihood evaluations (five on a shrink),
/// about 11 ms per iteration for 200,000 distinct customers in release, so
/// the caps bound that fit to about 4.5 s; fits of simulated populations
/// converge in 110–175 and 60–90 iterations (about 2.2 s for 200,000).
const FIRST_ITERS: u64 = 300;
const POLISH_ITERS: u64 = 100;

/// Nelder–Mead stops when the standard deviation of the simplex's costs
/// (mean negative log-likelihood per customer) falls below this.
const SD_TOLERANCE: f64 = 1e-11;

/// Initial simplex steps in log-parameter space, first run and polish.
const FIRST_STEP: f64 = 1.0;
const POLISH_STEP: f64 = 0.1;

/// Identical customers are fitted once, weighted by their count, after
/// rounding t_x and T to this.
const GROUP_RESOLUTION: f64 = 1e-6;

/// Relative size of the last term at which the 2F1 series stops, and the
/// cap on its number of terms (z < 1 always; the cap binds only when z is
/// within about 3·10⁻⁴ of 1, i.e. t > 3,000 (α + T)).
const HYP2F1_TOLERANCE: f64 = 1e-12;
const HYP2F1_MAX_TERMS: usize = 100_000;

/// Half-width of the interval around a = 1 over which eq. (10) is
/// interpolated instead of evaluated: its factor 1/(a − 1) would cancel
/// catastrophically there.
const A_NEAR_ONE: f64 = 1e-4;

/// Bound of [`BgNbd::no_purchase_logit`]: beyond a chance of 1 in 20,000
/// either way the log-odds carry no more ranking that matters and would
/// only stretch the feature's scale.
pub const NO_PURCHASE_LOGIT_LIMIT: f64 = 10.0;

/// One customer's purchase history, in the paper's notation. Times are
/// counted from the customer's first purchase, in days.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rfm {
    /// Number of repeat purchases (after the first): a whole number ≥ 0.
    pub x: f64,
    /// Time of the last purchase since the first (0 when x = 0), ≤ `t`.
    pub t_x: f64,
    /// Age: time since the first purchase (the paper's T).
    pub t: f64,
}

impl Rfm {
    /// A history from a customer's purchase count, days since the last
    /// purchase (or since the first event, without one) and tenure in
    /// days: the first event stands for the first purchase, as the service
    /// and `train` both see it.
    pub fn of(purchases: f64, purchase_recency_days: f64, tenure_days: f64) -> Rfm {
        Rfm {
            x: (purchases - 1.0).max(0.0),
            t_x: if purchases >= 2.0 {
                (tenure_days - purchase_recency_days).max(0.0)
            } else {
                0.0
            },
            t: tenure_days.max(0.0),
        }
    }
}

/// The four BG/NBD parameters: purchase rates λ ~ Gamma(shape `r`, rate
/// `alpha`), dropout probabilities p ~ Beta(`a`, `b`). `alpha` is in days.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct BgNbd {
    /// Shape of the Gamma distribution of purchase rates.
    pub r: f64,
    /// Rate (inverse scale) of the Gamma distribution of purchase rates,
    /// in the unit of time (days).
    pub alpha: f64,
    /// First shape of the Beta distribution of dropout probabilities.
    pub a: f64,
    /// Second shape of the Beta distribution of dropout probabilities.
    pub b: f64,
}

impl BgNbd {
    /// The log-likelihood of one customer's history, eq. (6):
    ///
    /// L = B(a, b+x)/B(a, b) · Γ(r+x) α^r / (Γ(r) (α+T)^(r+x))
    ///   + δ(x>0) · B(a+1, b+x−1)/B(a, b) · Γ(r+x) α^r / (Γ(r) (α+t_x)^(r+x)),
    ///
    /// evaluated with ln Γ and ln B and a log-sum-exp, so it stays finite for
    /// large x (using B(a+1, b+x−1) = B(a, b+x) · a/(b+x−1)).
    pub fn log_likelihood(&self, c: &Rfm) -> f64 {
        let Self { r, alpha, a, b } = *self;
        let x = c.x;
        let head =
            ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln() + ln_beta(a, b + x) - ln_beta(a, b);
        let alive = -(r + x) * (alpha + c.t).ln();
        if x > 0.0 {
            let dropped = (a / (b + x - 1.0)).ln() - (r + x) * (alpha + c.t_x).ln();
            head + log_add_exp(alive, dropped)
        } else {
            head + alive
        }
    }

    /// Maximum likelihood estimate of the parameters from a population, and
    /// its total log-likelihood (the sum of eq. (6) over the customers, no
    /// penalty).
    ///
    /// Minimises the mean negative log-likelihood plus a tiny L2 penalty
    /// (10⁻⁶ per customer) on the log-parameters with argmin's Nelder–Mead,
    /// so the parameters stay positive, then restarts once from the best
    /// point with a smaller simplex to polish. Identical (x, t_x, T), after rounding times to
    /// 10⁻⁶ days, are evaluated once. Iterations are capped, so 200,000
    /// customers take a few seconds at most in release (about 2 s
    /// measured); a fit stopped by the cap returns the best point found.
    ///
    /// Refused: fewer than [`MIN_CUSTOMERS`] customers, nobody with a repeat
    /// purchase, or a history that is not one (x not a whole number ≥ 0, a
    /// negative or non-finite time, t_x > T).
    pub fn fit(customers: &[Rfm]) -> Result<(BgNbd, f64), String> {
        let data = Grouped::new(customers)?;
        // Start at r = 1, a = b = 1 and α from the mean purchase rate,
        // r/α ≈ Σx / ΣT (as if nobody dropped out).
        let alpha0 = (data.total_t / data.total_x).clamp(1e-3, 1e6);
        let start = vec![0.0, alpha0.ln(), 0.0, 0.0];
        let first = minimise(&data, start, FIRST_STEP, FIRST_ITERS)?;
        let best = minimise(&data, first, POLISH_STEP, POLISH_ITERS)?;
        let model = BgNbd::from_log(&best);
        if !model.is_valid() {
            return Err(format!(
                "BG/NBD fit did not converge to usable parameters: {model:?}"
            ));
        }
        let ll = data.log_likelihood(&model);
        if !ll.is_finite() {
            return Err(format!(
                "BG/NBD fit gave a non-finite log-likelihood at {model:?}"
            ));
        }
        Ok((model, ll))
    }

    /// P(alive at T | x, t_x, T): the probability that the customer has not
    /// dropped out by their age T,
    ///
    /// 1 / (1 + δ(x>0) · a/(b+x−1) · ((α+T)/(α+t_x))^(r+x)),
    ///
    /// the reciprocal of the denominator of eq. (10) (also lifetimes'
    /// `conditional_probability_alive`). 1 when x = 0: dropout happens
    /// only right after a repeat purchase.
    pub fn p_alive(&self, c: &Rfm) -> f64 {
        if c.x <= 0.0 {
            return 1.0;
        }
        let Self { r, alpha, a, b } = *self;
        let log_odds_dead =
            (r + c.x) * ((alpha + c.t) / (alpha + c.t_x)).ln() + (a / (b + c.x - 1.0)).ln();
        1.0 / (1.0 + log_odds_dead.exp())
    }

    /// E[Y(t) | x, t_x, T]: the expected number of purchases in
    /// (T, T + t], eq. (10):
    ///
    /// (a+b+x−1)/(a−1) · [1 − ((α+T)/(α+T+t))^(r+x)
    ///   · 2F1(r+x, b+x; a+b+x−1; t/(α+T+t))] · P(alive).
    ///
    /// Valid for every a > 0 (for a < 1 both factors are negative, as in
    /// lifetimes); within 10⁻⁴ of a = 1, where the 1/(a−1) factor would
    /// cancel, it is interpolated between a = 1 ± 10⁻⁴. 0 when t ≤ 0.
    pub fn expected_purchases(&self, c: &Rfm, t: f64) -> f64 {
        if t <= 0.0 {
            return 0.0;
        }
        self.p_alive(c) * self.alive_expectation(c.x, c.t, t)
    }

    /// The probability of no purchase in (T, T + t]:
    ///
    /// (1 − P(alive)) + P(alive) · ((α+T)/(α+T+t))^(r+x).
    ///
    /// Given alive at T, λ is Gamma(r+x, α+T) a posteriori, and an alive
    /// customer who buys nothing stays alive, so the second factor is
    /// E[e^(−λt)]. 1 when t ≤ 0; decreasing in t.
    pub fn p_no_purchase(&self, c: &Rfm, t: f64) -> f64 {
        if t <= 0.0 {
            return 1.0;
        }
        let alive = self.p_alive(c);
        let quiet = (-(self.r + c.x) * (t / (self.alpha + c.t)).ln_1p()).exp();
        (1.0 - alive) + alive * quiet
    }

    /// The log-odds of no purchase in (T, T + t] ([`Self::p_no_purchase`]),
    /// held within ±[`NO_PURCHASE_LOGIT_LIMIT`]: the model feature
    /// `bgnbd_no_purchase_logit`, on the scale a logistic regression
    /// weighs.
    pub fn no_purchase_logit(&self, c: &Rfm, t: f64) -> f64 {
        let p = self.p_no_purchase(c, t);
        let logit = p.ln() - (-p).ln_1p();
        if logit.is_nan() {
            0.0
        } else {
            logit.clamp(-NO_PURCHASE_LOGIT_LIMIT, NO_PURCHASE_LOGIT_LIMIT)
        }
    }

    /// E[X(t)]: the expected number of repeat purchases in (0, t] of a
    /// customer who has just made their first, eq. (9):
    ///
    /// (a+b−1)/(a−1) · [1 − (α/(α+t))^r · 2F1(r, b; a+b−1; t/(α+t))].
    ///
    /// The same expression as eq. (10) with x = t_x = T = 0. 0 when t ≤ 0.
    pub fn expected_purchases_new(&self, t: f64) -> f64 {
        if t <= 0.0 {
            return 0.0;
        }
        self.alive_expectation(0.0, 0.0, t)
    }

    /// The parameters from their logarithms (r, α, a, b).
    fn from_log(p: &[f64]) -> BgNbd {
        BgNbd {
            r: p[0].exp(),
            alpha: p[1].exp(),
            a: p[2].exp(),
            b: p[3].exp(),
        }
    }

    fn is_valid(&self) -> bool {
        [self.r, self.alpha, self.a, self.b]
            .iter()
            .all(|v| v.is_finite() && *v > 0.0)
    }

    /// The bracketed part of eq. (10) times (a+b+x−1)/(a−1): the expected
    /// purchases in (T, T + t] of a customer known to be alive at T.
    fn alive_expectation(&self, x: f64, big_t: f64, t: f64) -> f64 {
        let a = self.a;
        if (a - 1.0).abs() < A_NEAR_ONE {
            // Linear interpolation between a = 1 ± h: the function is
            // smooth in a, so the error is O(h²) ≈ 10⁻⁸ relative, and both
            // ends are 10⁻⁴ from the cancellation.
            let lo = self.alive_expectation_at(1.0 - A_NEAR_ONE, x, big_t, t);
            let hi = self.alive_expectation_at(1.0 + A_NEAR_ONE, x, big_t, t);
            let w = (a - (1.0 - A_NEAR_ONE)) / (2.0 * A_NEAR_ONE);
            lo + w * (hi - lo)
        } else {
            self.alive_expectation_at(a, x, big_t, t)
        }
    }

    /// [`Self::alive_expectation`] for a given a (≠ 1).
    ///
    /// Evaluated through Euler's transformation, 2F1(A, B; C; z) =
    /// (1−z)^(C−A−B) 2F1(C−A, C−B; C; z), which turns
    /// (1−z)^(r+x) · 2F1(r+x, b+x; c; z) with c = a+b+x−1 into
    /// (1−z)^(a−1) · 2F1(a+b−1−r, a−1; c; z): the same number, but a
    /// series whose terms do not grow with x (the direct one overflows
    /// once (r+x)·ln(1/(1−z)) passes ~700, and needs ~x·z/(1−z) terms).
    fn alive_expectation_at(&self, a: f64, x: f64, big_t: f64, t: f64) -> f64 {
        let Self { r, alpha, b, .. } = *self;
        // c = 0 (x = 0 and a + b = 1 exactly) is a pole of the series that
        // the factor c cancels; the expression is continuous in c.
        let c = a + b + x - 1.0;
        let c = if c == 0.0 { 1e-12 } else { c };
        let z = t / (alpha + big_t + t);
        // ln(1 − z) = ln((α+T)/(α+T+t)).
        let ln_1mz = -(t / (alpha + big_t)).ln_1p();
        let series = hyp2f1(a + b - 1.0 - r, a - 1.0, c, z);
        c / (a - 1.0) * (1.0 - ((a - 1.0) * ln_1mz).exp() * series)
    }
}

/// ln(e^u + e^v) without overflow.
fn log_add_exp(u: f64, v: f64) -> f64 {
    let (hi, lo) = if u >= v { (u, v) } else { (v, u) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// The Gaussian hypergeometric function 2F1(a, b; c; z) by its power
/// series Σ (a)_k (b)_k / ((c)_k k!) z^k, for 0 ≤ z < 1 (all this module
/// needs). Written here because statrs has no 2F1 and we know of no
/// maintained pure-Rust crate that has (lifetimes uses scipy's `hyp2f1`).
///
/// Stops once the terms are shrinking and the tail they imply (term /
/// (1 − z)) is below 10⁻¹² of the sum, or after [`HYP2F1_MAX_TERMS`]
/// terms. c must not be 0 or a negative integer.
fn hyp2f1(a: f64, b: f64, c: f64, z: f64) -> f64 {
    let mut term = 1.0;
    let mut sum = 1.0;
    for k in 0..HYP2F1_MAX_TERMS {
        let k = k as f64;
        let ratio = (a + k) * (b + k) / ((c + k) * (k + 1.0)) * z;
        term *= ratio;
        sum += term;
        // Past the peak the ratio tends to z, so the tail is about
        // term / (1 − z): compare that with the sum.
        if term.abs() <= HYP2F1_TOLERANCE * (1.0 - z) * sum.abs() && ratio.abs() < 1.0 {
            break;
        }
    }
    sum
}

/// The customers of a fit, identical histories merged, grouped by x so that
/// the Γ and B terms (which depend on x only) are computed once per x.
struct Grouped {
    /// Distinct x in ascending order, each with its range in the arrays
    /// below and its total weight.
    blocks: Vec<Block>,
    t_x: Vec<f64>,
    t: Vec<f64>,
    weight: Vec<f64>,
    /// Number of customers (the sum of the weights).
    n: f64,
    /// Σx and ΣT over all customers, for the starting point.
    total_x: f64,
    total_t: f64,
}

struct Block {
    x: f64,
    start: usize,
    end: usize,
    weight: f64,
}

impl Grouped {
    fn new(customers: &[Rfm]) -> Result<Grouped, String> {
        if customers.len() < MIN_CUSTOMERS {
            return Err(format!(
                "BG/NBD fit needs at least {MIN_CUSTOMERS} customers, got {}",
                customers.len()
            ));
        }
        let mut keys = Vec::with_capacity(customers.len());
        let (mut total_x, mut total_t) = (0.0, 0.0);
        for (i, c) in customers.iter().enumerate() {
            if !(c.x.is_finite() && c.x >= 0.0 && c.x.fract() == 0.0) {
                return Err(format!(
                    "customer {i}: x = {} is not a whole number of repeat purchases",
                    c.x
                ));
            }
            if !(c.t_x.is_finite() && c.t.is_finite() && c.t_x >= 0.0 && c.t_x <= c.t) {
                return Err(format!(
                    "customer {i}: needs 0 ≤ t_x ≤ T, got t_x = {}, T = {}",
                    c.t_x, c.t
                ));
            }
            total_x += c.x;
            total_t += c.t;
            keys.push((
                c.x as u64,
                (c.t_x / GROUP_RESOLUTION).round() as i64,
                (c.t / GROUP_RESOLUTION).round() as i64,
            ));
        }
        if total_x == 0.0 {
            return Err(format!(
                "BG/NBD fit needs repeat purchases: none of the {} customers has one",
                customers.len()
            ));
        }
        keys.sort_unstable();
        let mut grouped = Grouped {
            blocks: Vec::new(),
            t_x: Vec::new(),
            t: Vec::new(),
            weight: Vec::new(),
            n: customers.len() as f64,
            total_x,
            total_t,
        };
        for (i, &(x, t_x, t)) in keys.iter().enumerate() {
            if i > 0 && keys[i - 1] == (x, t_x, t) {
                // Same triple as the one before (sorted): one more of it.
                *grouped.weight.last_mut().expect("a previous triple") += 1.0;
                grouped.blocks.last_mut().expect("a block").weight += 1.0;
                continue;
            }
            let j = grouped.t.len();
            grouped.t_x.push(t_x as f64 * GROUP_RESOLUTION);
            grouped.t.push(t as f64 * GROUP_RESOLUTION);
            grouped.weight.push(1.0);
            match grouped.blocks.last_mut() {
                Some(block) if block.x == x as f64 => {
                    block.end = j + 1;
                    block.weight += 1.0;
                }
                _ => grouped.blocks.push(Block {
                    x: x as f64,
                    start: j,
                    end: j + 1,
                    weight: 1.0,
                }),
            }
        }
        Ok(grouped)
    }

    /// Σ eq. (6) over the customers, the same expression as
    /// [`BgNbd::log_likelihood`] with the per-x terms hoisted.
    fn log_likelihood(&self, m: &BgNbd) -> f64 {
        let BgNbd { r, alpha, a, b } = *m;
        let common = r * alpha.ln() - ln_gamma(r) - ln_beta(a, b);
        let ln_a = a.ln();
        let mut total = 0.0;
        for block in &self.blocks {
            let x = block.x;
            let rx = r + x;
            let head = common + ln_gamma(rx) + ln_beta(a, b + x);
            let range = block.start..block.end;
            let mut sum = 0.0;
            if x > 0.0 {
                let d = ln_a - (b + x - 1.0).ln();
                for ((&t, &t_x), &w) in self.t[range.clone()]
                    .iter()
                    .zip(&self.t_x[range.clone()])
                    .zip(&self.weight[range])
                {
                    let alive = -rx * (alpha + t).ln();
                    let dropped = d - rx * (alpha + t_x).ln();
                    sum += w * log_add_exp(alive, dropped);
                }
            } else {
                for (&t, &w) in self.t[range.clone()].iter().zip(&self.weight[range]) {
                    sum -= w * rx * (alpha + t).ln();
                }
            }
            total += head * block.weight + sum;
        }
        total
    }
}

/// The cost Nelder–Mead minimises: mean negative log-likelihood plus the
/// penalty, as a function of the log-parameters.
struct Objective<'a> {
    data: &'a Grouped,
}

impl CostFunction for Objective<'_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, p: &Self::Param) -> Result<f64, ArgminError> {
        if p.iter().any(|v| !v.is_finite() || v.abs() > MAX_LOG_PARAM) {
            return Ok(WALL);
        }
        let ll = self.data.log_likelihood(&BgNbd::from_log(p));
        let penalty = PENALIZER * p.iter().map(|v| v * v).sum::<f64>();
        let cost = -ll / self.data.n + penalty;
        Ok(if cost.is_finite() {
            cost.min(WALL)
        } else {
            WALL
        })
    }
}

/// Nelder–Mead from `start` with an axis-aligned initial simplex of side
/// `step`; the best log-parameters found.
fn minimise(data: &Grouped, start: Vec<f64>, step: f64, iters: u64) -> Result<Vec<f64>, String> {
    let mut simplex = vec![start.clone()];
    for i in 0..start.len() {
        let mut vertex = start.clone();
        vertex[i] += step;
        simplex.push(vertex);
    }
    let solver = NelderMead::new(simplex)
        .with_sd_tolerance(SD_TOLERANCE)
        .map_err(|e| format!("BG/NBD fit: {e}"))?;
    let result = Executor::new(Objective { data }, solver)
        .configure(|state| state.max_iters(iters))
        .run()
        .map_err(|e| format!("BG/NBD fit: {e}"))?;
    result
        .state()
        .get_best_param()
        .cloned()
        .ok_or_else(|| "BG/NBD fit: the optimiser returned no parameters".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Beta, Distribution, Exp, Gamma};

    /// The CDNOW fit published in the paper (weeks).
    const CDNOW: BgNbd = BgNbd {
        r: 0.243,
        alpha: 4.414,
        a: 0.793,
        b: 2.426,
    };

    /// The parameters the simulation draws from (days).
    const TRUTH: BgNbd = BgNbd {
        r: 0.5,
        alpha: 10.0,
        a: 0.8,
        b: 2.5,
    };

    /// Days after T over which the simulated future is counted.
    const HORIZON: f64 = 90.0;

    fn rfm(x: f64, t_x: f64, t: f64) -> Rfm {
        Rfm { x, t_x, t }
    }

    fn close(got: f64, want: f64, rel: f64) -> bool {
        (got - want).abs() <= rel * want.abs().max(1e-300)
    }

    /// `n` customers drawn from the BG/NBD process of `m`, T uniform in
    /// [180, 540] days: their history at T and their purchase count in
    /// (T, T + HORIZON].
    fn simulate(m: &BgNbd, n: usize, seed: u64) -> Vec<(Rfm, u32)> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let rates = Gamma::new(m.r, 1.0 / m.alpha).unwrap();
        let dropouts = Beta::new(m.a, m.b).unwrap();
        (0..n)
            .map(|_| {
                let big_t = rng.gen_range(180.0..540.0);
                let lambda: f64 = rates.sample(&mut rng);
                let p: f64 = dropouts.sample(&mut rng);
                let gaps = Exp::new(lambda).unwrap();
                let (mut now, mut x, mut t_x, mut future) = (0.0, 0.0, 0.0, 0);
                loop {
                    now += gaps.sample(&mut rng);
                    if now > big_t + HORIZON {
                        break;
                    }
                    if now <= big_t {
                        x += 1.0;
                        t_x = now;
                    } else {
                        future += 1;
                    }
                    // Dropout happens right after a repeat purchase.
                    if rng.gen::<f64>() < p {
                        break;
                    }
                }
                (rfm(x, t_x, big_t), future)
            })
            .collect()
    }

    fn mean(v: impl Iterator<Item = f64>) -> f64 {
        let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
        s / n as f64
    }

    /// On three seeds, the fit recovers the parameters, its
    /// expected purchases match the simulated future and its probability
    /// of no purchase matches the simulated share.
    #[test]
    fn fit_recovers_the_parameters_and_predicts_the_simulated_future() {
        for seed in [1, 2, 3] {
            let sim = simulate(&TRUTH, 5_000, seed);
            let customers: Vec<Rfm> = sim.iter().map(|(c, _)| *c).collect();
            let (fit, ll) = BgNbd::fit(&customers).unwrap();
            let rel = |got: f64, want: f64| (got - want).abs() / want;
            let errors = [
                rel(fit.r, TRUTH.r),
                rel(fit.alpha, TRUTH.alpha),
                rel(fit.a, TRUTH.a),
                rel(fit.b, TRUTH.b),
            ];
            let expected = mean(customers.iter().map(|c| fit.expected_purchases(c, HORIZON)));
            let observed = mean(sim.iter().map(|(_, f)| *f as f64));
            let p_none = mean(customers.iter().map(|c| fit.p_no_purchase(c, HORIZON)));
            let share_none = mean(sim.iter().map(|(_, f)| f64::from(u8::from(*f == 0))));
            println!(
                "seed {seed}: {fit:?} LL {ll:.1}; relative errors r {:.3} α {:.3} a {:.3} \
                 b {:.3}; E[Y(90)] {expected:.4} vs {observed:.4}; \
                 P(none) {p_none:.4} vs {share_none:.4}",
                errors[0], errors[1], errors[2], errors[3]
            );
            assert!(errors[0] < 0.25 && errors[1] < 0.25, "seed {seed}: {fit:?}");
            assert!(errors[2] < 0.4 && errors[3] < 0.4, "seed {seed}: {fit:?}");
            assert!(rel(expected, observed) < 0.15, "seed {seed}");
            assert!((p_none - share_none).abs() < 0.03, "seed {seed}");
            // The fit is a maximum: the truth is no more likely.
            let ll_truth: f64 = customers.iter().map(|c| TRUTH.log_likelihood(c)).sum();
            assert!(ll >= ll_truth - 1e-6, "seed {seed}: {ll} < {ll_truth}");
        }
    }

    /// The paper's worked example, and values of eq. (10) computed
    /// independently with mpmath (50 digits, its `hyp2f1`, the formula as
    /// printed without Euler's transformation; at a = 1 the mean of
    /// a = 1 ± 10⁻²⁵). Rows: model, x, t_x, T, t, E[Y(t)], P(alive).
    #[test]
    fn expected_purchases_and_p_alive_match_independent_values() {
        let sim_a = |a| BgNbd { a, ..TRUTH };
        let cases = [
            (
                CDNOW,
                2.0,
                30.43,
                38.86,
                39.0,
                1.22602817476714,
                0.726578570080673,
            ),
            (CDNOW, 0.0, 0.0, 38.86, 39.0, 0.195098052011263, 1.0),
            (
                CDNOW,
                7.0,
                35.0,
                38.86,
                52.0,
                5.52056750799936,
                0.843767821928012,
            ),
            (
                CDNOW,
                50.0,
                30.0,
                38.86,
                39.0,
                0.0226188917994899,
                0.000649914707391344,
            ),
            (
                sim_a(1.0),
                3.0,
                100.0,
                200.0,
                90.0,
                0.419287583308556,
                0.318837857976901,
            ),
            (
                sim_a(1.00005),
                3.0,
                100.0,
                200.0,
                90.0,
                0.419271002074437,
                0.318826999332811,
            ),
            (
                sim_a(2.5),
                3.0,
                100.0,
                200.0,
                90.0,
                0.181881132114878,
                0.157704428495804,
            ),
            (
                TRUTH,
                300.0,
                350.0,
                360.0,
                90.0,
                6.08828059911996,
                0.0910006130831312,
            ),
            (
                TRUTH,
                1.0,
                10.0,
                400.0,
                90.0,
                0.0102202485765891,
                0.0325715252543958,
            ),
        ];
        for (m, x, t_x, big_t, t, want_e, want_alive) in cases {
            let c = rfm(x, t_x, big_t);
            let e = m.expected_purchases(&c, t);
            let alive = m.p_alive(&c);
            // Interpolated around a = 1: O(h²) ≈ 10⁻⁸.
            let tol = if (m.a - 1.0).abs() < A_NEAR_ONE {
                1e-7
            } else {
                1e-9
            };
            assert!(close(e, want_e, tol), "{m:?} {c:?}: E = {e}, want {want_e}");
            assert!(close(alive, want_alive, 1e-12), "{m:?} {c:?}: {alive}");
        }
        // The paper, in weeks: E[Y(39) | 2, 30.43, 38.86] ≈ 1.226.
        let e = CDNOW.expected_purchases(&rfm(2.0, 30.43, 38.86), 39.0);
        assert!((e - 1.226).abs() < 5e-4, "{e}");
        assert_eq!(CDNOW.p_alive(&rfm(0.0, 0.0, 500.0)), 1.0);
        // Eq. (9), a + b < 1 (c < 0 in the series): mpmath.
        let odd = BgNbd {
            r: 0.3,
            alpha: 0.5,
            a: 0.6,
            b: 0.3,
        };
        let e = odd.expected_purchases_new(30.0);
        assert!(close(e, 2.03367632261719, 1e-9), "{e}");
        assert_eq!(e, odd.expected_purchases(&rfm(0.0, 0.0, 0.0), 30.0));
        assert_eq!(CDNOW.expected_purchases(&rfm(2.0, 30.43, 38.86), 0.0), 0.0);
    }

    /// Eq. (6) in log space against the plain product of Γ and B (statrs),
    /// and for large x against mpmath.
    #[test]
    fn log_likelihood_matches_direct_evaluation() {
        use statrs::function::beta::beta;
        use statrs::function::gamma::gamma;
        let direct = |m: &BgNbd, c: &Rfm| {
            let BgNbd { r, alpha, a, b } = *m;
            let g = gamma(r + c.x) * alpha.powf(r) / gamma(r);
            let mut l = beta(a, b + c.x) / beta(a, b) * g / (alpha + c.t).powf(r + c.x);
            if c.x > 0.0 {
                l += beta(a + 1.0, b + c.x - 1.0) / beta(a, b) * g / (alpha + c.t_x).powf(r + c.x);
            }
            l.ln()
        };
        for m in [CDNOW, TRUTH] {
            for c in [
                rfm(0.0, 0.0, 38.86),
                rfm(1.0, 2.0, 10.0),
                rfm(2.0, 30.43, 38.86),
                rfm(7.0, 35.0, 38.86),
                rfm(12.0, 300.0, 400.0),
            ] {
                let got = m.log_likelihood(&c);
                let want = direct(&m, &c);
                assert!(close(got, want, 1e-10), "{m:?} {c:?}: {got} vs {want}");
            }
        }
        // Values of mpmath (50 digits).
        for (m, c, want) in [
            (CDNOW, rfm(2.0, 30.43, 38.86), -9.45860630706627),
            (CDNOW, rfm(50.0, 30.0, 38.86), -39.8649672447521),
            (TRUTH, rfm(300.0, 350.0, 360.0), -365.845279453399),
        ] {
            let got = m.log_likelihood(&c);
            assert!(close(got, want, 1e-11), "{c:?}: {got} vs {want}");
        }
    }

    #[test]
    fn grouped_likelihood_is_the_sum_of_the_individual_ones() {
        let mut customers = simulate(&TRUTH, 300, 7)
            .into_iter()
            .map(|(c, _)| c)
            .collect::<Vec<_>>();
        customers.extend_from_slice(&customers.clone()[..50]);
        customers.push(rfm(0.0, 0.0, 0.0));
        let data = Grouped::new(&customers).unwrap();
        assert_eq!(data.n, customers.len() as f64);
        assert!(data.t.len() < customers.len());
        for m in [TRUTH, CDNOW] {
            let want: f64 = customers.iter().map(|c| m.log_likelihood(c)).sum();
            let got = data.log_likelihood(&m);
            assert!(close(got, want, 1e-9), "{got} vs {want}");
        }
    }

    #[test]
    fn p_no_purchase_is_a_probability_decreasing_in_t() {
        for m in [CDNOW, TRUTH] {
            for c in [
                rfm(0.0, 0.0, 30.0),
                rfm(2.0, 30.43, 38.86),
                rfm(20.0, 100.0, 400.0),
                rfm(5.0, 399.0, 400.0),
            ] {
                assert_eq!(m.p_no_purchase(&c, 0.0), 1.0);
                let mut before = 1.0;
                for t in [1.0, 7.0, 30.0, 90.0, 365.0, 3650.0] {
                    let p = m.p_no_purchase(&c, t);
                    assert!((0.0..=1.0).contains(&p), "{p}");
                    assert!(p < before, "{m:?} {c:?} t {t}: {p} ≥ {before}");
                    // Never below the probability of having dropped out.
                    assert!(p >= 1.0 - m.p_alive(&c));
                    before = p;
                }
            }
        }
    }

    #[test]
    fn hyp2f1_matches_closed_forms() {
        for z in [0.0_f64, 0.1, 0.5, 0.9, 0.99] {
            // 2F1(1, 1; 2; z) = −ln(1−z)/z.
            let want = if z == 0.0 { 1.0 } else { -(-z).ln_1p() / z };
            assert!(close(hyp2f1(1.0, 1.0, 2.0, z), want, 1e-11), "z {z}");
            // 2F1(a, b; b; z) = (1−z)^(−a).
            let want = (1.0 - z).powf(-0.7);
            assert!(close(hyp2f1(0.7, 2.3, 2.3, z), want, 1e-11), "z {z}");
        }
    }

    #[test]
    fn fit_refuses_what_it_cannot_fit() {
        let few = vec![rfm(1.0, 5.0, 10.0); MIN_CUSTOMERS - 1];
        assert!(BgNbd::fit(&few).unwrap_err().contains("at least 10"));
        let none = vec![rfm(0.0, 0.0, 10.0); 100];
        assert!(BgNbd::fit(&none).unwrap_err().contains("repeat purchases"));
        let mut bad = vec![rfm(1.0, 5.0, 10.0); 100];
        bad[3] = rfm(1.0, 11.0, 10.0);
        assert!(BgNbd::fit(&bad).unwrap_err().contains("customer 3"));
        bad[3] = rfm(1.5, 5.0, 10.0);
        assert!(BgNbd::fit(&bad).unwrap_err().contains("whole number"));
        bad[3] = rfm(1.0, f64::NAN, 10.0);
        assert!(BgNbd::fit(&bad).is_err());
    }

    #[test]
    fn the_model_round_trips_through_json() {
        let text = serde_json::to_string(&CDNOW).unwrap();
        assert_eq!(serde_json::from_str::<BgNbd>(&text).unwrap(), CDNOW);
    }
}
