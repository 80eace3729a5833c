"""pytest fixtures shared by every test module (loaded from tests/conftest.py as a plugin).

* ``kafka`` (session): a real broker — KAFKA_BOOTSTRAP_SERVERS, else testcontainers when a Docker
  engine answers, else the JVM broker from Maven Central jars. Stopped at the end of the session
  even when tests fail; the JVM also dies with the test process (PR_SET_PDEATHSIG). Under
  pytest-xdist (``make test``) every worker process is a session of its own, with its own broker.
* ``settings``: a Settings object whose state lives in the test's tmp dir (jars stay shared).
* ``topics`` (session): every declared topic applied on the broker.
* ``clickhouse``: an embedded ClickHouse (chDB) on a fresh folder, migrated.
"""

from __future__ import annotations

import contextlib
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from wapipe.config import Settings
from wapipe.log import configure as _real_configure  # before any test patches it

# Broker settings that make compaction and retention observable within a test.
FAST_CLEANER = {
    "log.cleaner.backoff.ms": "250",
    "log.retention.check.interval.ms": "1000",
    "log.initial.task.delay.ms": "0",
}


make_settings = Settings.under  # the tests' name for it


def eventually(fn, timeout: float = 20.0, every: float = 0.05):
    """``fn()``'s first truthy value within ``timeout`` seconds, else AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout:.0f}s")
        time.sleep(every)


@contextlib.contextmanager
def dedicated_broker(folder: Path, **overrides) -> Iterator:
    """A JVM broker of a test's own (its own ports and data folder under ``folder``) with every
    topic applied, for a test that stops it and starts it again (``provider._jvm.stop()`` /
    ``.start()``: same ports, same data) without touching the session's broker. Yields the
    ``KafkaProvider``; stopped at the end, also on failure."""
    from wapipe.app.stack.local import KafkaProvider
    from wapipe.edge.clients import admin_client
    from wapipe.topics import apply_topics

    s = make_settings(folder / "state", kafka_bootstrap_servers=None, **overrides)
    provider = KafkaProvider(s, prefer="jvm", data_dir=folder / "kafka-data")
    provider.start()
    try:
        apply_topics(admin_client(provider.bootstrap), s)
        yield provider
    finally:
        provider.stop()


@pytest.fixture(scope="session")
def kafka_provider(tmp_path_factory):
    from wapipe.app.stack.local import KafkaProvider

    state = tmp_path_factory.mktemp("stack")
    provider = KafkaProvider(make_settings(state), broker_overrides=FAST_CLEANER, data_dir=state / "kafka-data")
    provider.start()
    try:
        yield provider
    finally:
        provider.stop()


@pytest.fixture(scope="session")
def kafka(kafka_provider) -> str:
    """Bootstrap servers of the session's real broker."""
    return kafka_provider.bootstrap


@pytest.fixture
def settings(tmp_path, kafka) -> Settings:
    return make_settings(tmp_path / "state", kafka_bootstrap_servers=kafka)


@pytest.fixture(scope="session")
def topics(kafka, tmp_path_factory) -> str:
    from wapipe.edge.clients import admin_client
    from wapipe.topics import apply_topics

    s = make_settings(tmp_path_factory.mktemp("topics"), kafka_bootstrap_servers=kafka)
    apply_topics(admin_client(kafka), s)
    return kafka


@pytest.fixture
def clickhouse(tmp_path) -> Iterator:
    from wapipe.clickhouse import clickhouse_client, migrate

    client = clickhouse_client(f"chdb://{tmp_path / 'chdb'}")
    migrate(client)
    yield client
    client.close()


@pytest.fixture
def unique() -> str:
    """A short id for names that must not collide between tests sharing the broker."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def meta_sandbox() -> Iterator:
    """A real Meta sandbox HTTP server on 127.0.0.1:<free port> (connectors/meta/sandbox), seeded with
    a small standard world; yields ``MetaSandbox`` (``.url``, ``.control``, ids). Stopped even on failure."""
    from connectors.meta.sandbox.fixture import start_meta_sandbox

    sb = start_meta_sandbox()
    try:
        yield sb
    finally:
        sb.stop()


def quiet_configure(level="INFO", json=None):  # noqa: ARG001 - wapipe.log.configure's signature
    """The CLI's log set-up onto the process's real stderr rather than CliRunner's (closed after
    invoke: cached loggers would write to a closed file in later tests). Patched over
    ``wapipe.log.configure`` by tests that invoke the CLI in process."""
    with contextlib.redirect_stderr(sys.__stderr__):
        _real_configure(level=level, json=True)
