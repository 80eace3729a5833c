"""The sink's local read endpoint (127.0.0.1 only): read-only SQL over the sink's own client.

``POST /query {"sql": ..., "parameters": {...}}`` → ``{"columns", "types", "rows"}``; errors →
400 ``{"error"}``. ``GET /health`` → the sink's counters. Queries run with ``readonly=1``, so
ClickHouse itself refuses anything that writes.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import threading
import uuid
from collections.abc import Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sinks.reader import DirectReader, ReaderError


def _plain(v: Any) -> Any:
    if isinstance(v, (dt.datetime, dt.date)):
        return v.isoformat()
    if isinstance(v, (decimal.Decimal, uuid.UUID)):
        return str(v)
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    if isinstance(v, (tuple, set)):
        return list(v)
    raise TypeError(type(v).__name__)


def build_app(reader: DirectReader, health: Callable[[], dict]) -> Starlette:
    async def query(request: Request) -> Response:
        try:
            body = await request.json()
            sql = body["sql"]
            params = body.get("parameters") or {}
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'expected JSON {"sql": ..., "parameters": {...}}'}, status_code=400)
        try:
            import anyio.to_thread

            cols, types, rows = await anyio.to_thread.run_sync(reader.query_typed, sql, params)
        except ReaderError as exc:
            return JSONResponse({"error": str(exc)[:2000]}, status_code=400)
        payload = json.dumps({"columns": cols, "types": types, "rows": rows}, default=_plain)
        return Response(payload, media_type="application/json")

    async def healthz(_: Request) -> Response:
        return JSONResponse(health())

    return Starlette(routes=[Route("/query", query, methods=["POST"]), Route("/health", healthz, methods=["GET"])])


class ReadEndpoint:
    """uvicorn in a background thread; ``url`` once started, ``stop()`` to end it."""

    def __init__(self, app: Starlette, port: int) -> None:
        self.port = port
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                    access_log=False, lifespan="off"))
        self.server.install_signal_handlers = lambda: None  # the sink's main thread owns signals
        self.thread = threading.Thread(target=self.server.run, name="sink-read-endpoint", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> "ReadEndpoint":
        self.thread.start()
        deadline = threading.Event()
        for _ in range(int(timeout * 20)):
            if self.server.started:
                return self
            deadline.wait(0.05)
        raise RuntimeError("the sink's read endpoint did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
