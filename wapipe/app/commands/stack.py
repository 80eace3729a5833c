"""``wapipe stack``: the local Kafka broker (or the one KAFKA_BOOTSTRAP_SERVERS names)."""

from __future__ import annotations

import typer

from wapipe.app.commands.output import console, fail
from wapipe.config import Settings

app = typer.Typer(no_args_is_help=True, help="The local Kafka broker (or the one KAFKA_BOOTSTRAP_SERVERS names).")


@app.command("jars")
def stack_jars() -> None:
    """Fetch the Kafka broker jars from Maven Central (cached; no-op when present)."""
    from wapipe.app.stack.jvm import BrokerError, ensure_jars

    s = Settings()
    try:
        libs = ensure_jars(s.jars_dir, s.kafka_version)
    except BrokerError as exc:
        fail(str(exc))
    console.print(f"kafka {s.kafka_version} jars: {libs}")


@app.command("up")
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
            fail(str(exc))
        if st is not None:
            state_file(s).unlink(missing_ok=True)
        provider = KafkaProvider(s, ports=ports)
        try:
            bootstrap = provider.start(detach=True)
        except Exception as exc:
            fail(f"kafka did not start: {exc}")
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


@app.command("down")
def stack_down_cmd() -> None:
    """Stop the broker `stack up` started."""
    from wapipe.app.stack.local import stack_down

    console.print(stack_down(Settings()))


@app.command("status")
def stack_status_cmd() -> None:
    """Is the broker up and answering metadata requests?"""
    from wapipe.app.stack.local import stack_status

    st, status = stack_status(Settings())
    console.print(f"kafka: {status}" + (f" ({st.source} {st.bootstrap}, pid {st.pid})" if st else ""))
    if status != "up":
        raise typer.Exit(1)
