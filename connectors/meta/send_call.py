"""The send call, ``POST /{phone_number_id}/messages``, at the cost of one HTTP request.

Why not ``GraphClient.send_message``: measured in bench/dispatch.py (py-spy, 2026-12-05), httpx's
request and response objects cost 0.26 CPU-ms per call on top of the aiohttp pool they already
ride on (``transport.py``), about as much as the HTTP exchange itself. The send worker makes one
call per message, so this path talks to aiohttp directly: URL, headers and timeouts are built once
per number, token and timeout; the body is the JSON bytes the caller encoded (orjson); the answer is
read whole and parsed with orjson. ``GraphClient`` stays the client of every other Graph call.

What is kept from the httpx path, unchanged in meaning:

* failures are classified by ``errors.from_transport_error`` after ``transport._map`` — a request
  that never left is ``Transient``, one that may have reached Meta is ``UnknownOutcome``;
* a non-2xx answer becomes the same typed ``MetaError`` (``errors.from_response``), a 2xx without
  a wamid or with a body that is not JSON ``UnknownOutcome``.

``CallTrace.written_at`` is the instant (``time.monotonic``) the request body was handed to the
socket, from aiohttp's ``on_request_chunk_sent`` trace signal: with a jitter bound
(``WAPIPE_SEND_WINDOW_JITTER_S``) the pacer counts a call in its window until 1 s after it
(``processors/send/pacing.py``), not until after the response. Only then is the trace installed
(``trace_writes``): a session with a trace config builds trace objects and fires its signals on
every request, ~3 % of the worker's CPU (py-spy, bench/dispatch.py, 2026-12-05), for an instant
the default rule does not use.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
import orjson

from connectors.meta import errors
from connectors.meta.client import DEFAULT_BASE_URL, DEFAULT_VERSION, SendAccepted
from connectors.meta.transport import _map

ENDPOINT = "POST /{phone_number_id}/messages"


@dataclass(slots=True)
class CallTrace:
    """What one call learned about its own request (filled in by the trace signal)."""

    written_at: float | None = None


async def _on_chunk_sent(session: Any, ctx: Any, params: Any) -> None:  # noqa: ARG001 - aiohttp's signature
    trace = ctx.trace_request_ctx
    if trace is not None and trace.written_at is None:
        trace.written_at = time.monotonic()


class MessageSender:
    """One aiohttp session for the worker's send calls (``limit`` connections, kept alive)."""

    def __init__(self, base_url: str = DEFAULT_BASE_URL, version: str = DEFAULT_VERSION, *,
                 max_connections: int = 100, connect_timeout: float = 5.0, keepalive_expiry: float = 30.0,
                 user_agent: str = "wapipe-graph-client/0.1", trace_writes: bool = False) -> None:
        self.base_url = base_url.rstrip("/")
        self.version = version.strip("/")
        self.connect_timeout = connect_timeout
        self._max_connections = max_connections
        self._keepalive = keepalive_expiry
        self._agent = user_agent
        self._trace_writes = trace_writes
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, str] = {}
        self._headers: dict[str, dict[str, str]] = {}
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> MessageSender:
        return cls(settings.meta_graph_url, settings.meta_graph_version, **kwargs)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            traces = []
            if self._trace_writes:
                trace = aiohttp.TraceConfig()
                trace.on_request_chunk_sent.append(_on_chunk_sent)
                traces.append(trace)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=self._keepalive),
                cookie_jar=aiohttp.DummyCookieJar(), trace_configs=traces, auto_decompress=True)
        return self._session

    def _url(self, phone_number_id: str) -> str:
        url = self._urls.get(phone_number_id)
        if url is None:
            url = self._urls[phone_number_id] = f"{self.base_url}/{self.version}/{phone_number_id}/messages"
        return url

    def _auth(self, token: str) -> dict[str, str]:
        h = self._headers.get(token)
        if h is None:
            if len(self._headers) > 10_000:  # tokens rotate: never an unbounded cache
                self._headers.clear()
            h = self._headers[token] = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                                        "User-Agent": self._agent}
        return h

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        t = self._timeouts.get(seconds)
        if t is None:
            connect = min(seconds, self.connect_timeout)
            t = self._timeouts[seconds] = aiohttp.ClientTimeout(total=None, connect=connect, sock_connect=connect,
                                                                sock_read=seconds)
        return t

    async def send(self, phone_number_id: str, body: bytes, *, token: str, timeout: float,
                   trace: CallTrace | None = None) -> SendAccepted:
        """Send one message (``body``: the JSON bytes of the Graph request). A return means Meta
        accepted it; every failure is a ``MetaError``. ``trace.written_at`` is set when the sender
        traces writes."""
        url = self._url(phone_number_id)
        try:
            async with self._client().post(url, data=body, headers=self._auth(token), timeout=self._timeout(timeout),
                                           allow_redirects=False, trace_request_ctx=trace) as resp:
                status = resp.status
                content = await resp.read()
                if status >= 300:
                    raise errors.from_response(
                        httpx.Response(status, headers=resp.raw_headers, content=content,
                                       request=httpx.Request("POST", url)), endpoint=ENDPOINT)
        except aiohttp.ClientError as exc:
            raise errors.from_transport_error(_map(exc), idempotent=False, endpoint=ENDPOINT) from None
        except asyncio.TimeoutError as exc:
            raise errors.from_transport_error(_map(exc), idempotent=False, endpoint=ENDPOINT) from None
        try:
            reply = orjson.loads(content)
            first = reply["messages"][0]
            contact = (reply.get("contacts") or [{}])[0]
            return SendAccepted(wamid=first["id"], message_status=first.get("message_status", "accepted"),
                                wa_id=contact.get("wa_id"), input=contact.get("input"))
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
            # A success status means Meta acted: a send must never be retried blindly.
            raise errors.UnknownOutcome(f"HTTP {status} without messages[0].id", http_status=status,
                                        endpoint=ENDPOINT) from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
