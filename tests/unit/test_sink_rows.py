"""Record → row conversion, batch tokens and retention lookup (no Kafka, no ClickHouse needed)."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from sinks.passthrough import container
from sinks.retention import RetentionDays
from sinks.rows import CONVERTERS, Unconvertible, convert
from sinks.worker import Batch
from wapipe.config import Settings
from wapipe.topics import AUDIT, INBOUND_MESSAGES, SEND_RESULTS, STATUS_EVENTS

NOW = dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.timezone.utc)


class _Tenants:
    def tenant(self, tid):
        return SimpleNamespace(tenant_id=tid, retention_days={"content": 3, "metadata": 90, "audit": 400}) if tid == "acme" else None

    def tenants(self):
        return [self.tenant("acme")]


def test_retention_from_tenant_else_settings_defaults():
    s = Settings(retention_defaults={"content": 30, "metadata": 365, "raw_webhooks": 1, "audit": 730})
    days = RetentionDays(s, _Tenants())
    assert days("acme", "content") == 3 and days("acme", "audit") == 400
    assert days("other", "content") == 30 and days(None, "metadata") == 365
    assert days.table("metadata") == (["acme"], [90], 365)


def test_status_row_ranks_and_errors():
    conv = CONVERTERS[STATUS_EVENTS]
    rec = {"event_id": "e", "tenant_id": "acme", "waba_id": "w", "phone_number_id": "p", "wamid": "m", "status": "failed",
           "timestamp": NOW, "subject_id": None, "received_at": NOW,
           "errors": [{"code": 131026, "title": "Message undeliverable", "message": None, "details": "x"}]}
    row = dict(zip(conv.columns, convert(conv, rec, RetentionDays(Settings(), _Tenants()))))
    assert row["status_rank"] == 4 and row["error_codes"] == [131026] and row["error_titles"] == ["Message undeliverable"]
    assert row["error_messages"] == [""] and row["subject_id"] == "" and row["retention_days"] == 90


def test_inbound_content_must_be_sealed():
    conv = CONVERTERS[INBOUND_MESSAGES]
    rec = {"event_id": "e", "tenant_id": "acme", "waba_id": "w", "phone_number_id": "p", "message_id": "m", "type": "text",
           "timestamp": NOW, "subject_id": "s", "received_at": NOW,
           "pii": {"key_id": "", "nonce": b"", "ciphertext": b'{"from": "15551234567"}'}}
    with pytest.raises(Unconvertible, match="not sealed"):
        convert(conv, rec, RetentionDays(Settings()))
    rec["pii"] = {"key_id": "s/k1", "nonce": b"n", "ciphertext": b"c"}
    row = dict(zip(conv.columns, convert(conv, rec, RetentionDays(Settings(), _Tenants()))))
    assert row["content_retention_days"] == 3 and row["retention_days"] == 90 and row["pii_key_id"] == "s/k1"


def test_missing_field_is_unconvertible_with_a_reason():
    with pytest.raises(Unconvertible, match="SendResult → send_results: KeyError"):
        convert(CONVERTERS[SEND_RESULTS], {"command_id": "c"}, RetentionDays(Settings()))


def test_audit_row_uses_audit_retention():
    conv = CONVERTERS[AUDIT]
    rec = {"event_id": "a", "occurred_at": NOW, "actor": "operator:x", "tenant_id": "acme", "action": "x", "details": {"k": "v"}}
    row = dict(zip(conv.columns, convert(conv, rec, RetentionDays(Settings(), _Tenants()))))
    assert row["retention_days"] == 400 and row["details"] == {"k": "v"} and row["outcome"] == "ok"


def test_batch_token_depends_on_offsets_records_and_table():
    a, b = Batch(), Batch()
    for batch, order in ((a, [(0, 5), (1, 7), (0, 6)]), (b, [(1, 7), (0, 5), (0, 6)])):
        for p, off in order:
            batch.track("t", p, off, f"record {p}/{off}".encode())
    assert a.token("status_events") == b.token("status_events") != a.token("audit_log")
    assert [(tp.partition, tp.offset) for tp in a.commit_offsets()] == [(0, 7), (1, 8)]
    b.track("t", 1, 8, b"more")
    assert a.token("status_events") != b.token("status_events")
    # The same offsets of a recreated topic hold other records: a new token, or ClickHouse
    # would drop the new rows as duplicates of the old ones.
    c = Batch()
    for p, off in [(0, 5), (1, 7), (0, 6)]:
        c.track("t", p, off, f"other {p}/{off}".encode())
    assert c.token("status_events") != a.token("status_events")


def test_container_is_a_readable_avro_file():
    import io

    import fastavro

    from wapipe.avro import AvroSerde

    serde = AvroSerde()
    sv = serde.store.latest("StatusEvent")
    recs = [{"event_id": f"e{i}", "waba_id": "w", "phone_number_id": "p", "wamid": "m", "status": "sent",
             "timestamp": NOW, "received_at": NOW} for i in range(3)]
    blob = container(sv.canonical, [serde.encode("StatusEvent", r)[10:] for r in recs])
    assert [r["event_id"] for r in fastavro.reader(io.BytesIO(blob))] == ["e0", "e1", "e2"]


def test_every_topic_of_a_loaded_record_type_is_loaded():
    """What the report and analysts read is in ClickHouse: each topic that carries commands, results,
    statuses, inbound messages, account or audit events is loaded by the sink, unless it only holds
    the pipeline's internal copies of records loaded from another topic."""
    from sinks.rows import INTERNAL_COPIES, SINK_TOPICS
    from wapipe.topics import SEND_REQUESTED_BULK, TOPICS

    loaded_types = {CONVERTERS[t].record for t in SINK_TOPICS}
    for spec in TOPICS:
        if spec.value in loaded_types:
            assert spec.name in SINK_TOPICS or spec.name in INTERNAL_COPIES, spec.name
    assert SEND_REQUESTED_BULK in SINK_TOPICS and CONVERTERS[SEND_REQUESTED_BULK].table == "send_requests"
    assert not INTERNAL_COPIES & set(SINK_TOPICS)
