"""The ordered state machine of an outbound message's status.

``sent < delivered < read`` (``played`` is a voice message's ``read``); ``failed`` is terminal and
keeps Meta's errors. Webhooks arrive out of order and twice, so the state is a fold that is
idempotent and order-free: the highest rank wins, each timestamp is the earliest seen, and a
later state implies the earlier ones (``read`` without ``delivered`` was delivered). A status Meta
invents later ranks 0 and never moves a message.

ClickHouse computes the same fold (``message_states`` and ``message_status_current`` in
``sinks/migrations/0012_message_states.sql``); this module is its reference, used by the normaliser
and by tests.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

from connectors.meta.statuses import rank

@dataclass(frozen=True)
class Observed:
    status: str
    timestamp: dt.datetime
    error_codes: tuple[int, ...] = ()


@dataclass
class MessageState:
    status: str | None = None
    rank: int = 0
    sent_at: dt.datetime | None = None
    delivered_at: dt.datetime | None = None
    read_at: dt.datetime | None = None
    failed_at: dt.datetime | None = None
    error_codes: set[int] = field(default_factory=set)
    _best: tuple[int, dt.datetime] | None = None

    def apply(self, ev: Observed) -> "MessageState":
        r = rank(ev.status)
        key = (r, ev.timestamp)
        if self._best is None or key > self._best:
            self._best, self.status = key, ev.status
        self.rank = max(self.rank, r)
        slot = {"sent": "sent_at", "delivered": "delivered_at", "read": "read_at", "played": "read_at",
                "failed": "failed_at"}.get(ev.status)
        if slot:
            cur = getattr(self, slot)
            setattr(self, slot, ev.timestamp if cur is None else min(cur, ev.timestamp))
        self.error_codes.update(ev.error_codes)
        return self

    @property
    def delivered(self) -> dt.datetime | None:
        """When it was delivered, implied by ``read`` when Meta skipped ``delivered``."""
        if self.rank in (2, 3):
            return self.delivered_at or self.read_at
        return self.delivered_at


def fold(events: Iterable[Observed]) -> MessageState:
    state = MessageState()
    for ev in events:
        state.apply(ev)
    return state
