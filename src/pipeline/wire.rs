//! Confluent's Schema Registry wire format: a message that starts with the
//! magic byte 0 carries a 4-byte big-endian schema id, and (for protobuf)
//! the message indexes, before the encoded value. The schema itself comes
//! from the registry (fetched at the edge); here it is parsed and used to
//! turn the value into the same field map as a plain JSON event, so every
//! encoding passes one set of rules.
//!
//! - Avro (`apache-avro`): the value is one Avro datum of the record schema.
//! - Protobuf (`protox` compiles the registered `.proto` text,
//!   `prost-reflect` decodes with it): field names, not numbers, are what
//!   count, so a producer's own message with the contract's field names
//!   fits.
//! - JSON Schema (`jsonschema`): the value is JSON and must validate
//!   against the registered schema.
//!
//! A byte 0 never starts a plain event: JSON starts with `{` and a protobuf
//! field tag is never 0.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

/// The largest string, byte array or item count an Avro datum may claim:
/// more than a Kafka message holds (a process-wide apache-avro setting).
pub const AVRO_MAX_ALLOCATION: usize = 8 << 20;

/// The first byte of a framed message.
pub const MAGIC: u8 = 0;

/// The schema id of a framed message; `None` when the message is not
/// framed (or too short to be).
pub fn framed_id(payload: &[u8]) -> Option<u32> {
    match payload {
        [MAGIC, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

/// What is known of the schema ids met so far; the edge fills it before a
/// batch is decoded.
#[derive(Debug, Clone)]
pub enum SchemaEntry {
    /// Fetched and parsed.
    Ready(Arc<RegisteredSchema>),
    /// The registry does not know the id, or its schema cannot be used:
    /// messages framed with it are dead-lettered as `unknown_schema`.
    Unusable(String),
}

/// Schema entries by id.
pub type Schemas = HashMap<u32, SchemaEntry>;

/// Schema ids kept before those that could not be had are forgotten.
pub const SCHEMAS_KEPT: usize = 10_000;

/// Before `more` ids are fetched for a batch: past [`SCHEMAS_KEPT`] ids,
/// those that could not be had are forgotten (asked for again when met
/// again), so a stream of made-up ids cannot grow memory without bound.
/// Never during a batch, which needs its own.
pub fn make_room(schemas: &mut Schemas, more: usize) {
    if schemas.len() + more > SCHEMAS_KEPT {
        schemas.retain(|_, e| matches!(e, SchemaEntry::Ready(_)));
    }
}

/// The kind of a registered schema (`schemaType`; absent means Avro).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaKind {
    Avro,
    Protobuf,
    Json,
}

impl SchemaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaKind::Avro => "AVRO",
            SchemaKind::Protobuf => "PROTOBUF",
            SchemaKind::Json => "JSON",
        }
    }
}

/// A schema from the registry, ready to decode with.
pub struct RegisteredSchema {
    pub id: u32,
    pub kind: SchemaKind,
    parsed: Parsed,
}

enum Parsed {
    Avro(apache_avro::Schema),
    Protobuf(prost_reflect::FileDescriptor),
    Json(Box<jsonschema::Validator>),
}

impl std::fmt::Debug for RegisteredSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "schema {} ({})", self.id, self.kind.as_str())
    }
}

/// Why a registry answer gives no schema to decode with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaError {
    /// Not the registry's JSON at all (a proxy's page, a file being
    /// written): the source is not answering as a registry.
    NotAnAnswer(String),
    /// A schema that cannot be used: its messages are `unknown_schema`.
    Unusable(String),
}

impl std::fmt::Display for SchemaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotAnAnswer(s) | Self::Unusable(s) => f.write_str(s),
        }
    }
}

/// Refuses Avro schemas whose data could make the decoder recurse or
/// allocate without bound: a record that contains itself (each level of
/// nesting costs a byte, so 64 KiB would nest 64,000 deep), and arrays of
/// items that take no bytes (each block's count would allocate that many
/// values for free). `stack`: the records being walked.
fn avro_bounded(s: &apache_avro::Schema, stack: &mut Vec<String>) -> Result<(), String> {
    use apache_avro::Schema as S;
    match s {
        S::Record(r) => {
            stack.push(r.name.fullname(None));
            for f in &r.fields {
                avro_bounded(&f.schema, stack)?;
            }
            stack.pop();
        }
        S::Ref { name } => {
            let n = name.fullname(None);
            if stack.contains(&n) {
                return Err(format!(
                    "the Avro type {n} contains itself, which is not supported"
                ));
            }
        }
        S::Array(a) => {
            if avro_zero_size(&a.items) {
                return Err("an Avro array of items that take no bytes is not supported".into());
            }
            avro_bounded(&a.items, stack)?;
        }
        S::Map(m) => avro_bounded(&m.types, stack)?,
        S::Union(u) => {
            for v in u.variants() {
                avro_bounded(v, stack)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn avro_zero_size(s: &apache_avro::Schema) -> bool {
    use apache_avro::Schema as S;
    match s {
        S::Null => true,
        S::Fixed(f) => f.size == 0,
        S::Record(r) => r.fields.iter().all(|f| avro_zero_size(&f.schema)),
        _ => false,
    }
}

/// The body of the registry's `GET /schemas/ids/{id}`.
#[derive(serde::Deserialize)]
struct Body {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Value>,
}

impl RegisteredSchema {
    /// Parses the body of `GET /schemas/ids/{id}` (the same JSON is what a
    /// local schema file holds).
    pub fn from_registry_body(id: u32, body: &[u8]) -> Result<Self, SchemaError> {
        let body: Body = serde_json::from_slice(body).map_err(|e| {
            SchemaError::NotAnAnswer(format!(
                "schema {id}: the answer is not the registry's JSON for a schema: {e}"
            ))
        })?;
        Self::from_body(id, body).map_err(SchemaError::Unusable)
    }

    fn from_body(id: u32, body: Body) -> Result<Self, String> {
        let kind = match body.schema_type.as_deref().unwrap_or("AVRO") {
            "AVRO" => SchemaKind::Avro,
            "PROTOBUF" => SchemaKind::Protobuf,
            "JSON" => SchemaKind::Json,
            other => {
                return Err(format!(
                    "schema {id}: schema type {other:?} is not supported"
                ))
            }
        };
        let parsed = match kind {
            SchemaKind::Avro => {
                let schema = apache_avro::Schema::parse_str(&body.schema)
                    .map_err(|e| format!("schema {id}: not a valid Avro schema: {e}"))?;
                avro_bounded(&schema, &mut Vec::new()).map_err(|e| format!("schema {id}: {e}"))?;
                Parsed::Avro(schema)
            }
            SchemaKind::Protobuf => {
                Parsed::Protobuf(compile_proto(id, &body.schema).map_err(|e| {
                    let refs = if body.references.is_empty() {
                        String::new()
                    } else {
                        " (schema references are not supported)".to_string()
                    };
                    format!("schema {id}: not a usable .proto schema{refs}: {e}")
                })?)
            }
            SchemaKind::Json => {
                let schema: Value = serde_json::from_str(&body.schema)
                    .map_err(|e| format!("schema {id}: not JSON: {e}"))?;
                Parsed::Json(Box::new(jsonschema::validator_for(&schema).map_err(
                    |e| format!("schema {id}: not a usable JSON Schema: {e}"),
                )?))
            }
        };
        Ok(Self { id, kind, parsed })
    }

    /// Decodes a framed message's bytes after the 5-byte header into the
    /// JSON field map; the error says how the value does not fit the
    /// schema (the decoder's `schema_mismatch`).
    pub fn decode(&self, after_id: &[u8]) -> Result<Map<String, Value>, String> {
        let mismatch = |why: String| format!("{self:?}: {why}");
        let value = match &self.parsed {
            Parsed::Avro(schema) => {
                // A length prefix is trusted up to this many bytes or items
                // (apache-avro's own default is 512 MiB, which a poison pill
                // of ten bytes would make it allocate).
                apache_avro::util::max_allocation_bytes(AVRO_MAX_ALLOCATION);
                let mut reader = after_id;
                let datum = apache_avro::from_avro_datum(schema, &mut reader, None)
                    .map_err(|e| mismatch(format!("not an Avro datum of the schema: {e}")))?;
                if !reader.is_empty() {
                    return Err(mismatch(format!(
                        "{} bytes left over after the Avro datum",
                        reader.len()
                    )));
                }
                // The decoder reads a missing trailing value as null.
                if !datum.validate(schema) {
                    return Err(mismatch("the Avro datum does not fit the schema".into()));
                }
                avro_to_json(datum)
            }
            Parsed::Protobuf(file) => {
                let (indexes, body) = message_indexes(after_id).map_err(mismatch)?;
                let desc = message_at(file, &indexes).ok_or_else(|| {
                    mismatch(format!("the schema has no message at indexes {indexes:?}"))
                })?;
                let name = desc.full_name().to_string();
                let msg = prost_reflect::DynamicMessage::decode(desc, body)
                    .map_err(|e| mismatch(format!("not a {name} message: {e}")))?;
                let mut v = proto_to_json(&msg).map_err(mismatch)?;
                // The contract's protobuf names the epoch-milliseconds
                // time `occurred_at_ms` (a oneof with `occurred_at`).
                if let Value::Object(m) = &mut v {
                    if !m.contains_key("occurred_at") {
                        if let Some(ms) = m.remove("occurred_at_ms") {
                            m.insert("occurred_at".into(), ms);
                        }
                    }
                }
                v
            }
            Parsed::Json(validator) => {
                let v: Value = serde_json::from_slice(after_id)
                    .map_err(|e| mismatch(format!("not JSON: {e}")))?;
                if let Some(e) = validator.iter_errors(&v).next() {
                    return Err(mismatch(format!(
                        "does not validate at {:?}: {e}",
                        e.instance_path().as_str()
                    )));
                }
                v
            }
        };
        match value {
            Value::Object(m) => Ok(m),
            other => Err(mismatch(format!(
                "the value is not a record/object but {}",
                json_kind(&other)
            ))),
        }
    }
}

/// A JSON value's kind, for messages ("a number").
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Serves the registered `.proto` text (and Google's well-known types) to
/// the compiler.
struct OneFile {
    name: String,
    source: String,
}

impl protox::file::FileResolver for OneFile {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        if name == self.name {
            match serialized_descriptor(&self.source) {
                Some(mut fdp) => {
                    fdp.name = Some(name.to_string());
                    Ok(protox::file::File::from_file_descriptor_proto(fdp))
                }
                None => protox::file::File::from_source(name, &self.source),
            }
        } else {
            protox::file::GoogleFileResolver::new().open_file(name)
        }
    }
}

/// A protobuf schema registered as a base64 `FileDescriptorProto` (as the
/// Python client does) rather than `.proto` text; `None` for text, which
/// always holds a `;` or white space, never part of base64.
fn serialized_descriptor(source: &str) -> Option<prost_types::FileDescriptorProto> {
    use base64::Engine as _;
    use prost::Message as _;
    if source.contains(|c: char| c == ';' || c.is_whitespace()) {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(source)
        .ok()?;
    prost_types::FileDescriptorProto::decode(bytes.as_slice()).ok()
}

fn compile_proto(id: u32, source: &str) -> Result<prost_reflect::FileDescriptor, String> {
    let name = format!("registry-schema-{id}.proto");
    let mut compiler = protox::Compiler::with_file_resolver(OneFile {
        name: name.clone(),
        source: source.to_string(),
    });
    compiler.open_file(&name).map_err(|e| e.to_string())?;
    compiler
        .descriptor_pool()
        .get_file_by_name(&name)
        .ok_or_else(|| "the compiled file is missing".to_string())
}

/// Reads Confluent's protobuf message indexes (zigzag varints: a count,
/// then that many indexes; a single 0 means `[0]`), returning them and the
/// message bytes after them.
pub fn message_indexes(bytes: &[u8]) -> Result<(Vec<i32>, &[u8]), String> {
    let mut rest = bytes;
    let count = zigzag(&mut rest)?;
    if count == 0 {
        return Ok((vec![0], rest));
    }
    if !(1..=100).contains(&count) {
        return Err(format!("message index count {count} is out of range"));
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let i = zigzag(&mut rest)?;
        out.push(i32::try_from(i).map_err(|_| format!("message index {i} is out of range"))?);
    }
    Ok((out, rest))
}

fn zigzag(rest: &mut &[u8]) -> Result<i64, String> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&b, tail) = rest.split_first().ok_or("the message indexes end early")?;
        *rest = tail;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(((v >> 1) as i64) ^ -((v & 1) as i64));
        }
    }
    Err("a message index is longer than 10 bytes".into())
}

fn message_at(
    file: &prost_reflect::FileDescriptor,
    indexes: &[i32],
) -> Option<prost_reflect::MessageDescriptor> {
    let (first, nested) = indexes.split_first()?;
    let mut desc = file.messages().nth(usize::try_from(*first).ok()?)?;
    for i in nested {
        let child = desc.child_messages().nth(usize::try_from(*i).ok()?)?;
        desc = child;
    }
    Some(desc)
}

fn number(v: f64) -> Value {
    serde_json::Number::from_f64(v)
        .map(Value::Number)
        // No JSON form: kept visible as an invalid value, as for plain
        // protobuf events.
        .unwrap_or_else(|| Value::from("NaN"))
}

/// A decoded protobuf message as a JSON object of its set fields, by
/// field name; a `google.protobuf.Timestamp` becomes epoch milliseconds.
fn proto_to_json(msg: &prost_reflect::DynamicMessage) -> Result<Value, String> {
    use prost_reflect::ReflectMessage as _;
    if msg.descriptor().full_name() == "google.protobuf.Timestamp" {
        let get = |n: &str| match msg.get_field_by_name(n).as_deref() {
            Some(prost_reflect::Value::I64(v)) => *v,
            Some(prost_reflect::Value::I32(v)) => i64::from(*v),
            _ => 0,
        };
        return get("seconds")
            .checked_mul(1000)
            .and_then(|ms| ms.checked_add(get("nanos") / 1_000_000))
            .map(Value::from)
            .ok_or_else(|| "a google.protobuf.Timestamp is out of range".to_string());
    }
    let mut m = Map::new();
    for (field, value) in msg.fields() {
        m.insert(field.name().to_string(), proto_value(&field, value)?);
    }
    Ok(Value::Object(m))
}

fn proto_value(
    field: &prost_reflect::FieldDescriptor,
    v: &prost_reflect::Value,
) -> Result<Value, String> {
    use prost_reflect::{Kind, MapKey, Value as P};
    Ok(match v {
        P::Bool(b) => Value::from(*b),
        P::I32(i) => Value::from(*i),
        P::I64(i) => Value::from(*i),
        P::U32(i) => Value::from(*i),
        P::U64(i) => Value::from(*i),
        P::F32(f) => number(f64::from(*f)),
        P::F64(f) => number(*f),
        P::String(s) => Value::from(s.as_str()),
        P::Bytes(b) => Value::from(String::from_utf8_lossy(b).into_owned()),
        P::EnumNumber(n) => match field.kind() {
            Kind::Enum(e) => e
                .get_value(*n)
                .map(|ev| Value::from(ev.name()))
                .unwrap_or_else(|| Value::from(*n)),
            _ => Value::from(*n),
        },
        P::Message(m) => proto_to_json(m)?,
        P::List(items) => Value::Array(
            items
                .iter()
                .map(|i| proto_value(field, i))
                .collect::<Result<_, _>>()?,
        ),
        P::Map(entries) => {
            let value_field = match field.kind() {
                Kind::Message(entry) => entry.map_entry_value_field(),
                _ => field.clone(),
            };
            Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| {
                        let key = match k {
                            MapKey::String(s) => s.clone(),
                            MapKey::Bool(b) => b.to_string(),
                            MapKey::I32(i) => i.to_string(),
                            MapKey::I64(i) => i.to_string(),
                            MapKey::U32(i) => i.to_string(),
                            MapKey::U64(i) => i.to_string(),
                        };
                        Ok((key, proto_value(&value_field, v)?))
                    })
                    .collect::<Result<_, String>>()?,
            )
        }
    })
}

/// An Avro datum as JSON: records become objects (null fields left out,
/// as unset), unions their branch, timestamps epoch milliseconds.
fn avro_to_json(v: apache_avro::types::Value) -> Value {
    use apache_avro::types::Value as A;
    match v {
        A::Null => Value::Null,
        A::Boolean(b) => Value::from(b),
        A::Int(i) => Value::from(i),
        A::Long(i) => Value::from(i),
        A::Float(f) => number(f64::from(f)),
        A::Double(f) => number(f),
        A::String(s) => Value::from(s),
        A::Enum(_, s) => Value::from(s),
        A::Union(_, inner) => avro_to_json(*inner),
        A::Array(items) => Value::Array(items.into_iter().map(avro_to_json).collect()),
        A::Map(entries) => Value::Object(
            entries
                .into_iter()
                .map(|(k, v)| (k, avro_to_json(v)))
                .collect(),
        ),
        A::Record(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| (k, avro_to_json(v)))
                .filter(|(_, v)| !v.is_null())
                .collect(),
        ),
        A::TimestampMillis(ms) | A::LocalTimestampMillis(ms) => Value::from(ms),
        A::TimestampMicros(us) | A::LocalTimestampMicros(us) => Value::from(us / 1000),
        A::TimestampNanos(ns) | A::LocalTimestampNanos(ns) => Value::from(ns / 1_000_000),
        other => Value::try_from(other).unwrap_or(Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(kind: Option<&str>, schema: &str) -> Vec<u8> {
        let mut b = serde_json::json!({ "schema": schema });
        if let Some(k) = kind {
            b["schemaType"] = Value::from(k);
        }
        serde_json::to_vec(&b).unwrap()
    }

    #[test]
    fn the_frame_header_is_read_and_short_or_plain_messages_are_not_framed() {
        assert_eq!(framed_id(&[0, 0, 0, 1, 7, 42]), Some(263));
        assert_eq!(framed_id(&[0, 0, 0, 1]), None);
        assert_eq!(framed_id(b"{\"a\":1}"), None);
        assert_eq!(framed_id(&[0x0a, 0, 0, 0, 0]), None);
    }

    #[test]
    fn message_indexes_follow_confluents_encoding() {
        // A single 0: the first message.
        assert_eq!(message_indexes(&[0, 9]).unwrap(), (vec![0], &[9u8][..]));
        // Count 2 (zigzag 4), indexes 1 and 0 (zigzag 2, 0).
        assert_eq!(
            message_indexes(&[4, 2, 0, 9]).unwrap(),
            (vec![1, 0], &[9u8][..])
        );
        assert!(message_indexes(&[4, 2]).is_err());
        assert!(message_indexes(&[]).is_err());
    }

    #[test]
    fn an_avro_record_decodes_to_the_field_map_and_a_wrong_datum_is_a_mismatch() {
        let schema = r#"{"type":"record","name":"E","fields":[
            {"name":"event_id","type":"string"},
            {"name":"occurred_at","type":{"type":"long","logicalType":"timestamp-millis"}},
            {"name":"amount","type":["null","double"],"default":null}]}"#;
        let s = RegisteredSchema::from_registry_body(3, &body(None, schema)).unwrap();
        assert_eq!(s.kind, SchemaKind::Avro);
        let parsed = apache_avro::Schema::parse_str(schema).unwrap();
        let mut rec = apache_avro::types::Record::new(&parsed).unwrap();
        rec.put("event_id", "e1");
        rec.put(
            "occurred_at",
            apache_avro::types::Value::TimestampMillis(1234),
        );
        rec.put(
            "amount",
            apache_avro::types::Value::Union(0, Box::new(apache_avro::types::Value::Null)),
        );
        let bytes = apache_avro::to_avro_datum(&parsed, rec).unwrap();
        let m = s.decode(&bytes).unwrap();
        assert_eq!(m["event_id"], "e1");
        assert_eq!(m["occurred_at"], 1234);
        assert!(!m.contains_key("amount"));
        let err = s.decode(&[0xff]).unwrap_err();
        assert!(err.contains("not an Avro datum"), "{err}");
    }

    #[test]
    fn a_protobuf_schema_decodes_by_field_name_at_the_message_indexes() {
        let proto = r#"syntax = "proto3"; package x;
            message Other { string a = 1; }
            message Ev { string event_id = 7; int64 occurred_at_ms = 9; map<string,string> attributes = 3; }"#;
        let s = RegisteredSchema::from_registry_body(4, &body(Some("PROTOBUF"), proto)).unwrap();
        // Ev is message 1: count 1 (zigzag 2), index 1 (zigzag 2).
        let mut bytes = vec![2, 2];
        // field 7 (string "e1"), field 9 (varint 5).
        bytes.extend([0x3a, 2, b'e', b'1', 0x48, 5]);
        let m = s.decode(&bytes).unwrap();
        assert_eq!(m["event_id"], "e1");
        assert_eq!(m["occurred_at"], 5);
        let err = s.decode(&[2, 8, 0x3a]).unwrap_err();
        assert!(err.contains("no message at indexes [4]"), "{err}");
    }

    #[test]
    fn a_json_schema_is_enforced() {
        let schema = r#"{"type":"object","required":["event_id"],"properties":{"event_id":{"type":"string"}}}"#;
        let s = RegisteredSchema::from_registry_body(5, &body(Some("JSON"), schema)).unwrap();
        assert_eq!(s.decode(br#"{"event_id":"e"}"#).unwrap()["event_id"], "e");
        let err = s.decode(br#"{"event_id":3}"#).unwrap_err();
        assert!(err.contains("/event_id"), "{err}");
    }

    #[test]
    fn unusable_schemas_say_why() {
        let unusable = |b: Vec<u8>| match RegisteredSchema::from_registry_body(6, &b) {
            Err(SchemaError::Unusable(e)) => e,
            other => panic!("{other:?}"),
        };
        let e = unusable(body(Some("THRIFT"), "x"));
        assert!(e.contains("THRIFT"), "{e}");
        let e = unusable(body(None, "{nope"));
        assert!(e.contains("Avro"), "{e}");
        // Data that could nest or allocate without bound.
        let e = unusable(body(
            None,
            r#"{"type":"record","name":"N","fields":[{"name":"next","type":["null","N"]}]}"#,
        ));
        assert!(e.contains("contains itself"), "{e}");
        let e = unusable(body(
            None,
            r#"{"type":"record","name":"A","fields":[{"name":"xs","type":{"type":"array","items":"null"}}]}"#,
        ));
        assert!(e.contains("no bytes"), "{e}");
        // A named type used twice (not recursion) is fine.
        assert!(RegisteredSchema::from_registry_body(
            6,
            &body(
                None,
                r#"{"type":"record","name":"P","fields":[{"name":"a","type":{"type":"record","name":"Q","fields":[{"name":"x","type":"int"}]}},{"name":"b","type":"Q"}]}"#
            )
        )
        .is_ok());
        let e = unusable(body(Some("PROTOBUF"), "message {"));
        assert!(e.contains(".proto"), "{e}");
        match RegisteredSchema::from_registry_body(6, b"<html>") {
            Err(SchemaError::NotAnAnswer(e)) => assert!(e.contains("not the registry's"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}
