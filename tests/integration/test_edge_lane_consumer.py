"""The send worker's consumer (wapipe/edge/lane_consumer.py) against the real broker: every record
of every partition in offset order, handed to the loop in batches; a partition paused for two
reasons is read again only when both are gone; committed offsets are those the loop asked for, and
a revocation commits what ``on_revoked`` returns before the partitions are given up."""

from __future__ import annotations

import asyncio
import time

import pytest
from confluent_kafka import TopicPartition

from tests.integration.test_edge_follow import make_topic, write
from wapipe.edge.clients import consumer as kafka_consumer
from wapipe.edge.lane_consumer import LaneConsumer

pytestmark = pytest.mark.integration


class Seen:
    def __init__(self) -> None:
        self.records: dict[int, list[int]] = {}
        self.batches = 0
        self.assigned: list[list[tuple[str, int]]] = []
        self.revoked: list[list[tuple[str, int]]] = []
        self.commit_on_revoke: dict[tuple[str, int], int] = {}

    def on_records(self, msgs) -> None:
        self.batches += 1
        for m in msgs:
            self.records.setdefault(m.partition(), []).append(m.offset())

    async def on_assigned(self, tps) -> None:
        self.assigned.append(tps)

    async def on_revoked(self, tps):
        self.revoked.append(tps)
        return {tp: o for tp, o in self.commit_on_revoke.items() if tp in tps}

    def count(self, p: int) -> int:
        return len(self.records.get(p, []))


async def until(cond, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


def committed(kafka: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    c = kafka_consumer(kafka, group)
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in got if tp.offset >= 0}
    finally:
        c.close()


def test_records_in_order_pauses_by_reason_commits_and_revocation(kafka, unique):
    topic = make_topic(kafka, f"lanes-{unique}", partitions=2)
    group = f"lanes-{unique}"
    write(kafka, topic, [(None, f"a{i}".encode()) for i in range(40)], partition=0)
    write(kafka, topic, [(None, f"b{i}".encode()) for i in range(40)], partition=1)
    seen = Seen()

    async def run() -> None:
        lc = LaneConsumer(kafka, group, [topic], loop=asyncio.get_running_loop(), on_records=seen.on_records,
                          on_assigned=seen.on_assigned, on_revoked=seen.on_revoked, batch=16).start()
        try:
            await until(lambda: seen.count(0) == 40 and seen.count(1) == 40, "the records written before")
            assert seen.records[0] == list(range(40)) and seen.records[1] == list(range(40))
            assert seen.batches < 80  # handed over in batches, not one by one
            assert sorted(seen.assigned[0]) == [(topic, 0), (topic, 1)]

            lc.pause([(topic, 0)], "buffer")
            lc.pause([(topic, 0)], "backlog")
            await asyncio.sleep(0.3)  # the pauses are applied by the polling thread
            write(kafka, topic, [(None, b"late-a")], partition=0)
            write(kafka, topic, [(None, b"late-b")], partition=1)
            await until(lambda: seen.count(1) == 41, "an unpaused partition is read on")
            lc.resume([(topic, 0)], "buffer")
            await asyncio.sleep(1.0)
            assert seen.count(0) == 40, "still paused for the other reason"
            lc.resume([(topic, 0)], "backlog")
            await until(lambda: seen.count(0) == 41, "read again once no reason holds it")

            lc.commit({(topic, 0): 30, (topic, 1): 41})
            await until(lambda: committed(kafka, group, topic, 2) == {0: 30, 1: 41}, "the loop's commit")
            seen.commit_on_revoke = {(topic, 0): 35}  # what the revocation says was done by then
        finally:
            await lc.close()
        assert lc.error is None
        assert sorted(seen.revoked[-1]) == [(topic, 0), (topic, 1)]

    asyncio.run(run())
    assert committed(kafka, group, topic, 2) == {0: 35, 1: 41}
