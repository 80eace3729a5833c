"""Limits the sandbox enforces like Meta, over real HTTP: per-number throughput (130429, exact
sliding 1 s window), pair rate (131056), the portfolio's messaging tier and the 24 h window (131047)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

pytestmark = pytest.mark.integration


def tpl(name="hello_world"):
    return {"type": "template", "template": {"name": name, "language": {"code": "en_US"}}}


def body(to, **kw):
    return {"messaging_product": "whatsapp", "to": to, **(kw or tpl())}


async def burst(meta_sandbox, number_id, n, first=49170000000):
    async with httpx.AsyncClient(base_url=meta_sandbox.url, headers={"Authorization": f"Bearer {meta_sandbox.token}"},
                                 limits=httpx.Limits(max_connections=50)) as c:
        rs = await asyncio.gather(*[c.post(f"/v23.0/{number_id}/messages", json=body(str(first + i))) for i in range(n)])
    return [r.status_code for r in rs], [r.json() for r in rs]


async def test_throughput_limit_is_exact(meta_sandbox):
    n = meta_sandbox.number_id
    meta_sandbox.control.update_number(n, throughput=10)
    t0 = time.monotonic()
    statuses, bodies = await burst(meta_sandbox, n, 30)
    t1 = time.monotonic()  # every admitted send happened before this
    assert t1 - t0 < 1.0, "the burst must land inside one second for this test to mean anything"
    assert statuses.count(200) == 10
    codes = [b["error"]["code"] for b in bodies if "error" in b]
    assert codes == [130429] * 20
    assert all(b["error"]["error_data"]["details"] for b in bodies if "error" in b)
    c = meta_sandbox.control.counters()["numbers"][n]
    assert c["accepted"] == 10 and c["rejected"] == {"130429": 20}
    assert c["max_accepted_1s"] == 10 and c["max_requests_1s"] == 30
    # still full a moment later; the window slides: one second after the admitted sends there is room again
    statuses, _ = await burst(meta_sandbox, n, 1, first=49190000000)
    assert statuses == [400]
    await asyncio.sleep(max(0.0, t1 + 1.02 - time.monotonic()))
    statuses, _ = await burst(meta_sandbox, n, 5, first=49180000000)
    assert statuses == [200] * 5
    # the other number has its own budget (default 80)
    statuses, _ = await burst(meta_sandbox, meta_sandbox.number_ids[1], 30)
    assert statuses == [200] * 30


async def test_throughput_limit_raised_live(meta_sandbox):
    n = meta_sandbox.number_id
    meta_sandbox.control.update_number(n, throughput=100)
    statuses, _ = await burst(meta_sandbox, n, 100)
    assert statuses == [200] * 100


def test_pair_rate(meta_sandbox):
    c, n = meta_sandbox.control, meta_sandbox.number_id
    c.configure(limits={"pair_interval_s": 0.5, "pair_burst": 3})
    with httpx.Client(base_url=meta_sandbox.url, headers={"Authorization": f"Bearer {meta_sandbox.token}"}) as g:
        post = lambda to: g.post(f"/v23.0/{n}/messages", json=body(to))  # noqa: E731
        assert [post("491700000001").status_code for _ in range(3)] == [200, 200, 200]
        r = post("491700000001")
        assert r.status_code in (400, 429) and r.json()["error"]["code"] == 131056
        assert post("491700000002").status_code == 200  # another recipient is unaffected
        time.sleep(0.55)
        assert post("491700000001").status_code == 200  # one token refilled after the interval
        assert post("491700000001").json()["error"]["code"] == 131056
    assert c.counters()["numbers"][n]["rejected"] == {"131056": 2}


def test_throttling_is_sometimes_429(meta_sandbox):
    c, n = meta_sandbox.control, meta_sandbox.number_id
    c.configure(limits={"pair_interval_s": 60, "pair_burst": 1, "throttle_429_ratio": 1.0})
    with httpx.Client(base_url=meta_sandbox.url, headers={"Authorization": f"Bearer {meta_sandbox.token}"}) as g:
        g.post(f"/v23.0/{n}/messages", json=body("491700000003"))
        r = g.post(f"/v23.0/{n}/messages", json=body("491700000003"))
    assert r.status_code == 429 and r.json()["error"]["code"] == 131056


async def test_messaging_tier_counts_unique_recipients_per_portfolio(meta_sandbox):
    c = meta_sandbox.control
    c.set_tier(meta_sandbox.business_id, "TIER_250")
    c.configure(limits={"tier_window_s": 600.0})
    a, b = meta_sandbox.number_ids
    c.update_number(a, throughput=1000)
    c.update_number(b, throughput=1000)
    # 200 recipients from one number, 50 more from the other: the portfolio's 250 are used up
    await burst(meta_sandbox, a, 200, first=49160000000)
    await burst(meta_sandbox, b, 50, first=49160000200)
    statuses, _ = await burst(meta_sandbox, b, 3, first=49160000250)
    assert statuses == [200, 200, 200]  # accepted (Meta has no synchronous error) ...
    msgs = c.messages()
    over = [m for m in msgs if m["failed_with"] is not None]
    assert sorted(m["wa_id"] for m in over) == [str(49160000250 + i) for i in range(3)]
    assert {m["failed_with"] for m in over} == {131049}  # ... and fail by status webhook
    # a recipient already reached this window is not a new unique recipient
    statuses, _ = await burst(meta_sandbox, b, 1, first=49160000000)
    assert statuses == [200] and c.messages()[-1]["failed_with"] is None
    # a session message inside an open window does not count either
    c.inbound(a, "49169999999")
    async with httpx.AsyncClient(base_url=meta_sandbox.url, headers={"Authorization": f"Bearer {meta_sandbox.token}"}) as g:
        r = await g.post(f"/v23.0/{a}/messages", json=body("49169999999", **tpl()))
    assert r.status_code == 200 and c.messages()[-1]["failed_with"] is None
    # reject mode answers synchronously instead
    c.configure(limits={"tier_mode": "reject"})
    statuses, bodies = await burst(meta_sandbox, a, 1, first=49160000300)
    assert bodies[0]["error"]["code"] == 131049
    # the moving window frees the budget (shrunk here so the test need not wait)
    c.configure(limits={"tier_window_s": 0.3})
    await asyncio.sleep(0.35)
    statuses, _ = await burst(meta_sandbox, a, 5, first=49160000400)
    assert statuses == [200] * 5
    assert c.counters()["failed_async"] == {"131049": 3}


def test_service_window(meta_sandbox):
    c, n = meta_sandbox.control, meta_sandbox.number_id
    c.configure(limits={"service_window_s": 0.5})
    to = "491700000010"
    with httpx.Client(base_url=meta_sandbox.url, headers={"Authorization": f"Bearer {meta_sandbox.token}"}) as g:
        text = lambda: g.post(f"/v23.0/{n}/messages", json=body(to, type="text", text={"body": "hi"}))  # noqa: E731
        assert text().status_code == 200  # accepted, then failed 131047 by webhook (Cloud API behaviour)
        assert c.messages()[-1]["failed_with"] == 131047
        c.inbound(n, to)
        assert text().status_code == 200 and c.messages()[-1]["failed_with"] is None
        c.configure(limits={"window_mode": "reject"})
        assert text().status_code == 200  # still open
        time.sleep(0.55)
        r = text()
        assert r.status_code == 400 and r.json()["error"]["code"] == 131047
        # templates are not bound by the window
        assert g.post(f"/v23.0/{n}/messages", json=body(to)).status_code == 200
        # the window is per (number, user)
        c.inbound(n, to)
        r = g.post(f"/v23.0/{meta_sandbox.number_ids[1]}/messages", json=body(to, type="text", text={"body": "x"}))
        assert r.json()["error"]["code"] == 131047


async def test_inbound_messages_use_throughput_too(meta_sandbox):
    c, n = meta_sandbox.control, meta_sandbox.number_id
    c.update_number(n, throughput=5)
    for i in range(3):
        c.inbound(n, f"4917000000{i:02d}")
    statuses, _ = await burst(meta_sandbox, n, 3)
    assert sorted(statuses) == [200, 200, 400]
