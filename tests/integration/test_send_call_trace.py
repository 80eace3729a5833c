"""The send call against a real HTTP server: the instant its request was written is traced only
when the sender is asked to (the jitter rule needs it; otherwise the trace's cost is saved), and
the answer is the same either way."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

from connectors.meta.send_call import CallTrace, MessageSender

pytestmark = pytest.mark.integration


async def _serve() -> tuple[web.AppRunner, str]:
    async def messages(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"messaging_product": "whatsapp", "contacts": [{"input": "1", "wa_id": "1"}],
                                  "messages": [{"id": "wamid.X", "message_status": "accepted"}]})

    app = web.Application()
    app.router.add_post("/v21.0/{pnid}/messages", messages)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


@pytest.mark.parametrize("trace_writes", [True, False])
def test_the_write_instant_is_traced_only_when_asked(trace_writes):
    async def go() -> tuple[CallTrace, str, float, float]:
        runner, url = await _serve()
        sender = MessageSender(url, "v21.0", trace_writes=trace_writes)
        try:
            trace = CallTrace()
            before = time.monotonic()
            accepted = await sender.send("123", b'{"to": "1"}', token="t", timeout=5.0, trace=trace)
            return trace, accepted.wamid, before, time.monotonic()
        finally:
            await sender.aclose()
            await runner.cleanup()

    trace, wamid, before, after = asyncio.run(go())
    assert wamid == "wamid.X"
    if trace_writes:
        assert trace.written_at is not None and before <= trace.written_at <= after
    else:
        assert trace.written_at is None
