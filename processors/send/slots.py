"""The worker's Graph calls in flight, shared fairly between tenants.

One pool bounds the calls in flight for all numbers (``WAPIPE_SEND_MAX_IN_FLIGHT``). While it has
room nobody waits. When it is full, a freed slot goes first to a number loop with a transactional
command waiting (an OTP never waits behind another tenant's campaign; a loop already waiting is
moved up when one arrives: ``promote``), then to the tenants with loops waiting, in turn: a tenant with ten busy numbers gets as many slots as a tenant with one,
not ten times as many (``asyncio.Semaphore`` would serve the loops first come, first served).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque


class FairSlots:
    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._urgent: deque[asyncio.Future] = deque()
        self._by_tenant: OrderedDict[str, deque[asyncio.Future]] = OrderedDict()
        self._waiting: dict[str, asyncio.Future] = {}  # who -> its wait, while it waits

    @property
    def in_use(self) -> int:
        return self.total - self.free

    async def acquire(self, tenant: str, *, urgent: bool = False, who: str = "") -> None:
        """Wait for a slot; ``urgent``: for a transactional command; ``who``: the waiter's name
        for ``promote`` (a phone number id)."""
        if self.free > 0:  # then nobody waits: ``release`` hands every freed slot to a waiter
            self.free -= 1
            return
        fut = asyncio.get_running_loop().create_future()
        (self._urgent if urgent else self._by_tenant.setdefault(tenant, deque())).append(fut)
        if who:
            self._waiting[who] = fut
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # granted, then cancelled: pass the slot on
                self.release()
            raise
        finally:
            if who and self._waiting.get(who) is fut:
                del self._waiting[who]

    def try_acquire(self) -> bool:
        """A slot now, if one is free (never waits: a number's loop that already holds slots for a
        batch must not wait for more while others wait for its own)."""
        if self.free > 0:
            self.free -= 1
            return True
        return False

    def promote(self, who: str) -> None:
        """``who`` waits for a transactional command now: it goes before the tenants' turns (its
        place in its tenant's queue is skipped once it is served)."""
        fut = self._waiting.get(who)
        if fut is not None and not fut.done():
            self._urgent.append(fut)

    def release(self) -> None:
        self.free += 1
        while self.free > 0:
            fut = self._next()
            if fut is None:
                return
            self.free -= 1
            fut.set_result(None)

    def _next(self) -> asyncio.Future | None:
        """The next waiter still waiting: urgent ones first, then one per tenant in turn."""
        while self._urgent:
            fut = self._urgent.popleft()
            if not fut.done():
                return fut
        while self._by_tenant:
            tenant, q = next(iter(self._by_tenant.items()))
            fut = q.popleft()
            if q:
                self._by_tenant.move_to_end(tenant)  # served: the next tenant goes next
            else:
                del self._by_tenant[tenant]
            if not fut.done():
                return fut
        return None
