"""The broker a benchmark runs against: KAFKA_BOOTSTRAP_SERVERS when set, else one started here
(``KafkaProvider``: testcontainers or the JVM broker) and stopped when the block ends; and the
benchmarks' Settings come from ``Settings.under`` (state under their own folder)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from wapipe.config import Settings


@contextlib.contextmanager
def own_broker(tmp: Path) -> Iterator[str]:
    bootstrap = Settings().kafka_bootstrap_servers
    if bootstrap:
        yield bootstrap
        return
    from wapipe.app.stack.local import KafkaProvider

    provider = KafkaProvider(Settings.under(tmp / "stack"), data_dir=tmp / "kafka")
    bootstrap = provider.start()
    print(f"[{time.strftime('%H:%M:%S')}] started a Kafka broker at {bootstrap}", flush=True)
    try:
        yield bootstrap
    finally:
        provider.stop()
