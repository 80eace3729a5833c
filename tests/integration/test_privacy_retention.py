"""Retention: per tenant per data type in ClickHouse (TTL from the tenant's settings on wa.tenants),
per data type on Kafka (topic retention). Short retentions show expired data gone from both."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest

from sinks.retention import RetentionDays
from wapipe.avro import AvroSerde
from wapipe.edge.clients import producer
from wapipe.edge.scan import oldest_timestamps, scan
from wapipe.tenants.models import Tenant
from wapipe.tenants.registry import TenantRegistry
from wapipe.tenants.store import publish_tenant
from tests.harness import make_settings
from wapipe.edge.clients import admin_client
from wapipe.topics import WEBHOOK_RAW, apply_topics, spec

pytestmark = pytest.mark.integration


def test_clickhouse_ttl_follows_each_tenants_retention_per_data_type(settings, topics, clickhouse, unique):
    short = Tenant(tenant_id=f"short-{unique}", retention_days={"content": 1, "metadata": 2, "audit": 3})
    long_ = Tenant(tenant_id=f"long-{unique}", retention_days={"content": 30, "metadata": 400, "audit": 800})
    p = producer(topics)
    for t in (short, long_):
        publish_tenant(p, t)
    with TenantRegistry(settings, topics) as reg:
        reg.wait_ready(30)
        days = RetentionDays(settings, reg)
        assert days(short.tenant_id, "metadata") == 2 and days(long_.tenant_id, "metadata") == 400
        five_days_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=5)
        for t in (short, long_):
            tid = t.tenant_id
            clickhouse.command(
                "INSERT INTO send_results (command_id, tenant_id, idempotency_key, phone_number_id, subject_id, lane,"
                " outcome, attempts, decided_at, retention_days) VALUES"
                " ({c:String}, {t:String}, 'k', 'p', 's', 'TRANSACTIONAL', 'SENT', 1, {at:DateTime64(3)}, {d:UInt16})",
                parameters={"c": uuid.uuid4().hex, "t": tid, "at": five_days_ago, "d": days(tid, "metadata")})
            clickhouse.command(
                "INSERT INTO inbound_messages (event_id, tenant_id, waba_id, phone_number_id, message_id, type, timestamp,"
                " subject_id, pii_key_id, pii_nonce, pii_ciphertext, received_at, extra, content_retention_days, retention_days)"
                " VALUES ({e:String}, {t:String}, 'w', 'p', {m:String}, 'text', {at:DateTime64(3)}, 's', 's/k', 'n',"
                " 'sealed-content', {at:DateTime64(3)}, '{}', {cd:UInt16}, {d:UInt16})",
                parameters={"e": uuid.uuid4().hex, "t": tid, "m": uuid.uuid4().hex, "at": five_days_ago,
                            "cd": days(tid, "content"), "d": days(tid, "metadata") + 30})
    for table in ("send_results", "inbound_messages"):
        clickhouse.command(f"OPTIMIZE TABLE {table} FINAL")

    def q(sql, tid):
        return clickhouse.query(sql, parameters={"t": tid}).result_rows

    # metadata row of the short tenant expired (2 days < 5 days old); the long tenant's stays
    assert q("SELECT count() FROM send_results WHERE tenant_id = {t:String}", short.tenant_id) == [(0,)]
    assert q("SELECT count() FROM send_results WHERE tenant_id = {t:String}", long_.tenant_id) == [(1,)]
    # content (sealed message) expired earlier than the row's metadata for the short tenant only
    assert q("SELECT pii_ciphertext FROM inbound_messages WHERE tenant_id = {t:String}", short.tenant_id) == [("",)]
    assert q("SELECT pii_ciphertext FROM inbound_messages WHERE tenant_id = {t:String}", long_.tenant_id) == [("sealed-content",)]


def test_kafka_raw_webhooks_expire_with_topic_retention(settings, topics, tmp_path, unique):
    fast = settings.model_copy(update={"raw_webhook_retention_ms": 1000, "raw_webhook_segment_ms": 200})
    admin = admin_client(topics)
    apply_topics(admin, fast, (spec(WEBHOOK_RAW),))
    try:
        serde = AvroSerde.from_settings(fast)
        marker = f"expire-me-{unique}".encode()
        p = producer(topics)
        sent_at = int(time.time() * 1000)
        rec = {"ingress_id": unique, "received_at": sent_at, "app_id": "a", "signature_verified": True,
               "headers": {}, "body": b'{"wa_id": "' + marker + b'"}'}
        p.produce(WEBHOOK_RAW, key=b"1001", value=serde.encode("RawWebhook", rec, topic=WEBHOOK_RAW))
        assert p.flush(10) == 0
        # the record's own timestamp (the producer stamps it a moment after sent_at, possibly a ms later)
        [marker_ts] = [m.timestamp()[1] for m in scan(topics, WEBHOOK_RAW) if marker in (m.value() or b"")]
        assert marker_ts >= sent_at
        deadline = time.monotonic() + 30
        while True:
            oldest = [ts for ts in oldest_timestamps(topics, WEBHOOK_RAW).values() if ts is not None]
            if not oldest or min(oldest) > marker_ts:
                break
            assert time.monotonic() < deadline, "raw webhook not expired within 30 s of a 1 s retention"
            time.sleep(0.5)
        assert not any(marker in (m.value() or b"") for m in scan(topics, WEBHOOK_RAW))
    finally:
        apply_topics(admin, make_settings(tmp_path / "restore", kafka_bootstrap_servers=topics), (spec(WEBHOOK_RAW),))
