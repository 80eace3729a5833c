"""``wapipe up``: wapipe's services for real, under the supervisor, restarted with backoff."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import typer

from wapipe.app.commands.output import console, err, fail
from wapipe.app.services import Backoff, ServiceError, Supervisor, pipeline_services
from wapipe.config import Settings


def up_command(
    ingress_port: int = typer.Option(8080, help="port of the webhook ingress (0: any free one)"),
    background_nice: int = typer.Option(0, min=0, max=19, help="niceness of the services behind the send "
                                        "path (sink, normaliser, privacy, media, erp-inbound, tenants "
                                        "follow); with Linux's autogroups a niced service yields to "
                                        "everything else on the machine, not only to the worker"),
) -> None:
    """Run wapipe's services for real: Meta's Graph API with the configured apps, your Kafka and
    ClickHouse (KAFKA_BOOTSTRAP_SERVERS / CLICKHOUSE_URL, or the local stack). No sandbox, no workload.
    Stops everything on Ctrl-C / SIGTERM; a service that dies is started again with backoff."""
    from wapipe.app.bootstrap import bootstrap_or_exit
    from wapipe.edge.clients import admin_client
    from wapipe.topics import apply_topics

    s = Settings()
    if not s.meta_apps:
        fail("no Meta app configured: set WAPIPE_META_APPS='{\"<app id>\": \"<app secret>\"}'")
    bootstrap = bootstrap_or_exit(s)
    apply_topics(admin_client(bootstrap), s)
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": str(bootstrap), "WAPIPE_STATE_DIR": str(s.state_dir)}
    mig = subprocess.run([sys.executable, "-m", "wapipe", "db", "migrate"], env=env, capture_output=True, text=True)
    if mig.returncode != 0:
        fail(f"ClickHouse migrations failed:\n{mig.stdout}{mig.stderr}")
    console.print(f"Kafka {bootstrap} · ClickHouse {s.clickhouse_dsn} · Graph API {s.meta_graph_url}/{s.meta_graph_version}")
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    code = 0
    try:
        with Supervisor(s.log_dir, env=env) as sup:
            for c in pipeline_services(ingress_port=ingress_port, background_nice=background_nice):
                if stop.is_set():
                    break
                svc = sup.start(c.spec)
                console.print(f"[green]up[/] {c.spec.name}: {svc.ready_value} (pid {svc.pid}) — {c.role}")
            console.print(f"wapipe is up; logs in {s.log_dir}. Ctrl-C stops it.")
            backoff = Backoff()
            while not stop.wait(1.0):
                # A service that dies is started again (with backoff); the others run on.
                for line in sup.revive(backoff):
                    err.print(f"[yellow]{line}[/]")
            console.print("stopping ...")
    except ServiceError as exc:
        err.print(f"[red]error:[/] {exc}")
        code = 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    raise typer.Exit(code)
