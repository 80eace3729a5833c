"""Avro records through the real broker, including a record written with an older schema."""

import datetime as dt

import pytest
from confluent_kafka.admin import NewTopic

from tests.integration.kafka_helpers import read_all
from wapipe.avro import AvroSerde
from wapipe.edge.clients import producer
from wapipe.edge.clients import admin_client

pytestmark = pytest.mark.integration
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc)


def make_topic(bootstrap: str, name: str, partitions: int = 3, config: dict | None = None) -> str:
    admin = admin_client(bootstrap)
    admin.create_topics([NewTopic(name, partitions, 1, config=config or {})])[name].result()
    return name


def command(i: int) -> dict:
    return {
        "command_id": f"c-{i}", "tenant_id": f"t{i % 3}", "idempotency_key": f"k-{i}", "phone_number_id": "1001",
        "subject_id": f"s{i}", "lane": "CAMPAIGN", "campaign_id": "cmp-1", "kind": "TEMPLATE",
        "template": {"name": "hello", "language": "en", "parameter_count": 0},
        "pii": {"key_id": f"s{i}/k", "nonce": b"\x00" * 12, "ciphertext": b"x"}, "requested_at": NOW,
    }


def test_produce_and_consume_avro_through_the_broker(kafka, unique):
    topic = make_topic(kafka, f"test.avro.{unique}")
    serde = AvroSerde()
    p = producer(kafka)
    # Half written by an old producer (schema v1), half by a current one (v2).
    for i in range(200):
        p.produce(topic, key=f"t{i % 3}".encode(), value=serde.encode("SendCommand", command(i), version=1 + i % 2))
    assert p.flush(30) == 0
    records = read_all(kafka, topic, expect=200)
    decoded = sorted((serde.decode(m.value(), "SendCommand") for m in records), key=lambda r: int(r["command_id"][2:]))
    assert [r["idempotency_key"] for r in decoded] == [f"k-{i}" for i in range(200)]
    # v1 records read with v2's defaults; keys partitioned by tenant
    assert all(r["valid_until"] is None and r["metadata"] == {} for r in decoded)
    by_key = {}
    for m in records:
        by_key.setdefault(m.key(), set()).add(m.partition())
    assert all(len(parts) == 1 for parts in by_key.values())
