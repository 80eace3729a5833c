"""The dispatch ledger: the one mechanism behind "at most once per idempotency key".

``wa.send.ledger`` is compacted and keyed ``tenant_id/idempotency_key``. Every entry is written to
the *same partition number* as the command's partition of ``wa.send.accepted`` (explicitly, not
by hashing), and those topics are co-partitioned, so the worker that owns a number's partition
owns its ledger partition too.

The protocol, per command (see docs/send-pipeline.md):

1. Before a partition's first command is looked at, the owner reads that ledger partition from
   the beginning to its end offset (the previous owner's writes were acknowledged before its
   revocation returned).
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

from aiokafka import AIOKafkaConsumer, TopicPartition

from wapipe import log
from wapipe.avro import AvroSerde, SerdeError
from processors.send.records import LEDGER

logger = log.get_logger(__name__)

DISPATCHING = "DISPATCHING"
RETRY = "RETRY"
DONE = "DONE"


@dataclass
class Entry:
    state: str
    attempts: int
    command_id: str
    outcome: str | None = None
    wamid: str | None = None
    not_before_ms: int | None = None
    at_ms: int = 0
    record: dict | None = field(default=None, repr=False, compare=False)  # the DispatchEntry as written

    @classmethod
    def from_record(cls, r: dict) -> "Entry":
        nb = r.get("not_before")
        return cls(r["state"], r.get("attempts") or 0, r["command_id"], r.get("outcome"), r.get("wamid"),
                   int(nb.timestamp() * 1000) if nb else None, int(r["at"].timestamp() * 1000), r)


Writer = Callable[[str, int, dict], Awaitable[None]]  # (key, partition, entry record) -> acked


class Ledger:
    """In-memory view of the ledger partitions this worker owns, plus acknowledged writes."""

    def __init__(self, bootstrap: str, topic: str, serde: AvroSerde, write: Writer,
                 on_loaded: Callable[[int, dict], None] | None = None) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.serde = serde
        self._write = write
        self._on_loaded = on_loaded  # (partition, raw record) for each entry read at load
        self._entries: dict[str, Entry] = {}
        self._partition_of: dict[str, int] = {}
        self._loaded: set[int] = set()
        self._locks: dict[int, asyncio.Lock] = {}
        self._unloads: dict[int, int] = {}  # partition -> times unloaded (a load that overlapped one is stale)

    def get(self, key: str) -> Entry | None:
        return self._entries.get(key)

    def partition_of(self, key: str) -> int | None:
        """The ledger partition of a key this worker holds (None: not held here)."""
        return self._partition_of.get(key)

    def loaded(self, partition: int) -> bool:
        return partition in self._loaded

    async def ensure_loaded(self, partition: int) -> None:
        if partition in self._loaded:
            return
        lock = self._locks.setdefault(partition, asyncio.Lock())
        async with lock:
            if partition in self._loaded:
                return
            unloads = self._unloads.get(partition, 0)
            n = await self._load(partition)
            if self._unloads.get(partition, 0) != unloads:
                # Revoked while it loaded: what was read may be stale by the time the partition
                # comes back, so it is dropped and the next owner (maybe this worker) reloads.
                self._forget(partition)
                logger.info("ledger.load_discarded", partition=partition, entries=n)
                return
            self._loaded.add(partition)
            logger.info("ledger.loaded", partition=partition, entries=n)

    async def _load(self, partition: int) -> int:
        tp = TopicPartition(self.topic, partition)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None,
                                    isolation_level="read_committed")
        await consumer.start()
        n = 0
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            started, idle = time.monotonic(), 0
            while (pos := await consumer.position(tp)) < end:
                batch = await consumer.getmany(tp, timeout_ms=500, max_records=5000)
                idle = 0 if batch else idle + 1
                if idle and idle % 10 == 0:  # 5 s without a record below the end: say so, keep trying
                    logger.warning("ledger.load_stalled", partition=partition, position=pos, end=end,
                                   seconds=round(time.monotonic() - started, 1))
                for msg in batch.get(tp, []):
                    key = msg.key.decode() if msg.key else ""
                    if msg.value is None:
                        self._entries.pop(key, None)
                        continue
                    try:
                        record = self.serde.decode(msg.value, LEDGER)
                    except SerdeError as exc:  # never guess about a ledger entry we cannot read
                        logger.error("ledger.unreadable", partition=partition, offset=msg.offset, error=str(exc))
                        continue
                    self._entries[key] = Entry.from_record(record)
                    self._partition_of[key] = partition
                    if self._on_loaded is not None:
                        self._on_loaded(partition, record)
                    n += 1
        finally:
            await consumer.stop()
        return n

    def unload(self, partition: int) -> None:
        """The partition was revoked: forget it (the next owner reloads it from the topic)."""
        self._unloads[partition] = self._unloads.get(partition, 0) + 1
        self._forget(partition)

    def _forget(self, partition: int) -> None:
        self._loaded.discard(partition)
        for key in [k for k, p in self._partition_of.items() if p == partition]:
            self._entries.pop(key, None)
            self._partition_of.pop(key, None)

    async def record(self, key: str, partition: int, record: dict) -> Entry:
        """Write ``record`` (a DispatchEntry) and wait for the broker's acknowledgement."""
        await self._write(key, partition, record)
        entry = Entry.from_record(record)
        self._entries[key] = entry
        self._partition_of[key] = partition
        return entry

    def __len__(self) -> int:
        return len(self._entries)
