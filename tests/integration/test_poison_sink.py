"""Poison records on a sink topic (issue 18): the sink dead-letters each one with its reason (a
record too large for a whole dead letter gets a cut-down one), keeps running, loads the good
records after it, and commits past the bad one only once its dead letter is acked. Real broker,
real embedded ClickHouse."""

from __future__ import annotations

import os

import pytest
from confluent_kafka import KafkaException

from tests.integration.kafka_helpers import produce_one_by_one, read_all
from tests.integration.test_sink_worker import _run, _status, _Topic, _wait, _worker
from wapipe.avro import AvroSerde
from wapipe.edge.clients import producer
from wapipe.topics import SINK_DEAD

pytestmark = pytest.mark.integration


def _committed(topic: _Topic, group: str) -> int:
    """The group's committed offsets summed; -1 while the group coordinator is still loading."""
    try:
        return topic.committed(group)
    except KafkaException:
        return -1


def test_poison_records_are_dead_lettered_and_the_next_record_is_loaded(topics, settings, clickhouse, unique):
    topic = _Topic(topics, unique)
    huge = b"\xde\xad" + unique.encode() + b"x" * (1_040_000 - 2 - len(unique))
    values = [huge, topic.serde.encode("StatusEvent", _status(1, "sent")), None,
              topic.serde.encode("StatusEvent", _status(2, "sent"))]
    produce_one_by_one(topics, topic.name, [(b"k", v) for v in values], partition=0)

    w = _worker(settings, topic, clickhouse, unique)
    t, stop, errors = _run(w)
    try:
        assert _wait(lambda: _committed(topic, f"sink-{unique}") == 4, 60), errors
        assert t.is_alive() and not errors
    finally:
        stop.set()
        t.join(20)
    assert not errors
    rows = clickhouse.query("SELECT wamid FROM status_events ORDER BY wamid").result_rows
    assert rows == [("wamid.1",), ("wamid.2",)]
    dead = sorted((d for d in (AvroSerde().decode(m.value(), "DeadLetter") for m in read_all(topics, SINK_DEAD))
                   if d["source_topic"] == topic.name), key=lambda d: d["offset"])
    assert [d["offset"] for d in dead] == [0, 2]
    cut, tombstone = dead
    assert cut["headers"]["cut"] and int(cut["headers"]["value_bytes"]) == len(huge)
    assert huge.startswith(cut["value"]) and len(cut["value"]) < len(huge) and "not an Avro record" in cut["reason"]
    assert tombstone["value"] is None and "empty value" in tombstone["reason"]


def test_a_dead_letter_the_broker_refuses_as_too_large_is_cut_further_not_skipped(topics, settings, clickhouse,
                                                                                  unique):
    """wa.sink.dead configured smaller than the sink's cut (a topic of an operator's): the broker
    refuses the dead letter; it is cut to the minimum and written before the offset moves on."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    from wapipe.edge.clients import admin_client

    topic = _Topic(topics, unique)
    garbage = b"\xbe\xef" + unique.encode() + os.urandom(200_000)  # incompressible
    p = producer(topics)
    p.produce(topic.name, key=b"k", value=garbage, partition=0)
    p.produce(topic.name, key=b"k", value=topic.serde.encode("StatusEvent", _status(3, "sent")), partition=0)
    assert p.flush(30) == 0
    admin = admin_client(topics)
    res = ConfigResource(ConfigResource.Type.TOPIC, SINK_DEAD, incremental_configs=[
        ConfigEntry("max.message.bytes", "20000", incremental_operation=AlterConfigOpType.SET)])
    for f in admin.incremental_alter_configs([res]).values():
        f.result()
    try:
        w = _worker(settings, topic, clickhouse, unique)
        t, stop, errors = _run(w)
        try:
            assert _wait(lambda: _committed(topic, f"sink-{unique}") == 2, 60), errors
        finally:
            stop.set()
            t.join(20)
        assert not errors
    finally:
        res = ConfigResource(ConfigResource.Type.TOPIC, SINK_DEAD, incremental_configs=[
            ConfigEntry("max.message.bytes", None, incremental_operation=AlterConfigOpType.DELETE)])
        for f in admin.incremental_alter_configs([res]).values():
            f.result()
    dead = [d for d in (AvroSerde().decode(m.value(), "DeadLetter") for m in read_all(topics, SINK_DEAD))
            if d["source_topic"] == topic.name]
    assert len(dead) == 1 and dead[0]["offset"] == 0 and garbage.startswith(dead[0]["value"])
    assert len(dead[0]["value"]) <= 1024 and dead[0]["headers"]["value_bytes"] == str(len(garbage))
    assert clickhouse.query("SELECT wamid FROM status_events").result_rows == [("wamid.3",)]
