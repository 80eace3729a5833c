"""Readiness of a Kafka cluster: a metadata request that succeeds, not just an open port."""

from __future__ import annotations

import time
from collections.abc import Callable

from wapipe.edge.clients import admin_client
from wapipe.edge.endpoint import Endpoint


def wait_for_metadata(bootstrap: Endpoint, *, timeout: float = 60.0, alive: Callable[[], bool] = lambda: True) -> None:
    admin = admin_client(bootstrap, log_level=0, logger=_quiet)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("the broker process exited")
        try:
            md = admin.list_topics(timeout=1.0)
            if md.brokers:
                return
        except Exception as exc:  # KafkaException while the broker boots
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"no metadata from {bootstrap} within {timeout}s (last error: {last})")


class _Quiet:
    def log(self, *args, **kwargs) -> None:  # librdkafka's connection-refused chatter while booting
        pass


_quiet = _Quiet()
