"""The reconciler's decisions over a real Ledger view (its writes kept in memory, no broker)."""

from __future__ import annotations

import asyncio
import datetime as dt
import tempfile
from pathlib import Path

import pytest

from processors.send import records as R
from processors.send.ledger import Ledger
from processors.send.ledger_store import LedgerStore
from processors.send.reconcile import Reconciler
from tests.unit.commands import command
from tests.unit.ledger_topic import ListTopic
from wapipe.messages.events import MetaError, StatusEvent
from wapipe.messages.send import DONE, SendCommand, SendResult
from wapipe.avro import AvroSerde


def _cmd(key: str) -> SendCommand:
    return command(tenant_id="t1", idempotency_key=key, command_id=f"c-{key}", phone_number_id="391",
                   subject_id="s", campaign_id="camp", lane="CAMPAIGN")


def _status(key: str | None, status: str, wamid: str = "wamid.X", tenant: str = "t1", code: int | None = None) -> dict:
    """A decoded StatusEvent record (every field of the schema, as the follower passes it)."""
    now = dt.datetime.now(dt.timezone.utc)
    return StatusEvent(event_id=f"e-{wamid}-{status}", waba_id="w1", biz_opaque_callback_data=key, tenant_id=tenant,
                       wamid=wamid, status=status, phone_number_id="391", subject_id="s",
                       errors=[MetaError(code, "Message undeliverable")] if code else [], timestamp=now,
                       received_at=now).to_avro()


class World:
    def __init__(self) -> None:
        self.writes: list[tuple[str, int, dict]] = []
        self.results: list[SendResult] = []

        self.topic = ListTopic()

        async def write(key: str, partition: int, value: bytes) -> int:
            self.writes.append((key, partition, AvroSerde().decode(value, R.LEDGER)))
            return await self.topic.write(key, partition, value)

        self.emit_fails = False

        async def emit(result: SendResult) -> None:
            if self.emit_fails:
                raise RuntimeError("wa.send.results not acknowledged")
            self.results.append(result)

        self._dir = tempfile.TemporaryDirectory()  # the ledger's store, removed with the World
        self.ledger = Ledger(LedgerStore(Path(self._dir.name), ttl_s=3600), AvroSerde(), write, self.topic,
                             topic="wa.send.ledger")
        self.rec = Reconciler(self.ledger, emit, memory_s=60, unknown_timeout_s=60)

    async def unknown(self, key: str, partition: int = 3) -> None:
        await self.ledger.ensure_loaded(partition)  # this worker owns the partition
        await self.ledger.record(f"t1/{key}", partition, R.ledger_entry(_cmd(key), DONE, attempts=1, outcome="UNKNOWN"))

    async def drain(self) -> None:
        while not self.rec._queue.empty():
            await self.rec.reconcile(self.rec._queue.get_nowait())


def test_sent_reconciles_once_and_settles_the_ledger() -> None:
    async def run() -> None:
        w = World()
        await w.unknown("a")
        for s in ("sent", "sent", "delivered", "failed", "read"):
            w.rec.on_status(_status("t1/a", s))
        await w.drain()
        assert [(r.outcome, r.wamid) for r in w.results] == [(R.Outcome.ACCEPTED, "wamid.X")]
        r = w.results[0]
        assert r.campaign_id == "camp" and r.lane == "CAMPAIGN" and r.original_outcome == "UNKNOWN"
        entry = w.ledger.get("t1/a")
        assert (entry.state, entry.outcome, entry.wamid) == (DONE, "ACCEPTED", "wamid.X")
        assert w.writes[-1][1] == 3  # the key's own ledger partition

    asyncio.run(run())


def test_failed_status_gives_failed_with_metas_code() -> None:
    async def run() -> None:
        w = World()
        await w.unknown("f")
        w.rec.on_status(_status("t1/f", "failed", code=131026))
        await w.drain()
        assert [(r.outcome, r.error_code) for r in w.results] == [(R.Outcome.FAILED, 131026)]

    asyncio.run(run())


def test_a_result_that_could_not_be_written_leaves_the_key_unknown_for_another_try() -> None:
    """The result is written before the ledger settles the key: a failure (or crash) between them
    leaves it UNKNOWN, to be reconciled again, never DONE without any result."""
    async def run() -> None:
        w = World()
        await w.unknown("x")
        w.rec.on_status(_status("t1/x", "delivered"))
        w.emit_fails = True
        with pytest.raises(RuntimeError):
            await w.rec.reconcile("t1/x")
        assert w.ledger.get("t1/x").outcome == "UNKNOWN" and w.ledger.holds_unknown("t1/x")
        w.emit_fails = False
        assert await w.rec.reconcile("t1/x")
        assert [(r.outcome, r.wamid) for r in w.results] == [(R.Outcome.ACCEPTED, "wamid.X")]
        assert w.ledger.get("t1/x").outcome == "ACCEPTED"

    asyncio.run(run())


def test_a_status_before_the_unknown_is_remembered() -> None:
    async def run() -> None:
        w = World()
        w.rec.on_status(_status("t1/early", "delivered"))
        await w.drain()
        assert not w.results  # not UNKNOWN here (yet)
        await w.unknown("early")
        w.rec.on_unknown("t1/early")
        await w.drain()
        assert [r.outcome for r in w.results] == [R.Outcome.ACCEPTED]

    asyncio.run(run())


def test_other_keys_and_foreign_or_missing_callback_data_do_nothing() -> None:
    async def run() -> None:
        w = World()
        await w.ledger.ensure_loaded(0)
        await w.ledger.record("t1/done", 0, R.ledger_entry(_cmd("done"), DONE, attempts=1, outcome="ACCEPTED",
                                                           wamid="wamid.D"))
        await w.unknown("u")
        for ev in (_status("t1/done", "sent"), _status(None, "sent"), _status("nonsense", "sent"),
                   _status("t1/u", "sent", tenant="t2"), _status("t1/not-held", "sent")):
            w.rec.on_status(ev)
        await w.drain()
        assert not w.results and w.ledger.get("t1/u").outcome == "UNKNOWN"

    asyncio.run(run())


def test_a_key_of_a_revoked_partition_is_left_to_its_next_owner() -> None:
    async def run() -> None:
        w = World()
        await w.unknown("r", partition=3)
        w.ledger.unload(3)  # revoked: the next owner reconciles it (from its own status memory)
        w.rec.on_status(_status("t1/r", "delivered"))
        await w.drain()
        assert not w.results and len(w.writes) == 1  # only the UNKNOWN itself
        await w.ledger.ensure_loaded(3)  # assigned back: held again, the remembered status settles it
        await w.rec.reconcile("t1/r")
        assert [r.outcome for r in w.results] == [R.Outcome.ACCEPTED]

    asyncio.run(run())
