"""Which Kafka to use, and the local stack's lifecycle.

Order: ``KAFKA_BOOTSTRAP_SERVERS`` → a Docker engine (testcontainers, KRaft) → a JVM broker
from Maven Central jars. ``wapipe stack up|down|status`` and the pytest fixture both use
``KafkaProvider``; the CLI's detached broker is remembered in ``<state>/stack.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from wapipe.config import Settings
from wapipe.kafka_edge import KafkaEndpoint, check_access
from wapipe.app.stack.docker import ContainerBroker, docker_engine_available
from wapipe.net import port_free
from wapipe.app.stack.jvm import JvmBroker, ensure_jars, pid_alive, stop_pid
from wapipe.app.stack.ready import wait_for_metadata

Source = Literal["env", "docker", "jvm"]


@dataclass
class StackState:
    source: Source
    bootstrap: str
    pid: int | None = None
    data_dir: str | None = None
    log_path: str | None = None
    started_at: float = 0.0
    controller_port: int | None = None

    @property
    def port(self) -> int:
        return int(self.bootstrap.rsplit(":", 1)[1])

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> "StackState | None":
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))

    def restartable(self) -> bool:
        """A JVM broker of ours that died: start it again where the services look for it."""
        return self.source == "jvm" and self.pid is not None and not pid_alive(self.pid) and bool(self.data_dir)


def state_file(settings: Settings) -> Path:
    return settings.state_dir / "stack.json"


class KafkaProvider:
    """Starts (or finds) a Kafka cluster and stops what it started."""

    def __init__(self, settings: Settings, *, broker_overrides: dict[str, str] | None = None,
                 data_dir: Path | None = None, prefer: Source | None = None,
                 ports: tuple[int, int] | None = None) -> None:
        self.settings = settings
        self.overrides = broker_overrides or {}
        self.data_dir = data_dir or settings.kafka_dir / "data"
        self.prefer = prefer
        self.ports = ports  # (client, controller): a restarted local broker keeps its address
        self.source: Source | None = None
        self.bootstrap: str | None = None
        self._jvm: JvmBroker | None = None
        self._container: ContainerBroker | None = None

    def choose(self) -> Source:
        if self.prefer:
            return self.prefer
        if self.settings.kafka_bootstrap_servers:
            return "env"
        if docker_engine_available():
            return "docker"
        return "jvm"

    def start(self, *, detach: bool = False, timeout: float = 90.0) -> str:
        self.source = self.choose()
        if self.source == "env":
            self.bootstrap = self.settings.kafka_bootstrap_servers
            ep = KafkaEndpoint.from_settings(self.settings, self.bootstrap)
            if ep.security.protocol != "PLAINTEXT":
                check_access(ep)  # a refused login is named now, not after the readiness timeout
            wait_for_metadata(ep, timeout=timeout)
        elif self.source == "docker":
            self._container = ContainerBroker(self.settings.kafka_version)
            self.bootstrap = self._container.start()
        else:
            libs = ensure_jars(self.settings.jars_dir, self.settings.kafka_version)
            self._jvm = JvmBroker(
                libs=libs, data_dir=self.data_dir, log_path=self.data_dir.parent / "broker.log",
                heap=self.settings.kafka_heap, overrides=self.overrides,
                port=self.ports[0] if self.ports else 0, controller_port=self.ports[1] if self.ports else 0,
            )
            self.bootstrap = self._jvm.start(timeout=timeout, detach=detach)
        return self.bootstrap

    def state(self) -> StackState:
        assert self.source and self.bootstrap
        return StackState(
            source=self.source, bootstrap=self.bootstrap,
            pid=self._jvm.pid if self._jvm else None,
            data_dir=str(self.data_dir) if self._jvm else None,
            log_path=str(self._jvm.log_path) if self._jvm else None,
            started_at=time.time(),
            controller_port=self._jvm.controller_port if self._jvm else None,
        )

    @property
    def pid(self) -> int | None:
        return self._jvm.pid if self._jvm else None

    def stop(self) -> None:
        if self._jvm is not None:
            self._jvm.stop()
        if self._container is not None:
            self._container.stop()


def stack_status(settings: Settings) -> tuple[StackState | None, str]:
    st = StackState.load(state_file(settings))
    if st is None:
        if settings.kafka_bootstrap_servers:
            return None, f"using KAFKA_BOOTSTRAP_SERVERS={settings.kafka_bootstrap_servers} (not managed here)"
        return None, "down"
    if st.pid is not None and not pid_alive(st.pid):
        return st, f"stale: broker pid {st.pid} is not running"
    try:
        wait_for_metadata(st.bootstrap, timeout=5)
    except Exception as exc:
        return st, f"not answering: {exc}"
    return st, "up"


def restart_ports(st: StackState | None) -> tuple[int, int] | None:
    """The ports a dead local broker had, to start it again on them (its data dir is reused too).
    The services started against it keep working without being told a new address."""
    if st is None or not st.restartable() or not st.controller_port:
        return None
    for port in (st.port, st.controller_port):
        if not port_free(port):
            raise PortTaken(f"port {port} of the stopped local broker is taken by another process: free it, or "
                            f"`wapipe stack down` and `stack up` for a broker on new ports (restart the services then)")
    return st.port, st.controller_port


class PortTaken(RuntimeError):
    pass


def stack_down(settings: Settings) -> str:
    path = state_file(settings)
    st = StackState.load(path)
    if st is None:
        return "nothing to stop"
    if st.pid is not None:
        stop_pid(st.pid)
    path.unlink(missing_ok=True)
    return f"stopped ({st.source}, {st.bootstrap})"
