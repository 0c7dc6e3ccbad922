//! Traces: a `traceparent` header on an input event is carried into the
//! alert, trigger and dead letter it causes, through a span per batch and
//! a span per published output (recorded here by OpenTelemetry's in-memory
//! exporter, as an OTLP exporter would send them).

mod common;

use std::time::Duration;

use churn_alert::pipeline::model::{Model, ModelFile};
use common::*;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use tracing_subscriber::layer::SubscriberExt as _;

/// `00-<trace id>-<parent id>-01`, split.
fn fields(traceparent: &str) -> (String, String) {
    let f: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(f.len(), 4, "{traceparent}");
    (f[1].to_string(), f[2].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traceparent_is_carried_from_an_event_to_what_it_causes() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    // The service's tasks run on the runtime's threads: a global default.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let broker = Broker::mock();
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(&broker, dir.path());
    broker.create_topics(&cfg).await;
    // A model on complaints alone: one complaint alerts, with the event as
    // its cause.
    let model = Model::new(
        ModelFile {
            version: "test-complaints-1".into(),
            features: vec!["complaints_rate_30d".into()],
            mean: vec![0.0],
            scale: vec![0.001],
            weights: vec![1.0],
            intercept: -2.0,
            thresholds: None,
            segments: None,
            population: None,
            min_tenure_days: None,
            bgnbd: None,
            training: None,
        },
        &cfg.feature_spec(),
    )
    .unwrap();
    let svc = start_with_model(&cfg, model).await;

    let complaint_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let complaint_parent = "00f067aa0ba902b7";
    let bad_trace = "0af7651916cd43dd8448eb211c80319c";
    let producer = broker.producer();
    let mut high = std::collections::BTreeMap::new();
    for (payload, traceparent) in [
        (
            format!(
                r#"{{"event_id":"c1","customer_id":"c-1","type":"consent","occurred_at":"{}","marketing":true}}"#,
                at(0.0)
            ),
            None,
        ),
        (
            format!(
                r#"{{"event_id":"t1","customer_id":"c-1","type":"support_ticket","occurred_at":"{}","is_complaint":true}}"#,
                at(1.0)
            ),
            Some(format!("00-{complaint_trace}-{complaint_parent}-01")),
        ),
        (
            "not an event".to_string(),
            Some(format!("00-{bad_trace}-b7ad6b7169203331-01")),
        ),
    ] {
        let mut headers = OwnedHeaders::new().insert(Header {
            key: "tracestate",
            value: Some("vendor=abc"),
        });
        if let Some(tp) = &traceparent {
            headers = headers.insert(Header {
                key: "traceparent",
                value: Some(tp.as_str()),
            });
        }
        let d = producer
            .send(
                FutureRecord::to(&cfg.kafka.input_topic)
                    .key("c-1")
                    .payload(&payload)
                    .headers(headers),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        let h = high.entry(d.partition).or_insert(0);
        *h = (*h).max(d.offset + 1);
    }
    svc.wait_committed(&high).await;

    let alerts = read_all(&broker, &cfg.kafka.alerts_topic);
    let triggers = read_all(&broker, &cfg.kafka.triggers_topic);
    let dead = read_all(&broker, &cfg.kafka.dlq_topic);
    assert_eq!(alerts.len(), 1, "the complaint alerts");
    assert_eq!(alerts[0].json()["cause"], "event");
    assert_eq!(triggers.len(), 1, "and triggers a campaign (consent given)");
    assert_eq!(dead.len(), 1);
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    assert!(spans.iter().any(|s| s.name == "batch"), "a span per batch");

    // Each output continues the trace of the event that caused it, from a
    // publish span whose parent is the event's own span.
    for (what, r, trace) in [
        ("alert", &alerts[0], complaint_trace),
        ("trigger", &triggers[0], complaint_trace),
        ("dead letter", &dead[0], bad_trace),
    ] {
        let tp = r
            .headers
            .get("traceparent")
            .unwrap_or_else(|| panic!("the {what} has no traceparent: {:?}", r.headers));
        let (trace_id, parent_id) = fields(tp);
        assert_eq!(trace_id, trace, "the {what}'s trace");
        assert_eq!(
            r.headers.get("tracestate").map(String::as_str),
            Some("vendor=abc"),
            "the {what} keeps the tracestate"
        );
        let span = spans
            .iter()
            .find(|s| s.span_context.span_id().to_string() == parent_id)
            .unwrap_or_else(|| panic!("no recorded span is the {what}'s parent {parent_id}"));
        assert_eq!(span.name, "publish");
        assert_eq!(span.span_context.trace_id().to_string(), trace);
        if trace == complaint_trace {
            assert_eq!(span.parent_span_id.to_string(), complaint_parent);
        }
    }
    svc.stop().await;
}
