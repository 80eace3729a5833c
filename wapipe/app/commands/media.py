"""``wapipe media``: fetch inbound media into tenant storage, sweep it by retention, read one file."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from pathlib import Path

import typer

from wapipe.app.commands.output import fail

app = typer.Typer(help="Inbound media: fetch into tenant storage (sealed per subject), retention sweep, read.",
                  no_args_is_help=True)



def _open(settings):
    """The broker and the media store of ``settings``; a clear error and exit 1 if either is wrong."""
    from wapipe.app.bootstrap import bootstrap_or_exit
    from wapipe.media.store import open_store

    bootstrap = bootstrap_or_exit(settings)
    try:
        return bootstrap, open_store(settings)
    except (ValueError, RuntimeError) as exc:
        fail(str(exc))


@app.command("fetch")
def fetch_command(
    once: bool = typer.Option(False, help="stop after the first poll that finds nothing new (tests, backfills)"),
) -> None:
    """Consume wa.inbound.messages and store every media message's file, sealed, in the tenant's
    storage (WAPIPE_MEDIA_URL). Prints `READY media <store>`; failures go to wa.media.dead."""
    from connectors.meta.client import GraphClient
    from sinks.retention import RetentionDays
    from wapipe.config import Settings
    from wapipe.media.fetch import MediaFetcher
    from wapipe.privacy.kek import load_kek
    from wapipe.privacy.keyring import KeyRing
    from wapipe.probe import serving_probe
    from wapipe.tenants.registry import TenantRegistry
    from wapipe.topics import INBOUND_MESSAGES

    settings = Settings()
    bootstrap, store = _open(settings)
    kek = load_kek(settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with KeyRing(settings, bootstrap, kek) as ring, TenantRegistry(settings, bootstrap) as registry, \
            serving_probe(settings, "media", lag=(bootstrap, settings.media_group, (INBOUND_MESSAGES,))) as probe:
        ring.wait_ready(60)
        registry.wait_ready(60)

        def ready() -> None:
            probe.mark_ready()
            os.write(1, f"READY media {store.describe()}\n".encode())

        async def main() -> dict:
            async with GraphClient.from_settings(settings) as graph:
                days = RetentionDays(settings, registry)
                fetcher = MediaFetcher(settings, graph=graph, keyring=ring, tenants=registry, kek=kek, store=store,
                                       retention=lambda t: days(t, "content"))
                await fetcher.run_async(bootstrap, stop, ready=ready, idle_stop=once, on_poll=probe.beat)
                return dict(fetcher.stats.outcomes)

        outcomes = asyncio.run(main())
    typer.echo(" ".join(f"{k}={v}" for k, v in sorted(outcomes.items())) or "nothing to do")


@app.command("sweep")
def sweep_command() -> None:
    """Delete stored media older than each tenant's `content` retention (days), and the files of
    erased subjects (already unreadable)."""
    from sinks.retention import RetentionDays
    from wapipe.config import Settings
    from wapipe.media.sweep import sweep
    from wapipe.privacy.kek import load_kek
    from wapipe.privacy.keyring import KeyRing
    from wapipe.tenants.registry import TenantRegistry

    settings = Settings()
    bootstrap, store = _open(settings)
    with TenantRegistry(settings, bootstrap) as registry, KeyRing(settings, bootstrap, load_kek(settings)) as ring:
        registry.wait_ready(60)
        ring.wait_ready(60)
        days = RetentionDays(settings, registry)
        result = asyncio.run(sweep(store, lambda t: days(t, "content"), erased=ring.is_erased))
    typer.echo(f"deleted={result.deleted} kept={result.kept} erased={result.erased}")


@app.command("get")
def get_command(
    tenant: str = typer.Option(..., help="the tenant whose file it is"),
    event_id: str = typer.Option(..., "--event-id", help="the inbound message's event_id (wa.inbound.messages)"),
    out: Path = typer.Option(..., help="where to write the opened file"),
) -> None:
    """Open one stored file (only within its tenant). Exit 2 when absent, 3 when the subject is erased."""
    from wapipe.config import Settings
    from wapipe.media.sealed import CorruptMedia, object_id_for, open_blob
    from wapipe.privacy.errors import SubjectErased
    from wapipe.privacy.kek import load_kek
    from wapipe.privacy.keyring import KeyRing

    settings = Settings()
    bootstrap, store = _open(settings)
    try:
        oid = object_id_for(tenant, event_id)
        blob = asyncio.run(store.get(tenant, oid))
    except ValueError as exc:
        fail(str(exc))
    except KeyError:
        fail(f"no stored media for event {event_id} of tenant {tenant}", 2)
    with KeyRing(settings, bootstrap, load_kek(settings)) as ring:
        ring.wait_ready(60)
        try:
            f = open_blob(ring, tenant, oid, blob)
        except SubjectErased:
            fail("the sender's data was erased: the file can no longer be opened", 3)
        except CorruptMedia as exc:
            fail(str(exc), 4)
    out.write_bytes(f.content)
    sys.stdout.write(f"{out} {len(f.content)} bytes {f.mime_type or ''} sha256={f.sha256}\n")


@app.command("upload")
def upload_command(
    tenant: str = typer.Option(..., help="the tenant whose number uploads it"),
    number: str = typer.Option(..., "--number", help="the tenant's phone_number_id"),
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="the file to upload"),
    mime_type: str = typer.Option(None, "--type", help="MIME type (default: guessed from the file name)"),
) -> None:
    """Upload a file to Meta for sending (the ERP never calls Meta itself): prints the media id
    (valid 30 days) to put in an image/video/audio/document/sticker message's `id`."""
    import mimetypes

    from connectors.meta.client import GraphClient, MediaTooLarge
    from connectors.meta.errors import MetaError
    from wapipe.app.bootstrap import bootstrap_or_exit
    from wapipe.config import Settings
    from wapipe.privacy.kek import load_kek
    from wapipe.tenants.registry import TenantRegistry

    settings = Settings()
    bootstrap = bootstrap_or_exit(settings)
    mime = mime_type or mimetypes.guess_type(file.name)[0]
    if not mime:
        fail(f"cannot tell the MIME type of {file.name}: give --type")
    with TenantRegistry(settings, bootstrap) as registry:
        registry.wait_ready(60)
        t = registry.tenant(tenant)
    if t is None:
        fail(f"unknown tenant {tenant}")
    if t.number(number) is None:  # a caller's identifiers are looked up within its tenant only
        fail(f"phone number {number} does not belong to tenant {tenant}")
    try:
        token = t.open_token(load_kek(settings))
    except LookupError as exc:
        fail(str(exc))

    async def go() -> str:
        async with GraphClient.from_settings(settings) as graph:
            return await graph.upload_media(number, file.read_bytes(), mime_type=mime, token=token, filename=file.name)

    try:
        media_id = asyncio.run(go())
    except (MediaTooLarge, ValueError) as exc:
        fail(str(exc))
    except MetaError as exc:
        fail(f"Meta refused the upload: {exc}")
    typer.echo(media_id)
