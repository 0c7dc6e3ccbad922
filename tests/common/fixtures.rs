//! Test data and configs: event time, the test model, configs for
//! in-process and real-process runs.

use super::*;

/// Input partitions in every test.
pub const PARTITIONS: i32 = 3;
/// Event time of "day 0" in the tests: fixed, in the past.
pub const T0: Millis = 1_788_220_800_000; // 2026-09-01T00:00:00Z

pub fn at(day: f64) -> String {
    rfc3339(T0 + (day * DAY_MS as f64) as Millis)
}

/// A test model: the churn probability rises with days of silence
/// (0.5 at 10 days, 0.7 at about 11.7 days).
pub fn test_model(cfg: &Config) -> Model {
    Model::new(
        ModelFile {
            version: "test-silence-1".into(),
            features: vec!["recency_days".into(), "complaints_rate_30d".into()],
            mean: vec![10.0, 0.0],
            scale: vec![2.0, 0.05],
            weights: vec![1.0, 0.5],
            intercept: 0.0,
            thresholds: None,
            segments: None,
            population: None,
            min_tenure_days: None,
            bgnbd: None,
            training: None,
        },
        &cfg.feature_spec(),
    )
    .unwrap()
}

/// Config for a test run against `broker`, state in `dir`.
pub fn test_config(broker: &Broker, dir: &Path) -> Config {
    let mut c = Config::default();
    c.kafka.brokers = broker.bootstrap();
    c.kafka.batch_linger_ms = 20;
    c.clock.mode = churn_alert::config::ClockMode::Event;
    c.store.path = dir.join("state");
    c.admin.listen = "127.0.0.1:0".into();
    c.validation.max_message_bytes = 2048;
    c.policy.contact.quiet_hours.clear();
    c.policy.holdout.share = 0.0;
    c
}

/// The config of a real `churn-alert run` process started by
/// [`spawn_service`] (default policy and validation: it is configured by
/// its environment only), for runs that compare with it.
pub fn process_config(broker: &Broker, dir: &Path) -> Config {
    let mut c = test_config(broker, dir);
    c.policy = Config::default().policy;
    c.validation = Config::default().validation;
    c
}

/// `base` as run `run`: its own group, topics and state directory.
pub fn named_run(base: &Config, run: &str, dir: &Path) -> Config {
    let mut c = base.clone();
    own_topics(&mut c, run);
    c.store.path = dir.join(run);
    c
}

/// Gives a run its own consumer group and output and changelog topics, so
/// runs on one broker do not see each other.
pub fn own_topics(cfg: &mut Config, run: &str) {
    cfg.kafka.group_id = format!("{run}-group");
    cfg.kafka.alerts_topic = format!("{run}-alerts");
    cfg.kafka.triggers_topic = format!("{run}-triggers");
    cfg.kafka.dlq_topic = format!("{run}-dlq");
    cfg.kafka.outcomes_topic = format!("{run}-outcomes");
    cfg.kafka.changelog_topic = format!("{run}-changelog");
}

/// The shipped model, as the real process loads it.
pub fn shipped_model(cfg: &Config) -> Model {
    Model::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("models/churn-model.json"),
        &cfg.feature_spec(),
    )
    .unwrap()
}

/// A config file holding only `policy` (what a test writes for a spawned
/// process or a `POST /policy/reload` to read).
pub fn policy_toml(policy: &churn_alert::pipeline::settings::PolicyConfig) -> String {
    #[derive(serde::Serialize)]
    struct File<'a> {
        policy: &'a churn_alert::pipeline::settings::PolicyConfig,
    }
    toml::to_string(&File { policy }).unwrap()
}
