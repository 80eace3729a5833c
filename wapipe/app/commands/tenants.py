"""``wapipe tenants ...``: operator commands. Tokens are read from files (or stdin) and never printed."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from wapipe.app.commands.output import console, err, fail

app = typer.Typer(no_args_is_help=True, help="Tenants: create, onboard, update, templates, disconnect.")


def _read_secret(path: Path | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        raw = sys.stdin.read() if str(path) == "-" else path.read_text()
    except OSError as exc:
        fail(f"{what}: cannot read {path}: {exc.strerror}")
    value = raw.strip()
    if not value:
        fail(f"{what}: {path} is empty")
    return value


def _service(actor: str = "operator:cli"):
    from wapipe.config import Settings
    from wapipe.app.bootstrap import resolve_bootstrap
    from wapipe.edge.endpoint import NoKafka
    from wapipe.tenants.service import TenantError, TenantService

    s = Settings()
    try:
        return TenantService(s, resolve_bootstrap(s), actor=actor)
    except (NoKafka, TenantError, RuntimeError) as exc:
        fail(str(exc))


def _run(fn):
    """Run ``fn(service)``; refused actions become a clear CLI error."""
    from wapipe.tenants.service import TenantError

    svc = _service()
    try:
        return fn(svc)
    except TenantError as exc:
        fail(str(exc))
    except Exception as exc:  # MetaError, PublishError, ...: say what, never a traceback with secrets
        fail(f"{type(exc).__name__}: {exc}")
    finally:
        svc.close()


def _print_tenant(t, as_json: bool) -> None:
    view = t.operator_view()
    if as_json:
        console.print_json(json.dumps(view))
        return
    table = Table("field", "value", show_header=False)
    for k, v in view.items():
        if k == "numbers":
            v = "\n".join(f"{n['phone_number_id']} {n['display_phone_number']} {n['throughput_mps']}/s "
                          f"quality={n['quality_rating']} tier={n['messaging_limit_tier']} {n['status']}" for n in v)
        table.add_row(k, "" if v is None else str(v))
    console.print(table)


@app.command("create")
def create(
    tenant_id: str = typer.Option(..., "--tenant-id", help="our id for the tenant"),
    waba_id: Optional[str] = typer.Option(None, "--waba-id", help="WhatsApp Business Account id"),
    number: list[str] = typer.Option([], "--number", help="PHONE_NUMBER_ID:DISPLAY:MPS (repeatable)"),
    token_file: Optional[Path] = typer.Option(None, "--token-file", help="file holding the Graph API token ('-' = stdin)"),
    messaging_limit: int = typer.Option(250, "--messaging-limit", min=0, help="unique recipients per 24 h"),
    retention: list[str] = typer.Option([], "--retention", help="KIND=DAYS (content, metadata, raw_webhooks, audit)"),
    display_name: str = typer.Option("", "--display-name"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Create a tenant directly (operators, tests, the demo): no Meta call."""
    from wapipe.tenants.service import TenantError, parse_number, parse_pairs

    token = _read_secret(token_file, "--token-file")
    try:
        numbers = [parse_number(n) for n in number]
        ret = parse_pairs(retention, "--retention")
    except TenantError as exc:
        fail(str(exc))
    t = _run(lambda svc: svc.create(tenant_id, waba_id=waba_id, numbers=numbers, token=token,
                                    messaging_limit=messaging_limit, retention=ret, display_name=display_name))
    if as_json:
        _print_tenant(t, True)
    else:
        console.print(f"created tenant {t.tenant_id} ({t.status}, {len(t.numbers)} number(s))")


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json")) -> None:
    """Every tenant on wa.tenants."""
    tenants = _run(lambda svc: svc.registry.tenants())
    if as_json:
        console.print_json(json.dumps([t.operator_view() for t in tenants]))
        return
    table = Table("tenant", "status", "waba", "numbers", "limit/24h", "token", "updated")
    for t in tenants:
        table.add_row(t.tenant_id, str(t.status), t.waba_id or "", ",".join(n.phone_number_id for n in t.numbers),
                      str(t.messaging_limit), "sealed" if t.token else "-", t.updated_at.isoformat(timespec="seconds"))
    console.print(table)


@app.command("show")
def show(tenant_id: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json")) -> None:
    """One tenant (the token is never shown, only whether one is stored)."""
    t = _run(lambda svc: svc.get(tenant_id))
    _print_tenant(t, as_json)


@app.command("update")
def update(
    tenant_id: str = typer.Argument(...),
    retention: list[str] = typer.Option([], "--retention", help="KIND=DAYS (content, metadata, raw_webhooks, audit)"),
    throughput: list[str] = typer.Option([], "--throughput", help="PHONE_NUMBER_ID=MSG_PER_S"),
    status: Optional[str] = typer.Option(None, "--status", help="ACTIVE or SUSPENDED"),
    messaging_limit: Optional[int] = typer.Option(None, "--messaging-limit", min=0),
    display_name: Optional[str] = typer.Option(None, "--display-name"),
    number: list[str] = typer.Option([], "--number", help="add/replace PHONE_NUMBER_ID:DISPLAY:MPS"),
    token_file: Optional[Path] = typer.Option(None, "--token-file", help="replace the token ('-' = stdin)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Change retention per data type, throughput, limits, status, numbers or the token."""
    from wapipe.tenants.service import TenantError, parse_number, parse_pairs

    token = _read_secret(token_file, "--token-file")
    try:
        ret = parse_pairs(retention, "--retention")
        thr = parse_pairs(throughput, "--throughput")
        numbers = [parse_number(n) for n in number]
    except TenantError as exc:
        fail(str(exc))
    t = _run(lambda svc: svc.update(tenant_id, retention=ret, throughput=thr, status=status,
                                    messaging_limit=messaging_limit, display_name=display_name,
                                    add_numbers=numbers, token=token))
    if as_json:
        _print_tenant(t, True)
    else:
        console.print(f"updated tenant {t.tenant_id} (version {t.version}, {t.status})")


# --- commands that call Meta ------------------------------------------------------------------
def _graph(settings):
    from connectors.meta.client import GraphClient

    return GraphClient.from_settings(settings)


def _apps(settings) -> dict[str, str]:
    return {k: v.get_secret_value() for k, v in settings.meta_apps.items()}


def _run_async(make):
    """``make(service, graph)`` -> coroutine, run with one GraphClient, closed after."""
    import asyncio

    async def main(svc):
        graph = _graph(svc.settings)
        try:
            return await make(svc, graph)
        finally:
            await graph.aclose()

    return _run(lambda svc: asyncio.run(main(svc)))


@app.command("onboard")
def onboard(
    tenant_id: Optional[str] = typer.Option(None, "--tenant-id", help="our id for the new tenant"),
    code: Optional[str] = typer.Option(None, "--code", help="the embedded-signup code (expires in 30 s)"),
    resume: Optional[str] = typer.Option(None, "--resume", metavar="TENANT", help="continue a failed onboarding"),
    app_id: Optional[str] = typer.Option(None, "--app-id", help="Meta app (default: the only one in WAPIPE_META_APPS)"),
    waba_id: Optional[str] = typer.Option(None, "--waba-id", help="pick the WABA when the token grants several"),
    pin: Optional[str] = typer.Option(None, "--pin", help="6-digit two-step PIN for registering numbers"),
    display_name: str = typer.Option("", "--display-name"),
) -> None:
    """Embedded signup: exchange the code, discover WABA and numbers, subscribe, register, sync templates."""
    from wapipe.tenants.onboarding import Onboarder

    if resume:
        t = _run_async(lambda svc, g: Onboarder(svc, g, _apps(svc.settings)).resume(
            resume, code=code, waba_id=waba_id, pin=pin))
    else:
        if not tenant_id or not code:
            fail("give --tenant-id and --code (or --resume TENANT)")
        t = _run_async(lambda svc, g: Onboarder(svc, g, _apps(svc.settings)).onboard(
            tenant_id, code=code, app_id=app_id, waba_id=waba_id, pin=pin, display_name=display_name))
    console.print(f"tenant {t.tenant_id} {t.status}: WABA {t.waba_id}, numbers "
                  f"{', '.join(n.phone_number_id for n in t.numbers)}, limit {t.messaging_limit}/24h")


@app.command("disconnect")
def disconnect_cmd(tenant_id: str = typer.Argument(...),
                   reason: str = typer.Option("operator request", "--reason")) -> None:
    """Unsubscribe the app from the WABA, delete the stored token, stop dispatch (audit kept)."""
    from wapipe.tenants.lifecycle import disconnect

    t = _run_async(lambda svc, g: disconnect(svc, g, tenant_id, reason=reason))
    console.print(f"tenant {t.tenant_id} {t.status}: token deleted")


@app.command("refresh")
def refresh_cmd(tenant_id: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json")) -> None:
    """Quality rating, throughput and messaging-limit tier of the tenant's numbers, from Meta."""
    from wapipe.tenants.lifecycle import refresh

    t = _run_async(lambda svc, g: refresh(svc, g, tenant_id))
    _print_tenant(t, as_json)


@app.command("follow")
def follow_cmd() -> None:
    """Long-running: apply template/number/account webhooks (wa.account.events) to tenants and templates."""
    import signal
    import threading

    from wapipe.config import Settings
    from wapipe.app.bootstrap import bootstrap_or_exit
    from wapipe.probe import serving_probe
    from wapipe.tenants.follow import GROUP as FOLLOW_GROUP
    from wapipe.tenants.follow import follow
    from wapipe.topics import ACCOUNT_EVENTS

    s = Settings()
    bootstrap = bootstrap_or_exit(s)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with serving_probe(s, "tenants-follow", lag=(bootstrap, FOLLOW_GROUP, (ACCOUNT_EVENTS,))) as probe:
        def ready() -> None:
            probe.mark_ready()
            print("READY tenants-follow", flush=True)

        follow(s, bootstrap, stop, on_ready=ready, on_poll=probe.beat)


templates_app = typer.Typer(no_args_is_help=True, help="A tenant's message templates.")
app.add_typer(templates_app, name="templates")


@templates_app.command("list")
def templates_list(tenant_id: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json")) -> None:
    """The catalogue (wa.templates) of a tenant."""
    def go(svc):
        svc.get(tenant_id)
        return svc.registry.templates(tenant_id)

    tpls = _run(go)
    if as_json:
        console.print_json(json.dumps([t.model_dump(mode="json") for t in tpls]))
        return
    table = Table("name", "language", "status", "category", "params", "reason")
    for t in tpls:
        table.add_row(t.name, t.language, t.status, t.category, str(t.body_parameter_count), t.reason or "")
    console.print(table)


@templates_app.command("sync")
def templates_sync(tenant_id: str = typer.Argument(...)) -> None:
    """Make the catalogue match Meta's (GET /{waba}/message_templates)."""
    from wapipe.tenants.templates import sync_templates

    r = _run_async(lambda svc, g: sync_templates(svc, g, svc.get(tenant_id)))
    console.print(f"{len(r.added)} added, {len(r.changed)} changed, {len(r.removed)} removed, {r.unchanged} unchanged")


@templates_app.command("create")
def templates_create(
    tenant_id: str = typer.Argument(...),
    name: str = typer.Option(..., "--name"),
    language: str = typer.Option("en_US", "--language"),
    category: str = typer.Option("UTILITY", "--category"),
    body: Optional[str] = typer.Option(None, "--body", help="BODY text, e.g. 'Invoice {{1}} is due'"),
    components_file: Optional[Path] = typer.Option(None, "--components-file", help="Meta's components JSON"),
) -> None:
    """Submit a template to Meta for review; stored as Meta answers (usually PENDING)."""
    from wapipe.tenants.templates import create_template

    if components_file is not None:
        try:
            components = json.loads(components_file.read_text())
        except (OSError, ValueError) as exc:
            fail(f"--components-file: {exc}")
        if not isinstance(components, list):
            fail("--components-file: expected a JSON list of components")
    elif body:
        components = [{"type": "BODY", "text": body}]
    else:
        fail("give --body or --components-file")
    t = _run_async(lambda svc, g: create_template(svc, g, svc.get(tenant_id), name=name, language=language,
                                                  category=category, components=components))
    console.print(f"template {t.name} ({t.language}) {t.status}, id {t.template_id}")


@templates_app.command("delete")
def templates_delete(tenant_id: str = typer.Argument(...), name: str = typer.Option(..., "--name"),
                     language: Optional[str] = typer.Option(None, "--language", help="one language (default: all)")) -> None:
    """Delete a template on Meta and from the catalogue."""
    from wapipe.tenants.templates import delete_template

    removed = _run_async(lambda svc, g: delete_template(svc, g, svc.get(tenant_id), name=name, language=language))
    console.print(f"deleted {name}: {len(removed)} language(s) removed from the catalogue")


@app.command("api-key")
def api_key_cmd(tenant_id: str = typer.Argument(...)) -> None:
    """Issue a new admin API key for the tenant (printed once; only its hash is stored)."""
    from wapipe.tenants.auth import new_api_key

    key = new_api_key()
    _run(lambda svc: svc.save(svc.get(tenant_id).with_api_key(key), "tenant.api_key.issued"))
    console.print(key)


@app.command("serve")
def serve_cmd() -> None:
    """Long-running: the admin HTTP API (WAPIPE_ADMIN_HOST/PORT; operator key WAPIPE_OPERATOR_API_KEY)."""
    import contextlib
    import signal

    import uvicorn

    from wapipe.config import Settings
    from wapipe.app.bootstrap import bootstrap_or_exit
    from wapipe.net import free_port
    from wapipe.tenants.api import create_app

    s = Settings()
    bootstrap = bootstrap_or_exit(s)
    port = s.admin_port or free_port()

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            print(f"READY http://{s.admin_host}:{port}", flush=True)

        @contextlib.contextmanager
        def capture_signals(self):  # SIGTERM/SIGINT: graceful stop and exit 0 (uvicorn would re-raise)
            prev = {sig: signal.signal(sig, lambda *_: setattr(self, "should_exit", True))
                    for sig in (signal.SIGTERM, signal.SIGINT)}
            try:
                yield
            finally:
                for sig, handler in prev.items():
                    signal.signal(sig, handler)

    from wapipe.probe import serving_probe

    # The API answers on its own port; the probe says the process is up (for an orchestrator).
    with serving_probe(s, "admin", alive=lambda: None) as probe:
        probe.mark_ready()
        Server(uvicorn.Config(create_app(s, bootstrap), host=s.admin_host, port=port, log_level="warning",
                              access_log=False)).run()


@app.command("audit")
def audit_cmd(tenant_id: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json")) -> None:
    """The tenant's audit trail on wa.audit (onboarding steps, changes, webhooks applied, disconnect)."""
    from wapipe.config import Settings
    from wapipe.app.bootstrap import resolve_bootstrap
    from wapipe.edge.endpoint import NoKafka
    from wapipe.edge.scan import ScanError
    from wapipe.tenants.audit import read_audit

    s = Settings()
    try:
        events = read_audit(resolve_bootstrap(s), tenant_id)
    except (NoKafka, ScanError, TimeoutError) as exc:
        fail(str(exc))
    if as_json:
        console.print_json(json.dumps(events, default=str))
        return
    table = Table("when", "actor", "action", "outcome", "details")
    for e in events:
        table.add_row(e["occurred_at"].isoformat(timespec="seconds"), e["actor"], e["action"], e["outcome"],
                      ", ".join(f"{k}={v}" for k, v in sorted(e["details"].items())))
    console.print(table)
