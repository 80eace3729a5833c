"""``wapipe report``: the delivery report from ClickHouse (rendered by sinks/report.py in the
terminal, sinks/report_html.py as HTML)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import typer
from rich.console import Console

from wapipe.config import Settings


def report_command(
    tenant: list[str] = typer.Option([], "--tenant", "-t", help="only these tenants (repeatable)"),
    campaign: list[str] = typer.Option([], "--campaign", "-c", help="only these campaigns (repeatable)"),
    since_minutes: float | None = typer.Option(None, "--since-minutes", help="only commands requested in the last N minutes"),
    html_report: bool = typer.Option(True, "--html/--no-html", help="write the HTML report"),
    out_dir: Path | None = typer.Option(None, "--out-dir", help="where to write it (default: Settings.reports_dir)"),
) -> None:
    """The delivery report from ClickHouse: key tables here, plots in a self-contained HTML file."""
    from sinks.analytics import Scope, collect
    from sinks.reader import open_reader
    from sinks.report import print_report

    write_html = None
    if html_report:
        try:
            from sinks.report_html import write_html
        except ModuleNotFoundError as exc:  # plotly is the `report` extra
            if (exc.name or "").partition(".")[0] != "plotly":
                raise
            typer.echo("error: the HTML report needs plotly: pip install 'wapipe[report]' (or --no-html)", err=True)
            raise typer.Exit(1) from None

    s = Settings()
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=since_minutes) if since_minutes else None
    scope = Scope(tenants=tuple(tenant), campaigns=tuple(campaign), since=since)
    console = Console()
    reader = None
    try:
        reader = open_reader(s)
        data = collect(reader, scope)
    except Exception as exc:
        Console(stderr=True).print(f"[red]error:[/] reading ClickHouse ({s.clickhouse_dsn}) failed: {exc}")
        raise typer.Exit(1) from exc
    finally:
        close = getattr(reader, "close", None)
        if close:
            close()
    print_report(data, console)
    if write_html is not None:
        path = write_html(data, out_dir or s.reports_dir)
        console.print(f"HTML report: {path}")
