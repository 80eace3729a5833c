"""``wapipe worker`` and ``wapipe campaign pause|resume|stop|progress``."""

from __future__ import annotations

import json

import typer

from wapipe.app.commands.output import console, err, fail
from wapipe.config import Settings

campaign_app = typer.Typer(no_args_is_help=True, help="Pause, resume, stop a campaign; show its progress.")


def worker_command(
    loglevel: str = typer.Option("WARNING", "--loglevel", help="faust/mode log level"),
) -> None:
    """The send pipeline: validate, dedup, pace and dispatch to the Graph API (prints READY worker)."""
    from processors.send.app import run_worker
    from wapipe.app.bootstrap import bootstrap_or_exit

    s = Settings()
    run_worker(s, bootstrap_or_exit(s), loglevel=loglevel)


def _control(campaign_id: str, state: str, tenant: str) -> None:
    from processors.send.campaigns import publish_control
    from wapipe.app.bootstrap import bootstrap_or_exit

    s = Settings()
    try:
        publish_control(bootstrap_or_exit(s), campaign_id, state, tenant_id=tenant)
    except (RuntimeError, ValueError) as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    console.print(f"campaign {campaign_id} of tenant {tenant}: {state}")


TENANT = typer.Option(..., "--tenant", help="the tenant whose campaign it is (campaigns are per tenant)")


@campaign_app.command("pause")
def pause(campaign_id: str = typer.Argument(...), tenant: str = TENANT) -> None:
    """Hold the campaign's remaining commands (within a second); resume continues them."""
    _control(campaign_id, "PAUSED", tenant)


@campaign_app.command("resume")
def resume(campaign_id: str = typer.Argument(...), tenant: str = TENANT) -> None:
    """Continue a paused campaign."""
    _control(campaign_id, "RUNNING", tenant)


@campaign_app.command("stop")
def stop(campaign_id: str = typer.Argument(...), tenant: str = TENANT) -> None:
    """Stop for good: the remaining commands get CANCELLED results."""
    _control(campaign_id, "STOPPED", tenant)


@campaign_app.command("progress")
def progress_cmd(campaign_id: str = typer.Argument(...), tenant: str = TENANT,
                 as_json: bool = typer.Option(False, "--json"),
                 timeout: float = typer.Option(30.0, "--timeout", min=0.5, max=3600.0,
                                               help="seconds to read each topic to its end")) -> None:
    """Queued, sent, failed, remaining (read from the topics) of the tenant's campaign."""
    from processors.send.campaigns import progress
    from wapipe.app.bootstrap import bootstrap_or_exit
    from wapipe.edge.scan import ScanError

    s = Settings()
    try:
        p = progress(bootstrap_or_exit(s), campaign_id, tenant_id=tenant, timeout=timeout)
    except (ScanError, TimeoutError) as exc:  # a count of part of a topic is never shown
        fail(f"campaign {campaign_id} of tenant {tenant}: progress not known: {exc}")
    if as_json:
        console.print_json(json.dumps(p.as_dict()))
    else:
        console.print(f"campaign {p.campaign_id} of tenant {p.tenant_id} ({p.state}): queued {p.queued}, sent {p.sent}, "
                      f"failed {p.failed}, unknown {p.unknown}, cancelled {p.cancelled}, remaining {p.remaining}")
