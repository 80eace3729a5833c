"""A lane agent's loop: the records of one lane's topics, in order, handed to the intake.

Contract: ``LaneReader.run(stream)`` reads a Faust stream with manual acknowledgements. Each
record is shown to the offset guard (a record Faust delivered past a gap is left unacknowledged:
it comes again after the skipped ones), dropped when its partition moved away while it was
buffered (its new owner replays it), decoded into a ``SendCommand`` and submitted to the intake
with an ``ack`` that acknowledges it in offset order (``InOrderAcks``) once its outcome is durable.
Unreadable bytes, and a command the intake raised on, become a dead letter on wa.send.dead and
are acknowledged: one record never stops the stream. A buffered burst does not hold the event
loop: the reader yields every ``yield_every_s`` of work (a yield per record costs a loop turn each).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from processors.send import records as R
from processors.send.acks import InOrderAcks
from processors.send.writes import Write
from wapipe import log, topics as T
from wapipe.avro import SerdeError
from wapipe.deadletter import DeadLetter, Source
from wapipe.edge.offset_guard import OffsetGuard
from wapipe.messages.send import SendCommand

if TYPE_CHECKING:
    from processors.send.app import Startup

logger = log.get_logger(__name__)


def dead_letter(event: Any, exc: Exception) -> Write:
    """The dead letter of a lane record (a Faust ``Event``) and why."""
    letter = DeadLetter(Source.of_faust(event), str(exc)[:500], type(exc).__name__)
    return Write(T.SEND_DEAD, event.message.key, None, letter)


class LaneReader:
    def __init__(self, *, startup: Startup, guard: OffsetGuard, yield_every_s: float) -> None:
        """``startup``: the worker's collaborators once started, and the Faust app's consumer (its
        assignment decides whether a revoked partition's record is stale)."""
        self._startup = startup
        self._guard = guard
        self._yield_every_s = yield_every_s
        self.acks: list[InOrderAcks] = []  # one per running agent; forgets revoked partitions

    def forget(self, revoked: Any) -> None:
        for acks in self.acks:
            acks.forget(revoked)

    async def run(self, stream: Any) -> None:
        manual = stream.noack()
        acks = InOrderAcks(manual.ack)  # Faust misjudges a gap at the head of the acked run
        self.acks.append(acks)
        clock = asyncio.get_running_loop().time
        guard, every, startup = self._guard, self._yield_every_s, self._startup
        turn = clock()
        async for event in manual.events():
            rt = startup.runtime or await startup.started()
            if clock() - turn > every:
                await asyncio.sleep(0)
                turn = clock()
            consumer = startup.consumer()
            if not await guard.admit(consumer, event):
                continue  # left unacknowledged: Faust delivers it again after the skipped ones
            m = event.message
            if rt.dispatcher.revoked(m.partition) and m.tp not in consumer.assignment():
                continue  # buffered before its partition moved away: its new owner replays it
            entry = acks.started(event)

            async def ack(entry: list = entry) -> None:
                await acks.done(entry)

            try:
                record = rt.serde.decode(event.value, R.COMMAND)
            except SerdeError as exc:
                await rt.writer.write(dead_letter(event, exc))
                await ack()
                continue
            try:
                await rt.dispatcher.intake.submit(SendCommand.from_avro(record), raw=event.value,
                                                  partition=m.partition, topic=m.topic, ack=ack)
            except Exception as exc:  # a bug on one record must not stop the stream
                logger.exception("dispatch.admit_failed", topic=m.topic, offset=m.offset)
                await rt.writer.write(dead_letter(event, exc))
                await ack()
