//! The shipped model's reasons can be trusted by a campaign manager: every
//! weight keeps the sign its behaviour's meaning gives it, and a reason never
//! names a behaviour that lowers this customer's risk (so the most engaged
//! customers are never told "frequent logins" is why they may leave).

use std::collections::HashMap;
use std::path::Path;

use churn_alert::config::Config;
use churn_alert::offline::simulate::{SimConfig, Simulator};
use churn_alert::pipeline::event::DAY_MS;
use churn_alert::pipeline::features::BGNBD_NO_PURCHASE;
use churn_alert::pipeline::model::{Assessment, Model};
use churn_alert::pipeline::step::{features_and_score, ingest};

/// The behaviour of [`BGNBD_NO_PURCHASE`] in reasons.
const BGNBD_GROUP: &str = "purchase_rhythm";

fn shipped() -> (Config, Model) {
    let cfg = Config::default();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/churn-model.json");
    let model = Model::load(&path, &cfg.feature_spec()).unwrap();
    (cfg, model)
}

#[test]
fn every_weight_keeps_the_sign_of_its_meaning() {
    let (cfg, model) = shipped();
    let spec = cfg.feature_spec();
    let f = model.file();
    let mut checked = 0;
    for (name, w) in f.features.iter().zip(&f.weights) {
        if let Some(sign) = spec.expected_sign(name) {
            assert!(
                sign * w >= 0.0,
                "{name}: weight {w:+.4} says the opposite of what the behaviour means"
            );
            checked += 1;
        }
    }
    assert!(
        checked > 20,
        "only {checked} features have an expected sign"
    );
    // More engagement never raises the risk: the sum over each engagement
    // behaviour's features is not positive.
    let mut by_group: HashMap<&str, f64> = HashMap::new();
    for (name, w) in f.features.iter().zip(&f.weights) {
        if spec.expected_sign(name) == Some(-1.0) {
            *by_group.entry(spec.group_of(name)).or_default() += w;
        }
    }
    assert!(by_group.contains_key("sessions") && by_group.contains_key("activity_login"));
    for (g, w) in by_group {
        assert!(w <= 0.0, "{g}: more of it raises the risk ({w:+.4})");
    }
}

#[test]
fn reasons_never_name_what_lowers_the_risk() {
    let (cfg, model) = shipped();
    let spec = cfg.feature_spec();
    let mut sim_cfg = SimConfig::new(2000, 200, 31);
    sim_cfg.end = 1_790_000_000_000 - 1_790_000_000_000 % DAY_MS;
    let end = sim_cfg.end;
    let mut sim = Simulator::new(sim_cfg);
    let v = cfg.validator();
    let mut states = HashMap::new();
    while !sim.done() {
        for e in sim.next_day() {
            let e = v
                .decode(Some(e.customer_id.as_bytes()), e.json.as_bytes(), None, end)
                .unwrap();
            let slot = states.entry(e.customer_id.clone()).or_insert(None);
            *slot = ingest(slot.take(), &e, &spec).0;
        }
    }
    let names = spec.names();
    // The model without the purchase-rhythm term: the same log-odds less
    // that term, so a move of other features is judged with it held.
    let fixed = {
        let mut f = model.file().clone();
        for (k, n) in f.features.iter().enumerate() {
            if n == BGNBD_NO_PURCHASE {
                f.weights[k] = 0.0;
            }
        }
        Model::new(f, &spec).unwrap()
    };
    let (mut scored, mut named, mut steady) = (0, 0, 0);
    for s in states.values().flatten() {
        let (x, a) = features_and_score(s, end, &model, 5, &spec);
        let Assessment::Scored(sc) = a else { continue };
        scored += 1;
        for r in &sc.reasons {
            named += 1;
            assert!(r.contribution > 0.0, "{r:?}");
            // The purchase rhythm is computed by the model from purchase
            // count, recency and tenure (other behaviours' features): it
            // cannot be moved alone; its contribution, above, is positive.
            if r.feature == BGNBD_GROUP {
                continue;
            }
            // Moving this behaviour's features to the average customer's
            // lowers the score: the behaviour does raise this customer's
            // risk, the rest held where they are (the purchase rhythm too:
            // `fixed` leaves its term out, and log-odds add up).
            let f = model.file();
            let mut moved = x.clone();
            for (k, feat) in f.features.iter().enumerate() {
                if spec.group_of(feat) == r.feature {
                    let i = names.iter().position(|n| n == feat).unwrap();
                    moved[i] = f.mean[k];
                }
            }
            assert!(
                fixed.probability(&moved) < fixed.probability(&x),
                "{}: reason {:?} does not raise the risk",
                r.feature,
                r
            );
        }
        // Customers who log in a lot (0.6 a day or more over 90 days) and
        // no less than they used to are never told logins are why they may
        // leave.
        let at = |n: &str| x[names.iter().position(|x| x == n).unwrap()];
        if at("activity_login_rate_90d") > 0.6
            && at("activity_login_change_7d") >= 0.0
            && at("activity_login_change_30d") >= 0.0
        {
            steady += 1;
            assert!(
                sc.reasons.iter().all(|r| r.feature != "activity_login"),
                "a customer with frequent, steady logins is told logins are a churn reason: {:?}",
                sc.reasons
            );
        }
    }
    assert!(steady >= 30, "{steady} frequent, steady loggers checked");
    assert!(
        scored > 500 && named > 500,
        "{scored} scored, {named} reasons"
    );
}
