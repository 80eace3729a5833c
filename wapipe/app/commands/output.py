"""The consoles the root commands print to, and their error exit."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
err = Console(stderr=True)


def fail(msg: str, code: int = 1) -> None:
    """``error: <msg>`` on stderr, one line however long (a message is text, never markup), and exit."""
    err.print(f"[red]error:[/] {escape(msg)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)
