//! Fuzzes the event decoders (JSON, protobuf, and the Schema Registry wire
//! format with an Avro, a protobuf and a JSON Schema schema) with arbitrary
//! bytes: they must never panic, and whatever they accept must be a valid
//! event.
#![no_main]

use libfuzzer_sys::fuzz_target;

use churn_alert::config::Config;
use churn_alert::pipeline::decode::Validator;
use churn_alert::pipeline::event::EventKind;
use churn_alert::pipeline::wire::{RegisteredSchema, SchemaEntry, Schemas};

const NOW: i64 = 1_790_000_000_000;

/// Schemas 1 (Avro), 2 (the contract's .proto) and 3 (JSON Schema).
fn schemas() -> Schemas {
    let avro = r#"{"type":"record","name":"E","fields":[
        {"name":"event_id","type":"string"},{"name":"customer_id","type":"string"},
        {"name":"type","type":"string"},{"name":"occurred_at","type":"long"},
        {"name":"amount","type":["null","double"],"default":null},
        {"name":"tags","type":{"type":"array","items":"string"}},
        {"name":"attributes","type":{"type":"map","values":"string"}}]}"#;
    let proto = include_str!("../../proto/churn/v1/events.proto");
    let json = r#"{"type":"object","required":["event_id"],"properties":{"amount":{"type":"number"}}}"#;
    let mut out = Schemas::new();
    for (id, kind, text) in [(1, None, avro), (2, Some("PROTOBUF"), proto), (3, Some("JSON"), json)] {
        let mut body = serde_json::json!({ "schema": text });
        if let Some(k) = kind {
            body["schemaType"] = k.into();
        }
        let s = RegisteredSchema::from_registry_body(id, &serde_json::to_vec(&body).unwrap())
            .expect("the fuzz schemas parse");
        out.insert(id, SchemaEntry::Ready(std::sync::Arc::new(s)));
    }
    out
}

fn check(
    v: &Validator,
    data: &[u8],
    key: Option<&[u8]>,
    content_type: Option<&str>,
    schemas: &Schemas,
) {
    match v.decode_with(key, data, content_type, NOW, schemas) {
        Ok(e) => {
            assert!(!e.event_id.is_empty() && !e.customer_id.is_empty());
            assert!(e.occurred_at <= NOW + v.max_future_skew_ms);
            match e.kind {
                EventKind::Purchase { amount, .. } | EventKind::Refund { amount, .. } => {
                    assert!(amount.is_finite() && amount >= 0.0, "{amount}")
                }
                EventKind::Survey { nps } => assert!(nps <= 10),
                _ => {}
            }
        }
        Err(r) => assert!(!r.reason.is_empty()),
    }
}

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static V: Validator = Config::default().validator();
        static S: Schemas = schemas();
    }
    V.with(|v| S.with(|s| {
        // The key is the bytes' first customer-looking prefix, or none.
        let key = data.split(|b| *b == 0).next();
        for ct in [
            None,
            Some("application/json"),
            Some("application/x-protobuf"),
        ] {
            check(v, data, key, ct, s);
            check(v, data, None, ct, s);
        }
        // The same bytes framed for each schema.
        if let Some((first, rest)) = data.split_first() {
            let mut framed = vec![0, 0, 0, 0, first % 3 + 1];
            framed.extend_from_slice(rest);
            check(v, &framed, key, None, s);
        }
    }));
});
