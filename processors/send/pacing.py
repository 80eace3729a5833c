"""Meta's send limits, kept on our side so Meta never has to refuse us.

* ``NumberPacer`` — one per phone number: even spacing at ``safety`` × the number's limit
  (no bursts), plus a hard cap on the count in any sliding 1 s window, and an adaptive factor
  that a throttle error lowers and quiet time restores. The cap counts each call from the instant
  its slot is reserved until 1 s plus ``jitter`` after its request was written to the socket (see
  ``window_wait``), so the server's count stays under the cap as long as the server counts a call
  within ``jitter`` of the others' delay, and a call whose slot was reserved never has to wait for
  the window once its ledger entry is written.
* ``PairLimiter`` — one message per ``interval`` to the same recipient with a borrowed burst
  (a token bucket per recipient), and Meta's 4^X backoff after a 131056.
* ``TierBudget`` — unique recipients of business-initiated messages per moving 24 h
  (the portfolio's messaging tier). Meta has no error for it: we budget it ourselves.

Why not aiolimiter here: the scheduler must know *when* a limit frees up (to pick another
recipient, to sleep exactly) and must never burst; aiolimiter's leaky bucket admits a whole
bucket at once and only answers "now or wait". The logic below is a few lines of arithmetic,
unit-tested against a simulated clock.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field


@dataclass
class NumberPacer:
    limit: float  # messages per second Meta allows this number
    safety: float = 0.985  # pace at this share of the limit
    # After a stall, catch up at most this much (s): never a burst. A larger catch-up (100 ms)
    # sent up to 100 calls at once at 1,000 msg/s; the server, counting them one after the other,
    # counted the last ones later than the jitter allows (1,075 in a window of 1,000 in the bench).
    max_lag: float = 0.02
    min_factor: float = 0.1
    factor: float = 1.0  # adaptive: lowered by throttles, restored over quiet time
    _next: float = 0.0
    _paused_until: float = 0.0
    _last_throttle: float = -1e9
    _last_recover: float = 0.0
    poll: float = 0.002  # how soon to look again when only a call under way can free the window
    # The most the server counts a call after its request was written, beyond the least any call
    # takes (network and server-side jitter, not the delay itself): an assumption, see window_wait.
    jitter: float | None = None  # None: count to the response (no assumption; the default)
    _tails: deque = field(default_factory=deque)  # instants counted calls leave the window, ascending
    _in_flight: int = 0  # calls started and not finished
    _reserved: int = 0  # slots reserved for calls not started yet
    # ((limit, factor, safety), cap): cap is read several times per call
    _cap: tuple = field(default=(None, 0), init=False, repr=False, compare=False)

    @property
    def cap(self) -> int:
        """Most sends allowed in any sliding 1 s window: the limit less a margin of at least one
        message (rounding, and a counting jitter a little over ``jitter``)."""
        of = (self.limit, self.factor, self.safety)
        if self._cap[0] != of:
            top = max(1, math.floor(self.limit * self.factor))
            margin = max(1, math.ceil(top * (1 - self.safety) / 2))
            self._cap = (of, max(1, top - margin))
        return self._cap[1]

    @property
    def lag(self) -> float:
        """How far behind the pace may be caught up: ``max_lag``, or 4 slots at a slow pace (at
        80 msg/s 20 ms is less than two slots, and a loop late by more lost them)."""
        return max(self.max_lag, 4.0 / self.rate)

    @property
    def rate(self) -> float:
        """The even pace: ``safety`` × the limit, and always a little under the window cap."""
        return max(0.2, min(self.limit * self.safety * self.factor, self.cap - 0.5))

    def set_limit(self, limit: float) -> None:
        self.limit = float(max(1.0, limit))

    def _prune(self, now: float) -> None:
        tails = self._tails
        while tails and tails[0] <= now:
            tails.popleft()

    def _recover(self, now: float) -> None:
        # Back up by 2 % of the limit per quiet second, from 3 s after the last throttle.
        if self.factor < 1.0:
            start = max(self._last_recover, self._last_throttle + 3.0)
            if now > start:
                self.factor = min(1.0, self.factor + 0.02 * (now - start))
        self._last_recover = now

    def window_wait(self, now: float) -> float:
        """Seconds until the sliding window has room for one more reservation (0: now).

        A call counts from its ``reserve`` until 1 s after ``min(f, w + jitter)``: ``w`` the instant
        its request was written, ``f`` the instant it ended (``finish``). The server counts call i
        at ``s_i``, before its response (``s_i <= f_i``) and — the one assumption — within
        ``jitter`` of its write beyond any other call's delay (``s_i - w_i`` varies by at most
        ``jitter``; a delay common to all calls shifts every window alike). Take any server window
        (t-1, t] and the last call k counted in it to have been reserved: every other call j
        counted there was reserved before k, and ``s_j > s_k - 1``, so both
        ``f_j >= s_j > s_k - 1 >= reserve_k - 1`` and ``w_j + jitter > reserve_k - 1`` hold
        (``s_k >= w_k >= reserve_k`` up to the common delay) — at ``reserve_k`` call j was reserved,
        under way, or within its tail: ``window_wait`` counted it. Hence at most ``cap`` calls in
        any server window, however long the round trips, and whatever stalls in this process do
        to when requests leave, since ``w`` is taken when the request is written. Without a known
        ``w`` the tail runs from ``f``, which needs no assumption. (Until 2026-12 a call counted
        until 1 s after its response: the round trip was added to every slot.) A server that
        stalls longer than ``jitter`` between a request's arrival and its count breaks the
        assumption; the cap's margin absorbs a little of it (bench/dispatch.py on a 2-core
        machine running four test suites beside it: 84 in a window of 80 with a 10 ms jitter).
        """
        return self._wait(now, self._reserved)

    def start_wait(self, now: float) -> float:
        """``window_wait`` for a call that holds a reservation (its own is not counted): 0 unless
        the cap was lowered (a throttle, a new limit) since the reservation."""
        return self._wait(now, max(0, self._reserved - 1))

    def _wait(self, now: float, reserved: int) -> float:
        self._prune(now)
        busy = len(self._tails) + self._in_flight + reserved
        if busy < self.cap:
            return 0.0
        expire = busy - self.cap  # index of the tail whose end makes room
        if expire < len(self._tails):
            return max(self.poll, self._tails[expire] - now)
        return self.poll  # only a call under way can make room

    def ready_at(self, now: float) -> float:
        """Earliest instant the next slot starts (``<= now``: right away)."""
        self._recover(now)
        return max(self._next, self._paused_until, now + self.window_wait(now))

    def due(self, now: float, most: int) -> int:
        """How many even-paced slots are due at ``now`` (at most ``most``), window room aside."""
        self._recover(now)
        if now < self._paused_until:
            return 0
        start = max(self._next, now - self.lag)
        if start > now:
            return 0
        return min(most, 1 + int((now - start) * self.rate))

    def reserve(self, now: float) -> bool:
        """Take the next even-paced slot if it is due and the window has room for it. The call
        is ``start``ed later, at the instant its request leaves (after the ledger write), or its
        reservation ``release``d if it never leaves."""
        if self.ready_at(now) > now:
            return False
        # Slots are spaced 1/rate apart; a late caller does not get the missed slots back
        # beyond ``max_lag`` (that would be a burst).
        self._next = max(self._next, now - self.lag) + 1.0 / self.rate
        self._reserved += 1
        return True

    def release(self) -> None:
        """A reserved slot whose call will not start."""
        self._reserved = max(0, self._reserved - 1)

    def start(self, now: float) -> None:
        """A call is about to leave (checked with ``start_wait`` just before, with no await in
        between): its reservation, if it holds one, becomes a call under way. Every ``start``
        must be followed by one ``finish``."""
        self._reserved = max(0, self._reserved - 1)
        self._in_flight += 1

    def finish(self, now: float, written_at: float | None = None) -> None:
        """The call ended at ``now`` (its response, its error, or our giving up on it);
        ``written_at``: when its request was written, if known. It counts until 1 s after the
        earlier of ``now`` and ``written_at + jitter`` (1 s after ``now`` when not known)."""
        self._in_flight = max(0, self._in_flight - 1)
        # The server counted it before its response arrived, and (the assumption) within
        # ``jitter`` of its write; the earlier of the two bounds it.
        tail = (now if written_at is None or self.jitter is None else min(now, written_at + self.jitter)) + 1.0
        tails = self._tails
        if not tails or tails[-1] <= tail:
            tails.append(tail)
        else:  # out of order (a slow call ended after faster ones): keep them sorted
            i = len(tails) - 1
            while i > 0 and tails[i - 1] > tail:
                i -= 1
            tails.insert(i, tail)

    def try_take(self, now: float) -> bool:
        """``reserve``, ``start`` and ``finish`` at once (a call answered instantly)."""
        if not self.reserve(now):
            return False
        if self.start_wait(now) > 0:
            self.release()
            return False
        self.start(now)
        self.finish(now)
        return True

    def on_throttled(self, now: float, pause: float = 1.0) -> None:
        """Meta said "too fast" for this number: pause it briefly and pace 20 % slower. The calls
        already in flight answer the same, so one throttle episode (1 s) counts once."""
        if now - self._last_throttle > 1.0:
            self.factor = max(self.min_factor, self.factor * 0.8)
        self._last_throttle = now
        self._paused_until = max(self._paused_until, now + pause)

    def window_now(self, now: float) -> int:
        """``sent_in_last_second`` without changing anything: for a metrics scrape from another
        thread (``tuple`` copies the deque in one step under the GIL; nothing is pruned)."""
        return sum(1 for t in tuple(self._tails) if t > now) + self._in_flight + self._reserved

    def sent_in_last_second(self, now: float) -> int:
        """Calls counted in the window now: reserved, under way, or within their tail."""
        self._prune(now)
        return len(self._tails) + self._in_flight + self._reserved


@dataclass
class _Bucket:
    tokens: float
    at: float
    hits: int = 0  # recent 131056s
    last_hit: float = -1e9
    blocked_until: float = 0.0


class PairLimiter:
    """Per-recipient token bucket for one number: ``burst`` tokens, refilled one per ``interval``."""

    def __init__(self, interval: float = 6.0, burst: int = 45, max_entries: int = 200_000) -> None:
        self.interval = interval
        self.burst = burst
        self.max_entries = max_entries
        self._b: OrderedDict[str, _Bucket] = OrderedDict()

    def _bucket(self, subject: str, now: float) -> _Bucket:
        b = self._b.get(subject)
        if b is None:
            b = self._b[subject] = _Bucket(float(self.burst), now)
            if len(self._b) > self.max_entries:
                self._evict(now)
        elif self.interval > 0:
            b.tokens = min(float(self.burst), b.tokens + (now - b.at) / self.interval)
            b.at = now
        else:
            b.tokens = float(self.burst)
        return b

    def _evict(self, now: float) -> None:
        # A full bucket without a block carries no information: forget the oldest such.
        for subject in list(self._b)[: len(self._b) // 4]:
            b = self._b[subject]
            full = self.interval <= 0 or b.tokens + (now - b.at) / self.interval >= self.burst
            if full and b.blocked_until <= now:
                del self._b[subject]

    def ready_at(self, subject: str, now: float) -> float:
        b = self._bucket(subject, now)
        t = b.blocked_until
        if b.tokens < 1.0:
            t = max(t, now + (1.0 - b.tokens) * self.interval)
        return t

    def take(self, subject: str, now: float) -> None:
        b = self._bucket(subject, now)
        b.tokens -= 1.0

    def refund(self, subject: str, now: float) -> None:
        """Meta refused the send before counting it (a throughput throttle): give the token back."""
        b = self._bucket(subject, now)
        b.tokens = min(float(self.burst), b.tokens + 1.0)

    def on_pair_limited(self, subject: str, now: float) -> float:
        """A 131056 for this recipient: wait 4^X s (X = recent hits); returns the wait."""
        b = self._bucket(subject, now)
        if now - b.last_hit > 600:
            b.hits = 0
        b.hits += 1
        b.last_hit = now
        b.tokens = min(b.tokens, 0.0)
        wait = float(4 ** min(b.hits, 6))
        b.blocked_until = now + wait
        return wait


TIER_PERIOD_S = 24 * 3600  # Meta's messaging tier counts unique recipients in a moving 24 h


class TierBudget:
    """Unique recipients of business-initiated messages per moving 24 h, per tenant (portfolio)."""

    def __init__(self, period_s: float = TIER_PERIOD_S) -> None:
        self.period = period_s
        self._seen: dict[str, OrderedDict[str, float]] = {}

    def _recent(self, tenant: str, now: float) -> OrderedDict[str, float]:
        seen = self._seen.setdefault(tenant, OrderedDict())
        while seen:
            subject, t = next(iter(seen.items()))
            if t > now - self.period:
                break
            del seen[subject]
        return seen

    def admit_at(self, tenant: str, subject: str, limit: int, now: float) -> float:
        """When a message to ``subject`` fits the tier (``<= now``: now). ``limit <= 0`` = unlimited."""
        seen = self._recent(tenant, now)
        if limit <= 0 or subject in seen or len(seen) < limit:
            return now
        # Wait until enough of the oldest recipients age out.
        oldest = list(seen.values())[len(seen) - limit]
        return oldest + self.period

    def record(self, tenant: str, subject: str, at: float) -> None:
        seen = self._seen.setdefault(tenant, OrderedDict())
        if subject in seen:
            seen.move_to_end(subject)
        seen[subject] = max(at, seen.get(subject, at))

    def used(self, tenant: str, now: float) -> int:
        return len(self._recent(tenant, now))
