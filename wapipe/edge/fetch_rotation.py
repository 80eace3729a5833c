"""How a Faust worker takes records from aiokafka: every partition served in turn, none held back.

Three behaviours of the aiokafka consumer under Faust keep a record of a quiet topic (an OTP on the
transactional topic) waiting seconds behind a busy one (a campaign's backlog), measured in
``bench/dispatch.py`` with counters at each step:

* **Polls serve the first buffered partition first.** ``Fetcher.fetched_records`` returns up to
  ``max_poll_records`` records starting from the first partition in its buffer (an insertion-ordered
  dict), and a partition stays first until its buffered fetch is used up: up to
  ``consumer_max_fetch_size`` bytes (4 MiB by default), thousands of commands. Faust's own
  round-robin (``DefaultSchedulingStrategy``) only interleaves the records of one poll.
  → Partitions of the ``first`` topics (the transactional ones) move to the front before each
  poll; after it, every partition it drained that still has buffered records moves to the end
  of the buffer, so the next poll starts with another partition.
* **A fetch to an idle partition is held by the broker for 1.5 s.** The Faust driver hard-codes
  ``fetch_max_wait_ms=1500``, and aiokafka has one fetch in flight per broker, sent only for the
  partitions with nothing buffered. While the busy partitions are buffered, that fetch names only
  quiet ones, the broker holds it until ``fetch_max_wait_ms`` passes, and nothing else can be fetched
  from that broker meanwhile — not the busy partitions as they drain, and not a quiet partition
  that was buffered when the fetch left. Measured: 1.3–1.7 s from a transactional record's write
  to its arrival in the buffer, then 0.5 s in the buffer, per hop.
  → The worker's fetches wait at most ``max_wait_ms`` (default 50 ms) at the broker.
* **Fresh data holds back the next fetch.** For ``prefetch_backoff`` (100 ms) after a partition's
  fetch arrived, aiokafka sends no fetch to that broker while it is still buffered; busy partitions
  are re-fetched all the time, so a quiet one got a fetch only in the gaps.
  → 50 ms. Measured with rotation and the 50 ms wait only: 0.8–0.9 s from a transactional record's
  write to the buffer, ≤ 0.65 s in it; with the transactional topics first and this: 0.1–0.35 s and ≤ 10 ms.

The price is more, smaller fetches: bench/dispatch.py on 2026-11-29, same session, 20,000 campaign
messages: transactional p99 0.51 s and 236 msg/s (3.93 CPU-s per 1,000) with these settings,
0.99 s and 244 msg/s (3.74) with a 200 ms wait, 21.4 s and 256 msg/s (3.66) without any of this.

Nothing is skipped or reordered within a partition (aiokafka keeps each partition's records and
positions; only which partition is served next and when a fetch is sent change).
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
    """Pause partitions between two polls, never in the middle of one.

    Faust's ``Consumer.pause_partitions`` removes the partitions from the very set ``getmany`` is
    filtering the current poll's records with, and ``getmany`` silently drops a record whose
    partition is not in it — after aiokafka has already moved the position past it. A pause
    called by an agent while that poll is being handed out (the campaign lane's backpressure does
    exactly that) thus skips the rest of the partition's records in the poll. The offset guard
    repairs such a skip when a later record of the partition arrives; when none does (the skipped
    records were the partition's last), they wait until the next rebalance or restart. Found by
    reading Faust while looking for the cause of a ``make demo`` run that left 62 campaign commands
    without a result; most likely not that run's cause: the demo's backlog stays far below the
    pause threshold (``WAPIPE_SEND_BUFFER_PER_PARTITION`` = 4,000; 231 at most in the next run).

    Here a pause is recorded and applied by the consumer just before its next poll; a resume
    takes effect at once (adding a partition to the set drops nothing), and a partition revoked
    meanwhile is forgotten (a pause applied after its revocation would outlive a re-assignment).
    A consumer without that step (``faust_internals.wrap_wait_next_records``) is paused at once."""

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
