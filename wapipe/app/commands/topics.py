"""``wapipe topics``: the Kafka topics declared in wapipe/topics.py."""

from __future__ import annotations

import typer
from rich.table import Table

from wapipe.app.commands.output import console, err
from wapipe.config import Settings

app = typer.Typer(no_args_is_help=True, help="Kafka topics, declared in wapipe/topics.py.")


@app.command("apply")
def topics_apply() -> None:
    """Create missing topics and apply changed settings."""
    from wapipe.app.bootstrap import bootstrap_or_exit
    from wapipe.topics import admin_client, apply_topics

    s = Settings()
    bootstrap = bootstrap_or_exit(s)
    r = apply_topics(admin_client(bootstrap), s)
    for name in r.created:
        console.print(f"created {name}")
    for name, diff in r.altered.items():
        console.print(f"altered {name}: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in diff.items()))
    for name, (a, b) in r.partitions_raised.items():
        console.print(f"partitions {name}: {a} -> {b}")
    for p in r.problems:
        err.print(f"[yellow]warning:[/] {p}")
    if not r.changed:
        console.print("topics up to date")


@app.command("list")
def topics_list() -> None:
    """The declared topics."""
    from wapipe.topics import TOPICS, desired_configs

    s = Settings()
    t = Table("topic", "key", "value", "partitions", "config")
    for spec in TOPICS:
        cfg = desired_configs(spec, s)
        t.add_row(spec.name, spec.key, spec.value, str(spec.partitions or s.topic_partitions),
                  ", ".join(f"{k}={v}" for k, v in cfg.items()))
    console.print(t)
