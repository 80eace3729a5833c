"""How a Faust worker takes records from aiokafka: every partition served in turn, none held back.

``serve_partitions_in_turn(app, first=…, max_wait_ms=50, prefetch_backoff_s=0.05)`` (idempotent;
False and a log when the driver has another shape): the buffered partitions of the ``first``
topics are served first, every partition a poll drained moves behind the others, and a fetch waits
at most ``max_wait_ms`` at the broker and ``prefetch_backoff_s`` after fresh data. ``PollPauses``
applies a pause between two polls, never inside one. Nothing is skipped or reordered within a
partition. The measurements behind each setting: docs/kafka-edge.md, "The poll order".
"""

from __future__ import annotations

from typing import Any

from wapipe import log
from wapipe.edge import faust_internals as fi

logger = log.get_logger(__name__)


def put_first(fetcher: Any, topics: frozenset[str]) -> None:
    """Move the buffered partitions of ``topics`` to the front: the next poll serves them first."""
    buffered = fi.buffered(fetcher)
    for tp in [tp for tp in buffered if tp.topic in topics]:
        buffered.move_to_end(tp, last=False)


def rotated(fetcher: Any, drained: dict) -> dict:
    """Move each drained partition that still has buffered records behind the others."""
    buffered = fi.buffered(fetcher)
    for tp in drained:
        if tp in buffered:
            buffered.move_to_end(tp)
    return drained


def serve_partitions_in_turn(app: Any, *, first: frozenset[str] = frozenset(), max_wait_ms: int = 50,
                             prefetch_backoff_s: float = 0.05) -> bool:
    """Install the three changes above on a Faust app's aiokafka consumer (idempotent; call once
    it has started): the ``first`` topics served first, the rotation, the broker wait and backoff.

    Returns False (and logs) when the driver is not the one this was written against, so a Faust
    upgrade that renames these internals degrades to Faust's own behaviour instead of failing."""
    internals = fi.fetch_internals(app.consumer)
    if internals is None:
        logger.warning("fetch_rotation.unsupported_driver", driver=type(app.consumer).__name__)
        return False
    fi.set_fetch_wait(internals.fetcher, max_wait_ms, prefetch_backoff_s)
    fetch = internals.fetch_records
    if getattr(fetch, "wapipe_rotating", False):
        return True

    async def fetch_records(consumer: Any, active_partitions: Any, timeout: float | None = None,
                            max_records: int | None = None) -> dict:
        fetcher = fi.fetcher_of(consumer)
        if first:
            put_first(fetcher, first)
        drained = await fetch(consumer, active_partitions, timeout=timeout, max_records=max_records)
        return rotated(fetcher, drained)

    fetch_records.wapipe_rotating = True  # type: ignore[attr-defined]
    fi.replace_fetch_records(internals.thread, fetch_records)
    return True


class PollPauses:
    """Pause partitions between two polls, never in the middle of one (a pause inside a poll makes
    Faust drop the rest of that poll's records of the partition: docs/kafka-edge.md).

    A pause is recorded and applied by the consumer just before its next poll; a resume takes
    effect at once, and a partition revoked meanwhile is forgotten (a pause applied after its
    revocation would outlive a re-assignment). A consumer without that step
    (``faust_internals.wrap_wait_next_records``) is paused at once."""

    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer
        self._pending: set = set()
        self.between_polls = fi.wrap_wait_next_records(consumer, self.apply)
        if not self.between_polls:
            logger.warning("poll_pauses.unsupported_consumer", consumer=type(consumer).__name__)

    def pause(self, tp: Any) -> None:
        self._pending.add(tp)
        if not self.between_polls:  # no step between two polls to hook: Faust's own behaviour
            self.apply()

    def resume(self, tp: Any) -> None:
        self._pending.discard(tp)
        self.consumer.resume_partitions({tp})

    def forget(self, tps: Any) -> None:
        self._pending.difference_update(tps)

    @property
    def pending(self) -> frozenset:
        """Pauses asked for and not applied yet."""
        return frozenset(self._pending)

    def apply(self) -> None:
        if self._pending:
            tps = self._pending & set(self.consumer.assignment())
            self._pending.clear()
            if tps:
                self.consumer.pause_partitions(tps)
