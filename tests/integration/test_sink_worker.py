"""The sink loop on the real broker and the real embedded ClickHouse: idempotent under a forced
retry, nothing lost or doubled while ClickHouse is down, the dead-letter limit, the state machine
as queries see it. Each test has its own topic, so tests sharing the broker do not mix."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from confluent_kafka import TopicPartition

from sinks.passthrough import passthroughs
from sinks.retention import RetentionDays
from sinks.rows import CONVERTERS
from sinks.worker import DeadLetterLimit, SinkWorker
from tests.integration.kafka_helpers import read_all
from wapipe.avro import AvroSerde
from wapipe.edge.clients import consumer as make_consumer
from wapipe.edge.clients import producer
from wapipe.edge.clients import admin_client
from wapipe.topics import SINK_DEAD, STATUS_EVENTS

pytestmark = pytest.mark.integration

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _status(i: int, status: str, *, wamid: str | None = None, at: int = 0, tenant="t1", errors=()) -> dict:
    wamid = wamid or f"wamid.{i}"
    return {
        "event_id": f"{wamid}/{status}", "tenant_id": tenant, "waba_id": "w1", "phone_number_id": "p1", "wamid": wamid,
        "status": status, "timestamp": NOW + dt.timedelta(seconds=at), "subject_id": f"s{i}", "pii": None,
        "biz_opaque_callback_data": f"k{i}", "conversation_id": None, "conversation_origin": None,
        "conversation_expires_at": None, "pricing_billable": True, "pricing_model": "PMP", "pricing_category": "utility",
        "pricing_type": "regular", "errors": [{"code": c, "title": "t", "message": "m", "details": "d"} for c in errors],
        "received_at": NOW, "extra": "{}",
    }


class _Topic:
    def __init__(self, bootstrap: str, unique: str):
        from confluent_kafka.admin import NewTopic

        self.name = f"test.sink.status.{unique}"
        admin = admin_client(bootstrap)
        for f in admin.create_topics([NewTopic(self.name, num_partitions=2, replication_factor=1)]).values():
            f.result()
        self.bootstrap = bootstrap
        self.serde = AvroSerde()

    def produce(self, records: list, raw: list[bytes] = ()) -> None:
        p = producer(self.bootstrap)
        for r in records:
            p.produce(self.name, key=r["wamid"].encode(), value=self.serde.encode("StatusEvent", r))
        for b in raw:
            p.produce(self.name, key=b"bad", value=b)
        assert p.flush(30) == 0

    def converters(self):
        return {self.name: dataclasses.replace(CONVERTERS[STATUS_EVENTS], topic=self.name)}

    def committed(self, group: str) -> int:
        c = make_consumer(self.bootstrap, group)
        try:
            return sum(max(tp.offset, 0) for tp in c.committed([TopicPartition(self.name, p) for p in (0, 1)], timeout=10))
        finally:
            c.close()


class _Flaky:
    """The real chDB client, with faults injected around it (ClickHouse itself is not faked)."""

    def __init__(self, client):
        self.client = client
        self.down = False
        self.lose_next_response = 0
        self.poison: set[str] = set()  # event ids whose rows "ClickHouse" refuses as data
        self.calls: list[tuple[str, int, str]] = []

    def insert(self, table, rows, **kw):
        self.calls.append((table, len(rows), kw["settings"]["insert_deduplication_token"]))
        if self.down:
            raise OperationalError("Error HTTPConnectionPool(host='127.0.0.1'): Connection refused")
        if any(r[0] in self.poison for r in rows):
            raise DatabaseError("Code: 27. DB::Exception: Cannot parse input: expected ... (CANNOT_PARSE_INPUT_ASSERTION_FAILED)")
        result = self.client.insert(table, rows, **kw)
        if self.lose_next_response:
            self.lose_next_response -= 1
            raise OperationalError("Error ... Read timed out (the insert reached ClickHouse, the answer did not)")
        return result

    def command(self, sql, **kw):
        if "insert_deduplication_token" in (kw.get("settings") or {}):
            self.calls.append((sql.split(" SELECT ")[0], 0, kw["settings"]["insert_deduplication_token"]))
            if self.down:
                raise OperationalError("Error HTTPConnectionPool(host='127.0.0.1'): Connection refused")
        result = self.client.command(sql, **kw)
        if self.lose_next_response and "insert_deduplication_token" in (kw.get("settings") or {}):
            self.lose_next_response -= 1
            raise OperationalError("Error ... Read timed out (the insert reached ClickHouse, the answer did not)")
        return result

    def __getattr__(self, name):
        return getattr(self.client, name)


def _run(worker: SinkWorker) -> tuple[threading.Thread, threading.Event, list]:
    stop, errors = threading.Event(), []

    def target():
        try:
            worker.run(stop)
        except BaseException as exc:  # surfaced to the test
            errors.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, stop, errors


def _wait(pred, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return False


def _worker(settings, topic, client, unique, fast=False, **over):
    s = settings.model_copy(update={"sink_batch_ms": 200, "sink_retry_max_s": 0.5, **over})
    pt = {topic.name: passthroughs(topic.serde.store)[STATUS_EVENTS]} if fast else None
    return SinkWorker(s, topic.bootstrap, client, retention=RetentionDays(s), group=f"sink-{unique}",
                      converters=topic.converters(), passthrough=pt)


@pytest.mark.parametrize("fast", [False, True], ids=["python-rows", "avro-passthrough"])
def test_forced_retry_resends_the_identical_batch_and_nothing_doubles(topics, settings, clickhouse, unique, fast):
    topic = _Topic(topics, unique)
    topic.produce([_status(i, "sent") for i in range(500)])
    flaky = _Flaky(clickhouse)
    flaky.lose_next_response = 1  # the first insert lands in ClickHouse, then "fails"
    w = _worker(settings, topic, flaky, unique, fast=fast)
    t, stop, errors = _run(w)
    try:
        assert _wait(lambda: topic.committed(f"sink-{unique}") == 500)
    finally:
        stop.set()
        t.join(20)
    assert not errors
    first, second = flaky.calls[0], flaky.calls[1]
    assert first == second, "the retry must resend the same rows with the same token"
    # No FINAL, no dedup in the query: the table really holds each row once.
    assert clickhouse.query("SELECT count(), uniqExact(event_id) FROM status_events").result_rows == [(500, 500)]
    assert w.stats.insert_failures == 1


@pytest.mark.parametrize("fast", [False, True], ids=["python-rows", "avro-passthrough"])
def test_clickhouse_down_then_back_nothing_lost_or_doubled(topics, settings, clickhouse, unique, fast):
    topic = _Topic(topics, unique)
    flaky = _Flaky(clickhouse)
    flaky.down = True
    w = _worker(settings, topic, flaky, unique, fast=fast)
    t, stop, errors = _run(w)
    try:
        topic.produce([_status(i, "delivered") for i in range(300)])
        assert _wait(lambda: w.stats.insert_failures >= 3), "the sink should be retrying"
        assert t.is_alive() and not errors, "the sink must not die while ClickHouse is down"
        assert topic.committed(f"sink-{unique}") == 0, "nothing may be committed before it is written"
        topic.produce([_status(i, "delivered") for i in range(300, 400)])  # arrives during the outage
        time.sleep(1)
        flaky.down = False
        assert _wait(lambda: topic.committed(f"sink-{unique}") == 400)
    finally:
        stop.set()
        t.join(20)
    assert not errors
    assert clickhouse.query("SELECT count(), uniqExact(event_id) FROM status_events").result_rows == [(400, 400)]


def test_dead_letter_limit_stops_the_sink(topics, settings, clickhouse, unique):
    topic = _Topic(topics, unique)
    good = [_status(i, "sent") for i in range(20)]
    topic.produce(good, raw=[b"not avro %d" % i for i in range(80)])
    w = _worker(settings, topic, clickhouse, unique, sink_dlq_min=30, sink_dlq_window=100, sink_dlq_max_ratio=0.5)
    t, stop, errors = _run(w)
    t.join(60)
    stop.set()
    assert errors and isinstance(errors[0], DeadLetterLimit), errors
    assert "could not be converted" in str(errors[0]) and "not an Avro record" in str(errors[0])
    assert topic.committed(f"sink-{unique}") == 0, "the bad batch is not committed"
    dead = [AvroSerde().decode(m.value(), "DeadLetter") for m in read_all(topics, SINK_DEAD)]
    mine = [d for d in dead if d["source_topic"] == topic.name]
    assert mine and all("not an Avro record" in d["reason"] for d in mine)


def test_bad_records_below_the_limit_are_dead_lettered_and_offsets_advance(topics, settings, clickhouse, unique):
    topic = _Topic(topics, unique)
    topic.produce([_status(i, "sent") for i in range(100)], raw=[b"junk"])
    w = _worker(settings, topic, clickhouse, unique)
    t, stop, errors = _run(w)
    try:
        assert _wait(lambda: topic.committed(f"sink-{unique}") == 101)
    finally:
        stop.set()
        t.join(20)
    assert not errors
    assert clickhouse.query("SELECT count() FROM status_events").result_rows == [(100,)]
    dead = [AvroSerde().decode(m.value(), "DeadLetter") for m in read_all(topics, SINK_DEAD)]
    assert [d["value"] for d in dead if d["source_topic"] == topic.name] == [b"junk"]


def test_state_machine_in_clickhouse_out_of_order_and_duplicates(topics, settings, clickhouse, unique):
    topic = _Topic(topics, unique)
    a, b, c, d = (f"wamid.{unique}.{x}" for x in "abcd")
    # a: read first, then a late sent; duplicates of both; never a delivered.
    # b: sent, delivered, read, then sent again.  c: sent then failed (131026).  d: played.
    recs = [
        _status(1, "read", wamid=a, at=30), _status(1, "sent", wamid=a, at=10), _status(1, "read", wamid=a, at=30),
        _status(1, "sent", wamid=a, at=10),
        _status(2, "sent", wamid=b, at=1), _status(2, "delivered", wamid=b, at=2), _status(2, "read", wamid=b, at=3),
        _status(2, "sent", wamid=b, at=1),
        _status(3, "sent", wamid=c, at=1), _status(3, "failed", wamid=c, at=5, errors=(131026,)),
        _status(4, "played", wamid=d, at=7), _status(4, "delivered", wamid=d, at=6),
    ]
    # in separate batches, so the fold happens across inserts, not inside one
    w = _worker(settings, topic, clickhouse, unique)
    t, stop, errors = _run(w)
    try:
        for r in recs:
            topic.produce([r])
            time.sleep(0.05)
        assert _wait(lambda: topic.committed(f"sink-{unique}") == len(recs))
    finally:
        stop.set()
        t.join(20)
    rows = {r[0]: r[1:] for r in clickhouse.query(
        "SELECT wamid, status, sent_at, delivered_at, read_at, error_codes FROM message_status_current "
        "WHERE wamid IN {w:Array(String)}", parameters={"w": [a, b, c, d]}).result_rows}
    t0 = NOW.replace(tzinfo=None)
    s = lambda x: t0 + dt.timedelta(seconds=x)  # noqa: E731
    assert rows[a] == ("read", s(10), s(30), s(30), []), "read implies delivered; a late sent never moves it back"
    assert rows[b] == ("read", s(1), s(2), s(3), [])
    assert rows[c][0] == "failed" and rows[c][4] == [131026] and rows[c][2] is None
    assert rows[d][0] == "played" and rows[d][2] == s(6) and rows[d][3] == s(7)
    # FINAL collapses the duplicate status rows by event id.
    assert clickhouse.query("SELECT count() FROM status_events FINAL WHERE wamid = {a:String}",
                            parameters={"a": a}).result_rows == [(2,)]


def test_passthrough_block_with_a_corrupt_body_dead_letters_only_that_record(topics, settings, clickhouse, unique):
    topic = _Topic(topics, unique)
    good = [_status(i, "sent") for i in range(50)]
    sv = topic.serde.store.latest("StatusEvent")
    corrupt = b"\xc3\x01" + sv.fingerprint + b"\xff\xff\xff"  # right framing, body cut short
    topic.produce(good, raw=[corrupt])
    w = _worker(settings, topic, clickhouse, unique, fast=True)
    t, stop, errors = _run(w)
    try:
        assert _wait(lambda: topic.committed(f"sink-{unique}") == 51)
    finally:
        stop.set()
        t.join(20)
    assert not errors
    assert clickhouse.query("SELECT count(), uniqExact(event_id) FROM status_events").result_rows == [(50, 50)]
    dead = [AvroSerde().decode(m.value(), "DeadLetter") for m in read_all(topics, SINK_DEAD)]
    assert [d["value"] for d in dead if d["source_topic"] == topic.name] == [corrupt]


def test_rows_clickhouse_refuses_are_isolated_and_dead_lettered(topics, settings, clickhouse, unique):
    topic = _Topic(topics, unique)
    recs = [_status(i, "sent", wamid=f"wamid.{unique}.{i}") for i in range(100)]
    flaky = _Flaky(clickhouse)
    flaky.poison = {recs[17]["event_id"], recs[63]["event_id"]}
    topic.produce(recs)
    w = _worker(settings, topic, flaky, unique)
    t, stop, errors = _run(w)
    try:
        assert _wait(lambda: topic.committed(f"sink-{unique}") == 100)
    finally:
        stop.set()
        t.join(20)
    assert not errors
    assert clickhouse.query("SELECT count(), uniqExact(event_id) FROM status_events").result_rows == [(98, 98)]
    dead = [AvroSerde().decode(m.value(), "DeadLetter") for m in read_all(topics, SINK_DEAD)]
    mine = [d for d in dead if d["source_topic"] == topic.name]
    assert sorted(AvroSerde().decode(d["value"], "StatusEvent")["event_id"] for d in mine) == sorted(flaky.poison)
    assert all("ClickHouse refused the row" in d["reason"] and "CANNOT_PARSE" in d["reason"] for d in mine)


@pytest.mark.parametrize("fast", [False, True], ids=["python-rows", "avro-passthrough"])
def test_a_recreated_topic_at_the_same_offsets_is_not_taken_for_a_retry(topics, settings, clickhouse, unique, fast):
    """A new broker (or a recreated topic) restarts offsets at 0 while ClickHouse keeps its
    dedup tokens: new records at old offsets must be inserted, not dropped as a retry."""
    topic = _Topic(topics, unique)
    topic.produce([_status(i, "sent") for i in range(200)])
    # One record per batch: every (partition, offset) span of the second incarnation repeats one
    # of the first, so an offsets-only token would collide on every insert.
    w = _worker(settings, topic, clickhouse, unique, fast=fast, sink_batch_rows=1)
    t, stop, errors = _run(w)
    try:
        assert _wait(lambda: topic.committed(f"sink-{unique}") == 200)
    finally:
        stop.set()
        t.join(20)
    admin = admin_client(topics)
    for f in admin.delete_topics([topic.name]).values():
        f.result()
    assert _wait(lambda: topic.name not in admin.list_topics(timeout=10).topics)
    again = _Topic(topics, unique)  # same name, offsets from 0 again
    again.produce([_status(1000 + i, "sent") for i in range(200)])
    w2 = _worker(settings, again, clickhouse, unique + "b", fast=fast, sink_batch_rows=1)
    t, stop, errors2 = _run(w2)
    try:
        assert _wait(lambda: again.committed(f"sink-{unique}b") == 200)
    finally:
        stop.set()
        t.join(20)
    assert not errors and not errors2
    assert clickhouse.query("SELECT count(), uniqExact(event_id) FROM status_events").result_rows == [(400, 400)]
