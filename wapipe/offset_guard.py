"""A guard against records Faust skips: every agent shows it each record before handling it.

Faust (faust-streaming 0.15) can skip records of a partition around a rebalance or a table
recovery (faust-streaming #216, #221): its fetch loop marks a record read when the flow is
suspended before the record reached the stream, and a fetch that starts past the committed offset
records the offsets in between as a legitimate "gap", which its commit logic later counts as
acknowledged. Those records are never handled, and a restart does not bring them back. Seen here:
a re-run of ``make demo`` left 7 transactional commands without a result; the consumer group's
committed offset stood at the first one, the agent had handled the ones after them.

Our topics carry contiguous offsets (no compaction, no transactions), so a record whose offset
jumps over the last one handled (or, first after an assignment, over the committed offset) proves
that records were skipped. The guard then asks the agent to leave the record aside and seeks the
partition back to the first missing offset, so Faust delivers the missing records and this one
again. Handling a record twice is safe for every agent that uses it (the send worker's dedup table
and ledger, the normaliser's seen table). A jump over the same offset is repaired once; a second one
is taken as a real gap (e.g. transaction markers written by another producer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wapipe.log import get_logger

log = get_logger(__name__)


@dataclass
class OffsetGuard:
    """Per partition: the highest offset handled in this assignment, and the repairs made."""

    name: str
    _last: dict[Any, int] = field(default_factory=dict)
    _repaired: set[tuple[Any, int]] = field(default_factory=set)
    repairs: int = 0

    def missing_before(self, consumer: Any, tp: Any, offset: int) -> int | None:
        """The first offset skipped before ``offset`` (the record must be left aside and the
        partition sought back to it), or None: handle the record."""
        last = self._last.get(tp)
        if last is None:
            committed = getattr(consumer, "_committed_offset", {}).get(tp)
            last = committed - 1 if committed is not None and committed >= 0 else None
        if last is not None and offset > last + 1 and (tp, last + 1) not in self._repaired:
            self._repaired.add((tp, last + 1))
            return last + 1
        if last is None or offset > last:
            self._last[tp] = offset
        return None

    async def repair(self, consumer: Any, tp: Any, missing: int, offset: int) -> None:
        """Seek ``tp`` back to ``missing``: Faust delivers from there again."""
        self.repairs += 1
        log.warning("faust.skipped_records", agent=self.name, topic=tp.topic, partition=tp.partition,
                    first_missing=missing, received=offset, repairs=self.repairs)
        await consumer.seek(tp, missing)

    def forget(self, tps: Any) -> None:
        """Partitions revoked or (re)assigned: the next record is checked against the committed offset."""
        for tp in tps:
            self._last.pop(tp, None)

    async def admit(self, consumer: Any, event: Any) -> bool:
        """True: handle ``event``. False: records before it were skipped; it was left aside and the
        partition sought back (it will come again)."""
        m = event.message
        missing = self.missing_before(consumer, m.tp, m.offset)
        if missing is None:
            return True
        await self.repair(consumer, m.tp, missing, m.offset)
        return False
