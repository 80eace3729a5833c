import datetime as dt
import json
import struct

import fastavro
import pytest

from wapipe.avro import SINGLE_OBJECT_MAGIC, AvroSerde, SchemaStore, SerdeError, crc64_avro

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc)


def command(**kw):
    rec = {
        "command_id": "c-1", "tenant_id": "t1", "idempotency_key": "inv-42", "phone_number_id": "1001",
        "subject_id": "s1", "lane": "TRANSACTIONAL", "campaign_id": None, "kind": "TEXT", "template": None,
        "pii": {"key_id": "s1/k1", "nonce": b"n" * 12, "ciphertext": b"sealed"}, "requested_at": NOW,
    }
    rec.update(kw)
    return rec


@pytest.fixture(scope="module")
def serde():
    return AvroSerde(SchemaStore.load())


def test_crc64_avro_matches_the_specification_vector():
    # The Avro spec's fingerprint of the schema "null" (parsing canonical form) is 0x63dd24e7cc258f8a.
    assert crc64_avro(b'"null"') == 0x63DD24E7CC258F8A


def test_every_schema_parses_and_has_a_unique_fingerprint():
    store = SchemaStore.load()
    fps = [v.fingerprint for n in store.names() for v in store.versions(n)]
    assert len(fps) == len(set(fps))
    assert {"SendCommand", "SendResult", "StatusEvent", "InboundMessage", "RawWebhook", "AuditEvent",
            "SubjectKey", "TenantSettings", "PrivacyRequest"} <= set(store.names())


def test_single_object_framing(serde):
    data = serde.encode("SendCommand", command())
    latest = serde.store.latest("SendCommand")
    assert data[:2] == SINGLE_OBJECT_MAGIC
    assert data[2:10] == struct.pack("<Q", crc64_avro(latest.canonical.encode()))
    assert serde.decode(data, "SendCommand")["idempotency_key"] == "inv-42"


def test_old_writer_is_read_by_new_reader(serde):
    v1 = serde.encode("SendCommand", command(), version=1)
    assert serde.store.by_fingerprint(v1[2:10]).version == 1
    rec = serde.decode(v1, "SendCommand")
    assert rec["valid_until"] is None and rec["priority"] == 0 and rec["metadata"] == {}
    assert rec["pii"]["ciphertext"] == b"sealed"


def test_a_v1_ledger_entry_is_read_with_no_result_codes(serde):
    """Ledger entries written before DispatchEntry v2 (a worker of the previous release) stay
    readable: the result's codes are simply unknown."""
    entry = {"tenant_id": "t1", "idempotency_key": "inv-42", "command_id": "c-1", "phone_number_id": "1001",
             "subject_id": "s1", "campaign_id": None, "state": "DONE", "attempts": 1, "outcome": "FAILED",
             "wamid": None, "template": True, "not_before": None, "at": NOW}
    v1 = serde.encode("DispatchEntry", entry, version=1)
    assert serde.store.by_fingerprint(v1[2:10]).version == 1 and serde.store.latest("DispatchEntry").version == 2
    rec = serde.decode(v1, "DispatchEntry")
    assert (rec["outcome"], rec["error_code"], rec["error_subcode"], rec["message_status"]) == ("FAILED", None, None, None)


def test_new_writer_fields_round_trip(serde):
    until = NOW + dt.timedelta(hours=1)
    rec = serde.decode(serde.encode("SendCommand", command(valid_until=until, priority=5)), "SendCommand")
    assert rec["valid_until"] == until and rec["priority"] == 5


@pytest.mark.parametrize("data,match", [
    (b"", "empty"),
    (b"{\"json\": true}", "not an Avro record"),
    (SINGLE_OBJECT_MAGIC + b"\x00" * 8 + b"x", "unknown writer schema"),
])
def test_unreadable_bytes_raise_serde_error(serde, data, match):
    with pytest.raises(SerdeError, match=match):
        serde.decode(data, "SendCommand")


def test_wrong_record_type_is_refused(serde):
    data = serde.encode("AuditEvent", {"event_id": "e", "occurred_at": NOW, "actor": "operator:x", "tenant_id": None,
                                       "subject_id": None, "action": "a", "target": None})
    with pytest.raises(SerdeError, match="expected a SendCommand record, got a AuditEvent"):
        serde.decode(data, "SendCommand")


def test_truncated_body_is_refused(serde):
    data = serde.encode("SendCommand", command())
    with pytest.raises(SerdeError, match="cannot decode"):
        serde.decode(data[:20], "SendCommand")


def test_invalid_record_is_refused_on_encode(serde):
    with pytest.raises(SerdeError, match="does not match SendCommand"):
        serde.encode("SendCommand", command(lane="SOMETIMES"))


def test_schema_files_are_self_contained_json():
    # Other languages read these files directly: each must parse on its own.
    from wapipe.avro import schema_dir

    for path in schema_dir().glob("*.avsc"):
        fastavro.parse_schema(json.loads(path.read_text()))


def test_every_sealed_field_is_a_sealed_record():
    """Personal data only ever travels in Sealed {key_id, nonce, ciphertext} fields."""
    store = SchemaStore.load()

    def sealed_types(t):
        if isinstance(t, list):
            return [x for u in t for x in sealed_types(u)]
        return [t] if isinstance(t, dict) else []

    for name in store.names():
        for field in store.latest(name).schema["fields"]:
            if field["name"] in ("pii", "token"):
                kinds = [t for t in sealed_types(field["type"]) if t.get("type") != "null"]
                assert kinds and all(t.get("name") == "io.wapipe.Sealed" for t in kinds), (name, field["name"])


def test_every_topic_is_declared_once_with_a_known_value_schema():
    from wapipe.topics import TOPICS

    names = [t.name for t in TOPICS]
    assert len(names) == len(set(names)), "a topic is declared twice"
    store = SchemaStore.load()
    for t in TOPICS:
        store.latest(t.value)  # raises SerdeError for an unknown record name
