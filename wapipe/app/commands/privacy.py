"""``wapipe privacy ...``: data-subject requests, their status, exports, and the processor."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

import typer

from wapipe.app.commands.output import fail
from wapipe.messages.privacy import PrivacyRequest
from wapipe.privacy.errors import UnknownSubject

app = typer.Typer(no_args_is_help=True, help="Privacy: erasure, access/export, correction, restriction (docs/privacy.md).")

TENANT = typer.Option(..., "--tenant", help="tenant id")
WA_ID = typer.Option(None, "--wa-id", help="the person's WhatsApp number, or their business-scoped user id (BSUID, e.g. US.13491208655302741918) for a username user")
SUBJECT = typer.Option(None, "--subject", help="the subject id (instead of --wa-id)")



def _service():
    from wapipe.config import Settings
    from wapipe.app.bootstrap import resolve_bootstrap
    from wapipe.edge.endpoint import NoKafka
    from wapipe.privacy.errors import PrivacyError
    from wapipe.privacy.service import PrivacyService

    s = Settings()
    try:
        return PrivacyService(s, resolve_bootstrap(s)).start()
    except (NoKafka, PrivacyError) as exc:
        fail(str(exc))


def _show(req: PrivacyRequest) -> None:
    from wapipe.privacy.export import jsonable

    rec = req.to_avro()
    typer.echo(json.dumps(jsonable({k: rec[k] for k in ("request_id", "kind", "status", "confirmation_code",
                                                       "tenant_id", "subject_id", "steps", "details", "updated_at")}, str),
                          indent=2))


def _submit(kind: str, tenant: str, wa_id: str | None, subject: str | None, wait: float) -> None:
    svc = _service()
    try:
        try:
            rec = svc.submit(kind, tenant_id=tenant, wa_id=wa_id, subject=subject)
        except (ValueError, UnknownSubject) as exc:
            fail(str(exc))
        if wait > 0:
            rec = svc.wait(rec.request_id, wait) or rec
        _show(rec)
    finally:
        svc.close()


@app.command("erase")
def erase(tenant: str = TENANT, wa_id: str = WA_ID, subject: str = SUBJECT,
          wait: float = typer.Option(0, help="seconds to wait for COMPLETED (needs `wapipe privacy run`)")) -> None:
    """Request erasure of a person's data; prints the confirmation code."""
    _submit("ERASURE", tenant, wa_id, subject, wait)


@app.command("restrict")
def restrict(tenant: str = TENANT, wa_id: str = WA_ID, subject: str = SUBJECT) -> None:
    """Restrict processing: sends to the person are refused, their inbound content is not stored."""
    _submit("RESTRICTION", tenant, wa_id, subject, 0)


@app.command("unrestrict")
def unrestrict(tenant: str = TENANT, wa_id: str = WA_ID, subject: str = SUBJECT) -> None:
    """Lift a restriction."""
    _submit("UNRESTRICTION", tenant, wa_id, subject, 0)


@app.command("correct")
def correct(tenant: str = TENANT, field: str = typer.Option(..., help="e.g. profile_name"),
            value: str = typer.Option(..., help="the corrected value"), wa_id: str = WA_ID, subject: str = SUBJECT) -> None:
    """Record a corrected personal field (sealed with the person's key)."""
    svc = _service()
    try:
        try:
            _show(svc.correct(tenant_id=tenant, field=field, value=value, wa_id=wa_id, subject=subject))
        except (ValueError, UnknownSubject) as exc:
            fail(str(exc))
    finally:
        svc.close()


@app.command("status")
def status(code: str = typer.Argument(..., help="confirmation code or request id"),
           tenant: str = typer.Option(None, "--tenant", help="the tenant whose request it is"),
           meta: bool = typer.Option(False, "--meta", help="a request from Meta's data-deletion callback (no tenant)")) -> None:
    """A request's status and steps: only the given tenant's requests (or, with --meta, Meta's)."""
    if bool(tenant) == meta:
        fail("give --tenant T (the tenant's request) or --meta (a request from Meta's callback)")
    svc = _service()
    try:
        rec = svc.status(code, tenant_id=tenant or None)
        if rec is None:
            fail(f"no request with code or id {code}" + (f" for tenant {tenant}" if tenant else " from Meta"))
        _show(rec)
    finally:
        svc.close()


@app.command("subject")
def subject_cmd(tenant: str = TENANT, wa_id: str = typer.Option(..., "--wa-id")) -> None:
    """The pseudonymous subject id of a person in a tenant."""
    from wapipe.config import Settings
    from wapipe.privacy.subjects import pepper_from, subject_id

    typer.echo(subject_id(pepper_from(Settings()), tenant, wa_id))


@app.command("export")
def export(tenant: str = TENANT, wa_id: str = WA_ID, subject: str = SUBJECT,
           out: Path = typer.Option(None, help="write the JSON here instead of stdout")) -> None:
    """Everything the tenant holds about a person (Kafka records opened, the person's own items of
    raw webhooks, ClickHouse rows) as JSON; recorded as an ACCESS request."""
    from wapipe.tenants.registry import TenantRegistry

    def reader_factory():
        try:
            from sinks.reader import open_reader

            return open_reader(svc.s)
        except Exception as exc:  # no ClickHouse reachable: say so in the export
            typer.echo(f"warning: ClickHouse not readable ({exc}); exporting Kafka only", err=True)
            return None

    svc = _service()
    tenants = TenantRegistry(svc.s, svc.bootstrap).start()
    try:
        tenants.wait_ready(60)

        def owns_number(phone_number_id: str) -> bool:
            t = tenants.tenant_for_number(phone_number_id)
            return t is not None and t.tenant_id == tenant

        try:
            doc = svc.export(tenant_id=tenant, owns_number=owns_number, wa_id=wa_id, subject=subject,
                             reader_factory=reader_factory)
        except (ValueError, UnknownSubject) as exc:
            fail(str(exc))
        text = json.dumps(doc, indent=2, ensure_ascii=False, default=str)
        if out:
            out.write_text(text)
            out.chmod(0o600)
        else:
            typer.echo(text)
    finally:
        tenants.close()
        svc.close()


@app.command("run")
def run(with_clickhouse: bool = typer.Option(False, help="also run the ClickHouse erasure here (when no sink runs)")) -> None:
    """The request processor: drives every request to COMPLETED. SIGTERM stops it cleanly."""
    from wapipe.config import Settings
    from wapipe.app.bootstrap import bootstrap_or_exit
    from wapipe.privacy.metrics import ErasureMetrics
    from wapipe.privacy.processor import PrivacyProcessor
    from wapipe.probe import serving_probe

    s = Settings()
    bootstrap = bootstrap_or_exit(s)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    proc = PrivacyProcessor(s, bootstrap).start()
    worker = client = None
    if with_clickhouse:
        from sinks.erasure import ErasureWorker
        from wapipe.clickhouse import clickhouse_client

        worker, client = ErasureWorker(s, bootstrap), clickhouse_client(s.clickhouse_dsn)
    try:
        with serving_probe(s, "privacy") as probe:
            probe.registry.register(ErasureMetrics(proc.registry.requests, s.privacy_legal_deadline_s,
                                                   proc.deadline_ms / 1000))
            probe.mark_ready()
            print("READY privacy", flush=True)
            while not stop.is_set():
                proc.tick()
                if worker is not None:
                    worker.poll_once(client, timeout=0.1)
                probe.beat()
                stop.wait(min(s.privacy_check_interval_s, 0.5))
    finally:
        proc.close()
        if worker is not None:
            worker.close()
    sys.exit(0)


@app.command("serve")
def serve(host: str = typer.Option("127.0.0.1"), port: int = typer.Option(0, help="0: a free port")) -> None:
    """The admin HTTP API for privacy requests (tenant API key or the operator key)."""
    from wapipe.config import Settings
    from wapipe.edge.clients import NoKafka
    from wapipe.probe import serving_probe

    # The API answers on its own port; the probe says the process is up (for an orchestrator).
    with serving_probe(Settings(), "privacy-serve", alive=lambda: None) as probe:
        probe.mark_ready()
        try:
            _serve_forever(host, port)
        except NoKafka as exc:  # no broker configured, or it refused our credentials
            fail(str(exc))


def _serve_forever(host: str, port: int) -> None:
    import uvicorn

    from wapipe.app.bootstrap import resolve_bootstrap
    from wapipe.config import Settings
    from wapipe.net import free_port
    from wapipe.privacy.api import create_app
    from wapipe.privacy.service import PrivacyService
    from wapipe.tenants.registry import TenantRegistry

    settings = Settings()
    bootstrap = resolve_bootstrap(settings)
    service = PrivacyService(settings, bootstrap).start()
    tenants = TenantRegistry(settings, bootstrap).start()
    tenants.wait_ready(60)

    def reader():
        from sinks.reader import open_reader

        return open_reader(settings)

    port = port or free_port()
    config = uvicorn.Config(create_app(settings, service, tenants, reader_factory=reader), host=host, port=port,
                            log_level="warning")
    server = uvicorn.Server(config)
    print(f"READY http://{host}:{port}", flush=True)
    try:
        server.run()
    finally:
        tenants.close()
        service.close()
