"""The edge's poll loop (wapipe/edge/batches.py) against the real broker: a batch is committed only
after its handler returned, so a handler that fails leaves the batch to be read again; an idle
consumer read to its end stops the loop when asked."""

from __future__ import annotations

import asyncio
import threading

import pytest
from confluent_kafka.admin import NewTopic

from wapipe.edge.batches import consume_batches, read_to_end
from wapipe.edge.clients import admin_client, producer

pytestmark = pytest.mark.integration


def _topic(bootstrap: str, name: str) -> str:
    admin = admin_client(bootstrap)
    admin.create_topics([NewTopic(name, 2, 1)])[name].result(15)
    p = producer(bootstrap)
    for i in range(20):
        p.produce(name, key=f"k{i % 5}".encode(), value=f"v{i}".encode())
    assert p.flush(30) == 0
    return name


async def _read(bootstrap: str, group: str, topic: str, *, fail_first: bool = False) -> list[bytes]:
    seen: list[bytes] = []
    calls = 0

    async def handle(batch) -> None:
        nonlocal calls
        calls += 1
        if fail_first and calls == 1:
            raise RuntimeError("the handler's write was not acknowledged")
        seen.extend(m.value() for m in batch)

    async def idle(consumer) -> bool:
        return await asyncio.to_thread(read_to_end, consumer)

    await asyncio.wait_for(consume_batches(bootstrap, group, [topic], threading.Event(), handle, batch=7,
                                           on_idle=idle), 60)
    return seen


def test_a_batch_is_committed_only_after_its_handler_returned(kafka, unique):
    topic = _topic(kafka, f"batches-{unique}")
    group = f"batches-{unique}"
    with pytest.raises(RuntimeError, match="not acknowledged"):
        asyncio.run(_read(kafka, group, topic, fail_first=True))
    again = asyncio.run(_read(kafka, group, topic))
    assert sorted(again, key=lambda v: int(v[1:])) == [f"v{i}".encode() for i in range(20)]  # none lost
    assert asyncio.run(_read(kafka, group, topic)) == []  # all committed: nothing read twice now


def test_ready_and_on_poll_are_called_and_stop_ends_the_loop(kafka, unique):
    topic = _topic(kafka, f"batches-stop-{unique}")
    stop = threading.Event()
    ready: list[int] = []
    polls: list[int] = []

    async def handle(batch) -> None:
        stop.set()

    asyncio.run(asyncio.wait_for(consume_batches(kafka, f"g-{unique}", [topic], stop, handle, batch=100,
                                                 ready=lambda: ready.append(1), on_poll=lambda: polls.append(1)),
                                 60))
    assert ready == [1] and len(polls) >= 1
