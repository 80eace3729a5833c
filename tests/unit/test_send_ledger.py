"""Ledger loading against revocation: a load that a revocation overlapped is not trusted."""

from __future__ import annotations

import asyncio
import datetime as dt

from processors.send.ledger import Entry, Ledger
from wapipe.avro import AvroSerde


class SlowLedger(Ledger):
    """The real Ledger; only reading the topic is replaced by entries handed in, after a pause in
    which the test can revoke the partition."""

    def __init__(self, entries: dict[str, str]) -> None:
        super().__init__("", "wa.send.ledger", AvroSerde(), self._no_write)
        self.topic_entries = entries
        self.gate = asyncio.Event()
        self.loads = 0

    async def _no_write(self, key, partition, record) -> None:  # never called here
        raise AssertionError("no writes in this test")

    async def _load(self, partition: int) -> int:
        self.loads += 1
        await self.gate.wait()
        at = dt.datetime.now(dt.timezone.utc)
        for key, state in self.topic_entries.items():
            self._entries[key] = Entry.from_record({"state": state, "attempts": 1, "command_id": key, "at": at})
            self._partition_of[key] = partition
        return len(self.topic_entries)


def test_a_load_overlapped_by_a_revocation_is_discarded_and_the_next_assignment_reloads():
    async def go():
        ledger = SlowLedger({"t/k1": "DONE"})
        first = asyncio.ensure_future(ledger.ensure_loaded(3))
        await asyncio.sleep(0)
        ledger.unload(3)  # revoked while loading
        ledger.gate.set()
        await first
        assert not ledger.loaded(3) and ledger.get("t/k1") is None
        # assigned again: the topic meanwhile holds the other owner's write; it is read now
        ledger.topic_entries = {"t/k1": "DONE", "t/k2": "DISPATCHING"}
        await ledger.ensure_loaded(3)
        assert ledger.loaded(3) and ledger.get("t/k2").state == "DISPATCHING" and ledger.loads == 2

    asyncio.run(go())


def test_a_load_without_revocation_is_kept():
    async def go():
        ledger = SlowLedger({"t/k1": "DONE"})
        ledger.gate.set()
        await ledger.ensure_loaded(0)
        await ledger.ensure_loaded(0)
        assert ledger.loaded(0) and ledger.get("t/k1").state == "DONE" and ledger.loads == 1

    asyncio.run(go())
