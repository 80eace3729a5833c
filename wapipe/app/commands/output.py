"""The consoles the root commands print to, and their error exit."""

from __future__ import annotations

import typer
from rich.console import Console

console = Console()
err = Console(stderr=True)


def fail(msg: str) -> None:
    err.print(f"[red]error:[/] {msg}")
    raise typer.Exit(1)
