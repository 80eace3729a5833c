"""``wapipe normalise``: run the normaliser (a Faust worker) until SIGTERM."""

from __future__ import annotations

import contextlib
import os
import sys

import typer


def normalise_command(
    log_level: str = typer.Option("WARNING", help="Faust worker log level"),
) -> None:
    """Raw Meta webhooks → status, inbound and account events (deduplicated). Prints `READY normalise`."""
    from processors.normalise.app import build_app, seen_changelog
    from processors.normalise.convert import Normaliser
    from wapipe.config import Settings
    from wapipe.app.bootstrap import bootstrap_or_exit
    from wapipe.log import quiet_libraries
    from wapipe.privacy.kek import load_kek
    from wapipe.privacy.keyring import KeyRing
    from wapipe.privacy.restrictions import RestrictionRegistry
    from wapipe.privacy.subjects import pepper_from, subject_id
    from wapipe.privacy.wamids import WamidRefs
    from wapipe.tenants.registry import TenantRegistry
    from wapipe.faust_worker import Worker
    from wapipe.group_start import start_at_end
    from wapipe.probe import beat_every_second, serving_probe
    from wapipe.topics import WEBHOOK_RAW, admin_client, apply_topics

    settings = Settings()
    bootstrap = bootstrap_or_exit(settings)
    # The seen table's changelog with its retention: created here if missing, altered if an older
    # version created it compacted only (its entries then never left).
    admin = admin_client(bootstrap)
    apply_topics(admin, settings, (seen_changelog(settings),))
    if settings.normalise_offset_reset == "latest":
        start_at_end(admin, settings.normalise_app_id, [WEBHOOK_RAW])
    pepper = pepper_from(settings)
    keyring = KeyRing(settings, bootstrap, load_kek(settings)).start()
    registry = TenantRegistry(settings, bootstrap).start()
    closers: list = []
    stack = contextlib.ExitStack()
    closers.append(stack.close)
    try:
        # Sealing needs no catch-up of the key ring: a subject whose key is not loaded yet gets a
        # fresh key, and both stay valid (keyring.py). Not calling KeyRing.wait_ready also avoids
        # its watermark query racing the ring's own consume() thread.
        registry.wait_ready(60)
        # The registry of restriction requests: inbound content of restricted subjects is not stored.
        restrictions = RestrictionRegistry(settings, bootstrap).start()
        closers.append(restrictions.close)
        restrictions.wait_ready(60)
        restricted = lambda scope, subject: restrictions.is_restricted(scope, subject)  # noqa: E731
        normaliser = Normaliser(registry, keyring.seal, lambda scope, wa: subject_id(pepper, scope, wa),
                                restricted=restricted, wamid_ref=WamidRefs.from_pepper(pepper))

        probe = stack.enter_context(serving_probe(settings, "normalise",
                                                  lag=(bootstrap, settings.normalise_app_id, (WEBHOOK_RAW,))))

        def ready() -> None:
            probe.mark_ready()
            os.write(1, b"READY normalise\n")  # fd 1 itself: faust wraps sys.stdout

        quiet_libraries()
        app = build_app(settings, bootstrap, normaliser, on_ready=ready)
        beat_every_second(app, probe)
        worker = Worker(app, loglevel=log_level.upper(), quiet=True, redirect_stdouts=False,
                              stdout=sys.stderr)  # stdout carries only the READY line
        worker.execute_from_commandline()
    finally:
        for close in closers:
            close()
        registry.close()
        keyring.close()
