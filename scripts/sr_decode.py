"""Decodes the service's outputs with Confluent's own deserializers.

Reads a JSON file (the first argument): {"registry": URL, "format": "avro"
or "json_schema", "records": [{"topic", "value_b64"}]}; prints one JSON
line per record: the value as confluent-kafka's AvroDeserializer or
JSONDeserializer gives it, with the schema fetched from the registry by the
id in the record's frame. A record they cannot read fails the run.

Run by scripts/sr_fixtures.sh decode FILE, which installs the packages.
"""

import base64
import json
import sys

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def main(path):
    with open(path) as f:
        job = json.load(f)
    client = SchemaRegistryClient({"url": job["registry"]})
    if job["format"] == "avro":
        deserializer = AvroDeserializer(client)
    else:
        # The writer's schema from the registry; payloads are validated
        # against it.
        deserializer = JSONDeserializer(None, schema_registry_client=client)
    for r in job["records"]:
        value = base64.b64decode(r["value_b64"])
        ctx = SerializationContext(r["topic"], MessageField.VALUE)
        print(json.dumps({"topic": r["topic"], "value": deserializer(value, ctx)}))


if __name__ == "__main__":
    main(sys.argv[1])
