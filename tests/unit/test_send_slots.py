"""FairSlots: the Graph calls in flight, shared between tenants in turn once the pool is full,
transactional waiters first; no slot is lost to a cancelled waiter."""

from __future__ import annotations

import asyncio

import pytest

from processors.send.slots import FairSlots


async def _grants(slots: FairSlots, waiters: list[tuple[str, bool]], releases: int) -> list[str]:
    """Every waiter queues (in the order given) on a full pool; ``releases`` slots are freed one by
    one; the tenants (``!`` for urgent) in the order they got a slot."""
    got: list[str] = []

    async def wait(tenant: str, urgent: bool) -> None:
        await slots.acquire(tenant, urgent=urgent)
        got.append(tenant + ("!" if urgent else ""))

    tasks = []
    for tenant, urgent in waiters:
        tasks.append(asyncio.ensure_future(wait(tenant, urgent)))
        await asyncio.sleep(0)
    for _ in range(releases):
        slots.release()
        await asyncio.sleep(0)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return got


def test_a_tenant_with_many_waiting_numbers_does_not_crowd_out_one_with_a_single_number():
    async def go() -> list[str]:
        slots = FairSlots(2)
        await slots.acquire("big")
        await slots.acquire("big")
        # ten loops of tenant "big" queued before the one loop of tenant "small"
        return await _grants(slots, [("big", False)] * 10 + [("small", False)] * 3, releases=6)

    got = asyncio.run(go())
    assert got == ["big", "small", "big", "small", "big", "small"]  # a FIFO semaphore: six "big"


def test_a_transactional_waiter_goes_before_every_campaign_waiter():
    async def go() -> list[str]:
        slots = FairSlots(1)
        await slots.acquire("a")
        return await _grants(slots, [("a", False), ("b", False), ("b", True)], releases=2)

    assert asyncio.run(go()) == ["b!", "a"]


def test_free_slots_are_taken_at_once_and_in_use_counts_them():
    async def go() -> FairSlots:
        slots = FairSlots(3)
        await slots.acquire("a")
        await asyncio.wait_for(slots.acquire("b"), 0.1)
        return slots

    slots = asyncio.run(go())
    assert slots.in_use == 2
    slots.release()
    assert slots.in_use == 1


@pytest.mark.parametrize("granted_first", [False, True])
def test_a_cancelled_waiter_loses_no_slot(granted_first):
    async def go() -> int:
        slots = FairSlots(1)
        await slots.acquire("a")
        waiter = asyncio.ensure_future(slots.acquire("b"))
        await asyncio.sleep(0)
        if granted_first:
            slots.release()  # granted, and cancelled before it runs again: the slot is passed on
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        if not granted_first:
            slots.release()
        await asyncio.wait_for(slots.acquire("c"), 0.1)  # the freed slot is there
        return slots.in_use

    assert asyncio.run(go()) == 1


def test_a_loop_waiting_in_its_tenants_turn_is_moved_up_when_a_transactional_command_arrives():
    async def go() -> list[str]:
        slots = FairSlots(1)
        await slots.acquire("a")
        got: list[str] = []

        async def wait(tenant: str, who: str) -> None:
            await slots.acquire(tenant, who=who)
            got.append(who)

        tasks = [asyncio.ensure_future(wait(t, w)) for t, w in (("b", "b1"), ("c", "c1"), ("a", "a1"))]
        await asyncio.sleep(0)
        slots.promote("a1")  # a1's number got an OTP while it waited behind b's and c's turns
        slots.promote("nobody")  # not waiting: nothing happens
        for _ in range(3):
            slots.release()
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        return got

    assert asyncio.run(go()) == ["a1", "b1", "c1"]  # and a1 is not served twice
