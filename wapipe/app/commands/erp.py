"""``wapipe erp inbound``: run the ERP's inbound processor until SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

import typer

app = typer.Typer(help="The ERP's side of the pipeline.", no_args_is_help=True)


@app.command("inbound")
def inbound_command() -> None:
    """Inbound messages and command statuses -> wa.erp.inbound (per tenant, linked to the
    commands they answer); wa.erp.reads -> mark-as-read at Meta. Prints `READY erp-inbound`;
    failures go to wa.erp.dead."""
    from connectors.meta.client import GraphClient
    from processors.erp_inbound.app import SOURCES, ErpInbound
    from processors.erp_inbound.links import CommandLinks
    from wapipe.avro import AvroSerde
    from wapipe.config import Settings
    from wapipe.app.bootstrap import bootstrap_or_exit
    from wapipe.privacy.kek import load_kek
    from wapipe.privacy.keyring import KeyRing
    from wapipe.privacy.wamids import WamidRefs
    from wapipe.probe import serving_probe
    from wapipe.tenants.registry import TenantRegistry

    settings = Settings()
    bootstrap = bootstrap_or_exit(settings)
    kek = load_kek(settings)
    serde = AvroSerde.from_settings(settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with KeyRing(settings, bootstrap, kek) as ring, TenantRegistry(settings, bootstrap) as registry, \
            CommandLinks(bootstrap, serde=serde, catch_up_timeout=settings.erp_link_catch_up_s) as links, \
            serving_probe(settings, "erp-inbound", lag=(bootstrap, settings.erp_inbound_group, SOURCES)) as probe:
        ring.wait_ready(60)
        registry.wait_ready(60)
        links.wait_ready(60)

        def ready() -> None:
            probe.mark_ready()
            os.write(1, b"READY erp-inbound\n")

        async def main() -> dict:
            async with GraphClient.from_settings(settings) as graph:
                proc = ErpInbound(settings, links=links, ring=ring, tenants=registry, kek=kek, graph=graph,
                                  refs=WamidRefs.from_settings(settings), serde=serde)
                await proc.run(bootstrap, stop, ready=ready, on_poll=probe.beat)
                return dict(proc.stats.outcomes)

        outcomes = asyncio.run(main())
    typer.echo(" ".join(f"{k}={v}" for k, v in sorted(outcomes.items())) or "nothing done")
