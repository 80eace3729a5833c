"""Meta's send limits, kept on our side so Meta never has to refuse us.

* ``NumberPacer`` — one per phone number: even spacing at ``safety`` × the number's limit
  (no bursts), plus a hard cap on the count in any sliding 1 s window, and an adaptive factor
  that a throttle error lowers and quiet time restores. The cap counts each call from the instant
  its slot is reserved until 1 s after its response, less the fastest round trip seen (the learned
  rule, the default; its one assumption and proof in ``window_wait``), so a slot costs 1 s plus
  its ledger write plus how much slower its call was than the fastest, not 1 s plus the whole
  round trip. The cap is enforced as each call starts; the reservation looks ahead by the recent
  ledger write, so a call waits after its ledger entry is written only when that write was faster.
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
    jitter: float | None = None  # None: no bound on it assumed (the default)
    # The learned rule (the default, ``window_wait``): once ``learn_after`` calls were answered, a
    # call answered at ``f`` counts until ``f + 1 s - credit``, the credit being the fastest round
    # trip seen (the call's start to its response) less the margin, at most ``max_credit``. Off:
    # until f + 1 s.
    learn: bool = True
    margin: float = 0.005
    learn_after: int = 100
    max_credit: float = 0.5
    _widen: int = 0  # throttle episodes since the factor was last back at 1: the margin doubles for each
    _floor: float = math.inf  # fastest round trip of an answered call, from its start
    _answered: int = 0
    _credit: float = 0.0  # applies to every tail at once, so a lower floor lengthens all of them
    _tails: deque = field(default_factory=deque)  # instants counted calls leave the window, ascending
    _lead: float = 0.0  # recent fastest reservation-to-start (the ledger write): how far reservations look ahead
    _in_flight: int = 0  # calls started and not finished
    _reserved: int = 0  # slots reserved for calls not started yet
    # pace given up while the number had work (a full window, a late loop, the in-flight pool),
    # beyond the ``lag`` a late turn may catch up: seconds, since the last ``take_lost``
    lost_s: float = field(default=0.0, init=False, repr=False, compare=False)
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
    def credit(self) -> float:
        """Seconds the learned rule takes off every answered call's tail (0 until learned)."""
        return self._credit

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
        tails, end = self._tails, now + self._credit
        while tails and tails[0] <= end:
            tails.popleft()

    def _recover(self, now: float) -> None:
        # Back up by 2 % of the limit per quiet second, from 3 s after the last throttle.
        if self.factor < 1.0:
            start = max(self._last_recover, self._last_throttle + 3.0)
            if now > start:
                self.factor = min(1.0, self.factor + 0.02 * (now - start))
                if self.factor == 1.0:
                    self._widen = 0
        self._last_recover = now

    def window_wait(self, now: float) -> float:
        """Seconds until the sliding window has room for one more reservation (0: now), looking
        ``lead`` ahead: the call will not start before its ledger write is acknowledged.

        The server counts call i at ``s_i``, with ``r_i <= c_i <= s_i <= f_i``: ``r`` its slot's
        reservation, ``c`` its start (after its ledger write), ``f`` its end (``finish``). A call
        counts in our window from ``r`` until its tail, 1 s after ``f`` less a credit that rests
        on one assumption. What keeps the server's count at the cap is the check at each call's
        start (``start_wait``, with no await before ``start``). Take any server window (t-1, t]
        and the call k counted in it that started last: every other call j counted there started
        before k and ``s_j > s_k - 1``. If call j's tail is after ``c_k``, then at ``c_k`` call j
        was under way or within its tail, so ``start_wait`` counted it, and the server's window
        holds at most ``cap`` calls, however long the round trips and whatever stalls in this
        process do to when requests leave. The reservation's check only keeps a call from waiting
        at its start, so it may look ahead by ``lead``, how long calls recently took from their
        reservation to their start; a call that starts sooner waits there for the room it
        counted on, its ledger entry written.

        * No credit (``learn`` off): the tail ``f_j + 1 > s_j + 1 > s_k >= c_k``. No assumption;
          every slot costs 1 s plus the whole round trip (at most cap / (1 s + round trip) per
          second).
        * The learned rule (``learn``, the default): write ``D_i = s_i - c_i`` (the connection
          pool, the network and the server until it counts) and ``U_i = f_i - s_i`` (the server's
          work after counting and the way back). The assumption: the fastest answered call seen
          was (within the margin) fastest in both halves, so ``D_k + U_j >= floor - margin`` for
          any two calls, ``floor`` the fastest ``f - c`` seen. The tail ``f_j + 1 - credit``
          (credit ``= floor - margin``) is ``s_j + U_j + 1 - credit > s_k + U_j - credit = c_k +
          D_k + U_j - credit >= c_k``. A server that stalls before counting some call makes that
          call's round trip longer too, so it is covered; what breaks the rule is a call counted
          much later after its start, or answered much sooner after its count, than the fastest
          call while its round trip stays short, or a whole path that got faster than anything
          seen, until its first call is answered (one round trip). The trip runs from the start,
          not the reservation: our own ledger write and key reads come before the start, and a
          ledger that sped up after a slow spell (a broker recovering) would otherwise let calls
          count sooner after their reservation than the floor allows (review, 2026-12-06: a
          ledger write falling from 100 ms to 2 ms put 1,059 calls into a server window of 992).
          The credit is one number applied to every tail when the window is read, so a faster
          call seen later lengthens every tail still held, and when it rises (learned, or learned
          again) every tail held is moved by the rise, so none ends sooner; calls without an
          answer (a transport failure, our timeout, a 5xx from a gateway that may still pass the
          call on) get none; a throttle drops it and doubles the margin before it is learned
          again, until the factor is back at 1.
        * The jitter rule (``jitter`` set): the tail is 1 s after ``min(f, w + jitter)``, ``w`` the
          instant the request was written, assuming ``s_i - w_i`` varies by at most ``jitter``.
          The bench's sandbox, stalled on a loaded 2-core machine, counted 84 in a window of 80
          with a 10 ms jitter: a stall before counting breaks it, since it does not look at how
          long the call took.
        """
        return self._wait(now, self._reserved, self._lead)

    def start_wait(self, now: float) -> float:
        """The window's room for a call about to start: the calls under way and the tails
        (reservations not started yet do not count: each checks for itself when it starts). 0
        unless it starts sooner than its reservation looked ahead, or the cap was lowered (a
        throttle, a new limit) since."""
        return self._wait(now, 0, 0.0)

    def _wait(self, now: float, reserved: int, ahead: float) -> float:
        self._prune(now)
        tails = self._tails
        gone = 0  # tails that will have ended ``ahead`` from now
        if ahead > 0.0:
            end, n = now + self._credit + ahead, len(tails)
            while gone < n and tails[gone] <= end:
                gone += 1
        busy = len(tails) - gone + self._in_flight + reserved
        if busy < self.cap:
            return 0.0
        expire = gone + busy - self.cap  # index of the tail whose end makes room
        if expire < len(tails):
            return max(self.poll, tails[expire] - self._credit - ahead - now)
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
        behind = now - self.lag - self._next
        if behind > 0 and self._next > 0.0:  # the first reservation starts the pace: nothing lost before it
            self.lost_s += behind
        self.idle(now)
        self._next += 1.0 / self.rate
        self._reserved += 1
        return True

    def release(self) -> None:
        """A reserved slot whose call will not start."""
        self._reserved = max(0, self._reserved - 1)

    def ready(self, after: float) -> None:
        """A reserved call is ready to start ``after`` seconds from its reservation (its ledger
        write acknowledged), before any wait at ``start_wait``: ``lead`` follows it, down at
        once, up by a twentieth."""
        lead = self._lead
        self._lead = after if after < lead else lead + 0.05 * (after - lead)

    def idle(self, now: float) -> None:
        """The pace goes on from ``now`` less ``lag`` at the earliest (``reserve`` does this for
        each slot; the scheduler after a wait with nothing ready, so that time is not ``lost_s``)."""
        self._next = max(self._next, now - self.lag)

    def take_lost(self) -> float:
        """``lost_s`` since the last call (the stats line's interval), zeroed."""
        lost, self.lost_s = self.lost_s, 0.0
        return lost

    def start(self, now: float) -> None:
        """A call is about to leave (checked with ``start_wait`` just before, with no await in
        between): its reservation, if it holds one, becomes a call under way. Every ``start``
        must be followed by one ``finish``."""
        self._reserved = max(0, self._reserved - 1)
        self._in_flight += 1

    def finish(self, now: float, written_at: float | None = None, *, started_at: float | None = None,
               answered: bool = False) -> None:
        """The call ended at ``now`` (its response, its error, or our giving up on it);
        ``written_at``: when its request was written, if known; ``started_at``: the ``start`` of
        the call (after its ledger write); ``answered``: the server answered it (a response, a
        4xx error), as opposed to a transport failure, a 5xx or our giving up, which never teach
        the learned rule."""
        self._in_flight = max(0, self._in_flight - 1)
        if self.jitter is not None:  # the jitter rule (the learned one is off: its credit stays 0)
            # The server counted it before its response arrived, and (the assumption) within
            # ``jitter`` of its write; the earlier of the two bounds it.
            tail = (now if written_at is None else min(now, written_at + self.jitter)) + 1.0
        elif answered and started_at is not None and self.learn:
            self._learn(now - started_at)
            tail = now + 1.0  # less the credit, applied when the window is read
        else:  # no answer, so nothing bounds its count but ``now``: no credit (a rise shifts every tail)
            tail = now + 1.0 + self._credit
        tails = self._tails
        if not tails or tails[-1] <= tail:
            tails.append(tail)
        else:  # out of order (a slow call ended after faster ones): keep them sorted
            i = len(tails) - 1
            while i > 0 and tails[i - 1] > tail:
                i -= 1
            tails.insert(i, tail)

    def _learn(self, trip: float) -> None:
        if trip < self._floor:
            self._floor = trip
        self._answered += 1
        if self._answered >= self.learn_after:
            credit = max(0.0, min(self.max_credit, self._floor - self.margin * 2 ** self._widen))
            if credit > self._credit:  # learned (again): no tail already held may end sooner for it
                rise = credit - self._credit
                self._tails = deque(t + rise for t in self._tails)
            self._credit = credit

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
            # The learned rule's assumption may be what failed: learn again, with twice the margin.
            self._widen = min(self._widen + 1, 16)
            self._credit, self._floor, self._answered = 0.0, math.inf, 0
        self._last_throttle = now
        self._paused_until = max(self._paused_until, now + pause)

    def window_now(self, now: float) -> int:
        """``sent_in_last_second`` without changing anything: for a metrics scrape from another
        thread (``tuple`` copies the deque in one step under the GIL; nothing is pruned)."""
        end = now + self._credit
        return sum(1 for t in tuple(self._tails) if t > end) + self._in_flight + self._reserved

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
