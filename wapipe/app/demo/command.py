"""``wapipe demo``: the command."""

from __future__ import annotations

import typer

from wapipe.app.demo.plan import DemoPlan
from wapipe.app.demo.run import DemoRun
from wapipe.config import Settings


def demo_command(
    messages: int = typer.Option(20_000, help="bulk campaign size (split equally over the tenants)"),
    transactional: int = typer.Option(300, help="transactional messages sent during the campaign"),
    invalid: int = typer.Option(30, help="invalid commands (unknown template, wrong parameters, foreign number, ...)"),
    failing: int = typer.Option(20, help="campaign recipients whose messages fail at Meta (131026)"),
    duplicates: int = typer.Option(20, help="commands re-sent with an idempotency key already used"),
    throughputs: str = typer.Option("80,250,1000", help="one tenant per value: its number's msg/s limit"),
    timeout: float = typer.Option(900.0, help="give up (and stop everything) after this many seconds"),
) -> None:
    """The main job on this machine: broker, sandbox, services, tenants, a mixed workload, the report."""
    try:
        limits = tuple(int(x) for x in throughputs.split(",") if x.strip())
    except ValueError:
        raise typer.BadParameter("--throughputs: comma-separated whole numbers, e.g. 80,250,1000") from None
    if not limits or any(not 1 <= x <= 1000 for x in limits):
        raise typer.BadParameter("--throughputs: each between 1 and 1000 msg/s")
    settings = Settings()
    plan = DemoPlan(messages=messages, transactional=transactional, invalid=invalid, failing=failing,
                    duplicates=duplicates, throughputs=limits, timeout_s=timeout, partitions=settings.topic_partitions)
    raise typer.Exit(DemoRun(settings, plan).execute())
