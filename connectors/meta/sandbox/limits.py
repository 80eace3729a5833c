"""The limits Meta enforces, each O(1) amortised per send.

* ``SlidingWindow``: events in the last ``window`` seconds (a deque of timestamps). Used for the
  per-number throughput limit (exact: a send is refused when ``limit`` sends were already admitted
  in the preceding second) and for measuring the max requests seen in any 1 s window.
* ``PairBuckets``: a token bucket per (number, recipient) — one message per ``interval`` seconds
  with a burst of ``burst`` borrowed from later.
* ``TierBudget``: unique recipients of business-initiated messages per business portfolio in a
  moving window; a recipient counts once per window.
* ``ServiceWindows``: the customer-service window opened by a user's last inbound message.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class SlidingWindow:
    window: float = 1.0
    stamps: deque = field(default_factory=deque)
    max_seen: int = 0

    def count(self, now: float) -> int:
        edge = now - self.window
        s = self.stamps
        while s and s[0] <= edge:
            s.popleft()
        return len(s)

    def add(self, now: float) -> int:
        n = self.count(now) + 1
        self.stamps.append(now)
        if n > self.max_seen:
            self.max_seen = n
        return n


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class PairBuckets:
    def __init__(self, interval: float, burst: int) -> None:
        self.interval = interval
        self.burst = burst
        self._b: dict[tuple[str, str], _Bucket] = {}

    def take(self, number: str, recipient: str, now: float) -> bool:
        key = (number, recipient)
        b = self._b.get(key)
        if b is None:
            self._b[key] = _Bucket(self.burst - 1.0, now)
            return True
        b.tokens = min(float(self.burst), b.tokens + (now - b.at) / self.interval)
        b.at = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return True
        return False


class TierBudget:
    """Unique recipients per portfolio in a moving window (an insertion-ordered map of
    recipient -> first-counted time, expired from the front)."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._seen: dict[str, OrderedDict[str, float]] = {}

    def _live(self, portfolio: str, now: float) -> OrderedDict[str, float]:
        seen = self._seen.setdefault(portfolio, OrderedDict())
        edge = now - self.window
        while seen:
            first_key, first_at = next(iter(seen.items()))
            if first_at > edge:
                break
            seen.popitem(last=False)
        return seen

    def admit(self, portfolio: str, recipient: str, limit: int | None, now: float) -> bool:
        """Count ``recipient`` against the portfolio; False when it would exceed ``limit``."""
        seen = self._live(portfolio, now)
        if recipient in seen:
            return True
        if limit is not None and len(seen) >= limit:
            return False
        seen[recipient] = now
        return True

    def used(self, portfolio: str, now: float) -> int:
        return len(self._live(portfolio, now))


class ServiceWindows:
    def __init__(self, window: float) -> None:
        self.window = window
        self._last_inbound: dict[tuple[str, str], float] = {}

    def open(self, number: str, wa_id: str, now: float) -> None:
        self._last_inbound[(number, wa_id)] = now

    def is_open(self, number: str, wa_id: str, now: float) -> bool:
        at = self._last_inbound.get((number, wa_id))
        return at is not None and now - at < self.window
