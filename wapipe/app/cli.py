"""``wapipe``: the one entry point; each area's commands live in ``wapipe.app.commands``."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from enum import Enum

import typer
import typer.main

from wapipe import log
from wapipe.app.commands import (db, erp, health, ingress, media, normalise, privacy, report, sandbox, send, sink, stack,
                                 tenants, topics, up)
from wapipe.app.demo.command import demo_command

app = typer.Typer(no_args_is_help=True, add_completion=False, help="wapipe: ERP -> Kafka -> WhatsApp Cloud API")


class LogLevel(str, Enum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


@app.callback()
def _main(log_level: LogLevel = typer.Option("WARNING", envvar="WAPIPE_LOG_LEVEL", case_sensitive=False,
                                             help="log level")) -> None:
    log.configure(level=log_level.value)


# --- the commands ------------------------------------------------------------------------
# Each command module keeps its heavy imports inside its commands: `wapipe --help` stays fast.
app.command("health")(health.health_command)
app.add_typer(stack.app, name="stack")
app.add_typer(topics.app, name="topics")
app.add_typer(db.app, name="db")
app.command("demo")(demo_command)
app.command("up")(up.up_command)
app.command("report")(report.report_command)
app.command("ingress")(ingress.ingress_command)
app.add_typer(tenants.app, name="tenants")
app.command("sandbox")(sandbox.sandbox_command)
app.command("worker")(send.worker_command)
app.add_typer(send.campaign_app, name="campaign")
app.command("normalise")(normalise.normalise_command)
app.command("sink")(sink.sink_command)
app.add_typer(privacy.app, name="privacy")
app.add_typer(media.app, name="media")
app.add_typer(erp.app, name="erp")


def command_exists(command: Iterable[str]) -> bool:
    """Is ``wapipe <command...>`` registered? Walks the click tree of the CLI, in-process."""
    node = typer.main.get_command(app)
    for part in command:
        children = getattr(node, "commands", None)  # a group (typer vendors its own click)
        if not isinstance(children, dict) or part not in children:
            return False
        node = children[part]
    return True


def main() -> None:
    from pydantic import ValidationError

    try:
        app(prog_name="wapipe")
    except ValidationError as exc:  # a setting with a bad value: say which, not a traceback
        if exc.title != "Settings":
            raise
        for err in exc.errors():
            name = ".".join(str(part) for part in err["loc"])
            print(f"error: setting {name}: {err['msg']}", file=sys.stderr)  # never the value: it may be a secret
        sys.exit(2)


if __name__ == "__main__":
    sys.exit(main())
