//! The topics the service needs: missing outputs are created like the
//! input; a missing input topic stops the start naming it.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

fn partitions(broker: &Broker, topic: &str) -> Option<usize> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let md = c.fetch_metadata(None, Duration::from_secs(5)).unwrap();
    md.topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
}

/// Produces one event and waits until the service committed it.
async fn one_event_committed(broker: &Broker, cfg: &churn_alert::config::Config, svc: &Running) {
    let event = event("c-1", "e1", 0.0, "session", "");
    let (_, high) = produce(broker, &cfg.kafka.input_topic, &[event]).await;
    svc.wait_committed(&high).await;
}

async fn missing_outputs_are_created(broker: Broker) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(&broker, dir.path());
    let run = free_port();
    for t in [
        &mut cfg.kafka.input_topic,
        &mut cfg.kafka.alerts_topic,
        &mut cfg.kafka.triggers_topic,
        &mut cfg.kafka.outcomes_topic,
        &mut cfg.kafka.dlq_topic,
        &mut cfg.kafka.changelog_topic,
    ] {
        *t = format!("{t}-{run}");
    }
    // Only the input topic exists.
    broker.create(&[cfg.kafka.input_topic.as_str()]).await;
    assert_eq!(partitions(&broker, &cfg.kafka.alerts_topic), None);
    let svc = start(&cfg).await;
    one_event_committed(&broker, &cfg, &svc).await;
    let k = &cfg.kafka;
    for t in [
        &k.alerts_topic,
        &k.triggers_topic,
        &k.outcomes_topic,
        &k.dlq_topic,
        &k.changelog_topic,
    ] {
        assert_eq!(partitions(&broker, t), Some(PARTITIONS as usize), "{t}");
    }
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs tansu: --features e2e (scripts/test.sh)"
)]
async fn missing_outputs_are_created_on_tansu() {
    missing_outputs_are_created(Broker::tansu()).await;
}

/// librdkafka's mock cluster does not answer CreateTopics: the start fails
/// naming the first topic it could not create, instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_topic_that_cannot_be_created_stops_the_start_naming_it() {
    let broker = Broker::mock();
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(&broker, dir.path());
    broker.create(&[cfg.kafka.input_topic.as_str()]).await;
    let err = start_error(&cfg).await;
    assert!(
        err.contains("kafka.alerts_topic") && err.contains(&cfg.kafka.alerts_topic),
        "{err}"
    );
}

async fn start_error(cfg: &churn_alert::config::Config) -> String {
    let service = churn_alert::service::Service::with_model(cfg.clone(), test_model(cfg)).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let r = tokio::time::timeout(Duration::from_secs(60), service.run(stop))
        .await
        .expect("the start does not hang");
    r.unwrap_err().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_input_topic_stops_the_start_naming_it() {
    let broker = Broker::mock();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(&broker, dir.path());
    cfg.kafka.input_topic = "no-such-events".into();
    let err = start_error(&cfg).await;
    assert!(
        err.contains("kafka.input_topic") && err.contains("no-such-events"),
        "{err}"
    );
}

/// No broker at start: the service waits, not ready, and starts by itself
/// when the broker comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "e2e"),
    ignore = "needs tansu: --features e2e (scripts/test.sh)"
)]
async fn no_broker_at_start_waits_unready_then_runs() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cfg = test_config(&Broker::mock(), dir.path());
    cfg.kafka.brokers = format!("127.0.0.1:{port}");
    // The topics exist before the service can first reach the broker (a
    // broker on disk, stopped, then started again below): created after
    // it comes up, the service could look in between, find no input
    // topic and stop, as it must.
    let storage = "sqlite://tansu.db";
    Broker::tansu_at(port, dir.path(), storage)
        .create_topics(&cfg)
        .await;
    let svc = start(&cfg).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (status, why) = svc.http_get("/readyz").await;
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("not connected"), "{why}");
    assert_eq!(svc.http_get("/healthz").await.0, 200);

    let broker = Broker::tansu_at(port, dir.path(), storage);
    one_event_committed(&broker, &cfg, &svc).await;
    svc.stop().await;
}

/// Changelog partition p holds input partition p's state: a changelog
/// with another partition count is refused, naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changelog_with_another_partition_count_stops_the_start() {
    let broker = Broker::mock();
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(&broker, dir.path());
    let Broker::Mock(cluster) = &broker else {
        unreachable!()
    };
    let k = &cfg.kafka;
    for t in [
        &k.input_topic,
        &k.alerts_topic,
        &k.triggers_topic,
        &k.outcomes_topic,
        &k.dlq_topic,
    ] {
        cluster.create_topic(t, PARTITIONS, 1).unwrap();
    }
    cluster
        .create_topic(&k.changelog_topic, PARTITIONS + 1, 1)
        .unwrap();
    let err = start_error(&cfg).await;
    assert!(
        err.contains("kafka.changelog_topic") && err.contains("must match"),
        "{err}"
    );
}
