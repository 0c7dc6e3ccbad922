//! Traces: spans per batch and per published output, exported by OTLP when
//! `log.otlp_endpoint` is set (see `main.rs`), with W3C Trace Context
//! carried from an input's `traceparent` header into the outputs it
//! causes.
//!
//! The processor copies an input's `traceparent`/`tracestate` onto its
//! alerts, triggers and dead letters (see
//! [`crate::kafka::record::trace_context`]); at publish time
//! [`publish_span`] makes the output's span a child of that context and,
//! when spans are exported, rewrites the header so that the output's
//! consumers continue from the publish span. Without an exporter the
//! header is passed on unchanged.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Reads W3C headers from Kafka headers.
struct Headers<'a>(&'a [(String, Vec<u8>)]);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// Writes W3C headers into Kafka headers, replacing any of the same name.
struct HeadersMut<'a>(&'a mut Vec<(String, Vec<u8>)>);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.retain(|(k, _)| k != key);
        if !value.is_empty() {
            self.0.push((key.to_string(), value.into_bytes()));
        }
    }
}

/// A span for one output being published (alert, trigger, outcome, dead
/// letter), child of the trace its headers carry, else of the current
/// batch span. When spans are recorded, the output's `traceparent` is
/// rewritten to name this span. Keep it until the output is delivered.
pub fn publish_span(kind: &'static str, headers: &mut Vec<(String, Vec<u8>)>) -> tracing::Span {
    let span = tracing::info_span!("publish", otel.kind = "producer", output = kind);
    let propagator = TraceContextPropagator::new();
    let parent = propagator.extract(&Headers(headers));
    let carried = headers.iter().any(|(k, _)| k == "traceparent");
    if parent.span().span_context().is_valid() {
        // Fails only when the span is not recorded (no exporter).
        let _ = span.set_parent(parent);
    } else if carried {
        // A header this SDK does not read (flags of a later revision, say)
        // goes on unchanged rather than being replaced by another trace.
        return span;
    }
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        propagator.inject_context(&cx, &mut HeadersMut(headers));
    }
    span
}

/// A tracer provider exporting spans in batches by OTLP over HTTP to
/// `endpoint` (the full traces URL).
pub fn otlp_provider(endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("churn-alert");
    }
    let resource = resource.build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}
