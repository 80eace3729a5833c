"""``wapipe sandbox``: the simulated WhatsApp Cloud API as a long-running process."""

from __future__ import annotations

from pathlib import Path

import typer

from connectors.meta.sandbox.models import Dist


def sandbox_command(
    host: str = typer.Option("127.0.0.1", help="address to bind (loopback only by default)"),
    port: int = typer.Option(0, min=0, max=65535, help="port; 0 = choose a free one (printed in the READY line)"),
    seed: Path | None = typer.Option(None, exists=True, dir_okay=False, help="seed JSON (see docs/sandbox.md)"),
    latency_ms: float | None = typer.Option(None, help="fixed added latency of every Graph call (overrides the seed)"),
) -> None:
    """Run the Meta sandbox; prints `READY http://host:port` when listening. SIGTERM stops it."""
    from connectors.meta.sandbox.engine import Sandbox
    from connectors.meta.sandbox.server import load_seed, serve_forever

    try:
        s = load_seed(seed)
    except ValueError as exc:
        typer.echo(f"error: invalid seed {seed}: {exc}", err=True)
        raise typer.Exit(2) from exc
    sandbox = Sandbox(s)
    if latency_ms is not None:
        sandbox.set_config(sandbox.config.model_copy(update={"latency": Dist(kind="fixed", a=latency_ms)}))
    serve_forever(sandbox, host, port, on_ready=lambda line: print(line, flush=True))


def main() -> None:
    typer.run(sandbox_command)


__all__ = ["sandbox_command", "main"]
