//! Outcome tracking measures what a campaign really does. A simulated
//! population is run through the pure core day by day with the shipped
//! model; every trigger the service publishes reaches the simulated
//! customer, and the campaign wins back a known share of those who have
//! not left yet. The retention uplift the outcome records show (treated
//! minus holdout) must match the uplift the simulation caused.
//!
//! The simulation's truth: a treated customer is won back (and active
//! again) with probability `effect` if still there; without the campaign,
//! a customer still there is retained as often as holdout customers who
//! were still there (the simulator knows who was). So the true uplift is
//! share won back × (1 − retention of holdout customers still there).

use std::collections::{BTreeMap, HashMap};

use churn_alert::config::Config;
use churn_alert::offline::simulate::{SimConfig, Simulator};
use churn_alert::pipeline::event::{Millis, DAY_MS};
use churn_alert::pipeline::features::CustomerState;
use churn_alert::pipeline::model::Model;
use churn_alert::pipeline::step::{self, Output};

#[derive(Default, Debug)]
struct Tally {
    retained: [u32; 2],
    total: [u32; 2],
}

impl Tally {
    fn add(&mut self, g: usize, retained: bool) {
        self.total[g] += 1;
        self.retained[g] += u32::from(retained);
    }

    fn rate(&self, g: usize) -> f64 {
        f64::from(self.retained[g]) / f64::from(self.total[g])
    }
}

/// What the simulated campaign does to the customers its triggers reach.
#[derive(Clone, Copy)]
enum Campaign {
    /// Wins back this share of those still there.
    WinsBack(f64),
    /// The demo's experiment: a discount that wins back 70% of the
    /// customers slipping away against a reminder that wins back 10% and
    /// pushes 5% away ([`churn_alert::offline::demo::demo_effects`]).
    Experiment,
}

/// What one run measured and what the simulation caused.
struct Run {
    /// Retention, treated minus holdout, from the outcome records.
    measured: f64,
    /// The uplift the simulated campaign caused (see the module docs).
    truth: f64,
    /// Share of triggered customers won back.
    won_back: f64,
    outcomes: Tally,
    /// The experiment readout of the outcome records.
    readout: Vec<churn_alert::pipeline::readout::ExperimentReadout>,
}

/// Runs 20,000 simulated customers for a year with `campaign`.
fn run(campaign: Campaign) -> Run {
    let mut cfg = Config::default();
    cfg.policy.holdout.share = 0.3;
    let mut sc = SimConfig::new(20_000, 365, 11);
    if let Campaign::Experiment = campaign {
        cfg.policy
            .run_experiment(&churn_alert::offline::demo::demo_experiment());
        sc.effects = churn_alert::offline::demo::demo_effects();
    }
    let mut readout = churn_alert::pipeline::readout::Tally::default();
    let spec = cfg.feature_spec();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = Model::load(&root.join("models/churn-model.json"), &spec).unwrap();
    let policy = cfg.policy_for(Some(model.file()));
    let validator = cfg.validator();
    sc.end = 1_790_000_000_000 - 1_790_000_000_000 % DAY_MS;
    let mut sim = Simulator::new(sc);
    let mut states: HashMap<String, CustomerState> = HashMap::new();
    let mut by_campaign: BTreeMap<String, Tally> = BTreeMap::new();
    let (mut treated, mut won_back) = (0u32, 0u32);
    // Alerts of customers the simulator says were still there.
    let mut alive_at_alert: HashMap<String, bool> = HashMap::new();
    let mut holdout_alive = Tally::default();

    let mut handle = |sim: &mut Simulator, out: &Output| {
        if let Some(a) = &out.alert {
            alive_at_alert.insert(a.alert_id.clone(), sim.is_active(&a.customer_id));
        }
        if let Some(t) = &out.trigger {
            treated += 1;
            won_back += u32::from(match campaign {
                Campaign::WinsBack(effect) => sim.treat(&t.customer_id, &t.campaign_id, effect),
                Campaign::Experiment => {
                    sim.contact(&t.customer_id, t.variant.as_deref())
                        == Some(churn_alert::offline::simulate::ContactResult::Persuadable)
                }
            });
        }
        if let Some(o) = &out.decided {
            readout.add(o);
            let g = match o.group.as_str() {
                "treated" => 0,
                "holdout" => 1,
                _ => return,
            };
            let retained = o.outcome == churn_alert::pipeline::output::Retention::Retained;
            by_campaign
                .entry(o.campaign_id.clone().unwrap_or_default())
                .or_default()
                .add(g, retained);
            if g == 1 && alive_at_alert.get(&o.alert_id) == Some(&true) {
                holdout_alive.add(0, retained);
            }
        }
    };
    let rescore_until = |sim: &mut Simulator,
                         states: &mut HashMap<String, CustomerState>,
                         id: &str,
                         until: Millis,
                         handle: &mut dyn FnMut(&mut Simulator, &Output)| {
        let Some(mut s) = states.remove(id) else {
            return;
        };
        while let Some(due) = s.next_due.filter(|d| *d <= until) {
            let (next, out) = step::rescore(s, id, due, &model, &policy, &spec);
            s = next;
            handle(sim, &out);
        }
        states.insert(id.to_string(), s);
    };
    while !sim.done() {
        let events = sim.next_day();
        let day_end = events.iter().map(|e| e.at).max().unwrap_or(0);
        for e in events {
            let ev = validator
                .decode(
                    Some(e.customer_id.as_bytes()),
                    e.json.as_bytes(),
                    None,
                    e.at,
                )
                .expect("simulated events are valid");
            // Silent spells before the event are scored first, as the
            // service does in event time.
            rescore_until(
                &mut sim,
                &mut states,
                &e.customer_id,
                ev.occurred_at,
                &mut handle,
            );
            let (s, out) = step::step(
                states.remove(&e.customer_id),
                &ev,
                ev.occurred_at,
                &model,
                &policy,
                &spec,
            );
            handle(&mut sim, &out);
            if let Some(s) = s {
                states.insert(e.customer_id.clone(), s);
            }
        }
        let ids: Vec<String> = states
            .iter()
            .filter(|(_, s)| s.next_due.is_some_and(|d| d <= day_end))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            rescore_until(&mut sim, &mut states, &id, day_end, &mut handle);
        }
    }

    let mut all = Tally::default();
    for (campaign, t) in &by_campaign {
        println!(
            "{campaign:>28}: treated {}/{} retained, holdout {}/{}",
            t.retained[0], t.total[0], t.retained[1], t.total[1]
        );
        for g in 0..2 {
            all.retained[g] += t.retained[g];
            all.total[g] += t.total[g];
        }
    }
    let won_back = f64::from(won_back) / f64::from(treated);
    let r = Run {
        measured: all.rate(0) - all.rate(1),
        truth: won_back * (1.0 - holdout_alive.rate(0)),
        won_back,
        outcomes: all,
        readout: readout.readout(&Default::default()),
    };
    let effect = match campaign {
        Campaign::WinsBack(e) => e.to_string(),
        Campaign::Experiment => "experiment".into(),
    };
    println!(
        "effect {effect}: {treated} triggers, {:.3} won back; outcomes treated {} retained {:.3}, holdout {} retained {:.3} ({} still there, retained {:.3}); uplift measured {:.3}, caused {:.3}",
        r.won_back,
        r.outcomes.total[0],
        r.outcomes.rate(0),
        r.outcomes.total[1],
        r.outcomes.rate(1),
        holdout_alive.total[0],
        holdout_alive.rate(0),
        r.measured,
        r.truth
    );
    r
}

#[test]
fn measured_uplift_matches_the_simulated_campaign_effect() {
    let r = run(Campaign::WinsBack(0.4));
    assert!(
        r.outcomes.total[0] >= 1000 && r.outcomes.total[1] >= 500,
        "{:?}",
        r.outcomes
    );
    assert!(r.won_back > 0.05, "the campaign reached almost nobody");
    // The standard error of the measured uplift is about 0.01 here.
    assert!(
        (r.measured - r.truth).abs() < 0.03,
        "outcomes measure an uplift of {:.3}, the campaign caused {:.3}",
        r.measured,
        r.truth
    );
    // A campaign that does nothing measures as nothing: the groups are
    // alike, so the uplift is not an artefact of how they are drawn.
    let r = run(Campaign::WinsBack(0.0));
    assert_eq!(r.won_back, 0.0);
    assert!(
        r.measured.abs() < 0.03,
        "a useless campaign measures {:.3}",
        r.measured
    );
}

/// The closed loop with an experiment: triggers carry a variant, the
/// simulated customers respond as that variant's true effect says, and the
/// readout of the outcomes ranks the variants as the simulation made them.
#[test]
fn the_experiment_readout_finds_the_better_variant() {
    let r = run(Campaign::Experiment);
    let e = &r.readout[0];
    assert_eq!(e.experiment, "winback-offer");
    let arm = |n: &str| e.arms.iter().find(|a| a.arm == n).unwrap();
    for a in &e.arms {
        let l = a.absolute_lift.as_ref();
        println!(
            "{:>9}: {} customers, retained {:.3}, lift {} [{}], always-valid p {}, {}",
            a.arm,
            a.customers,
            a.retained_rate,
            l.map_or("-".into(), |l| format!("{:+.3}", l.estimate)),
            l.map_or("-".into(), |l| format!("{:+.3}, {:+.3}", l.ci[0], l.ci[1])),
            l.map_or("-".into(), |l| format!("{:.4}", l.sequential_p_value)),
            a.verdict
        );
    }
    assert!(!e.sample_ratio_mismatch, "p = {}", e.srm_p_value);
    assert!(arm("holdout").customers >= 300 && arm("discount").customers >= 500);
    let lift = |n: &str| arm(n).absolute_lift.clone().unwrap();
    assert!(
        lift("discount").estimate > lift("reminder").estimate,
        "the discount wins back more"
    );
    assert!(
        lift("discount").ci[0] > 0.0,
        "the discount's lift is found: {:?}",
        lift("discount")
    );
}
