"""Kafka in a container through testcontainers, used when a Docker *engine* answers and the
``docker`` extra is installed (``pip install 'wapipe[docker]'``); else the JVM broker runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wapipe.log import get_logger

log = get_logger(__name__)

KAFKA_IMAGE = "apache/kafka:{version}"


def docker_engine_available() -> bool:
    """True only when an engine answers a ping (the docker CLI alone is not enough)."""
    try:
        import docker
    except ImportError:  # the docker extra is not installed: the JVM broker it is
        return False
    try:
        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@dataclass
class ContainerBroker:
    version: str
    container: Any = field(default=None, repr=False)

    def start(self) -> str:
        try:
            from testcontainers.kafka import KafkaContainer
        except ImportError as exc:
            raise RuntimeError("a Kafka container needs the docker extra: pip install 'wapipe[docker]'") from exc

        self.container = KafkaContainer(image=KAFKA_IMAGE.format(version=self.version)).with_kraft()
        self.container.start()
        bootstrap = self.container.get_bootstrap_server()
        log.info("kafka container ready", bootstrap=bootstrap)
        return bootstrap

    def stop(self) -> None:
        if self.container is not None:
            self.container.stop()
            self.container = None
