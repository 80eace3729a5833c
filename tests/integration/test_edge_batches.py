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


def test_the_loop_and_its_flush_ride_out_a_broker_restart(tmp_path, unique):
    """The broker goes away right after a batch was handled, before its commit, and stays away
    while the next batch's output waits for its acknowledgement: the loop neither raises nor loses
    or repeats a record, and every offset is committed once the broker is back. (The broker is
    stopped and started from the test's main thread: it dies with the thread that started it.)"""
    import time

    from confluent_kafka import Consumer, TopicPartition

    from tests.harness import dedicated_broker
    from wapipe.edge.batches import flush_acked
    from wapipe.edge.clients import consumer as make_consumer
    from wapipe.edge.clients import patient_producer

    with dedicated_broker(tmp_path / "broker") as provider:
        bootstrap, group = provider.bootstrap, f"restart-{unique}"
        src, out = _topic(bootstrap, f"src-{unique}"), f"out-{unique}"
        admin = admin_client(bootstrap)
        admin.create_topics([NewTopic(out, 1, 1)])[out].result(15)
        stop, seen, restarted = threading.Event(), [], threading.Event()
        writer = patient_producer(bootstrap)

        def restart() -> None:
            provider._jvm.start()
            restarted.set()

        async def handle(batch) -> None:
            for m in batch:
                writer.produce(out, value=m.value())
            await flush_acked(writer, stop)
            seen.extend(m.value() for m in batch)
            if len(seen) == len(batch):  # the first batch: the broker goes before its commit, for 8 s
                provider._jvm.stop()
                asyncio.get_running_loop().call_later(8, restart)
            if len(seen) >= 20:
                stop.set()

        asyncio.run(asyncio.wait_for(consume_batches(bootstrap, group, [src], stop, handle, batch=7), 180))
        assert restarted.is_set()
        assert sorted(seen, key=lambda v: int(v[1:])) == [f"v{i}".encode() for i in range(20)]  # each once
        c = make_consumer(bootstrap, group)
        r = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{unique}",
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        try:
            committed = c.committed([TopicPartition(src, p) for p in (0, 1)], timeout=15)
            ends = [c.get_watermark_offsets(TopicPartition(src, p), timeout=15)[1] for p in (0, 1)]
            assert [tp.offset for tp in committed] == ends
            copies: list[bytes] = []
            r.subscribe([out])
            deadline = time.monotonic() + 30
            while len(copies) < 20 and time.monotonic() < deadline:
                copies += [m.value() for m in r.consume(50, 1.0) if m.error() is None]
            assert sorted(copies, key=lambda v: int(v[1:])) == [f"v{i}".encode() for i in range(20)]
        finally:
            c.close()
            r.close()
