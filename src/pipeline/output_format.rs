//! How alerts, triggers and outcomes are written (`[outputs] format`):
//! plain JSON (the default), or Confluent's Schema Registry wire format
//! (a zero byte, the schema id in four big-endian bytes, then the data) as
//! Avro or JSON Schema, so that ksqlDB, Kafka Connect sinks, Flink SQL and
//! Confluent's own deserializers read them natively. The Avro schemas are
//! `schemas/*.avsc` (the same fields as the JSON Schemas beside them);
//! registering them, and the subjects, are the registry edge's
//! (`src/registry/`). Dead letters keep the bytes of the input they carry.

use serde::{Deserialize, Serialize};

/// The encoding of the outputs.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// JSON, no framing: readable by anything.
    #[default]
    Json,
    /// JSON after the registry's frame, validated by readers against
    /// `schemas/*.json`.
    JsonSchema,
    /// Avro binary after the registry's frame (`schemas/*.avsc`).
    Avro,
}

/// Registered schema ids, for registries that forbid registration by
/// clients (`auto.register.schemas=false` in Confluent's terms).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SchemaIds {
    pub alert: u32,
    pub trigger: u32,
    pub outcome: u32,
}

/// The `[outputs]` section.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OutputsConfig {
    /// `json` (default), `json_schema` or `avro`; the last two need
    /// `schema_registry.url`.
    pub format: Format,
    /// The ids of the schemas as registered under the subjects
    /// `<topic>-value` (TopicNameStrategy). Unset: the service registers
    /// them at start (an existing identical schema keeps its id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_ids: Option<SchemaIds>,
}

/// The three kinds of framed output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Shape {
    Alert,
    Trigger,
    Outcome,
}

impl Shape {
    pub const ALL: [Shape; 3] = [Shape::Alert, Shape::Trigger, Shape::Outcome];

    /// The schema text registered for `format` (`schemaType` AVRO or JSON).
    pub fn schema_text(self, format: Format) -> &'static str {
        match (format, self) {
            (Format::Avro, Shape::Alert) => include_str!("../../schemas/alert.v1.avsc"),
            (Format::Avro, Shape::Trigger) => include_str!("../../schemas/trigger.v2.avsc"),
            (Format::Avro, Shape::Outcome) => include_str!("../../schemas/outcome.v2.avsc"),
            (_, Shape::Alert) => include_str!("../../schemas/alert.v1.json"),
            (_, Shape::Trigger) => include_str!("../../schemas/trigger.v2.json"),
            (_, Shape::Outcome) => include_str!("../../schemas/outcome.v2.json"),
        }
    }
}

impl Format {
    /// The registry's `schemaType`.
    pub fn schema_type(self) -> &'static str {
        match self {
            Format::Avro => "AVRO",
            Format::Json | Format::JsonSchema => "JSON",
        }
    }

    /// The `content-type` header of a record in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::JsonSchema => "application/vnd.schemaregistry.v1+json",
            Format::Avro => "application/vnd.schemaregistry.v1+avro",
        }
    }
}

/// Why a record could not be put in its format (a field the schema does
/// not allow: a bug, since the outputs are made to the schemas).
#[derive(Debug, thiserror::Error)]
#[error("{shape:?} does not fit its Avro schema: {message}")]
pub struct EncodeError {
    pub shape: Shape,
    pub message: String,
}

/// Encodes outputs in a registry format with known schema ids.
#[derive(Debug)]
pub struct Framing {
    format: Format,
    /// (schema id, parsed Avro schema) by shape.
    schemas: [(u32, Option<apache_avro::Schema>); 3],
}

fn index(s: Shape) -> usize {
    s as usize
}

impl Framing {
    /// `ids` in [`Shape::ALL`]'s order; `None` for plain JSON.
    pub fn new(format: Format, ids: [u32; 3]) -> Option<Self> {
        if format == Format::Json {
            return None;
        }
        let schemas = Shape::ALL.map(|s| {
            let avro = (format == Format::Avro).then(|| {
                apache_avro::Schema::parse_str(s.schema_text(format))
                    .expect("the shipped Avro schemas parse")
            });
            (ids[index(s)], avro)
        });
        Some(Self { format, schemas })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// The framed bytes of one output, from its JSON.
    pub fn encode(&self, shape: Shape, json: &[u8]) -> Result<Vec<u8>, EncodeError> {
        let (id, avro) = &self.schemas[index(shape)];
        let mut out = Vec::with_capacity(json.len() + 5);
        out.push(0);
        out.extend_from_slice(&id.to_be_bytes());
        match avro {
            None => out.extend_from_slice(json),
            Some(schema) => {
                let fail = |message: String| EncodeError { shape, message };
                let value: serde_json::Value =
                    serde_json::from_slice(json).map_err(|e| fail(e.to_string()))?;
                let resolved = apache_avro::types::Value::from(value)
                    .resolve(schema)
                    .map_err(|e| fail(e.to_string()))?;
                let datum = apache_avro::to_avro_datum(schema, resolved)
                    .map_err(|e| fail(e.to_string()))?;
                out.extend_from_slice(&datum);
            }
        }
        Ok(out)
    }

    /// The JSON of a framed output this service wrote (the outcomes
    /// topic's reader). `None` for bytes that are not such a record.
    pub fn decode(&self, shape: Shape, bytes: &[u8]) -> Option<serde_json::Value> {
        let (0, rest) = bytes.split_first()? else {
            return None;
        };
        let data = rest.get(4..)?;
        match &self.schemas[index(shape)].1 {
            None => serde_json::from_slice(data).ok(),
            Some(schema) => {
                let mut reader = data;
                let v = apache_avro::from_avro_datum(schema, &mut reader, None).ok()?;
                serde_json::Value::try_from(v).ok()
            }
        }
    }
}

/// The JSON of an output this service wrote in any of its formats, told
/// apart by their first bytes: plain JSON, or a registry frame around JSON
/// or around Avro of the shipped schema. `None` for anything else.
pub fn decode_any(shape: Shape, bytes: &[u8]) -> Option<serde_json::Value> {
    static AVRO: std::sync::OnceLock<Framing> = std::sync::OnceLock::new();
    match bytes.split_first()? {
        (0, rest) => {
            let data = rest.get(4..)?;
            serde_json::from_slice(data).ok().or_else(|| {
                AVRO.get_or_init(|| Framing::new(Format::Avro, [0; 3]).expect("avro frames"))
                    .decode(shape, bytes)
            })
        }
        _ => serde_json::from_slice(bytes).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert_json() -> serde_json::Value {
        serde_json::json!({
            "schema_version": 1, "alert_id": "a-1", "customer_id": "c,1\"", "probability": 0.75,
            "risk_tier": "high", "model_version": "m", "reasons": [{"feature": "silence",
            "top_feature": "recency_days", "value": 30.0, "contribution": 1.5}],
            "as_of": "2026-01-01T00:00:00.000Z", "as_of_ms": 1767225600000i64, "cause": "silence",
            "customer_value": 120.5, "marketing_consent": true, "rfm": {"r": 1, "f": 2, "m": 3},
            "segment": "at_risk", "lifecycle": "active", "clv": 300.0, "value_band": "high",
            "campaign_id": null, "holdout": false, "features": {"recency_days": 30.0, "purchases_90d": 0.0}
        })
    }

    /// The Avro schema has the JSON Schema's fields, no more, no fewer.
    #[test]
    fn the_avro_schemas_have_the_json_schemas_fields() {
        for s in Shape::ALL {
            let avro: serde_json::Value =
                serde_json::from_str(s.schema_text(Format::Avro)).unwrap();
            let json: serde_json::Value =
                serde_json::from_str(s.schema_text(Format::JsonSchema)).unwrap();
            let a: Vec<&str> = avro["fields"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["name"].as_str().unwrap())
                .collect();
            let j: Vec<&str> = json["properties"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let (mut a2, mut j2) = (a.clone(), j.clone());
            a2.sort();
            j2.sort();
            assert_eq!(a2, j2, "{s:?}");
        }
    }

    #[test]
    fn avro_and_json_schema_frames_round_trip() {
        let json = serde_json::to_vec(&alert_json()).unwrap();
        let avro = Framing::new(Format::Avro, [7, 8, 9]).unwrap();
        let bytes = avro.encode(Shape::Alert, &json).unwrap();
        assert_eq!(&bytes[..5], &[0, 0, 0, 0, 7]);
        assert!(bytes.len() < json.len(), "Avro is smaller than its JSON");
        assert_eq!(avro.decode(Shape::Alert, &bytes).unwrap(), alert_json());
        assert_eq!(decode_any(Shape::Alert, &bytes).unwrap(), alert_json());
        let plain = serde_json::to_vec(&alert_json()).unwrap();
        assert_eq!(decode_any(Shape::Alert, &plain).unwrap(), alert_json());
        let js = Framing::new(Format::JsonSchema, [7, 8, 9]).unwrap();
        let bytes = js.encode(Shape::Trigger, b"{\"a\":1}").unwrap();
        assert_eq!(&bytes[..5], &[0, 0, 0, 0, 8]);
        assert_eq!(&bytes[5..], b"{\"a\":1}");
        assert!(Framing::new(Format::Json, [0; 3]).is_none());
        // A record that does not fit is an error, not a wrong record.
        let mut bad = alert_json();
        bad["probability"] = serde_json::json!("high");
        let e = avro
            .encode(Shape::Alert, &serde_json::to_vec(&bad).unwrap())
            .unwrap_err();
        assert_eq!(e.shape, Shape::Alert);
    }
}
