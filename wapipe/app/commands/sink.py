"""``wapipe sink``: Kafka → ClickHouse until SIGTERM; serves read-only queries meanwhile."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time

import typer


def sink_command(
    port: int = typer.Option(None, help="port of the read endpoint (default: WAPIPE_SINK_READ_PORT, else any free one)"),
) -> None:
    """Load status, send, inbound, account and audit events into ClickHouse. Prints `READY sink <read-url>`."""
    from sinks.erasure import ErasureWorker
    from sinks.metrics import SinkMetrics
    from sinks.reader import DirectReader, endpoint_file
    from sinks.retention import RetentionDays
    from sinks.server import ReadEndpoint, build_app
    from sinks.worker import DeadLetterLimit, SinkWorker
    from wapipe.clickhouse import MigrationError, clickhouse_client, migrate
    from wapipe.config import Settings
    from wapipe.app.bootstrap import bootstrap_or_exit
    from wapipe.log import get_logger
    from wapipe.net import free_port
    from wapipe.probe import serving_probe

    log = get_logger("sinks.cli")
    settings = Settings()
    bootstrap = bootstrap_or_exit(settings)
    client = clickhouse_client(settings.clickhouse_dsn)
    try:
        migrate(client)
    except MigrationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)

    registry = None
    try:
        from wapipe.tenants.registry import TenantRegistry

        registry = TenantRegistry(settings, bootstrap).start()
        registry.wait_ready(60)
    except Exception as exc:  # retention falls back to Settings defaults; say so
        log.warning("sink.no_tenant_registry", error=str(exc))
    erasure = ErasureWorker(settings, bootstrap)

    from sinks.passthrough import passthroughs
    from wapipe.avro import SchemaStore

    # The embedded engine can read the Avro itself (file()); a server would read its own disk.
    fast = passthroughs(SchemaStore.load()) if settings.clickhouse_dsn.startswith("chdb://") else None
    worker = SinkWorker(settings, bootstrap, client, retention=RetentionDays(settings, registry), erasure=erasure,
                        passthrough=fast)

    def health() -> dict:
        st = worker.stats
        return {"consumed": st.consumed, "rows": st.rows, "dead": st.dead, "batches": st.batches,
                "insert_failures": st.insert_failures, "last_flush_at": st.last_flush_at}

    endpoint = ReadEndpoint(build_app(DirectReader(client, owned=False), health),
                            port or settings.sink_read_port or free_port()).start()
    ep_file = endpoint_file(settings)
    ep_file.parent.mkdir(parents=True, exist_ok=True)
    ep_file.write_text(json.dumps({"url": endpoint.url, "pid": os.getpid()}))

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    code = 0

    def flushed_lately() -> str | None:
        # The sink flushes every sink_batch_ms, empty batches too: a flush is its loop's heartbeat.
        last = worker.stats.last_flush_at
        quiet = time.time() - last
        return None if not last or quiet < 30 else f"no batch flushed for {quiet:.0f} s"

    def ready() -> None:
        probe.mark_ready()
        os.write(1, f"READY sink {endpoint.url}\n".encode())

    try:
        with serving_probe(settings, "sink", alive=flushed_lately,
                           lag=(bootstrap, settings.sink_group, worker.topics)) as probe:
            probe.registry.register(SinkMetrics(worker.stats))
            worker.run(stop, ready=ready)
    except DeadLetterLimit as exc:
        sys.stderr.write(f"error: dead-letter limit reached: {exc}\n")
        code = 3
    finally:
        endpoint.stop()
        with contextlib.suppress(OSError):
            ep_file.unlink()
        if registry is not None:
            registry.close()
        with contextlib.suppress(Exception):
            erasure.close()
        client.close()
    if code:
        raise typer.Exit(code)
