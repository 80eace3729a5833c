"""The lane agents' own writes (a re-keyed command, a dead letter), acknowledged before the
source record is: retried while the broker does not take them; a record it can never take (too
large) becomes a dead letter, cut down to fit by ``wapipe.deadletter``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from wapipe import log
from wapipe.deadletter import DeadLetter, DeadLetters, Source, refused_as_too_large

logger = log.get_logger(__name__)


@dataclass(frozen=True)
class Write:
    """One record to produce; a dead letter is produced by ``wapipe.deadletter`` (cut down to fit)."""

    topic: str
    key: bytes | None
    value: bytes | None
    letter: DeadLetter | None = None


class LaneWriter:
    def __init__(self, *, serde: Any, send: Callable[..., Awaitable[Any]], dead_topic: str, max_bytes: int) -> None:
        """``send(topic, key, value)`` produces one record and waits for its acknowledgement."""
        self._send = send
        self.dead_topic = dead_topic
        self.letters = DeadLetters(serde, dead_topic, lambda t, v, k: send(t, k, v), max_bytes)

    async def write(self, w: Write) -> None:
        """Returns once the broker acknowledged the record (or its dead letter)."""
        delay = 0.2
        while True:
            try:
                if w.letter is not None:  # cut down to fit, retried inside
                    await self.letters.write(w.letter, key=w.key)
                else:
                    await self._send(w.topic, w.key, w.value)
                return
            except Exception as exc:
                if w.letter is None and refused_as_too_large(exc):
                    w = Write(self.dead_topic, w.key, None, DeadLetter(
                        Source(w.topic, -1, -1, w.key, w.value), f"{w.topic}: record too large "
                        f"({len(w.value or b'')} bytes)", "RecordTooLarge"))
                    continue
                logger.warning("lane.write_failed", topic=w.topic, error=f"{type(exc).__name__}: {str(exc)[:300]}",
                               retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
