"""``wapipe ingress``: serve Meta's webhooks and callbacks, writing them to Kafka."""

from __future__ import annotations

from enum import Enum

import typer

from wapipe.config import Settings


class Server(str, Enum):
    granian = "granian"  # faster
    uvicorn = "uvicorn"


def ingress_command(
    host: str = typer.Option("127.0.0.1", help="address to bind"),
    port: int = typer.Option(8080, min=0, max=65535, help="port to bind (0: any free port; the READY line names it)"),
    workers: int = typer.Option(1, min=1, help="worker processes sharing the socket (about one per core)"),
    server: Server = typer.Option(Server.granian, help="HTTP server: granian (faster) or uvicorn"),
) -> None:
    """Webhook ingress: verify, write to wa.webhook.raw, answer 200 only after Kafka acked."""
    from producers.ingress.server import serve
    from wapipe.app.bootstrap import bootstrap_or_exit

    settings = Settings()
    bootstrap = bootstrap_or_exit(settings)
    raise typer.Exit(serve(settings, bootstrap, host=host, port=port, workers=workers, server=server.value))
