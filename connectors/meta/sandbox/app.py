"""The sandbox's ASGI application: the control API under ``/_sandbox`` and the Graph API."""

from __future__ import annotations

import contextlib

from starlette.applications import Starlette

from connectors.meta.sandbox.control import ControlApi
from connectors.meta.sandbox.engine import Sandbox
from connectors.meta.sandbox.graph import RAW_SEND, GraphApi


class _KeepRawSend:
    """Outermost ASGI layer: remembers the server's own ``send`` so a handler can reach the
    connection's transport (to inject a connection reset)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            scope[RAW_SEND] = send
        await self.app(scope, receive, send)


def create_app(sandbox: Sandbox) -> _KeepRawSend:
    @contextlib.asynccontextmanager
    async def lifespan(app):
        await sandbox.dispatcher.start()
        try:
            yield
        finally:
            await sandbox.dispatcher.stop()

    routes = ControlApi(sandbox).routes() + GraphApi(sandbox).routes()
    return _KeepRawSend(Starlette(routes=routes, lifespan=lifespan))
