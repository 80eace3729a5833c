"""A consumer group's records in batches, each committed after its work: the one poll loop of the
processors that hand records on (``processors/erp_inbound``, ``wapipe/media/fetch.py``).

``consume_batches`` polls in a thread (confluent-kafka blocks), hands each batch of records to
``await handle(batch)`` and commits the batch's offsets synchronously once ``handle`` returned. A
``handle`` that raises ends the loop without committing: the batch is read again after a restart
(at-least-once; the handler makes sure what it wrote is acknowledged before it returns, e.g. with
``flush_acked``). Client errors other than a partition's end are logged, never handed on.

The broker going away stops nothing: a commit it refuses is logged, and the next
commit (which names the consumer's positions, so the earlier batch too) or the one made at stop
carries it; if the group moved the partition meanwhile, its new owner reads the batch again.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer

from wapipe.edge.clients import consumer as make_consumer
from wapipe.edge.endpoint import Endpoint
from wapipe.log import get_logger

log = get_logger(__name__)


async def consume_batches(bootstrap: Endpoint, group: str, topics: Iterable[str], stop: threading.Event,
                          handle: Callable[[list[Message]], Awaitable[None]], *, batch: int, poll_s: float = 0.5,
                          ready: Callable[[], None] | None = None, on_poll: Callable[[], None] | None = None,
                          before_poll: Callable[[], Awaitable[None]] | None = None,
                          on_idle: Callable[[Consumer], Awaitable[bool]] | None = None) -> None:
    """Until ``stop`` is set: poll up to ``batch`` records of ``topics`` in ``group``; ``ready()``
    after the first poll, ``on_poll()`` after each, ``before_poll()`` awaited before each. After a
    poll without records ``await on_idle(consumer)`` returning True ends the loop."""
    consumer = make_consumer(bootstrap, group)
    consumer.subscribe(list(topics))
    announced = False
    try:
        while not stop.is_set():
            if before_poll is not None:
                await before_poll()
            msgs = await asyncio.to_thread(consumer.consume, batch, poll_s)
            if on_poll is not None:
                on_poll()
            if not announced:
                announced = True
                if ready is not None:
                    ready()
            good = []
            for m in msgs:
                err = m.error()
                if err is None:
                    good.append(m)
                elif err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume.kafka_error", group=group, error=err.str())
            if not good:
                if on_idle is not None and await on_idle(consumer):
                    break  # through the commit at stop
                continue
            await handle(good)
            await _commit(consumer, group)
        await _commit(consumer, group)
    finally:
        consumer.close()


async def _commit(consumer: Consumer, group: str) -> None:
    try:
        await asyncio.to_thread(consumer.commit, asynchronous=False)
    except KafkaException as exc:
        err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if err is None or err.code() != KafkaError._NO_OFFSET:  # _NO_OFFSET: nothing consumed since the last
            log.warning("consume.commit_failed", group=group, error=str(exc)[:300])


class Stopped(Exception):
    """``stop`` was set while a flush waited for the broker: nothing acknowledged is lost, and the
    batch is not committed (it is read again after the restart)."""


async def flush_acked(producer: Producer, stop: threading.Event, *, poll_s: float = 1.0) -> None:
    """Wait until every record ``producer`` holds is acknowledged, however long the broker is
    away (pair it with a producer whose ``message.timeout.ms`` is 0, ``clients.patient_producer``);
    ``Stopped`` when ``stop`` is set first. Delivery errors are the caller's to collect."""
    while await asyncio.to_thread(producer.flush, poll_s):
        if stop.is_set():
            raise Stopped(f"{len(producer)} record(s) not acknowledged at stop")


def read_to_end(consumer: Consumer) -> bool:
    """Every partition assigned to ``consumer`` read to its current end (blocking: call it in a thread)."""
    assignment = consumer.assignment()
    if not assignment:
        return False
    for tp in assignment:
        pos = consumer.position([tp])[0].offset
        low, high = consumer.get_watermark_offsets(tp, timeout=5.0, cached=False)
        if pos < 0:
            committed = consumer.committed([tp], timeout=5.0)[0].offset
            pos = committed if committed >= 0 else low
        if pos < high:
            return False
    return True
