"""Views every worker needs whole, whatever partitions it owns, each fed by a follower that reads
all partitions of a topic without a consumer group:

* ``ServiceWindows`` — last inbound message per (phone_number_id, subject_id) from
  ``wa.inbound.messages`` (the 24 h customer-service window), read from 24 h back.
* ``CampaignStates`` — the latest ``CampaignControl`` per (tenant, campaign) (compacted topic, from the
  beginning); the dispatcher polls it, so a pause or stop takes effect within a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiokafka import TopicPartition

from wapipe import log
from wapipe.avro import AvroSerde, SerdeError
from wapipe.edge.clients import aiokafka_reader, topic_partitions
from wapipe.messages.campaign import PAUSED, RUNNING, STOPPED
from wapipe.messages.events import InboundMessage

logger = log.get_logger(__name__)


async def cancel(task: asyncio.Task | None) -> None:
    """Cancel ``task`` (if any) and wait until it has ended, whatever it raised."""
    if task is not None:
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass


class TopicFollower:
    """Reads every partition of ``topic`` from ``since_ms`` (None: the beginning), forever."""

    def __init__(self, bootstrap: str, topic: str, record_name: str, serde: AvroSerde,
                 apply: Callable[[dict], None], *, since_ms: Callable[[], int] | None = None) -> None:
        self.bootstrap, self.topic, self.record_name, self.serde = bootstrap, topic, record_name, serde
        self._apply = apply
        self._since_ms = since_ms
        self.ready = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.unreadable = 0

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._forever())

    async def _forever(self) -> None:
        while True:
            try:
                await self._run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # the broker went away, metadata failed: read again from the start
                logger.exception("follower.failed", topic=self.topic)
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        await cancel(self._task)

    async def _run(self) -> None:
        consumer = aiokafka_reader(self.bootstrap, isolation_level="read_uncommitted")
        await consumer.start()
        try:
            parts: list[int] = []
            for _ in range(50):
                parts = await asyncio.to_thread(topic_partitions, self.bootstrap, self.topic)
                if parts:
                    break
                await asyncio.sleep(0.1)
            tps = [TopicPartition(self.topic, p) for p in parts]
            if not tps:
                logger.warning("follower.no_topic", topic=self.topic)
                self.ready.set()
                return
            consumer.assign(tps)
            if self._since_ms is not None:
                found = await consumer.offsets_for_times({tp: self._since_ms() for tp in tps})
                for tp in tps:
                    if found.get(tp) is not None:
                        consumer.seek(tp, found[tp].offset)
                    else:
                        await consumer.seek_to_end(tp)
            else:
                await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            while True:
                batch = await consumer.getmany(timeout_ms=200, max_records=2000)
                for msgs in batch.values():
                    for msg in msgs:
                        if msg.value is None:
                            continue
                        try:
                            self._apply(self.serde.decode(msg.value, self.record_name))
                        except (SerdeError, KeyError, TypeError, ValueError) as exc:
                            self.unreadable += 1
                            logger.warning("follower.unreadable", topic=self.topic, offset=msg.offset, error=str(exc))
                if not self.ready.is_set():
                    positions = [await consumer.position(tp) for tp in tps]
                    if all(pos >= ends[tp] for pos, tp in zip(positions, tps)):
                        self.ready.set()
        finally:
            await consumer.stop()


def _ms(v) -> int:
    return int(v.timestamp() * 1000) if hasattr(v, "timestamp") else int(v)


class ServiceWindows:
    def __init__(self, window_s: int) -> None:
        self.window_s = window_s
        self._last: dict[tuple[str, str], int] = {}

    def apply(self, record: dict) -> None:
        """One decoded ``InboundMessage`` (the follower's callback; KeyError when it is not one)."""
        inbound = InboundMessage.from_avro(record)
        key = (inbound.phone_number_id, inbound.subject_id)
        ts = _ms(inbound.timestamp)
        if ts > self._last.get(key, 0):
            self._last[key] = ts

    def last_inbound(self, phone_number_id: str, subject_id: str) -> int | None:
        return self._last.get((phone_number_id, subject_id))

    def since_ms(self) -> int:
        return int(time.time() * 1000) - self.window_s * 1000


class CampaignStates:
    """State per (tenant, campaign): tenant A's ``stop promo`` never stops tenant B's ``promo``."""

    def __init__(self) -> None:
        self._state: dict[tuple[str, str], str] = {}

    def apply(self, control: dict) -> None:
        tenant = control.get("tenant_id") or ""
        if not tenant:  # written before campaigns were keyed by tenant: it names no tenant's campaign
            logger.warning("campaign_control.no_tenant_ignored", campaign_id=control.get("campaign_id"))
            return
        self._state[(tenant, control["campaign_id"])] = control["state"]

    def state(self, tenant_id: str, campaign_id: str | None) -> str:
        if not campaign_id:
            return RUNNING
        return self._state.get((tenant_id, campaign_id), RUNNING)

    def paused(self, tenant_id: str, campaign_id: str) -> bool:
        return self.state(tenant_id, campaign_id) == PAUSED

    def stopped(self, tenant_id: str, campaign_id: str | None) -> bool:
        return self.state(tenant_id, campaign_id) == STOPPED
