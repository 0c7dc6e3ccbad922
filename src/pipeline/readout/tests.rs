use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Binomial, Distribution};

use super::*;
use crate::pipeline::output::Group;

const SETTINGS: fn() -> ReadoutSettings = ReadoutSettings::default;

fn close(ours: f64, theirs: f64, what: &str) {
    assert!(
        (ours - theirs).abs() <= 1e-3,
        "{what}: ours {ours}, gbstats {theirs}"
    );
}

#[test]
fn intervals_and_p_values_match_gbstats_on_its_fixtures() {
    let f: serde_json::Value = serde_json::from_str(include_str!("gbstats.json")).unwrap();
    let alpha = f["alpha"].as_f64().unwrap();
    let tuning = f["sequential_tuning"].as_f64().unwrap();
    let cases = f["cases"].as_array().unwrap();
    assert!(cases.len() >= 40);
    let mut compared = 0;
    for c in cases {
        let p = |k: &str| Proportion {
            n: c[k][0].as_u64().unwrap(),
            hits: c[k][1].as_u64().unwrap(),
        };
        for (kind, relative) in [("absolute", false), ("relative", true)] {
            let ours = compare(p("a"), p("b"), relative, alpha, tuning);
            for (test, seq) in [("fixed", false), ("sequential", true)] {
                let r = &c[kind][test];
                let what = format!("{} vs {} {kind} {test}", c["a"], c["b"]);
                let Some(o) = &ours else {
                    // gbstats' uninformative default.
                    assert_eq!(r["p_value"].as_f64(), Some(1.0), "{what}");
                    assert_eq!(r["estimate"].as_f64(), Some(0.0), "{what}");
                    continue;
                };
                let (ci, pv) = if seq {
                    (o.sequential_ci, o.sequential_p_value)
                } else {
                    (o.ci, o.p_value)
                };
                close(o.estimate, r["estimate"].as_f64().unwrap(), &what);
                close(ci[0], r["ci"][0].as_f64().unwrap(), &what);
                close(ci[1], r["ci"][1].as_f64().unwrap(), &what);
                close(pv, r["p_value"].as_f64().unwrap(), &what);
                compared += 1;
            }
        }
    }
    assert!(compared >= 160, "{compared} results compared");
    for s in f["srm"].as_array().unwrap() {
        let users: Vec<u64> = serde_json::from_value(s["users"].clone()).unwrap();
        let weights: Vec<f64> = serde_json::from_value(s["weights"].clone()).unwrap();
        close(
            srm_p_value(&users, &weights),
            s["p_value"].as_f64().unwrap(),
            &format!("SRM {users:?}"),
        );
    }
}

#[test]
fn a_52_48_split_of_10000_is_a_sample_ratio_mismatch_and_50_50_is_not() {
    let flagged = |a, b| srm_p_value(&[a, b], &[0.5, 0.5]) < SETTINGS().srm_alpha;
    assert!(flagged(5200, 4800));
    assert!(!flagged(5000, 5000));
    assert!(!flagged(5060, 4940), "a 50.6/49.4 split is chance");
}

/// `runs` experiments of two arms with retention `base` and `base + lift`,
/// `daily` customers a day split `share : 1 - share` (holdout first), read
/// every day for `days`. Per run: the first day the sequential and the
/// fixed-horizon test each declared a difference (p < 0.05), if any.
fn peeked(
    runs: usize,
    days: usize,
    daily: u64,
    share: f64,
    base: f64,
    lift: f64,
    seed: u64,
) -> Vec<(Option<usize>, Option<usize>)> {
    let s = SETTINGS();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..runs)
        .map(|_| {
            let (mut a, mut b) = (Proportion { n: 0, hits: 0 }, Proportion { n: 0, hits: 0 });
            let (mut seq, mut fixed) = (None, None);
            for day in 1..=days {
                let na = Binomial::new(daily, share).unwrap().sample(&mut rng);
                let nb = daily - na;
                a.n += na;
                b.n += nb;
                a.hits += Binomial::new(na, base).unwrap().sample(&mut rng);
                b.hits += Binomial::new(nb, base + lift).unwrap().sample(&mut rng);
                if let Some(e) = compare(a, b, false, s.alpha, s.sequential_tuning) {
                    if e.sequential_p_value < s.alpha {
                        seq.get_or_insert(day);
                    }
                    if e.p_value < s.alpha {
                        fixed.get_or_insert(day);
                    }
                }
            }
            (seq, fixed)
        })
        .collect()
}

#[test]
fn a_sequential_test_read_daily_keeps_its_error_rate_and_a_fixed_one_does_not() {
    // 1,000 A/A experiments: 200 customers a day for 60 days, 20%
    // retained in both arms, every day read.
    for (seed, share) in [(1, 0.5), (2, 0.1)] {
        let runs = peeked(1000, 60, 200, share, 0.2, 0.0, seed);
        let rate = |pick: fn(&(Option<usize>, Option<usize>)) -> bool| {
            runs.iter().filter(|r| pick(r)).count() as f64 / runs.len() as f64
        };
        let sequential = rate(|r| r.0.is_some());
        let fixed = rate(|r| r.1.is_some());
        eprintln!(
            "A/A, holdout share {share}, 1,000 experiments read daily for 60 days: a winner declared by the sequential test in {:.1}%, by a fixed-horizon test in {:.1}%",
            sequential * 100.0,
            fixed * 100.0
        );
        assert!(sequential <= 0.05, "sequential: {sequential}");
        assert!(fixed > 0.10, "peeking at a fixed test: {fixed}");
    }
}

#[test]
fn a_three_point_lift_is_found_at_the_sample_size_the_power_line_predicts() {
    let s = SETTINGS();
    let (base, lift) = (0.20, 0.03);
    for (holdout, seed) in [(0.5, 3), (0.1, 4)] {
        let predicted = sample_size(
            base,
            lift,
            (holdout, 1.0 - holdout),
            s.alpha,
            s.power,
            Some(s.sequential_tuning),
        )
        .unwrap();
        // The share of 1,000 experiments of `n` customers in which the
        // readout's verdict is `better` when read at `n`.
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut found_at = |n: f64| {
            let n = n.round() as u64;
            let found = (0..1000)
                .filter(|_| {
                    let na = Binomial::new(n, holdout).unwrap().sample(&mut rng);
                    let a = Proportion {
                        n: na,
                        hits: Binomial::new(na, base).unwrap().sample(&mut rng),
                    };
                    let b = Proportion {
                        n: n - na,
                        hits: Binomial::new(n - na, base + lift).unwrap().sample(&mut rng),
                    };
                    compare(a, b, false, s.alpha, s.sequential_tuning)
                        .is_some_and(|e| e.sequential_p_value < s.alpha && e.estimate > 0.0)
                })
                .count();
            found as f64 / 1000.0
        };
        // The smallest size on a 5% grid at which 80% find it.
        let grid: Vec<f64> = (10..=30).map(|k| predicted * f64::from(k) / 20.0).collect();
        let observed = grid
            .iter()
            .copied()
            .find(|n| found_at(*n) >= s.power)
            .expect("found within 1.5 times the prediction");
        let at_predicted = found_at(predicted);
        eprintln!(
            "3-point lift on 20%, holdout share {holdout}: the power line predicts {predicted} customers; 80% of 1,000 experiments find it at {observed:.0} ({:+.0}%); at the prediction {:.1}% do",
            (observed / predicted - 1.0) * 100.0,
            at_predicted * 100.0
        );
        assert!((observed / predicted - 1.0).abs() <= 0.2);
    }
}

fn record(customer: usize, day: u32, arm: &str, retained: bool) -> OutcomeRecord {
    OutcomeRecord {
        outcome_id: format!("o-{customer}-{day}"),
        alert_id: format!("a-{customer}-{day}"),
        customer_id: format!("c-{customer}"),
        outcome: if retained {
            Retention::Retained
        } else {
            Retention::Churned
        },
        group: if arm == HOLDOUT_ARM {
            Group::Holdout
        } else {
            Group::Treated
        },
        campaign_id: Some("winback".into()),
        alerted_at: format!("2026-10-{day:02}T00:00:00Z"),
        decided_at: format!("2026-11-{day:02}T00:00:00Z"),
        experiment: Some("offer".into()),
        variant: Some(arm.into()),
        split: Some(
            [("holdout", 0.1), ("discount", 0.45), ("shipping", 0.45)]
                .into_iter()
                .map(|(a, s)| (a.to_string(), s))
                .collect(),
        ),
        unsubscribed: false,
        complained: customer.is_multiple_of(50),
    }
}

#[test]
fn the_readout_counts_each_customer_once_whatever_the_order_and_repeats() {
    let mut records = Vec::new();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for c in 0..3000 {
        let arm = match c % 20 {
            0 | 1 => "holdout",
            k if k % 2 == 0 => "discount",
            _ => "shipping",
        };
        let rate = if arm == "discount" { 0.3 } else { 0.2 };
        let retained = rand::Rng::gen_bool(&mut rng, rate);
        records.push(record(c, 1, arm, retained));
        // A later alert of the same customer, in another arm, never counts.
        if c.is_multiple_of(3) {
            records.push(record(c, 20, "shipping", true));
        }
    }
    let mut forward = Tally::default();
    records.iter().for_each(|r| {
        forward.add(r);
    });
    let mut backward = Tally::default();
    records.iter().rev().chain(records.iter()).for_each(|r| {
        backward.add(r);
    });
    let s = SETTINGS();
    let r = forward.readout(&s);
    assert_eq!(r, backward.readout(&s));
    let e = &r[0];
    assert_eq!(e.customers, 3000);
    let arm = |n: &str| e.arms.iter().find(|a| a.arm == n).unwrap();
    assert_eq!(
        e.arms.iter().map(|a| a.arm.as_str()).collect::<Vec<_>>(),
        ["holdout", "discount", "shipping"]
    );
    assert_eq!(arm("holdout").customers, 300);
    assert!((arm("holdout").expected_share - 0.1).abs() < 1e-9);
    assert!(!e.sample_ratio_mismatch, "{}", e.srm_p_value);
    assert_eq!(arm("discount").verdict, "better");
    assert_eq!(arm("shipping").verdict, "inconclusive");
    assert_eq!(arm("holdout").verdict, "control");
    // 3000 / 50 customers complained, half of them in the discount arm.
    assert_eq!(arm("discount").complained, 30);
    let needed = sample_size(
        arm("holdout").retained_rate,
        s.minimum_lift,
        (0.1, 0.45),
        s.alpha,
        s.power,
        Some(s.sequential_tuning),
    )
    .unwrap();
    assert_eq!(
        arm("shipping").customers_needed,
        Some((needed / 0.55).ceil() as u64)
    );
    assert_eq!(
        arm("shipping").customers_more,
        Some((needed / 0.55).ceil() as u64 - 3000)
    );
}
