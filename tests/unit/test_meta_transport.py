"""The aiohttp transport keeps "never sent" and "may have been sent" apart, over real sockets."""

import asyncio
import socket

import httpx
import pytest

from connectors.meta import errors as E
from connectors.meta.client import GraphClient
from connectors.meta.transport import AiohttpTransport
from wapipe.net import free_port


async def _serve(handler):
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_refused_connection_is_not_sent():
    graph = GraphClient(f"http://127.0.0.1:{free_port()}", timeout=2)
    try:
        with pytest.raises(E.Transient):
            await graph.send_message("1", {"messaging_product": "whatsapp", "to": "1", "type": "text", "text": {"body": "x"}}, token="t")
    finally:
        await graph.aclose()


async def test_reset_after_the_request_was_read_is_unknown_outcome():
    received = []

    async def handler(reader, writer):
        received.append(await reader.read(65536))  # the server got the request...
        writer.transport.abort()  # ...and the connection dies before an answer

    server, url = await _serve(handler)
    graph = GraphClient(url, timeout=2)
    try:
        with pytest.raises(E.UnknownOutcome):
            await graph.send_message("1", {"messaging_product": "whatsapp", "to": "1", "type": "text", "text": {"body": "x"}}, token="t")
        assert received and received[0].startswith(b"POST ")
    finally:
        await graph.aclose()
        server.close()


async def test_read_timeout_is_unknown_outcome_and_pool_wait_is_not_sent():
    hold = asyncio.Event()

    async def handler(reader, writer):
        await reader.read(65536)
        await hold.wait()
        writer.close()

    server, url = await _serve(handler)
    transport = AiohttpTransport(max_connections=1)
    graph = GraphClient(url, timeout=0.5, connect_timeout=0.3, transport=transport)
    body = {"messaging_product": "whatsapp", "to": "1", "type": "text", "text": {"body": "x"}}
    try:
        first = asyncio.create_task(graph.send_message("1", body, token="t"))
        await asyncio.sleep(0.1)
        # The only connection is busy: the second call waits for the pool and gives up unsent.
        with pytest.raises(E.Transient, match="not sent"):
            await graph.send_message("1", body, token="t")
        with pytest.raises(E.UnknownOutcome):
            await first
    finally:
        hold.set()
        await graph.aclose()
        server.close()


async def test_gzip_answers_are_decoded_once():
    import gzip

    def handler(request):
        raise AssertionError("unused")

    async def raw(reader, writer):
        await reader.read(65536)
        body = gzip.compress(b'{"ok": true}')
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()

    server, url = await _serve(raw)
    async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
        r = await client.get(url)
        assert r.json() == {"ok": True}
    server.close()
