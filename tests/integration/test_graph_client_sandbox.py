"""GraphClient against the real Meta sandbox over HTTP (connectors/meta/sandbox).

The sandbox builds its own Meta-shaped answers (it does not use the connector's error table), so
these tests check the two sides against each other: every error a pipeline must act on arrives
as the right class, and every endpoint round-trips.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from connectors.meta import errors as E
from connectors.meta.client import CallTiming, GraphClient
from connectors.meta.messages import BodyComponent, ImageMessage, TemplateMessage, TextMessage, TextParameter

pytestmark = pytest.mark.integration

USER = "4915112345678"


@pytest.fixture
async def graph(meta_sandbox):
    client = GraphClient(meta_sandbox.url, "v23.0", timeout=5.0)
    try:
        yield client
    finally:
        await client.aclose()


def hello(cb: str | None = None, to: str = USER) -> TemplateMessage:
    return TemplateMessage(to=to, name="hello_world", language="en_US", biz_opaque_callback_data=cb)


async def test_template_send_is_accepted_and_recorded(meta_sandbox, graph):
    accepted = await graph.send_message(meta_sandbox.number_id, hello("cmd-1"), token=meta_sandbox.token)
    assert accepted.wamid.startswith("wamid.") and accepted.message_status == "accepted" and accepted.wa_id == USER
    order = TemplateMessage(to="+" + USER[:-1] + "9", name="order_update", language="en_US", components=[
        BodyComponent(parameters=[TextParameter(text="A-1042"), TextParameter(text="shipped")])])
    await graph.send_message(meta_sandbox.number_id, order, token=meta_sandbox.token)
    recorded = meta_sandbox.control.messages(meta_sandbox.number_id)
    assert [(m["wamid"], m["template"], m["biz_opaque_callback_data"]) for m in recorded][0] == (accepted.wamid, "hello_world", "cmd-1")
    assert recorded[1]["template"] == "order_update"


async def test_template_errors(meta_sandbox, graph):
    token, number = meta_sandbox.token, meta_sandbox.number_id
    with pytest.raises(E.TemplateError) as missing:
        await graph.send_message(number, TemplateMessage(to=USER, name="no_such_template", language="en_US"), token=token)
    assert missing.value.code == 132001 and missing.value.fbtrace_id
    with pytest.raises(E.TemplateError) as count:
        await graph.send_message(number, TemplateMessage(to=USER, name="order_update", language="en_US"), token=token)
    assert count.value.code == 132000
    meta_sandbox.control.set_template_status(meta_sandbox.waba_id, "promo", "en_US", "PAUSED")
    with pytest.raises(E.TemplateError) as paused:
        await graph.send_message(number, TemplateMessage(to=USER, name="promo", language="en_US"), token=token)
    assert paused.value.code == 132015 and paused.value.retryable is False


async def test_session_message_needs_an_open_window(meta_sandbox, graph):
    meta_sandbox.control.configure(limits={"window_mode": "reject"})
    text = TextMessage(to=USER, body="Your parcel is on its way")
    with pytest.raises(E.WindowClosed) as closed:
        await graph.send_message(meta_sandbox.number_id, text, token=meta_sandbox.token)
    assert closed.value.code == 131047 and "24 hours" in (closed.value.details or "")
    inbound = meta_sandbox.control.inbound(meta_sandbox.number_id, USER, "hi")
    accepted = await graph.send_message(meta_sandbox.number_id, text, token=meta_sandbox.token)
    assert accepted.wamid.startswith("wamid.")
    assert await graph.mark_read(meta_sandbox.number_id, inbound, token=meta_sandbox.token) is True
    image = ImageMessage(to=USER, link="https://example.com/a.jpg", caption="label", reply_to=inbound)
    assert (await graph.send_message(meta_sandbox.number_id, image, token=meta_sandbox.token)).wamid
    with pytest.raises(E.Permanent) as bad_read:
        await graph.mark_read(meta_sandbox.number_id, "wamid.unknown", token=meta_sandbox.token)
    assert bad_read.value.code == 131009  # Meta, "Mark messages as read": an invalid message id


@pytest.mark.parametrize("ratio", [0.0, 1.0])  # throttling answered as 400, then as 429
async def test_pair_rate_limit_whatever_the_status(meta_sandbox, graph, ratio):
    meta_sandbox.control.configure(limits={"pair_burst": 1, "throttle_429_ratio": ratio})
    await graph.send_message(meta_sandbox.number_id, hello(), token=meta_sandbox.token)
    with pytest.raises(E.PairRateLimited) as info:
        await graph.send_message(meta_sandbox.number_id, hello(), token=meta_sandbox.token)
    assert info.value.code == 131056 and info.value.http_status == (429 if ratio else 400)
    assert info.value.retryable is True
    # another recipient is not limited
    await graph.send_message(meta_sandbox.number_id, hello(to="4915187654321"), token=meta_sandbox.token)


async def test_throughput_limit_is_throttled(meta_sandbox, graph):
    meta_sandbox.control.update_number(meta_sandbox.number_id, throughput=3)
    results = await asyncio.gather(
        *(graph.send_message(meta_sandbox.number_id, hello(to=f"49151000000{i:02d}"), token=meta_sandbox.token) for i in range(8)),
        return_exceptions=True,
    )
    throttled = [r for r in results if isinstance(r, E.MetaError)]
    assert throttled and all(type(r) is E.Throttled and r.code == 130429 for r in throttled)
    assert len(results) - len(throttled) >= 3


async def test_auth_errors(meta_sandbox, graph):
    with pytest.raises(E.AuthError) as bad:
        await graph.send_message(meta_sandbox.number_id, hello(), token="EAAnot-a-token")
    assert bad.value.code == 190 and bad.value.http_status == 401
    assert "EAAnot-a-token" not in repr(bad.value) + str(bad.value)
    meta_sandbox.control.revoke_token(meta_sandbox.token)
    with pytest.raises(E.AuthError) as revoked:
        await graph.phone_number(meta_sandbox.number_id, token=meta_sandbox.token)
    assert revoked.value.subcode == 463


async def test_unknown_number_is_permanent(meta_sandbox, graph):
    with pytest.raises(E.Permanent) as info:
        await graph.send_message("9999999999", hello(), token=meta_sandbox.token)
    assert info.value.code == 100 and info.value.subcode == 33


async def test_injected_5xx_is_transient_and_not_sent(meta_sandbox, graph):
    meta_sandbox.control.set_faults(error_count=1, error_code=131000)
    with pytest.raises(E.Transient) as info:
        await graph.send_message(meta_sandbox.number_id, hello("cmd-5xx"), token=meta_sandbox.token)
    assert info.value.code == 131000 and info.value.retryable
    assert meta_sandbox.control.counters()["unique_callbacks"] == 0
    assert not [m for m in meta_sandbox.control.messages() if m["biz_opaque_callback_data"] == "cmd-5xx"]


@pytest.mark.parametrize("fault", ["timeout", "reset"])
async def test_lost_answer_after_send_is_unknown_outcome(meta_sandbox, graph, fault):
    meta_sandbox.control.set_faults(**{f"{fault}_count": 1, "timeout_hold_s": 1.0})
    started = time.monotonic()
    with pytest.raises(E.UnknownOutcome):
        await graph.send_message(meta_sandbox.number_id, hello(f"cmd-{fault}"), token=meta_sandbox.token, timeout=0.3)
    assert time.monotonic() - started < 1.0
    # Meta (the sandbox) did send it: resending automatically would have sent it twice
    assert [m["biz_opaque_callback_data"] for m in meta_sandbox.control.messages()] == [f"cmd-{fault}"]


async def test_templates_list_create_delete(meta_sandbox, graph):
    token, waba = meta_sandbox.token, meta_sandbox.waba_id
    names = {(t.name, t.language, t.status) for t in await graph.list_templates(waba, token=token)}
    assert {("hello_world", "en_US", "APPROVED"), ("order_update", "en_US", "APPROVED"), ("promo", "en_US", "APPROVED")} <= names
    created = await graph.create_template(waba, name="delivery_slot", language="en_US", category="UTILITY", token=token,
                                          components=[{"type": "BODY", "text": "Your slot is {{1}}", "example": {"body_text": [["9:00"]]}}])
    assert created.id and created.status in ("PENDING", "APPROVED")
    deadline = time.monotonic() + 5
    while True:
        [t] = await graph.list_templates(waba, token=token, name="delivery_slot")
        if t.status == "APPROVED" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert t.status == "APPROVED" and t.id == created.id and t.category == "UTILITY"
    assert await graph.delete_template(waba, "delivery_slot", token=token) is True
    assert await graph.list_templates(waba, token=token, name="delivery_slot") == []


async def test_phone_numbers_and_registration(meta_sandbox, graph):
    token = meta_sandbox.token
    numbers = await graph.list_phone_numbers(meta_sandbox.waba_id, token=token)
    assert {n.id for n in numbers} == set(meta_sandbox.number_ids)
    info = await graph.phone_number(meta_sandbox.number_id, token=token)
    assert (info.quality_rating, info.messaging_limit, info.status) == ("GREEN", "TIER_10K", "CONNECTED")
    assert info.throughput_level
    meta_sandbox.control.update_number(meta_sandbox.number_id, quality_rating="YELLOW")
    assert (await graph.phone_number(meta_sandbox.number_id, token=token)).quality_rating == "YELLOW"
    with pytest.raises(E.Permanent):  # Meta answers 100 for a field that does not exist
        await graph.phone_number(meta_sandbox.number_id, token=token, fields="id,no_such_field")
    meta_sandbox.control.configure(limits={"register_max": 1})
    assert await graph.register_number(meta_sandbox.number_id, "123456", token=token) is True
    with pytest.raises(E.Throttled) as again:
        await graph.register_number(meta_sandbox.number_id, "123456", token=token)
    assert again.value.code == 133016


async def test_embedded_signup_exchange_debug_and_subscribe(meta_sandbox, graph):
    code = meta_sandbox.control.signup_code(meta_sandbox.app_id, [meta_sandbox.waba_id])
    exchanged = await graph.exchange_code(meta_sandbox.app_id, meta_sandbox.app_secret, code)
    assert exchanged.access_token
    with pytest.raises(E.Permanent) as reused:
        await graph.exchange_code(meta_sandbox.app_id, meta_sandbox.app_secret, code)
    assert reused.value.code == 100
    with pytest.raises(E.AuthError):  # a wrong secret is refused, not a temporary error
        await graph.exchange_code(meta_sandbox.app_id, "wrong-secret", meta_sandbox.control.signup_code(meta_sandbox.app_id, [meta_sandbox.waba_id]))
    info = await graph.debug_token(exchanged.access_token, app_token=f"{meta_sandbox.app_id}|{meta_sandbox.app_secret}")
    assert info.is_valid and info.app_id == meta_sandbox.app_id and info.waba_ids == [meta_sandbox.waba_id]
    assert await graph.subscribe_app(meta_sandbox.waba_id, token=exchanged.access_token) is True
    assert await graph.unsubscribe_app(meta_sandbox.waba_id, token=exchanged.access_token) is True
    # the new token sends
    assert (await graph.send_message(meta_sandbox.number_id, hello(), token=exchanged.access_token)).wamid


async def test_latency_hook_over_http(meta_sandbox):
    timings: list[CallTiming] = []
    meta_sandbox.control.set_latency(30)
    async with GraphClient(meta_sandbox.url, "v23.0", on_call=timings.append) as graph:
        await graph.send_message(meta_sandbox.number_id, hello(), token=meta_sandbox.token)
        await graph.phone_number(meta_sandbox.number_id, token=meta_sandbox.token)
    assert [t.endpoint for t in timings] == ["POST /{phone_number_id}/messages", "GET /{phone_number_id}"]
    assert all(t.seconds >= 0.03 and t.outcome == "ok" and t.status == 200 for t in timings)


# --- the sandbox's webhooks parse with the connector's models ------------------------------------------
class WebhookReceiver:
    """A minimal HTTP/1.1 endpoint on 127.0.0.1 that keeps every POST body and answers 200."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self._tasks: set[asyncio.Task] = set()

    async def __aenter__(self) -> WebhookReceiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/webhook"
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.posts.append((headers, body))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)


async def test_sandbox_webhooks_parse_and_verify(meta_sandbox, graph):
    from connectors.meta.signature import verify
    from connectors.meta.webhooks import MessagesChange, TextMessage as InboundText, iter_messages, iter_other_changes, iter_statuses, parse_webhook

    async with WebhookReceiver() as receiver:
        meta_sandbox.control.set_webhook(receiver.url, app_id=meta_sandbox.app_id)
        meta_sandbox.control.configure(habits={"duplicate": 1.0, "skip_delivered": 0.0, "read": 1.0})
        accepted = await graph.send_message(meta_sandbox.number_id, hello("cmd-wh"), token=meta_sandbox.token)
        inbound = meta_sandbox.control.inbound(meta_sandbox.number_id, USER, "where is my order?")
        meta_sandbox.control.set_template_status(meta_sandbox.waba_id, "promo", "en_US", "PAUSED", reason="LOW_QUALITY")
        await asyncio.to_thread(meta_sandbox.control.wait_webhooks_idle, 10.0)

    assert receiver.posts
    statuses, messages, others = [], [], []
    for headers, body in receiver.posts:
        assert verify(meta_sandbox.app_secret.encode(), body, headers.get("x-hub-signature-256"))
        env = parse_webhook(body)
        statuses += [item.status for item in iter_statuses(env)]
        messages += list(iter_messages(env))
        others += list(iter_other_changes(env))
        assert all(isinstance(c, MessagesChange) or c.field != "messages" for e in env.entry for c in e.changes)
    mine = [s for s in statuses if s.id == accepted.wamid]
    assert {s.status for s in mine} == {"sent", "delivered", "read"}
    assert len(mine) > 3  # duplicates arrived and parsed like any other status
    assert all(s.biz_opaque_callback_data == "cmd-wh" and s.recipient_id == USER for s in mine)
    sent = next(s for s in mine if s.status == "sent")
    assert sent.pricing.category == "utility" and sent.conversation is not None  # v23: conversation present
    [msg] = [m for m in messages if m.message.id == inbound]
    assert isinstance(msg.message, InboundText) and msg.message.text.body == "where is my order?"
    assert msg.contact is not None and msg.contact.wa_id == USER
    [paused] = [o for o in others if o.field == "message_template_status_update"]
    assert paused.value.event == "PAUSED" and paused.value.message_template_name == "promo"
