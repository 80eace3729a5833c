"""The dispatch ledger: the one mechanism behind "at most once per idempotency key".

``wa.send.ledger`` is compacted and keyed ``tenant_id/idempotency_key``; it deletes by retention
too (the dedup window plus a day: a key older than the window is not remembered anywhere). Every
entry is written to the *same partition number* as the command's partition of
``wa.send.accepted`` (explicitly, not by hashing), and those topics are co-partitioned, so the
worker that owns a number's partition owns its ledger partition too.

The protocol, per command (see docs/send-pipeline.md):

1. Before a partition's first command is looked at, the owner has every record of that ledger
   partition up to its end offset (the previous owner's writes were acknowledged before its
   revocation returned): its local store (``ledger_store.py``) holds them up to a frontier, and
   the records from the frontier to the end are read from the topic.
2. ``DISPATCHING`` (attempt n) is written with acks=all and *awaited* before the Graph call.
3. The outcome (``DONE`` + outcome, or ``RETRY`` + not_before) is written and awaited, with the
   SendResult, before the source record is acked (so before its offset can be committed).
4. A key found ``DISPATCHING`` that this process is not calling right now was interrupted
   mid-call: it becomes ``UNKNOWN`` and is never resent automatically.

faust's exactly-once is not used for any of this.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from wapipe import log
from wapipe.avro import AvroSerde, SerdeError
from wapipe.edge.clients import aiokafka_reader
from processors.send.ledger_store import LedgerStore, OwnWrite, TierSend
from processors.send.pacing import TIER_PERIOD_S
from processors.send.records import LEDGER
from wapipe.messages.send import DONE, DispatchEntry
from wapipe.messages.times import to_ms

logger = log.get_logger(__name__)

MAX_AHEAD = 10_000  # acknowledged writes held above a gap before the frontier stops following writes


@dataclass
class Entry:
    state: str
    attempts: int
    command_id: str
    outcome: str | None = None
    wamid: str | None = None
    not_before_ms: int | None = None
    at_ms: int = 0
    record: DispatchEntry | None = field(default=None, repr=False, compare=False)  # as written

    @classmethod
    def from_record(cls, r: DispatchEntry) -> "Entry":
        nb = r.not_before
        return cls(r.state, r.attempts, r.command_id, r.outcome, r.wamid,
                   to_ms(nb) if nb else None, to_ms(r.at), r)


def tier_send(r: DispatchEntry) -> TierSend | None:
    """An accepted business-initiated (template) send: the messaging tier counts it for 24 h."""
    if r.state == DONE and r.outcome == "ACCEPTED" and r.template:
        return TierSend(to_ms(r.at), r.tenant_id, r.subject_id)
    return None


def is_unknown(r: DispatchEntry) -> bool:
    return r.state == DONE and r.outcome == "UNKNOWN"


@dataclass(frozen=True)
class TopicRecord:
    offset: int
    key: str
    value: bytes | None  # None: a tombstone


class FrontierAhead(Exception):
    """The store says it read further than the topic partition's end: not the same partition."""

    def __init__(self, end: int) -> None:
        super().__init__(f"end offset {end}")
        self.end = end


Sink = Callable[[list[TopicRecord], int], None]  # records read, position after them


class TopicReader(Protocol):
    async def topic_id(self) -> str | None: ...

    async def read(self, partition: int, start: int, sink: Sink) -> int:
        """Hand ``sink`` the records from ``start`` (or the partition's first, if later) to the end
        offset taken when the read starts, in order; return that end. ``FrontierAhead`` when
        ``start`` is past the end."""
        ...


Writer = Callable[[str, int, bytes], Awaitable[int | None]]  # (key, partition, value) -> offset, acked


class KafkaLedgerReader:
    """Reads ledger partitions with a consumer that joins no group (read_committed)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic

    async def topic_id(self) -> str | None:
        def describe() -> str | None:
            from confluent_kafka import TopicCollection

            from wapipe.edge.clients import admin_client

            admin = admin_client(self.bootstrap)  # referenced until the future resolves
            desc = admin.describe_topics(TopicCollection([self.topic]), request_timeout=10)[self.topic].result()
            return str(desc.topic_id) if desc.topic_id is not None else None

        try:
            return await asyncio.to_thread(describe)
        except Exception as exc:
            logger.warning("ledger.topic_id_unavailable", topic=self.topic, error=repr(exc)[:300])
            return None

    async def read(self, partition: int, start: int, sink: Sink) -> int:
        from aiokafka import TopicPartition

        tp = TopicPartition(self.topic, partition)
        consumer = aiokafka_reader(self.bootstrap)
        await consumer.start()
        try:
            consumer.assign([tp])
            begin = (await consumer.beginning_offsets([tp]))[tp]
            end = (await consumer.end_offsets([tp]))[tp]
            if start > end:
                raise FrontierAhead(end)
            consumer.seek(tp, max(start, begin))
            started, idle = time.monotonic(), 0
            while (pos := await consumer.position(tp)) < end:
                batch = await consumer.getmany(tp, timeout_ms=500, max_records=5000)
                idle = 0 if batch else idle + 1
                if idle and idle % 10 == 0:  # 5 s without a record below the end: say so, keep trying
                    logger.warning("ledger.load_stalled", partition=partition, position=pos, end=end,
                                   seconds=round(time.monotonic() - started, 1))
                msgs = batch.get(tp, [])
                if msgs:
                    sink([TopicRecord(m.offset, m.key.decode() if m.key else "", m.value) for m in msgs],
                         await consumer.position(tp))
        finally:
            await consumer.stop()
        return end


class Ledger:
    """What this worker knows of the ledger partitions it holds: the local store, kept up to date
    from the topic at each load and by this worker's own acknowledged writes."""

    def __init__(self, store: LedgerStore, serde: AvroSerde, write: Writer, reader: TopicReader, *,
                 topic: str, write_many: Callable[[list], Awaitable[list]] | None = None,
                 on_tier: Callable[[int, TierSend], None] | None = None,
                 on_unknown: Callable[[int, DispatchEntry], None] | None = None) -> None:
        self.store = store
        self._write_many = write_many
        self.serde = serde
        self.topic = topic
        self._write = write
        self._reader = reader
        # What a load hands over: the last 24 h of accepted template sends (to the tier budget)
        # and the UNKNOWN entries (to the reconciler), with the partition.
        self.on_tier = on_tier
        self.on_unknown = on_unknown
        self._bound = False
        self._bind_lock = asyncio.Lock()
        self._loaded: set[int] = set()  # loaded since their last unload: what get() answers for
        self._front: dict[int, int] = {}  # partition -> frontier while writes can move it
        self._ahead: dict[int, set[int]] = {}  # acknowledged offsets above the frontier
        self._locks: dict[int, asyncio.Lock] = {}
        self._unloads: dict[int, int] = {}  # partition -> times unloaded (a load that overlapped one is stale)

    def get(self, key: str) -> Entry | None:
        stored = self.store.get(key)
        if stored is None or stored.partition not in self._loaded:
            return None
        record = self._decode(stored.value, partition=stored.partition, offset=stored.offset)
        return None if record is None else Entry.from_record(record)

    def holds_unknown(self, key: str) -> bool:
        """Whether this worker holds ``key`` with the outcome UNKNOWN (from the stored header: the
        reconciler asks for every status webhook, nearly all of them for settled keys)."""
        stored = self.store.get(key)
        return stored is not None and stored.unknown and stored.partition in self._loaded

    def partition_of(self, key: str) -> int | None:
        """The ledger partition of a key this worker holds (None: not held here)."""
        stored = self.store.get(key)
        return stored.partition if stored is not None and stored.partition in self._loaded else None

    def loaded(self, partition: int) -> bool:
        return partition in self._loaded

    async def ensure_loaded(self, partition: int) -> None:
        if partition in self._loaded:
            return
        lock = self._locks.setdefault(partition, asyncio.Lock())
        async with lock:
            if partition in self._loaded:
                return
            await self._bind()
            unloads = self._unloads.get(partition, 0)
            started = time.monotonic()
            read, end = await self._load(partition)
            if self._unloads.get(partition, 0) != unloads:
                # Revoked while it loaded: the next owner may write before this worker gets the
                # partition back, so it is not held now; what was read stays below the frontier.
                logger.info("ledger.load_discarded", partition=partition, read=read)
                return
            self._loaded.add(partition)
            self._front[partition], self._ahead[partition] = end, set()
            handed = self._hand_over(partition)
            logger.info("ledger.loaded", partition=partition, read=read, end=end, handed=handed,
                        seconds=round(time.monotonic() - started, 2))

    async def _bind(self) -> None:
        async with self._bind_lock:  # once, before the first load of any partition
            if self._bound:
                return
            topic_id = await self._reader.topic_id()
            if topic_id is None:
                logger.warning("ledger.unbound", topic=self.topic,
                               note="topic id unknown: a store that outlived its topic is caught only by its frontier")
            elif self.store.bind(topic_id):
                logger.warning("ledger.store_emptied", topic=self.topic, topic_id=topic_id,
                               note="the local store held another topic of this name (new broker or re-created topic)")
            self._bound = True

    async def _load(self, partition: int) -> tuple[int, int]:
        """Read the partition's records from the store's frontier to the end; (records read, end)."""
        read = 0

        def sink(records: list, position: int) -> None:
            nonlocal read
            for r in records:
                self._apply(partition, r.offset, r.key, r.value)
            read += len(records)
            self.store.set_frontier(partition, position)  # only after what is below it is applied

        start = self.store.frontier(partition)
        try:
            end = await self._reader.read(partition, start, sink)
        except FrontierAhead as exc:
            logger.warning("ledger.frontier_ahead", partition=partition, frontier=start, end=exc.end,
                           note="the store read further than the topic holds: reading the partition whole")
            self.store.forget_partition(partition)
            end = await self._reader.read(partition, 0, sink)
        self.store.set_frontier(partition, end)
        return read, end

    def _apply(self, partition: int, offset: int, key: str, value: bytes | None) -> None:
        """A record read from the topic at a load (the store keeps the newer of it and what it holds)."""
        record = None
        if value is not None:
            record = self._decode(value, partition=partition, offset=offset)
            if record is None:
                return
        self.store.apply(partition, offset, key, value, tier=tier_send(record) if record else None,
                         unknown=bool(record) and is_unknown(record))

    def _decode(self, value: bytes, *, partition: int, offset: int | None) -> DispatchEntry | None:
        try:
            return DispatchEntry.from_avro(self.serde.decode(value, LEDGER))
        except SerdeError as exc:  # never guess about a ledger entry we cannot read
            logger.error("ledger.unreadable", partition=partition, offset=offset, error=str(exc))
            return None

    def _hand_over(self, partition: int) -> int:
        """Give the tier the last 24 h of accepted template sends, and the reconciler the UNKNOWNs."""
        n = 0
        if self.on_tier is not None:
            for send in self.store.tier_sends(partition, int((time.time() - TIER_PERIOD_S) * 1000)):
                self.on_tier(partition, send)
                n += 1
        if self.on_unknown is not None:
            for key in self.store.unknown_keys(partition):
                entry = self.get(key)  # the partition is loaded: get() answers for it
                if entry is not None and entry.record is not None:
                    self.on_unknown(partition, entry.record)
                    n += 1
        return n

    def unload(self, partition: int) -> None:
        """The partition was revoked: not held any more (its next owner may write to it)."""
        self._unloads[partition] = self._unloads.get(partition, 0) + 1
        self._loaded.discard(partition)
        self._front.pop(partition, None)
        self._ahead.pop(partition, None)

    async def record(self, key: str, partition: int, record: DispatchEntry) -> Entry:
        """Write ``record`` and wait for the broker's acknowledgement."""
        value = self.serde.encode(LEDGER, record.to_avro(), topic=self.topic)
        held = self._holding([partition])
        offset = await self._write(key, partition, value)
        self._keep_own([(key, partition, record)], [value], [offset], held)
        return Entry.from_record(record)

    async def record_many(self, items: list[tuple[str, int, DispatchEntry]], extra: list | None = None) -> list:
        """Write several entries (key, partition, DispatchEntry) — and ``extra`` records for other
        topics (the results), in the same batch — and wait once for the broker to acknowledge them
        all. Returns the deliveries of ``extra``. Needs a batch writer (``write_many``)."""
        assert self._write_many is not None, "a Ledger built without write_many writes one entry at a time"
        values = [self.serde.encode(LEDGER, record.to_avro(), topic=self.topic) for _, _, record in items]
        records = [(self.topic, v, key.encode(), None, partition) for (key, partition, _), v in zip(items, values)]
        held = self._holding({partition for _, partition, _ in items})
        delivered = await self._write_many(records + list(extra or ()))
        self._keep_own(items, values, [d.offset if d is not None else None for d in delivered[:len(items)]], held)
        return delivered[len(items):]

    def _holding(self, partitions) -> dict[int, int]:
        """The partitions of a write about to start that this worker holds, with their unload
        counts: the store keeps the write only if the partition is still held, unbroken, when
        the acknowledgement comes (then nobody else wrote to it in between)."""
        return {p: self._unloads.get(p, 0) for p in partitions if p in self._loaded}

    def _keep_own(self, items: list[tuple[str, int, DispatchEntry]], values: list[bytes],
                  offsets: list[int | None], held: dict[int, int]) -> None:
        """Put this worker's acknowledged writes in the store, and the frontiers they move, in one
        write and without reading first, when their partition was held throughout. A write whose
        partition was given up meanwhile and is held again goes the way of a load's records (read,
        compared by offset: the reload may or may not have read it); one not held now is left to
        the next load. Acks come back in offset order per partition and one write per key is in
        flight at a time, so a batch's writes never replace a later write of this worker."""
        kept: list[OwnWrite] = []
        touched: set[int] = set()
        for (key, partition, record), value, offset in zip(items, values, offsets):
            if partition not in self._loaded:
                continue
            tier, unknown = tier_send(record), is_unknown(record)
            if held.get(partition) != self._unloads.get(partition, 0):  # held again since
                if offset is not None:
                    self.store.apply(partition, offset, key, value, tier=tier, unknown=unknown)
                    if self._advance(partition, offset):
                        self.store.set_frontier(partition, self._front[partition])
                continue
            kept.append(OwnWrite(partition, offset, key, value, tier, unknown))
            if offset is not None and self._advance(partition, offset):
                touched.add(partition)
        if kept:
            self.store.put_own(kept, {p: self._front[p] for p in touched if p in self._front})

    def _advance(self, partition: int, offset: int) -> bool:
        """Move the frontier over this worker's own acknowledged writes, as long as they are
        contiguous with it (anything else in between is read at the next load); True if it moved
        (the caller saves it)."""
        front, ahead = self._front.get(partition), self._ahead.get(partition)
        if front is None or ahead is None or offset < front:
            return False
        ahead.add(offset)
        moved = front
        while moved in ahead:
            ahead.discard(moved)
            moved += 1
        if moved != front:
            self._front[partition] = moved
            return True
        if len(ahead) > MAX_AHEAD:  # a gap that will not fill (a write that failed): stop following
            self._front.pop(partition, None)
            self._ahead.pop(partition, None)
        return False

    def __len__(self) -> int:
        return self.store.estimated_keys()
