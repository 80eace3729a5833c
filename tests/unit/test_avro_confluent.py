"""The Confluent wire format, against the Schema Registry REST protocol.

No Confluent-compatible registry is installable on this machine kind (Confluent's is not on
Maven Central, Karapace is not on PyPI), so the registry's two REST calls are served here by an
httpx transport that keeps real state: ids are assigned per distinct schema, as the registry does.
"""

import json
import struct

import httpx
import pytest

from tests.unit.test_avro import command
from wapipe.avro import AvroSerde, SchemaRegistryClient, SchemaStore, SerdeError


class RegistryProtocol:
    def __init__(self):
        self.by_id: dict[int, str] = {}
        self.subjects: dict[str, list[int]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.startswith("/subjects/"):
            subject = request.url.path.split("/")[2]
            schema = json.loads(request.content)["schema"]
            sid = next((i for i, s in self.by_id.items() if s == schema), None) or len(self.by_id) + 1
            self.by_id[sid] = schema
            self.subjects.setdefault(subject, []).append(sid)
            return httpx.Response(200, json={"id": sid})
        if request.method == "GET" and request.url.path.startswith("/schemas/ids/"):
            sid = int(request.url.path.rsplit("/", 1)[1])
            if sid not in self.by_id:
                return httpx.Response(404, json={"error_code": 40403, "message": "Schema not found"})
            return httpx.Response(200, json={"schema": self.by_id[sid]})
        return httpx.Response(404)


@pytest.fixture
def registry():
    return RegistryProtocol()


def serde_with(registry):
    client = SchemaRegistryClient("http://registry.test", transport=httpx.MockTransport(registry))
    return AvroSerde(SchemaStore.load(), client)


def test_confluent_framing_and_subject(registry):
    data = serde_with(registry).encode("SendCommand", command(), topic="wa.send.requested")
    assert data[0] == 0
    (sid,) = struct.unpack(">I", data[1:5])
    assert registry.subjects["wa.send.requested-value"] == [sid]


def test_a_second_process_reads_by_schema_id_including_old_versions(registry):
    writer = serde_with(registry)
    old = writer.encode("SendCommand", command(), topic="t", version=1)
    new = writer.encode("SendCommand", command(priority=3), topic="t")
    assert old[1:5] != new[1:5]
    reader = serde_with(registry)  # empty cache: fetches the writer schemas by id
    assert reader.decode(old, "SendCommand")["priority"] == 0
    assert reader.decode(new, "SendCommand")["priority"] == 3


def test_single_object_records_stay_readable_after_switching_to_a_registry(registry):
    before = AvroSerde(SchemaStore.load()).encode("SendCommand", command())
    assert serde_with(registry).decode(before, "SendCommand")["idempotency_key"] == "inv-42"


def test_unknown_schema_id_and_missing_registry_are_clear_errors(registry):
    framed = serde_with(registry).encode("SendCommand", command(), topic="t")
    with pytest.raises(SerdeError, match="SCHEMA_REGISTRY_URL is not set"):
        AvroSerde(SchemaStore.load()).decode(framed, "SendCommand")
    with pytest.raises(SerdeError, match="schema id 99 is not in the registry"):
        serde_with(registry).decode(b"\x00" + struct.pack(">I", 99) + framed[5:], "SendCommand")


def test_encoding_for_the_registry_needs_a_topic(registry):
    with pytest.raises(ValueError, match="needs the topic"):
        serde_with(registry).encode("SendCommand", command())
