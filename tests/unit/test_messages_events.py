"""wapipe.messages.events against the real schemas, as tests/unit/test_messages.py does for the send
family: every version still read decodes into the typed event, the latest round-trips byte for byte,
and a decoded record missing a required field is refused (KeyError, a follower's unreadable record)."""

from __future__ import annotations

import dataclasses
import io

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings

from tests.unit.test_messages import SERDE, raw_schema, records
from wapipe.messages.events import AccountEvent, InboundMessage, StatusEvent, SubjectLink, Suppression

# (schema name, versions read, the typed class)
EVENTS = [("StatusEvent", (3, 4), StatusEvent), ("InboundMessage", (2,), InboundMessage),
          ("AccountEvent", (1, 2), AccountEvent), ("Suppression", (1,), Suppression),
          ("SubjectLink", (1,), SubjectLink)]
CASES = [(name, v, cls) for name, versions, cls in EVENTS for v in versions]


@pytest.mark.parametrize("name, version, cls", CASES, ids=[f"{n}.v{v}" for n, v, _ in CASES])
def test_every_version_read_decodes_into_the_typed_event(name, version, cls):
    writer = raw_schema(name, version)
    latest = SERDE.store.latest(name)
    parsed_writer = fastavro.parse_schema(writer)

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(records(writer))
    def check(record):
        data = SERDE.encode(name, record, version=version)
        msg = cls.from_avro(SERDE.decode(data, name))
        out = msg.to_avro()
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed_writer, record)
        buf.seek(0)
        as_written = fastavro.schemaless_reader(buf, parsed_writer, None)
        old = {f["name"] for f in writer["fields"]}
        for f in old:
            assert out[f] == as_written[f], f
        for f in latest.schema["fields"]:
            if f["name"] not in old:
                assert out[f["name"]] == f["default"], f["name"]
        again = SERDE.encode(name, out)
        if version == latest.version:
            assert again == data  # the wire format is unchanged
        assert cls.from_avro(SERDE.decode(again, name)) == msg

    check()


def test_every_field_of_the_latest_schemas_is_a_field_of_its_event():
    for name, _, cls in EVENTS:
        schema_fields = [f["name"] for f in SERDE.store.latest(name).schema["fields"]]
        assert sorted(schema_fields) == sorted(f.name for f in dataclasses.fields(cls)), name
        assert cls.RECORD == name


@pytest.mark.parametrize("name, cls", [(n, c) for n, _, c in EVENTS], ids=[n for n, _, _ in EVENTS])
def test_a_record_missing_a_required_field_is_refused(name, cls):
    required = [f["name"] for f in SERDE.store.latest(name).schema["fields"] if "default" not in f]

    @settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(records(SERDE.store.latest(name).schema))
    def check(record):
        for f in required:
            with pytest.raises(KeyError):
                cls.from_avro({k: v for k, v in record.items() if k != f})

    check()
