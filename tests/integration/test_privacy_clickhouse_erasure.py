"""sinks/erasure.ErasureWorker on a real ClickHouse (chDB) and broker: covers every table with a
subject_id (including one created after start), waits while mutations run, and reports done."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from sinks.erasure import ErasureWorker, running_mutations, subject_tables
from wapipe.avro import AvroSerde, SerdeError
from wapipe.edge.clients import producer
from wapipe.messages.privacy import PrivacyStatus
from wapipe.privacy.records import CLICKHOUSE_DONE, Publisher, new_request
from wapipe.edge.scan import scan
from wapipe.topics import AUDIT

pytestmark = pytest.mark.integration


def count(client, table, subject):
    return client.query(f"SELECT count() FROM `{table}` WHERE subject_id = {{s:String}}",
                        parameters={"s": subject}).result_rows[0][0]


def test_erasure_worker_deletes_everywhere_with_backpressure(settings, topics, clickhouse, unique):
    a, b = f"A-{unique}", f"B-{unique}"
    clickhouse.command("CREATE TABLE later_table (subject_id String, note String) ENGINE = MergeTree ORDER BY subject_id")
    for s in (a, b):
        clickhouse.command(
            "INSERT INTO send_results (command_id, tenant_id, idempotency_key, phone_number_id, subject_id, lane, outcome,"
            " attempts, decided_at, retention_days) VALUES ({s:String}, 't', 'k', 'p', {s:String}, 'L', 'SENT', 1, now64(3), 30)",
            parameters={"s": s})
        clickhouse.command("INSERT INTO later_table VALUES ({s:String}, 'x')", parameters={"s": s})
    assert "later_table" in subject_tables(clickhouse) and "send_results" in subject_tables(clickhouse)

    # A mutation that cannot finish stays "running": the worker must hold back.
    clickhouse.command("ALTER TABLE later_table UPDATE note = 'y' WHERE throwIf(subject_id = {s:String})",
                       parameters={"s": b}, settings={"mutations_sync": 0})
    assert running_mutations(clickhouse) == 1

    serde = AvroSerde.from_settings(settings)
    req = new_request("ERASURE", source="cli", tenant_id="t", subject_id=a)
    req = replace(req, status=PrivacyStatus.IN_PROGRESS, steps={"clickhouse": "requested"})
    Publisher(producer(topics), serde).request(req)

    s = settings.model_copy(update={"erasure_max_running_mutations": 1, "erasure_old_parts_lifetime_s": 1})
    worker = ErasureWorker(s, topics, group=f"erasure-{unique}")
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3:
            assert worker.poll_once(clickhouse, timeout=0.2) == 0
        assert count(clickhouse, "send_results", a) == 1, "no delete while a mutation runs"

        clickhouse.command("KILL MUTATION WHERE database = currentDatabase() AND NOT is_done SYNC")
        deadline = time.monotonic() + 30
        while worker.poll_once(clickhouse, timeout=0.2) == 0:
            assert time.monotonic() < deadline, "erasure not applied after the mutation was killed"
    finally:
        worker.close()
    for table in ("send_results", "later_table"):
        assert count(clickhouse, table, a) == 0 and count(clickhouse, table, b) == 1

    # A sink replay brings back A's old row (event time before the request): the guard deletes it.
    # A's new row (the person wrote again after the erasure) stays.
    import datetime as dt

    def insert(subject, at, cid):
        clickhouse.command(
            "INSERT INTO send_results (command_id, tenant_id, idempotency_key, phone_number_id, subject_id, lane, outcome,"
            " attempts, decided_at, retention_days) VALUES ({c:String}, 't', 'k', 'p', {s:String}, 'L', 'SENT', 1,"
            " {at:DateTime64(3)}, 30)", parameters={"s": subject, "c": cid, "at": at})

    requested = req.requested_at
    insert(a, requested - dt.timedelta(minutes=1), "replayed")
    insert(a, requested + dt.timedelta(minutes=1), "came-back")
    Publisher(producer(topics), serde).request(replace(req, status=PrivacyStatus.COMPLETED, steps={"clickhouse": "done"}))
    guard = ErasureWorker(s, topics, group=f"erasure2-{unique}")
    try:
        guard._registry.wait_ready(30)
        assert guard.guard_replays(clickhouse, force=True) == 1
    finally:
        guard.close()
    assert [r[0] for r in clickhouse.query("SELECT command_id FROM send_results WHERE subject_id = {s:String}",
                                           parameters={"s": a}).result_rows] == ["came-back"]
    assert count(clickhouse, "send_results", b) == 1

    done = []
    for m in scan(topics, AUDIT):
        try:
            ev = serde.decode(m.value(), "AuditEvent")
        except SerdeError:
            continue
        if ev["action"] == CLICKHOUSE_DONE and ev["target"] == req.request_id:
            done.append(ev)
    assert len(done) == 1 and done[0]["details"]["rows"] == "2"


def confirmations(serde, bootstrap, request_id) -> list[dict]:
    out = []
    for m in scan(bootstrap, AUDIT):
        try:
            ev = serde.decode(m.value(), "AuditEvent")
        except SerdeError:
            continue
        if ev["action"] == CLICKHOUSE_DONE and ev["target"] == request_id:
            out.append(ev)
    return out


def test_erasure_rewrites_the_parts_nothing_masked_or_on_disk_is_left(settings, topics, clickhouse, tmp_path, unique):
    """Issue 18: a lightweight DELETE only masked rows (``apply_deleted_mask = 0`` showed them) and
    the replaced bytes stayed in the parts. Now the rows are rewritten out, the replaced parts are
    gone from disk before the request is confirmed, and the erased id is in no file of the chDB
    folder (decompressed), not even a mutation's text; B's bytes are (the scan sees data)."""
    from tests.integration.disk_scan import chdb_files
    from tests.integration.test_privacy_erasure import ch_insert

    a, b = f"A{unique}erased", f"B{unique}kept"
    for who in (a, b):
        ch_insert(clickhouse, {"subject": who})
    # an earlier erasure by the old code: A's rows of one table only masked, still in the parts
    clickhouse.command("DELETE FROM send_results WHERE subject_id = {s:String}", parameters={"s": a},
                       settings={"lightweight_deletes_sync": 2})
    tables = subject_tables(clickhouse)
    serde = AvroSerde.from_settings(settings)
    req = new_request("ERASURE", source="cli", tenant_id="t", subject_id=a)
    req = replace(req, status=PrivacyStatus.IN_PROGRESS, steps={"clickhouse": "requested"})
    Publisher(producer(topics), serde).request(req)
    worker = ErasureWorker(settings.model_copy(update={"erasure_old_parts_lifetime_s": 1}), topics,
                           group=f"erasure-{unique}")
    try:
        deadline = time.monotonic() + 60
        while not confirmations(serde, topics, req.request_id):
            for _ in range(5):
                worker.poll_once(clickhouse, timeout=0.2)
            assert time.monotonic() < deadline, "the ClickHouse erasure was not confirmed"
    finally:
        worker.close()
    for table in tables:
        n = clickhouse.query(f"SELECT countIf(subject_id = {{a:String}}), countIf(subject_id = {{b:String}})"
                             f" FROM `{table}` SETTINGS apply_deleted_mask = 0", parameters={"a": a, "b": b}).result_rows[0]
        assert n[0] == 0 and n[1] >= 1, f"{table}: (A, B) rows with masked ones = {n}"
    found_a, found_b = set(), set()
    for path, blob in chdb_files(tmp_path / "chdb"):
        if path.name.startswith("mutation_") and blob.startswith(b"format version") and b"_row_exists" in blob:
            continue  # the text of the old code's lightweight DELETE above (it names the id; ours do not)
        if a.encode() in blob:
            found_a.add(str(path))
        if b.encode() in blob:
            found_b.add(str(path))
    assert not found_a, f"A's id still on disk: {sorted(found_a)}"
    assert len({p for p in found_b if "/store/" in p}) >= len(tables), f"the scan must see B in every table: {found_b}"

    done = confirmations(serde, topics, req.request_id)
    assert len(done) == 1 and done[0]["details"]["method"] == "rewritten"
    assert int(done[0]["details"]["replaced_parts_removed"]) >= len(tables)
