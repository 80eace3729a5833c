"""The Avro pass-through (ClickHouse decodes the records) writes exactly the rows the Python path
writes, on the real embedded engine."""

from __future__ import annotations

import datetime as dt

import pytest

from sinks.passthrough import passthroughs
from sinks.retention import RetentionDays
from sinks.rows import CONVERTERS
from wapipe.avro import AvroSerde
from wapipe.topics import STATUS_EVENTS

pytestmark = pytest.mark.integration


class _Tenants:
    def __init__(self, days):
        self.days = days

    def tenant(self, tid):
        return type("T", (), {"tenant_id": tid, "retention_days": {"metadata": self.days[tid]}})() if tid in self.days else None

    def tenants(self):
        return [self.tenant(t) for t in self.days]


def test_passthrough_rows_equal_python_rows(clickhouse, settings):
    serde = AvroSerde()
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=123000)
    recs = [
        {"event_id": "e1", "tenant_id": "acme", "waba_id": "w", "phone_number_id": "p", "wamid": "m1", "status": "failed",
         "timestamp": now, "subject_id": "s1", "pii": {"key_id": "s1/k", "nonce": b"n", "ciphertext": b"c"},
         "biz_opaque_callback_data": "k1", "conversation_id": "c1", "conversation_origin": "utility",
         "conversation_expires_at": now + dt.timedelta(days=1), "pricing_billable": False, "pricing_model": "CBP",
         "pricing_category": "utility", "pricing_type": None,
         "errors": [{"code": 131026, "title": "Undeliverable", "message": None, "details": "d"}],
         "received_at": now, "extra": '{"x":1}'},
        {"event_id": "e2", "tenant_id": None, "waba_id": "w", "phone_number_id": "p", "wamid": "m2", "status": "mystery",
         "timestamp": now, "subject_id": None, "received_at": now},
        {"event_id": "e3", "tenant_id": "other", "waba_id": "w", "phone_number_id": "p", "wamid": "m3", "status": "played",
         "timestamp": now, "subject_id": "s3", "received_at": now},
        {"event_id": "e4", "tenant_id": "acme", "waba_id": "w", "phone_number_id": "p", "wamid": "m4", "status": "sent",
         "timestamp": now, "subject_id": None, "received_at": now, "recipient_type": "GROUP",
         "extra": '{"group_id":"g1"}'},  # a group's status (issue 20): no subject, recipient_type kept
    ]
    days = RetentionDays(settings, _Tenants({"acme": 7, "other": 3}))
    conv = CONVERTERS[STATUS_EVENTS]
    values = [serde.encode("StatusEvent", r) for r in recs]
    pt = passthroughs(serde.store)[STATUS_EVENTS]
    assert all(pt.accepts(v) for v in values)
    pt.insert(clickhouse, values, days.table("metadata"), "tok-fast")
    rows = [conv.row(serde.decode(v, "StatusEvent"), days) for v in values]
    for r in rows:
        r[0] = "py-" + r[0]
    clickhouse.insert("status_events", rows, column_names=list(conv.columns))
    cols = ", ".join(c for c in conv.columns if c != "event_id")
    fast = clickhouse.query(f"SELECT event_id, {cols} FROM status_events WHERE NOT startsWith(event_id, 'py-') ORDER BY event_id").result_rows
    slow = clickhouse.query(f"SELECT substring(event_id, 4), {cols} FROM status_events WHERE startsWith(event_id, 'py-') ORDER BY event_id").result_rows
    assert fast == slow and len(fast) == 4
    at = ["event_id", *(c for c in conv.columns if c != "event_id")].index
    assert [r[at("retention_days")] for r in fast] == [7, settings.retention_defaults["metadata"], 3, 7]
    assert [(r[at("subject_id")], r[at("recipient_type")]) for r in fast][3] == ("", "group")
    # the same block again with the same token is absorbed
    pt.insert(clickhouse, values, days.table("metadata"), "tok-fast")
    assert clickhouse.query("SELECT count() FROM status_events").result_rows == [(8,)]
