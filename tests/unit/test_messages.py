"""wapipe.messages against the real schemas: every version still read decodes into the typed
message, and the latest version round-trips byte for byte (records already on topics stay readable
and are written again unchanged)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from wapipe.avro import AvroSerde, schema_dir
from wapipe.messages.campaign import CampaignControl
from wapipe.messages.deadletter import DeadLetterRecord
from wapipe.messages.erp import ErpInbound, ErpInboundKind, ReadCommand
from wapipe.messages.events import AccountEvent, InboundMessage, StatusEvent, SubjectLink, Suppression
from wapipe.messages.privacy import PrivacyKind, PrivacyRequest, PrivacyStatus
from wapipe.messages.times import at_ms, to_ms
from wapipe.messages.send import DispatchEntry, SendCommand, SendResult

SERDE = AvroSerde()
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
INT = st.integers(-(2**31), 2**31 - 1)

# (schema name, versions read, the typed class)
MESSAGES = [("SendCommand", (1, 2, 3), SendCommand), ("SendResult", (1, 2), SendResult),
            ("DispatchEntry", (1, 2), DispatchEntry), ("CampaignControl", (1,), CampaignControl),
            ("DeadLetter", (1,), DeadLetterRecord), ("PrivacyRequest", (1,), PrivacyRequest),
            ("ReadCommand", (1,), ReadCommand), ("ErpInbound", (1,), ErpInbound),
            ("StatusEvent", (3, 4), StatusEvent), ("InboundMessage", (2,), InboundMessage),
            ("AccountEvent", (1, 2), AccountEvent), ("Suppression", (1,), Suppression),
            ("SubjectLink", (1,), SubjectLink)]
CASES = [(name, v, cls) for name, versions, cls in MESSAGES for v in versions]


def raw_schema(name: str, version: int) -> dict:
    return json.loads((schema_dir() / f"{name}.v{version}.avsc").read_text())


def records(schema) -> st.SearchStrategy:
    """Any value a schema (the JSON form) admits."""
    if isinstance(schema, list):
        return st.one_of(*(records(s) for s in schema))
    if isinstance(schema, str):
        return {"null": st.none(), "string": TEXT, "int": INT, "long": st.integers(-(2**63), 2**63 - 1),
                "boolean": st.booleans(), "bytes": st.binary(max_size=16)}[schema]
    t = schema["type"]
    if schema.get("logicalType") == "timestamp-millis":
        return st.integers(0, 4_102_444_800_000).map(lambda ms: EPOCH + dt.timedelta(milliseconds=ms))
    if t == "record":
        return st.fixed_dictionaries({f["name"]: records(f["type"]) for f in schema["fields"]})
    if t == "enum":
        return st.sampled_from(schema["symbols"])
    if t == "map":
        return st.dictionaries(TEXT, records(schema["values"]), max_size=3)
    if t == "array":
        return st.lists(records(schema["items"]), max_size=3)
    return records(t)


@pytest.mark.parametrize("name, version, cls", CASES, ids=[f"{n}.v{v}" for n, v, _ in CASES])
def test_every_version_read_decodes_into_the_typed_message(name, version, cls):
    writer = raw_schema(name, version)
    latest = SERDE.store.latest(name)
    parsed_writer = fastavro.parse_schema(writer)

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(records(writer))
    def check(record):
        data = SERDE.encode(name, record, version=version)
        msg = cls.from_avro(SERDE.decode(data, name))
        out = msg.to_avro()
        # what the writer wrote, field by field (read with the writer's own schema) ...
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed_writer, record)
        buf.seek(0)
        as_written = fastavro.schemaless_reader(buf, parsed_writer, None)
        old = {f["name"] for f in writer["fields"]}
        for field in old:
            assert out[field] == as_written[field], field
        # ... and the latest version's default for every field the writer did not have
        for f in latest.schema["fields"]:
            if f["name"] not in old:
                assert out[f["name"]] == f["default"], f["name"]
        again = SERDE.encode(name, out)
        if version == latest.version:
            assert again == data  # the wire format is unchanged
        assert cls.from_avro(SERDE.decode(again, name)) == msg

    check()


def test_every_field_of_the_latest_schemas_is_a_field_of_its_message():
    for name, _, cls in MESSAGES:
        schema_fields = [f["name"] for f in SERDE.store.latest(name).schema["fields"]]
        assert sorted(schema_fields) == sorted(f.name for f in dataclasses.fields(cls)), name
        assert getattr(cls, "RECORD", name) == name


def test_a_command_of_v1_reads_as_addressed_by_number_with_defaults():
    v1 = {"command_id": "c", "tenant_id": "t", "idempotency_key": "k", "phone_number_id": "1", "subject_id": "s",
          "lane": "CAMPAIGN", "campaign_id": "promo", "kind": "TEMPLATE",
          "template": {"name": "hello", "language": "en", "parameter_count": 2},
          "pii": {"key_id": "", "nonce": b"", "ciphertext": b"{}"}, "requested_at": EPOCH}
    cmd = SendCommand.from_avro(SERDE.decode(SERDE.encode("SendCommand", v1, version=1), "SendCommand"))
    assert cmd.user_subject_id is None and cmd.subjects == ("s",) and cmd.valid_until is None
    assert cmd.metadata == {} and cmd.priority == 0 and cmd.is_template and cmd.template.parameter_count == 2
    assert cmd.key == "t/k"


def test_the_enums_are_the_schema_symbols():
    fields = {f["name"]: f["type"] for f in raw_schema("PrivacyRequest", 1)["fields"]}
    assert list(PrivacyKind) == fields["kind"]["symbols"]
    assert list(PrivacyStatus) == fields["status"]["symbols"]
    fields = {f["name"]: f["type"] for f in raw_schema("ErpInbound", 1)["fields"]}
    assert list(ErpInboundKind) == fields["kind"]["symbols"]


def test_a_request_gives_exact_milliseconds():
    # int(datetime.timestamp() * 1000) says ...079 for this one (float seconds * 1000 = ...079.9999)
    at = EPOCH + dt.timedelta(milliseconds=1_096_703_517_080)
    req = PrivacyRequest(request_id="r", kind=PrivacyKind.ERASURE, source="cli", status=PrivacyStatus.RECEIVED,
                         confirmation_code="C", requested_at=at, updated_at=at + dt.timedelta(milliseconds=1))
    assert (req.requested_ms, req.updated_ms) == (1_096_703_517_080, 1_096_703_517_081)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 4_102_444_800_000))
def test_milliseconds_survive_the_datetime_fastavro_decodes_them_to(value):
    at = SERDE.decode(SERDE.encode("PrivacyRequest", {
        "request_id": "r", "kind": "ACCESS", "source": "cli", "status": "RECEIVED", "confirmation_code": "C",
        "requested_at": value, "updated_at": value}), "PrivacyRequest")["requested_at"]
    # (wapipe.privacy.records.ms, int(at.timestamp() * 1000), was 1 ms short for ~0.6 % of them)
    assert at == at_ms(value) and to_ms(at) == value and PrivacyRequest.from_avro(
        {"request_id": "r", "kind": "ACCESS", "source": "cli", "status": "RECEIVED", "confirmation_code": "C",
         "requested_at": at, "updated_at": at}).requested_ms == value


@pytest.mark.parametrize("missing", ["request_id", "kind", "source", "status", "confirmation_code",
                                     "requested_at", "updated_at"])
def test_a_decoded_request_missing_a_required_field_is_refused_naming_it(missing):
    full = PrivacyRequest(request_id="r", kind=PrivacyKind.ERASURE, source="cli", status=PrivacyStatus.RECEIVED,
                          confirmation_code="C", requested_at=EPOCH, updated_at=EPOCH).to_avro()
    del full[missing]
    with pytest.raises(KeyError, match=missing):
        PrivacyRequest.from_avro(full)
