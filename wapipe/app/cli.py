"""``wapipe``: the one entry point; each area's commands live in ``wapipe.app.commands``."""

from __future__ import annotations

import sys
from collections.abc import Iterable

import typer
import typer.main
from rich.console import Console
from rich.table import Table

from wapipe import log
from wapipe.app.commands import erp, ingress, media, normalise, privacy, report, sandbox, send, sink, tenants, up
from wapipe.app.demo.command import demo_command
from wapipe.config import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="wapipe: ERP -> Kafka -> WhatsApp Cloud API")
stack_app = typer.Typer(no_args_is_help=True, help="The local Kafka broker (or the one KAFKA_BOOTSTRAP_SERVERS names).")
topics_app = typer.Typer(no_args_is_help=True, help="Kafka topics, declared in wapipe/topics.py.")
db_app = typer.Typer(no_args_is_help=True, help="ClickHouse: migrations.")
app.add_typer(stack_app, name="stack")
app.add_typer(topics_app, name="topics")
app.add_typer(db_app, name="db")

console = Console()
err = Console(stderr=True)


def _fail(msg: str) -> None:
    err.print(f"[red]error:[/] {msg}")
    raise typer.Exit(1)


@app.callback()
def _main(log_level: str = typer.Option("WARNING", envvar="WAPIPE_LOG_LEVEL", help="log level")) -> None:
    log.configure(level=log_level.upper())


# --- stack --------------------------------------------------------------------------------
@stack_app.command("jars")
def stack_jars() -> None:
    """Fetch the Kafka broker jars from Maven Central (cached; no-op when present)."""
    from wapipe.app.stack.jvm import BrokerError, ensure_jars

    s = Settings()
    try:
        libs = ensure_jars(s.jars_dir, s.kafka_version)
    except BrokerError as exc:
        _fail(str(exc))
    console.print(f"kafka {s.kafka_version} jars: {libs}")


@stack_app.command("up")
def stack_up() -> None:
    """Start (or find) Kafka, apply the topics, migrate ClickHouse. A local broker that died is
    started again on its old ports, so running services find it where they left it."""
    from wapipe.app.stack.local import KafkaProvider, PortTaken, restart_ports, stack_status, state_file
    from wapipe.kafka_edge import endpoint_for
    from wapipe.topics import admin_client, apply_topics

    s = Settings()
    st, status = stack_status(s)
    if status == "up":
        bootstrap = st.bootstrap
        console.print(f"kafka already up: {bootstrap} ({st.source})")
    else:
        try:
            ports = restart_ports(st)
        except PortTaken as exc:
            _fail(str(exc))
        if st is not None:
            state_file(s).unlink(missing_ok=True)
        provider = KafkaProvider(s, ports=ports)
        try:
            bootstrap = provider.start(detach=True)
        except Exception as exc:
            _fail(f"kafka did not start: {exc}")
        provider.state().save(state_file(s))
        again = " (restarted on its old address)" if ports else ""
        console.print(f"kafka up{again}: {bootstrap} ({provider.source}{', pid %s' % provider.pid if provider.pid else ''})")
    # An external cluster (KAFKA_BOOTSTRAP_SERVERS) with its security settings; the local broker is plaintext.
    report = apply_topics(admin_client(endpoint_for(s, bootstrap) if s.kafka_bootstrap_servers else bootstrap), s)
    console.print(f"topics: {len(report.created)} created, {len(report.altered)} altered")
    console.print(_migrate_line(s))
    console.print(f"export KAFKA_BOOTSTRAP_SERVERS={bootstrap}")


def _migrate_line(s: Settings) -> str:
    """Migrate ClickHouse, or say why not: with the embedded engine a running sink holds the data
    folder (chDB allows one process), and the sink migrated it when it started."""
    from wapipe.clickhouse import clickhouse_client, embedded_held, migrate

    if embedded_held(s.clickhouse_dsn):
        return (f"clickhouse ({s.clickhouse_dsn}): held by a running sink, which applies the migrations "
                "when it starts; left as it is")
    applied = migrate(clickhouse_client(s.clickhouse_dsn))
    return f"clickhouse ({s.clickhouse_dsn}): {len(applied)} migrations applied"


@stack_app.command("down")
def stack_down_cmd() -> None:
    """Stop the broker `stack up` started."""
    from wapipe.app.stack.local import stack_down

    console.print(stack_down(Settings()))


@stack_app.command("status")
def stack_status_cmd() -> None:
    """Is the broker up and answering metadata requests?"""
    from wapipe.app.stack.local import stack_status

    st, status = stack_status(Settings())
    console.print(f"kafka: {status}" + (f" ({st.source} {st.bootstrap}, pid {st.pid})" if st else ""))
    if status != "up":
        raise typer.Exit(1)


# --- topics / db --------------------------------------------------------------------------
@topics_app.command("apply")
def topics_apply() -> None:
    """Create missing topics and apply changed settings."""
    from wapipe.app.bootstrap import resolve_bootstrap
    from wapipe.kafka_edge import NoKafka
    from wapipe.topics import admin_client, apply_topics

    s = Settings()
    try:
        bootstrap = resolve_bootstrap(s)
    except NoKafka as exc:
        _fail(str(exc))
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


@topics_app.command("list")
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


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending ClickHouse migrations (each once, in order)."""
    from wapipe.clickhouse import MigrationError, clickhouse_client, migrate

    s = Settings()
    try:
        applied = migrate(clickhouse_client(s.clickhouse_dsn))
    except MigrationError as exc:
        _fail(str(exc))
    console.print("\n".join(f"applied {m.version:04d}_{m.name}" for m in applied) or "nothing to apply")


# --- health -------------------------------------------------------------------------------
@app.command("health")
def health_cmd(
    services: list[str] = typer.Argument(None, help="services to check (default: every one running here)"),
    url: str = typer.Option(None, "--url", help="a probe's base URL instead (a container's healthcheck)"),
    ready: bool = typer.Option(False, "--ready", help="ask /readyz (can it work now?) instead of /healthz"),
) -> None:
    """Ask the services' probes whether they are alive (or ready); exit 1 if any is not."""
    import json

    import httpx

    from wapipe.probe import probe_file

    s = Settings()
    if url:
        targets = {url: url}
    else:
        folder = s.state_dir / "probes"
        names = services or sorted(p.stem for p in folder.glob("*.json"))
        if not names:
            _fail(f"no service probe found in {folder}: is anything running here?")
        targets = {}
        for name in names:
            try:
                targets[name] = json.loads(probe_file(s, name).read_text())["url"]
            except (OSError, ValueError, KeyError):
                targets[name] = ""
    path = "/readyz" if ready else "/healthz"
    bad = 0
    for name, base in targets.items():
        if not base:
            console.print(f"{name}: [red]not running[/] (no probe file)")
            bad += 1
            continue
        try:
            r = httpx.get(base.rstrip("/") + path, timeout=5)
            ok, text = r.status_code == 200, r.text.strip()
        except httpx.HTTPError as exc:
            ok, text = False, f"no answer ({type(exc).__name__})"
        bad += not ok
        console.print(f"{name}: {'[green]ok[/]' if ok else '[red]' + text + '[/]'}")
    if bad:
        raise typer.Exit(1)


# --- the areas' commands ----------------------------------------------------------------
# Each command module keeps its heavy imports inside its commands: `wapipe --help` stays fast.
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
