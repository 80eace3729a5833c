"""The sandbox's ASGI application: the control API under ``/_sandbox`` and the Graph API."""

from __future__ import annotations

import contextlib

from starlette.applications import Starlette

from connectors.meta.sandbox.control import ControlApi
from connectors.meta.sandbox.engine import Sandbox
from connectors.meta.sandbox.graph import FastMessages, GraphApi


def create_app(sandbox: Sandbox) -> FastMessages:
    @contextlib.asynccontextmanager
    async def lifespan(app):
        await sandbox.dispatcher.start()
        try:
            yield
        finally:
            await sandbox.dispatcher.stop()

    graph = GraphApi(sandbox)
    return FastMessages(Starlette(routes=ControlApi(sandbox).routes() + graph.routes(), lifespan=lifespan), graph)
