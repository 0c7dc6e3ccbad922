//! Wire decoding and validation: bytes from Kafka become an [`Event`] or a
//! [`Rejection`] that says exactly why not.
//!
//! JSON and protobuf share one set of rules: protobuf is first turned into the
//! same field map as JSON, so the two encodings can never disagree.

use std::collections::{BTreeMap, HashMap};

use prost::Message as _;
use serde_json::{Map, Value};

use crate::pipeline::event::{
    parse_rfc3339, Channel, EmailAction, Event, EventKind, Millis, Severity, SubscriptionAction,
    EVENT_TYPES,
};
use crate::pipeline::wire::{self, json_kind, SchemaEntry, Schemas};

/// Why a message was refused; the code is the `reason` label of the DLQ
/// metric and the `dlq-reason-code` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectCode {
    /// Bytes are neither valid JSON nor a valid protobuf event.
    Undecodable,
    /// Larger than `validation.max_message_bytes`.
    TooLarge,
    /// `event_id` or `customer_id` missing or empty.
    MissingId,
    /// The Kafka key is not the customer id.
    KeyMismatch,
    /// `type` missing or not one of the contract's types.
    UnknownType,
    /// A field is missing or has a value outside its domain.
    InvalidField,
    /// `occurred_at` missing or unparseable.
    InvalidTime,
    /// `occurred_at` further in the future than the allowed skew.
    FutureTime,
    /// A currency with no configured rate.
    UnknownCurrency,
    /// Older than the de-duplication window for its customer: it cannot be
    /// told apart from a duplicate, so it is not applied.
    TooLate,
    /// Framed in the Schema Registry wire format with a schema id whose
    /// schema cannot be had: the registry does not know it, it cannot be
    /// parsed, or no registry is configured.
    UnknownSchema,
    /// Framed with a known schema that the bytes do not fit.
    SchemaMismatch,
}

impl RejectCode {
    /// Every code, for metric initialisation and docs.
    pub const ALL: [RejectCode; 12] = [
        RejectCode::Undecodable,
        RejectCode::TooLarge,
        RejectCode::MissingId,
        RejectCode::KeyMismatch,
        RejectCode::UnknownType,
        RejectCode::InvalidField,
        RejectCode::InvalidTime,
        RejectCode::FutureTime,
        RejectCode::UnknownCurrency,
        RejectCode::TooLate,
        RejectCode::UnknownSchema,
        RejectCode::SchemaMismatch,
    ];

    /// The code as written in headers and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::Undecodable => "undecodable",
            RejectCode::TooLarge => "too_large",
            RejectCode::MissingId => "missing_id",
            RejectCode::KeyMismatch => "key_mismatch",
            RejectCode::UnknownType => "unknown_type",
            RejectCode::InvalidField => "invalid_field",
            RejectCode::InvalidTime => "invalid_time",
            RejectCode::FutureTime => "future_time",
            RejectCode::UnknownCurrency => "unknown_currency",
            RejectCode::TooLate => "too_late",
            RejectCode::UnknownSchema => "unknown_schema",
            RejectCode::SchemaMismatch => "schema_mismatch",
        }
    }
}

/// A refused message: a code for machines, a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: RejectCode,
    pub reason: String,
}

impl Rejection {
    pub fn new(code: RejectCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// The message encoding, from the `content-type` header or sniffed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Protobuf,
}

impl Encoding {
    /// Reads a `content-type` header value; `None` for values it does not know.
    pub fn from_content_type(value: &str) -> Option<Self> {
        let v = value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match v.as_str() {
            "application/json" | "text/json" => Some(Encoding::Json),
            "application/protobuf"
            | "application/x-protobuf"
            | "application/vnd.google.protobuf" => Some(Encoding::Protobuf),
            _ => None,
        }
    }

    /// Guesses from the bytes: JSON objects start with `{` (after white
    /// space), which is never the first byte of a valid protobuf event.
    pub fn sniff(bytes: &[u8]) -> Self {
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Encoding::Json,
            _ => Encoding::Protobuf,
        }
    }
}

/// The rules a message must pass, from the `validation` config.
#[derive(Debug, Clone)]
pub struct Validator {
    /// ISO 4217 code all amounts are converted to.
    pub base_currency: String,
    /// Units of base currency per unit of each currency.
    pub rates: HashMap<String, f64>,
    /// How far in the future (against the wall clock) an event may be.
    pub max_future_skew_ms: Millis,
    /// Largest accepted message, in bytes.
    pub max_message_bytes: usize,
}

/// Key marker for events read from a file, which carry no message key.
const UNKEYED: &[u8] = b"\0unkeyed";

impl Validator {
    /// Decodes and validates one event read from a file (JSON lines): the
    /// same rules as [`Validator::decode`] without the message-key check.
    pub fn decode_line(&self, line: &[u8], now: Millis) -> Result<Event, Rejection> {
        self.decode(Some(UNKEYED), line, None, now)
    }

    /// Decodes and validates one Kafka message that is not framed for a
    /// schema registry (see [`Validator::decode_with`]).
    pub fn decode(
        &self,
        key: Option<&[u8]>,
        payload: &[u8],
        content_type: Option<&str>,
        now: Millis,
    ) -> Result<Event, Rejection> {
        self.decode_with(key, payload, content_type, now, &Schemas::new())
    }

    /// Decodes and validates one Kafka message.
    ///
    /// `key` is the Kafka message key, `content_type` the header if any,
    /// `now` the wall clock used for the future-time check. A message in
    /// the Schema Registry wire format is decoded with its schema from
    /// `schemas` (the content type is then not used).
    pub fn decode_with(
        &self,
        key: Option<&[u8]>,
        payload: &[u8],
        content_type: Option<&str>,
        now: Millis,
        schemas: &Schemas,
    ) -> Result<Event, Rejection> {
        if payload.len() > self.max_message_bytes {
            return Err(Rejection::new(
                RejectCode::TooLarge,
                format!(
                    "message is {} bytes, over the limit of {} (validation.max_message_bytes)",
                    payload.len(),
                    self.max_message_bytes
                ),
            ));
        }
        let fields = if payload.first() == Some(&wire::MAGIC) {
            framed_fields(payload, schemas)?
        } else {
            match content_type
                .and_then(Encoding::from_content_type)
                .unwrap_or_else(|| Encoding::sniff(payload))
            {
                Encoding::Json => json_fields(payload)?,
                Encoding::Protobuf => protobuf_fields(payload)?,
            }
        };
        let event = self.validate(&fields, now)?;
        if key == Some(UNKEYED) {
            return Ok(event);
        }
        match key {
            Some(k) if k == event.customer_id.as_bytes() => Ok(event),
            Some(k) => Err(Rejection::new(
                RejectCode::KeyMismatch,
                format!(
                    "message key {:?} is not the customer_id {:?}; events must be keyed by customer id",
                    String::from_utf8_lossy(k),
                    event.customer_id
                ),
            )),
            None => Err(Rejection::new(
                RejectCode::KeyMismatch,
                "message has no key; events must be keyed by customer id",
            )),
        }
    }

    /// Validates a decoded field map (the JSON object shape).
    pub fn validate(&self, f: &Map<String, Value>, now: Millis) -> Result<Event, Rejection> {
        let event_id = required_id(f, "event_id")?;
        let customer_id = required_id(f, "customer_id")?;
        let type_name = match f.get("type") {
            Some(Value::String(s)) => s.as_str(),
            Some(other) => {
                return Err(Rejection::new(
                    RejectCode::UnknownType,
                    format!("type must be a string, got {other}"),
                ))
            }
            None => return Err(Rejection::new(RejectCode::UnknownType, "type is missing")),
        };
        let occurred_at = parse_time(f.get("occurred_at"))?;
        if occurred_at > now.saturating_add(self.max_future_skew_ms) {
            return Err(Rejection::new(
                RejectCode::FutureTime,
                format!(
                    "occurred_at is {} s in the future, more than the allowed {} s (validation.max_future_skew)",
                    (occurred_at - now) / 1000,
                    self.max_future_skew_ms / 1000
                ),
            ));
        }
        let attributes = match f.get("attributes") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(m)) => {
                let mut out = BTreeMap::new();
                for (k, v) in m {
                    match v {
                        Value::String(s) => {
                            out.insert(k.clone(), s.clone());
                        }
                        other => {
                            return Err(invalid(format!(
                                "attributes.{k} must be a string, got {other}"
                            )))
                        }
                    }
                }
                out
            }
            Some(other) => {
                return Err(invalid(format!(
                    "attributes must be an object of strings, got {other}"
                )))
            }
        };
        let kind = match type_name {
            "purchase" => EventKind::Purchase {
                amount: self.money(f)?,
                order_id: opt_str(f, "order_id")?,
            },
            "refund" => EventKind::Refund {
                amount: self.money(f)?,
                order_id: opt_str(f, "order_id")?,
            },
            "session" => EventKind::Session {
                duration_seconds: opt_number(f, "duration_seconds", 0.0, f64::MAX)?.unwrap_or(0.0),
                page_views: opt_int(f, "page_views", 0, i64::MAX)?.unwrap_or(0) as u64,
                channel: opt_enum(f, "channel", Channel::parse, Channel::ALL)?,
            },
            "email" => EventKind::Email {
                action: req_enum(f, "action", EmailAction::parse, EmailAction::ALL)?,
                campaign_id: opt_str(f, "campaign_id")?,
            },
            "support_ticket" => EventKind::SupportTicket {
                severity: opt_enum(f, "severity", Severity::parse, Severity::ALL)?
                    .unwrap_or(Severity::Medium),
                category: opt_str(f, "category")?,
                is_complaint: opt_bool(f, "is_complaint")?.unwrap_or(false),
                satisfaction: opt_int(f, "satisfaction", 1, 5)?.map(|v| v as u8),
            },
            "subscription" => EventKind::Subscription {
                action: req_enum(
                    f,
                    "action",
                    SubscriptionAction::parse,
                    SubscriptionAction::ALL,
                )?,
                plan: opt_str(f, "plan")?,
                monthly_value: match opt_number(f, "monthly_value", 0.0, f64::MAX)? {
                    Some(v) => Some(v * self.rate(f)?),
                    None => None,
                },
            },
            "survey" => EventKind::Survey {
                nps: opt_int(f, "nps", 0, 10)?
                    .ok_or_else(|| invalid("nps is required for a survey event"))?
                    as u8,
            },
            "activity" => {
                let name = opt_str(f, "name")?
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| invalid("name is required for an activity event"))?;
                EventKind::Activity {
                    name,
                    count: opt_int(f, "count", 0, i64::MAX)?.unwrap_or(1) as u64,
                }
            }
            "consent" => EventKind::Consent {
                marketing: opt_bool(f, "marketing")?
                    .ok_or_else(|| invalid("marketing is required for a consent event"))?,
            },
            "erasure" => EventKind::Erasure,
            other => {
                return Err(Rejection::new(
                    RejectCode::UnknownType,
                    format!("type {other:?} is not one of {}", EVENT_TYPES.join(", ")),
                ))
            }
        };
        Ok(Event {
            event_id,
            customer_id,
            occurred_at,
            attributes,
            kind,
        })
    }

    /// Conversion rate of the event's `currency` (base currency when absent).
    fn rate(&self, f: &Map<String, Value>) -> Result<f64, Rejection> {
        match opt_str(f, "currency")? {
            None => Ok(1.0),
            Some(c) if c == self.base_currency => Ok(1.0),
            Some(c) => self.rates.get(&c).copied().ok_or_else(|| {
                Rejection::new(
                    RejectCode::UnknownCurrency,
                    format!(
                        "currency {c:?} has no rate to {} (validation.currency_rates)",
                        self.base_currency
                    ),
                )
            }),
        }
    }

    /// The required `amount`, converted to the base currency.
    fn money(&self, f: &Map<String, Value>) -> Result<f64, Rejection> {
        let amount =
            opt_number(f, "amount", 0.0, f64::MAX)?.ok_or_else(|| invalid("amount is required"))?;
        Ok(amount * self.rate(f)?)
    }
}

fn invalid(reason: impl Into<String>) -> Rejection {
    Rejection::new(RejectCode::InvalidField, reason)
}

fn json_fields(payload: &[u8]) -> Result<Map<String, Value>, Rejection> {
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(Rejection::new(
            RejectCode::Undecodable,
            format!("JSON must be an object, got {}", json_kind(&other)),
        )),
        Err(e) => Err(Rejection::new(
            RejectCode::Undecodable,
            format!("not valid JSON: {e}"),
        )),
    }
}

/// Decodes a protobuf `churn.v1.CustomerEvent` into the JSON field shape.
fn protobuf_fields(payload: &[u8]) -> Result<Map<String, Value>, Rejection> {
    let e = crate::pipeline::proto::CustomerEvent::decode(payload).map_err(|err| {
        Rejection::new(
            RejectCode::Undecodable,
            format!("neither JSON nor a valid protobuf churn.v1.CustomerEvent: {err}"),
        )
    })?;
    if payload.is_empty() {
        return Err(Rejection::new(RejectCode::Undecodable, "empty message"));
    }
    Ok(protobuf_to_map(e))
}

/// The field map of a message in the Schema Registry wire format.
fn framed_fields(payload: &[u8], schemas: &Schemas) -> Result<Map<String, Value>, Rejection> {
    let id = wire::framed_id(payload).ok_or_else(|| {
        Rejection::new(
            RejectCode::Undecodable,
            format!(
                "starts with the schema registry's magic byte 0 but is {} bytes, shorter than the 5-byte header",
                payload.len()
            ),
        )
    })?;
    match schemas.get(&id) {
        Some(SchemaEntry::Ready(schema)) => schema
            .decode(&payload[5..])
            .map_err(|why| Rejection::new(RejectCode::SchemaMismatch, why)),
        Some(SchemaEntry::Unusable(why)) => {
            Err(Rejection::new(RejectCode::UnknownSchema, why.clone()))
        }
        None => Err(Rejection::new(
            RejectCode::UnknownSchema,
            format!(
                "framed with schema id {id} in the schema registry wire format, but no schema_registry is configured"
            ),
        )),
    }
}

/// Maps a protobuf event onto the JSON field names (unset fields are absent).
pub fn protobuf_to_map(e: crate::pipeline::proto::CustomerEvent) -> Map<String, Value> {
    use crate::pipeline::proto::customer_event::Occurred;
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    if !e.event_id.is_empty() {
        put("event_id", Value::from(e.event_id));
    }
    if !e.customer_id.is_empty() {
        put("customer_id", Value::from(e.customer_id));
    }
    if !e.r#type.is_empty() {
        put("type", Value::from(e.r#type));
    }
    match e.occurred {
        Some(Occurred::OccurredAt(s)) => put("occurred_at", Value::from(s)),
        Some(Occurred::OccurredAtMs(ms)) => put("occurred_at", Value::from(ms)),
        None => {}
    }
    if !e.attributes.is_empty() {
        let attrs: Map<String, Value> = e
            .attributes
            .into_iter()
            .map(|(k, v)| (k, Value::from(v)))
            .collect();
        put("attributes", Value::Object(attrs));
    }
    let num = |v: f64| {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    };
    let fields: [(&str, Option<Value>); 19] = [
        ("amount", e.amount.map(num)),
        ("currency", e.currency.map(Value::from)),
        ("order_id", e.order_id.map(Value::from)),
        ("duration_seconds", e.duration_seconds.map(num)),
        ("page_views", e.page_views.map(Value::from)),
        ("channel", e.channel.map(Value::from)),
        ("action", e.action.map(Value::from)),
        ("campaign_id", e.campaign_id.map(Value::from)),
        ("severity", e.severity.map(Value::from)),
        ("category", e.category.map(Value::from)),
        ("is_complaint", e.is_complaint.map(Value::from)),
        ("satisfaction", e.satisfaction.map(Value::from)),
        ("plan", e.plan.map(Value::from)),
        ("monthly_value", e.monthly_value.map(num)),
        ("nps", e.nps.map(Value::from)),
        ("name", e.name.map(Value::from)),
        ("count", e.count.map(Value::from)),
        ("marketing", e.marketing.map(Value::from)),
        ("_", None),
    ];
    for (k, v) in fields {
        if let Some(v) = v {
            // A NaN amount has no JSON form; keep it visible as an invalid value.
            let v = if v.is_null() { Value::from("NaN") } else { v };
            put(k, v);
        }
    }
    m
}

fn required_id(f: &Map<String, Value>, key: &str) -> Result<String, Rejection> {
    match f.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(Rejection::new(
            RejectCode::MissingId,
            format!("{key} is empty"),
        )),
        None | Some(Value::Null) => Err(Rejection::new(
            RejectCode::MissingId,
            format!("{key} is missing"),
        )),
        Some(other) => Err(Rejection::new(
            RejectCode::MissingId,
            format!("{key} must be a non-empty string, got {other}"),
        )),
    }
}

fn parse_time(v: Option<&Value>) -> Result<Millis, Rejection> {
    let bad = |why: String| Rejection::new(RejectCode::InvalidTime, why);
    match v {
        None | Some(Value::Null) => Err(bad("occurred_at is missing".into())),
        Some(Value::String(s)) => {
            parse_rfc3339(s).map_err(|e| bad(format!("occurred_at {s:?} is not RFC 3339: {e}")))
        }
        Some(Value::Number(n)) => n.as_i64().filter(|ms| *ms >= 0).ok_or_else(|| {
            bad(format!(
                "occurred_at {n} is not a non-negative integer of epoch milliseconds"
            ))
        }),
        Some(other) => Err(bad(format!(
            "occurred_at must be RFC 3339 text or epoch milliseconds, got {other}"
        ))),
    }
}

fn opt_str(f: &Map<String, Value>, key: &str) -> Result<Option<String>, Rejection> {
    match f.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid(format!("{key} must be a string, got {other}"))),
    }
}

fn opt_bool(f: &Map<String, Value>, key: &str) -> Result<Option<bool>, Rejection> {
    match f.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(invalid(format!("{key} must be true or false, got {other}"))),
    }
}

fn opt_number(
    f: &Map<String, Value>,
    key: &str,
    min: f64,
    max: f64,
) -> Result<Option<f64>, Rejection> {
    match f.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let v = n.as_f64().unwrap_or(f64::NAN);
            if v.is_finite() && v >= min && v <= max {
                Ok(Some(v))
            } else {
                Err(invalid(format!("{key} must be a number >= {min}, got {n}")))
            }
        }
        Some(other) => Err(invalid(format!(
            "{key} must be a number >= {min}, got {other}"
        ))),
    }
}

fn opt_int(
    f: &Map<String, Value>,
    key: &str,
    min: i64,
    max: i64,
) -> Result<Option<i64>, Rejection> {
    match f.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) if v >= min && v <= max => Ok(Some(v)),
            _ => Err(invalid(format!(
                "{key} must be a whole number from {min} to {max}, got {n}"
            ))),
        },
        Some(other) => Err(invalid(format!(
            "{key} must be a whole number from {min} to {max}, got {other}"
        ))),
    }
}

fn opt_enum<T>(
    f: &Map<String, Value>,
    key: &str,
    parse: fn(&str) -> Option<T>,
    all: &[&str],
) -> Result<Option<T>, Rejection> {
    match opt_str(f, key)? {
        None => Ok(None),
        Some(s) => parse(&s)
            .map(Some)
            .ok_or_else(|| invalid(format!("{key} {s:?} is not one of {}", all.join(", ")))),
    }
}

fn req_enum<T>(
    f: &Map<String, Value>,
    key: &str,
    parse: fn(&str) -> Option<T>,
    all: &[&str],
) -> Result<T, Rejection> {
    opt_enum(f, key, parse, all)?
        .ok_or_else(|| invalid(format!("{key} is required, one of {}", all.join(", "))))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn validator() -> Validator {
        Validator {
            base_currency: "EUR".into(),
            rates: HashMap::from([("USD".to_string(), 0.9)]),
            max_future_skew_ms: 300_000,
            max_message_bytes: 4096,
        }
    }

    const NOW: Millis = 1_795_000_000_000; // 2026-11-18

    fn decode_json(json: &str) -> Result<Event, Rejection> {
        let v: Value = serde_json::from_str(json).unwrap();
        let key = v
            .get("customer_id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        validator().decode(Some(key.as_bytes()), json.as_bytes(), None, NOW)
    }

    fn code(json: &str) -> RejectCode {
        decode_json(json).expect_err("should be refused").code
    }

    #[test]
    fn decodes_the_contract_example() {
        let e = decode_json(
            r#"{"event_id":"e-1","customer_id":"c-42","type":"purchase","occurred_at":"2026-11-10T10:00:00Z",
                "amount":49.90,"currency":"USD","order_id":"o-9","attributes":{"country":"DE"}}"#,
        )
        .unwrap();
        assert_eq!(e.customer_id, "c-42");
        assert_eq!(e.attributes.get("country").map(String::as_str), Some("DE"));
        match e.kind {
            EventKind::Purchase { amount, .. } => assert!((amount - 49.90 * 0.9).abs() < 1e-9),
            other => panic!("{other:?}"),
        }
        assert_eq!(e.occurred_at, 1_794_304_800_000);
    }

    #[test]
    fn epoch_millis_time_is_accepted() {
        let e = decode_json(
            r#"{"event_id":"e","customer_id":"c","type":"erasure","occurred_at":1700000000000}"#,
        )
        .unwrap();
        assert_eq!(e.occurred_at, 1_700_000_000_000);
    }

    #[test]
    fn each_bad_input_has_its_reason() {
        let ok = |extra: &str| {
            format!(
                r#"{{"event_id":"e","customer_id":"c","occurred_at":"2026-11-10T10:00:00Z",{extra}}}"#
            )
        };
        assert_eq!(code(&ok(r#""type":"teleport""#)), RejectCode::UnknownType);
        assert_eq!(
            code(&ok(r#""type":"purchase","amount":-1"#)),
            RejectCode::InvalidField
        );
        assert_eq!(code(&ok(r#""type":"purchase""#)), RejectCode::InvalidField);
        assert_eq!(
            code(&ok(r#""type":"survey","nps":11"#)),
            RejectCode::InvalidField
        );
        assert_eq!(
            code(&ok(r#""type":"email","action":"opened""#)),
            RejectCode::InvalidField
        );
        assert_eq!(
            code(&ok(r#""type":"purchase","amount":5,"currency":"XYZ""#)),
            RejectCode::UnknownCurrency
        );
        assert_eq!(
            code(r#"{"event_id":"","customer_id":"c","type":"erasure","occurred_at":1}"#),
            RejectCode::MissingId
        );
        assert_eq!(
            code(
                r#"{"event_id":"e","customer_id":"c","type":"erasure","occurred_at":"yesterday"}"#
            ),
            RejectCode::InvalidTime
        );
        assert_eq!(
            code(
                r#"{"event_id":"e","customer_id":"c","type":"erasure","occurred_at":"2030-01-01T00:00:00Z"}"#
            ),
            RejectCode::FutureTime
        );
        let v = validator();
        assert_eq!(
            v.decode(Some(b"c"), b"\x07\x01garbage\xff", None, NOW)
                .unwrap_err()
                .code,
            RejectCode::Undecodable
        );
        // The Schema Registry's magic byte 0: too short for its header,
        // and a schema id with no registry configured.
        assert_eq!(
            v.decode(Some(b"c"), b"\x00\x01", None, NOW)
                .unwrap_err()
                .code,
            RejectCode::Undecodable
        );
        let framed = v
            .decode(Some(b"c"), b"\x00\x00\x00\x00\x07{}", None, NOW)
            .unwrap_err();
        assert_eq!(framed.code, RejectCode::UnknownSchema);
        assert!(framed.reason.contains("schema id 7"), "{}", framed.reason);
        assert_eq!(
            v.decode(Some(b"c"), b"[1,2]", None, NOW).unwrap_err().code,
            RejectCode::Undecodable
        );
        let big = vec![b' '; 5000];
        assert_eq!(
            v.decode(Some(b"c"), &big, None, NOW).unwrap_err().code,
            RejectCode::TooLarge
        );
        let good = br#"{"event_id":"e","customer_id":"c","type":"erasure","occurred_at":1}"#;
        assert_eq!(
            v.decode(Some(b"x"), good, None, NOW).unwrap_err().code,
            RejectCode::KeyMismatch
        );
        assert_eq!(
            v.decode(None, good, None, NOW).unwrap_err().code,
            RejectCode::KeyMismatch
        );
    }

    #[test]
    fn protobuf_and_json_decode_to_the_same_event() {
        let pb = crate::pipeline::proto::CustomerEvent {
            event_id: "e-7".into(),
            customer_id: "c-1".into(),
            r#type: "support_ticket".into(),
            occurred: Some(
                crate::pipeline::proto::customer_event::Occurred::OccurredAt(
                    "2026-11-10T10:00:00Z".into(),
                ),
            ),
            severity: Some("high".into()),
            is_complaint: Some(true),
            satisfaction: Some(2),
            ..Default::default()
        };
        let bytes = pb.encode_to_vec();
        let v = validator();
        let from_pb = v.decode(Some(b"c-1"), &bytes, None, NOW).unwrap();
        let from_pb_header = v
            .decode(Some(b"c-1"), &bytes, Some("application/x-protobuf"), NOW)
            .unwrap();
        let from_json = decode_json(
            r#"{"event_id":"e-7","customer_id":"c-1","type":"support_ticket","occurred_at":"2026-11-10T10:00:00Z",
                "severity":"high","is_complaint":true,"satisfaction":2}"#,
        )
        .unwrap();
        assert_eq!(from_pb, from_json);
        assert_eq!(from_pb_header, from_json);
        // The same rules apply: an out-of-range value is refused from protobuf too.
        let bad = crate::pipeline::proto::CustomerEvent {
            r#type: "survey".into(),
            nps: Some(11),
            ..pb
        };
        assert_eq!(
            v.decode(Some(b"c-1"), &bad.encode_to_vec(), None, NOW)
                .unwrap_err()
                .code,
            RejectCode::InvalidField
        );
    }

    #[test]
    fn nan_amount_from_protobuf_is_invalid() {
        let pb = crate::pipeline::proto::CustomerEvent {
            event_id: "e".into(),
            customer_id: "c".into(),
            r#type: "purchase".into(),
            occurred: Some(crate::pipeline::proto::customer_event::Occurred::OccurredAtMs(1)),
            amount: Some(f64::NAN),
            ..Default::default()
        };
        let err = validator()
            .decode(Some(b"c"), &pb.encode_to_vec(), None, NOW)
            .unwrap_err();
        assert_eq!(err.code, RejectCode::InvalidField, "{}", err.reason);
    }
}
