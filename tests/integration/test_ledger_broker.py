"""The ledger's local store against the real broker: a worker's own acknowledged writes are
contiguous offsets (so its frontier follows them), a restart reads only the newer records, and a
store that outlived its topic (deleted and re-created) is emptied, not trusted."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka.admin import NewTopic

from processors.send import records as R
from tests.unit.commands import command
from wapipe.messages.send import DISPATCHING, DONE, DispatchEntry
from processors.send.ledger import KafkaLedgerReader, Ledger
from processors.send.ledger_store import LedgerStore
from wapipe.avro import AvroSerde
from wapipe.edge.clients import admin_client

pytestmark = pytest.mark.integration
SERDE = AvroSerde()


class CountingReader(KafkaLedgerReader):
    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(bootstrap, topic)
        self.starts: list[tuple[int, int]] = []
        self.records = 0

    async def read(self, partition, start, sink):
        self.starts.append((partition, start))

        def counting(records, position):
            self.records += len(records)
            sink(records, position)

        return await super().read(partition, start, counting)


def entry(key: str, state: str = DONE) -> DispatchEntry:
    cmd = command(tenant_id="t1", idempotency_key=key, command_id=f"c-{key}", phone_number_id="391", subject_id="s")
    return R.ledger_entry(cmd, state, attempts=1, outcome="ACCEPTED" if state == DONE else None)


def create(admin, topic: str) -> None:
    deadline = time.monotonic() + 30
    while True:  # a topic just deleted may still be going away
        try:
            admin.create_topics([NewTopic(topic, 2, 1)])[topic].result()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


async def session(bootstrap: str, topic: str, store_dir, work) -> CountingReader:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=1)
    await producer.start()

    async def write(key: str, partition: int, value: bytes) -> int:
        return (await (await producer.send(topic, value, key=key.encode(), partition=partition))).offset

    reader = CountingReader(bootstrap, topic)
    ledger = Ledger(LedgerStore(store_dir, ttl_s=3600), SERDE, write, reader, topic=topic)
    try:
        await work(ledger, producer)
    finally:
        ledger.store.close()
        await producer.stop()
    return reader


def test_a_restart_reads_only_the_records_after_its_frontier_and_a_new_topic_empties_the_store(topics, unique, tmp_path):
    bootstrap, topic, store_dir = topics, f"ledger.{unique}", tmp_path / "ledger"
    admin = admin_client(bootstrap)
    create(admin, topic)

    async def first(ledger: Ledger, producer) -> None:
        await ledger.ensure_loaded(0)
        # concurrent writes, as the dispatcher makes them: DISPATCHING then DONE per key
        await asyncio.gather(*(ledger.record(f"t1/k{i}", 0, entry(f"k{i}", DISPATCHING)) for i in range(40)))
        await asyncio.gather(*(ledger.record(f"t1/k{i}", 0, entry(f"k{i}")) for i in range(40)))
        assert ledger.store.frontier(0) == 80  # every own write applied, none missed
        # another owner (after a rebalance) writes to the partition; this worker does not hold it now
        ledger.unload(0)
        for key, state in (("k1", DISPATCHING), ("other", DONE)):
            await (await producer.send(topic, SERDE.encode(R.LEDGER, entry(key, state).to_avro()), key=f"t1/{key}".encode(),
                                       partition=0))

    r1 = asyncio.run(session(bootstrap, topic, store_dir, first))
    assert r1.starts == [(0, 0)] and r1.records == 0

    async def restart(ledger: Ledger, producer) -> None:
        await ledger.ensure_loaded(0)
        assert ledger.get("t1/k0").state == DONE and ledger.get("t1/k39").state == DONE
        assert ledger.get("t1/k1").state == DISPATCHING and ledger.get("t1/other").state == DONE

    r2 = asyncio.run(session(bootstrap, topic, store_dir, restart))
    assert r2.starts == [(0, 80)] and r2.records == 2  # only what the other owner wrote

    admin.delete_topics([topic])[topic].result()
    create(admin, topic)

    async def recreated(ledger: Ledger, producer) -> None:
        # more records than the old frontier (82): only the topic's id tells the store is stale
        for i in range(90):
            await producer.send(topic, SERDE.encode(R.LEDGER, entry(f"n{i}").to_avro()), key=f"t1/n{i}".encode(), partition=0)
        await producer.flush()
        await ledger.ensure_loaded(0)
        assert ledger.get("t1/k0") is None and ledger.get("t1/other") is None
        assert ledger.get("t1/n89").state == DONE

    r3 = asyncio.run(session(bootstrap, topic, store_dir, recreated))
    assert r3.starts == [(0, 0)] and r3.records == 90
