"""A ledger topic as lists of records for unit tests (offsets are list positions); the ledger's
store stays the real RocksDB one."""

from __future__ import annotations

import asyncio

from processors.send.ledger import FrontierAhead, TopicRecord


class ListTopic:
    """A ledger topic as lists of records; ``gate`` holds a read until the test opens it."""

    def __init__(self, topic_id: str = "id-1") -> None:
        self.id = topic_id
        self.parts: dict[int, list[TopicRecord]] = {}
        self.reads: list[tuple[int, int]] = []  # (partition, start) of each read
        self.gate: asyncio.Event | None = None

    async def topic_id(self) -> str | None:
        return self.id

    async def read(self, partition: int, start: int, sink) -> int:
        self.reads.append((partition, start))
        if self.gate is not None:
            await self.gate.wait()
        records = self.parts.get(partition, [])
        if start > len(records):
            raise FrontierAhead(len(records))
        if records[start:]:
            sink(records[start:], len(records))
        return len(records)

    def append(self, partition: int, key: str, value: bytes | None) -> int:
        part = self.parts.setdefault(partition, [])
        part.append(TopicRecord(len(part), key, value))
        return len(part) - 1

    async def write(self, key: str, partition: int, value: bytes) -> int:
        return self.append(partition, key, value)
