"""The ledger's view over its local store: what a load reads, what the frontier may pass, what a
revocation does. The topic is a list per partition here (offsets are list positions); the store is
the real RocksDB one (tests/integration/test_ledger_broker.py runs the same against the broker)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

import pytest

from processors.send import records as R
from processors.send.ledger import Ledger
from processors.send.ledger_store import LedgerStore
from tests.unit.commands import command
from tests.unit.ledger_topic import ListTopic
from wapipe.messages.send import DISPATCHING, DONE, DispatchEntry
from wapipe.avro import AvroSerde

SERDE = AvroSerde()


def entry(key: str, state: str = DONE, outcome: str | None = "ACCEPTED", template: bool = True,
          at: dt.datetime | None = None) -> DispatchEntry:
    cmd = command(tenant_id="t1", idempotency_key=key, command_id=f"c-{key}", phone_number_id="391",
                  subject_id=f"s-{key}", template={"name": "x", "language": "en"} if template else None)
    return R.ledger_entry(cmd, state, attempts=1, outcome=outcome, at=at)


def put(topic: ListTopic, partition: int, key: str, record: DispatchEntry) -> None:
    topic.append(partition, f"t1/{key}", SERDE.encode(R.LEDGER, record.to_avro()))


@pytest.fixture
def store_dir(tmp_path):
    return tmp_path / "ledger"


def open_ledger(store_dir, topic: ListTopic, loaded: list | None = None) -> Ledger:
    ledger = Ledger(LedgerStore(store_dir, ttl_s=3600), SERDE, topic.write, topic, topic="wa.send.ledger")
    if loaded is not None:
        ledger.on_tier = lambda p, send: loaded.append(("tier", p, send.tenant, send.subject))
        ledger.on_unknown = lambda p, r: loaded.append(("unknown", p, r.idempotency_key))
    return ledger


def test_a_load_overlapped_by_a_revocation_is_not_held_and_the_next_assignment_reads_on(store_dir):
    async def go():
        topic = ListTopic()
        put(topic, 3, "k1", entry("k1"))
        ledger = open_ledger(store_dir, topic)
        topic.gate = asyncio.Event()
        first = asyncio.ensure_future(ledger.ensure_loaded(3))
        await asyncio.sleep(0.01)
        ledger.unload(3)  # revoked while loading
        topic.gate.set()
        await first
        assert not ledger.loaded(3) and ledger.get("t1/k1") is None
        # assigned again: the topic meanwhile holds the other owner's write; it is read now
        put(topic, 3, "k2", entry("k2", DISPATCHING, outcome=None))
        await ledger.ensure_loaded(3)
        assert ledger.loaded(3) and ledger.get("t1/k2").state == DISPATCHING and ledger.get("t1/k1").state == DONE
        assert topic.reads == [(3, 0), (3, 1)]  # the second read started where the first one ended

    asyncio.run(go())


def test_a_restart_reads_only_what_the_store_does_not_hold(store_dir):
    async def go():
        topic = ListTopic()
        for i in range(5):
            put(topic, 0, f"k{i}", entry(f"k{i}", DISPATCHING, outcome=None))
        first = open_ledger(store_dir, topic)
        await first.ensure_loaded(0)
        await first.ensure_loaded(0)
        assert topic.reads == [(0, 0)]
        first.store.close()
        put(topic, 0, "k0", entry("k0"))  # written by another owner meanwhile
        second = open_ledger(store_dir, topic)
        await second.ensure_loaded(0)
        assert topic.reads == [(0, 0), (0, 5)]
        assert second.get("t1/k0").state == DONE and second.get("t1/k4").state == DISPATCHING

    asyncio.run(go())


def test_own_writes_move_the_frontier_only_while_contiguous(store_dir):
    async def go():
        topic = ListTopic()
        ledger = open_ledger(store_dir, topic)
        await ledger.ensure_loaded(0)
        await ledger.record("t1/a", 0, entry("a", DISPATCHING, outcome=None))
        await ledger.record("t1/a", 0, entry("a"))
        assert ledger.store.frontier(0) == 2
        put(topic, 0, "zombie", entry("zombie"))  # somebody else's record at offset 2
        await ledger.record("t1/b", 0, entry("b"))  # ours, at 3: above a record not applied here
        assert ledger.store.frontier(0) == 2 and ledger.get("t1/zombie") is None
        ledger.store.close()
        again = open_ledger(store_dir, topic)
        await again.ensure_loaded(0)
        assert topic.reads[-1] == (0, 2) and again.get("t1/zombie").state == DONE
        assert again.get("t1/b").state == DONE and again.store.frontier(0) == 4

    asyncio.run(go())


def test_an_older_record_never_overwrites_a_newer_one(store_dir):
    async def go():
        topic = ListTopic()
        ledger = open_ledger(store_dir, topic)
        await ledger.ensure_loaded(0)
        await ledger.record("t1/a", 0, entry("a", DISPATCHING, outcome=None))  # offset 0
        await ledger.record("t1/a", 0, entry("a"))  # offset 1
        ledger.store.set_frontier(0, 0)  # as after a crash before the frontier was saved
        ledger.store.close()
        again = open_ledger(store_dir, topic)
        await again.ensure_loaded(0)  # re-reads offset 0 (DISPATCHING) after holding offset 1
        assert again.get("t1/a").state == DONE

    asyncio.run(go())


def test_a_frontier_past_the_partitions_end_empties_that_partition_and_reads_it_whole(store_dir):
    async def go():
        topic = ListTopic()
        for key in ("old1", "old2", "old3"):
            put(topic, 0, key, entry(key))
        put(topic, 1, "other", entry("other"))
        first = open_ledger(store_dir, topic)
        await first.ensure_loaded(0)
        await first.ensure_loaded(1)
        first.store.close()
        topic.parts[0] = []  # partition 0 now ends (1) before the store's frontier (3)
        put(topic, 0, "new", entry("new"))
        again = open_ledger(store_dir, topic)
        await again.ensure_loaded(0)
        await again.ensure_loaded(1)
        assert topic.reads[-3:] == [(0, 3), (0, 0), (1, 1)] and again.store.frontier(0) == 1
        assert again.get("t1/old1") is None and again.get("t1/new").state == DONE
        assert again.get("t1/other").state == DONE  # another partition is untouched

    asyncio.run(go())


def test_a_store_written_against_another_topic_is_emptied(store_dir):
    async def go():
        topic = ListTopic("id-1")
        put(topic, 0, "old", entry("old"))
        first = open_ledger(store_dir, topic)
        await first.ensure_loaded(0)
        first.store.close()
        fresh = ListTopic("id-2")  # a new broker, or the topic deleted and re-created
        second = open_ledger(store_dir, fresh)
        await second.ensure_loaded(0)
        assert fresh.reads == [(0, 0)] and second.get("t1/old") is None

    asyncio.run(go())


def test_a_load_hands_over_the_last_days_template_sends_and_the_unknowns(store_dir):
    async def go():
        topic = ListTopic()
        now = dt.datetime.now(dt.timezone.utc)
        put(topic, 0, "recent", entry("recent", at=now - dt.timedelta(hours=2)))
        put(topic, 0, "old", entry("old", at=now - dt.timedelta(hours=30)))
        put(topic, 0, "session", entry("session", template=False))
        put(topic, 0, "unknown", entry("unknown", outcome="UNKNOWN"))
        put(topic, 0, "inflight", entry("inflight", DISPATCHING, outcome=None))
        put(topic, 0, "later", entry("later", DISPATCHING, outcome=None))
        put(topic, 0, "later", entry("later", at=now))  # accepted later: counted once, as accepted
        loaded: list = []
        first = open_ledger(store_dir, topic, loaded)
        await first.ensure_loaded(0)
        assert sorted(loaded) == [("tier", 0, "t1", "s-later"), ("tier", 0, "t1", "s-recent"), ("unknown", 0, "unknown")]
        # the reconciler settles the unknown; a restart hands over the same sends, not the settled key
        await first.record("t1/unknown", 0, dataclasses.replace(entry("unknown"), template=False))
        first.store.close()
        loaded.clear()
        again = open_ledger(store_dir, topic, loaded)
        await again.ensure_loaded(0)
        assert sorted(loaded) == [("tier", 0, "t1", "s-later"), ("tier", 0, "t1", "s-recent")]

    asyncio.run(go())


def test_own_writes_replace_indexed_entries_without_reading_them_and_a_load_skips_the_stale_index(store_dir):
    async def go():
        topic = ListTopic()
        now = dt.datetime.now(dt.timezone.utc)
        put(topic, 0, "sent", entry("sent", at=now - dt.timedelta(hours=1)))  # counted by the tier
        put(topic, 0, "lost", entry("lost", outcome="UNKNOWN"))  # the reconciler's work
        first = open_ledger(store_dir, topic)
        await first.ensure_loaded(0)
        # both keys are replaced by this worker's own writes (the indexes' old entries stay behind)
        await first.record("t1/sent", 0, entry("sent", at=now - dt.timedelta(minutes=5)))
        await first.record("t1/lost", 0, dataclasses.replace(entry("lost"), template=False))
        assert not first.holds_unknown("t1/lost")
        first.store.close()
        loaded: list = []
        again = open_ledger(store_dir, topic, loaded)
        await again.ensure_loaded(0)
        assert topic.reads[-1] == (0, 4)  # the own writes were kept: nothing read again
        assert sorted(loaded) == [("tier", 0, "t1", "s-sent")]  # once, at its new time; "lost" settled
        at_ms = [s.at_ms for s in again.store.tier_sends(0, 0)]
        assert at_ms == [int((now - dt.timedelta(minutes=5)).timestamp() * 1000)]  # the stale one is gone
        assert again.store.unknown_keys(0) == []

    asyncio.run(go())


def test_an_own_write_acknowledged_after_its_partition_changed_hands_is_left_to_the_next_load(store_dir):
    async def go():
        topic = ListTopic()
        gate = asyncio.Event()

        async def slow_write(key: str, partition: int, value: bytes) -> int:
            offset = topic.append(partition, key, value)
            await gate.wait()  # acknowledged late
            return offset

        ledger = Ledger(LedgerStore(store_dir, ttl_s=3600), SERDE, slow_write, topic, topic="wa.send.ledger")
        await ledger.ensure_loaded(0)
        ours = asyncio.ensure_future(ledger.record("t1/a", 0, entry("a", DISPATCHING, outcome=None)))
        await asyncio.sleep(0.01)
        ledger.unload(0)  # revoked; the next owner settles the key; assigned back here
        put(topic, 0, "a", entry("a", outcome="FAILED"))
        await ledger.ensure_loaded(0)
        gate.set()
        await ours
        assert ledger.get("t1/a").outcome == "FAILED"  # the later record stands
        assert ledger.store.frontier(0) == 2

    asyncio.run(go())


def test_an_own_write_that_lands_after_the_partition_came_back_is_kept(store_dir):
    async def go():
        topic = ListTopic()
        late: list[asyncio.Event] = []  # when set up, a write reaches the topic only once it is set

        async def write(key: str, partition: int, value: bytes) -> int:
            if late:
                await late[0].wait()
            return topic.append(partition, key, value)

        ledger = Ledger(LedgerStore(store_dir, ttl_s=3600), SERDE, write, topic, topic="wa.send.ledger")
        await ledger.ensure_loaded(0)
        await ledger.record("t1/a", 0, entry("a", DISPATCHING, outcome=None))  # offset 0
        late.append(asyncio.Event())
        done = asyncio.ensure_future(ledger.record("t1/a", 0, entry("a")))
        await asyncio.sleep(0.01)
        ledger.unload(0)  # revoked with the outcome in flight, and assigned back to this worker
        await ledger.ensure_loaded(0)  # reads up to offset 1: the outcome is not there yet
        late[0].set()
        await done  # acknowledged at offset 1
        assert ledger.get("t1/a").state == DONE and ledger.store.frontier(0) == 2
        ledger.store.close()
        again = open_ledger(store_dir, topic)
        await again.ensure_loaded(0)
        assert topic.reads[-1] == (0, 2) and again.get("t1/a").state == DONE

    asyncio.run(go())
