"""Schema Registry wire-format fixtures made by Confluent's own serializers.

Writes into OUT (the first argument):
- registry/<id>.json: the registry's answer to GET /schemas/ids/<id> for
  each schema the serializers registered (in confluent-kafka's mock
  registry, `mock://`), as a real registry or a saved folder serves it;
- messages.jsonl: one line per message, {"format", "key", "value_b64",
  "event_id", "customer_id", "type"}: events of the contract serialized as
  Avro, protobuf (churn.v1.CustomerEvent, compiled from proto/ by
  grpcio-tools) and JSON Schema.

Run by scripts/sr_fixtures.sh, which installs the packages.
"""

import base64
import json
import os
import subprocess
import sys
import tempfile

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOPIC = "customer-events"
T0 = 1_700_000_000_000
DAY = 86_400_000

AVRO_SCHEMA = json.dumps(
    {
        "type": "record",
        "name": "CustomerEvent",
        "namespace": "com.example.churn",
        "fields": [
            {"name": "event_id", "type": "string"},
            {"name": "customer_id", "type": "string"},
            {"name": "type", "type": "string"},
            {"name": "occurred_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "amount", "type": ["null", "double"], "default": None},
            {"name": "currency", "type": ["null", "string"], "default": None},
            {"name": "duration_seconds", "type": ["null", "double"], "default": None},
            {"name": "page_views", "type": ["null", "long"], "default": None},
            {
                "name": "severity",
                "type": ["null", {"type": "enum", "name": "Severity", "symbols": ["low", "medium", "high"]}],
                "default": None,
            },
            {"name": "is_complaint", "type": ["null", "boolean"], "default": None},
            {"name": "attributes", "type": {"type": "map", "values": "string"}, "default": {}},
        ],
    }
)

JSON_SCHEMA = json.dumps(
    {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "CustomerEvent",
        "type": "object",
        "required": ["event_id", "customer_id", "type", "occurred_at"],
        "properties": {
            "event_id": {"type": "string"},
            "customer_id": {"type": "string"},
            "type": {"type": "string"},
            "occurred_at": {"type": "string", "format": "date-time"},
            "amount": {"type": "number", "minimum": 0},
            "currency": {"type": "string"},
            "nps": {"type": "integer"},
        },
    }
)


def iso(ms):
    import datetime

    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def events(fmt):
    """A few events of one customer: a purchase, a session, a ticket."""
    c = f"sr-{fmt}"
    return [
        {"event_id": f"{c}-1", "customer_id": c, "type": "purchase", "at": T0 + 1 * DAY, "amount": 12.5, "currency": "EUR"},
        {"event_id": f"{c}-2", "customer_id": c, "type": "session", "at": T0 + 2 * DAY, "duration_seconds": 90.0, "page_views": 4},
        {"event_id": f"{c}-3", "customer_id": c, "type": "purchase", "at": T0 + 3 * DAY, "amount": 20.0, "currency": "USD"},
    ]


def protobuf_module(out):
    """churn.v1.CustomerEvent compiled from the repository's .proto."""
    gen = os.path.join(out, "pb")
    os.makedirs(gen, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT}/proto", f"--python_out={gen}", "churn/v1/events.proto"],
        check=True,
    )
    sys.path.insert(0, gen)
    from churn.v1 import events_pb2  # noqa: E402

    return events_pb2


def main():
    out = sys.argv[1]
    os.makedirs(os.path.join(out, "registry"), exist_ok=True)
    client = SchemaRegistryClient.new_client({"url": "mock://churn-alert-fixtures"})
    ctx = SerializationContext(TOPIC, MessageField.VALUE)
    lines = []

    def add(fmt, ev, value):
        lines.append(
            {
                "format": fmt,
                "key": ev["customer_id"],
                "value_b64": base64.b64encode(value).decode(),
                "event_id": ev["event_id"],
                "customer_id": ev["customer_id"],
                "type": ev["type"],
            }
        )

    # Avro: one subject per topic value, TopicNameStrategy.
    avro = AvroSerializer(client, AVRO_SCHEMA, conf={"auto.register.schemas": True})
    for ev in events("avro"):
        rec = {
            "event_id": ev["event_id"],
            "customer_id": ev["customer_id"],
            "type": ev["type"],
            "occurred_at": ev["at"],
            "amount": ev.get("amount"),
            "currency": ev.get("currency"),
            "duration_seconds": ev.get("duration_seconds"),
            "page_views": ev.get("page_views"),
            "severity": None,
            "is_complaint": None,
            "attributes": {"source": "avro-fixture"},
        }
        add("avro", ev, avro(rec, ctx))

    # Protobuf: a second topic's subject, so each format has its own id.
    pb = protobuf_module(out)
    proto = ProtobufSerializer(pb.CustomerEvent, client, conf={"use.deprecated.format": False})
    pctx = SerializationContext(TOPIC + "-pb", MessageField.VALUE)
    for ev in events("protobuf"):
        m = pb.CustomerEvent(event_id=ev["event_id"], customer_id=ev["customer_id"], type=ev["type"], occurred_at_ms=ev["at"])
        for k in ("amount", "currency", "duration_seconds", "page_views"):
            if k in ev:
                setattr(m, k, ev[k])
        m.attributes["source"] = "protobuf-fixture"
        add("protobuf", ev, proto(m, pctx))

    # JSON Schema.
    js = JSONSerializer(JSON_SCHEMA, client, conf={"auto.register.schemas": True})
    jctx = SerializationContext(TOPIC + "-json", MessageField.VALUE)
    for ev in events("json"):
        doc = {"event_id": ev["event_id"], "customer_id": ev["customer_id"], "type": ev["type"], "occurred_at": iso(ev["at"])}
        for k in ("amount", "currency", "duration_seconds", "page_views"):
            if k in ev:
                doc[k] = ev[k]
        add("json", ev, js(doc, ctx=jctx))

    # The registry's answers, by id, as GET /schemas/ids/<id> gives them.
    ids = sorted({int.from_bytes(base64.b64decode(line["value_b64"])[1:5], "big") for line in lines})
    for i in ids:
        s = client.get_schema(i)
        body = {"schema": s.schema_str}
        if s.schema_type and s.schema_type != "AVRO":
            body["schemaType"] = s.schema_type
        with open(os.path.join(out, "registry", f"{i}.json"), "w") as f:
            json.dump(body, f)
    with open(os.path.join(out, "messages.jsonl"), "w") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
    print(f"{len(lines)} messages, schema ids {ids}, in {out}")


if __name__ == "__main__":
    main()
