"""The broker a benchmark runs against: KAFKA_BOOTSTRAP_SERVERS when set, else one started here
(``KafkaProvider``: testcontainers or the JVM broker) and stopped when the block ends."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def own_broker(tmp: Path) -> Iterator[str]:
    from wapipe.config import Settings
    from wapipe.testing import make_settings

    bootstrap = Settings().kafka_bootstrap_servers
    if bootstrap:
        yield bootstrap
        return
    from wapipe.stack.local import KafkaProvider

    provider = KafkaProvider(make_settings(tmp / "stack"), data_dir=tmp / "kafka")
    bootstrap = provider.start()
    print(f"[{time.strftime('%H:%M:%S')}] started a Kafka broker at {bootstrap}", flush=True)
    try:
        yield bootstrap
    finally:
        provider.stop()
