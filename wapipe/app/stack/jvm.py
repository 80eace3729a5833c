"""A real single-node Apache Kafka broker (KRaft) run as a JVM process.

The jars come from Maven Central through ``kafka/pom.xml`` (``ensure_jars``); the broker formats
its own storage, listens on 127.0.0.1 ports chosen at run time, writes its log to a file, and is
stopped with SIGTERM, then SIGKILL after a timeout.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from wapipe.config import REPO_ROOT
from wapipe.log import get_logger
from wapipe.net import free_port
from wapipe.procs import die_with_parent, pid_alive
from wapipe.app.stack.ready import wait_for_metadata

log = get_logger(__name__)

_JAR_MARKER = ".complete"


class BrokerError(RuntimeError):
    """The broker's jars could not be fetched, or it did not start."""


def pom_path() -> Path:
    for candidate in (REPO_ROOT / "kafka" / "pom.xml", Path(__file__).resolve().parents[2] / "_kafka" / "pom.xml"):
        if candidate.exists():
            return candidate
    raise BrokerError("kafka/pom.xml not found")


def ensure_jars(jars_dir: Path, version: str) -> Path:
    """Fetch the broker's runtime jars once (Maven caches in ~/.m2); return the folder."""
    libs = jars_dir / f"kafka-{version}"
    if (libs / _JAR_MARKER).exists():
        return libs
    if shutil.which("mvn") is None:
        raise BrokerError("mvn is not on PATH: install Maven (apt-get install maven) to fetch the Kafka jars")
    if shutil.which("java") is None:
        raise BrokerError("java is not on PATH: install a JDK 17+ to run the Kafka broker")
    tmp = libs.with_name(libs.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cmd = [
        "mvn", "-B", "-q", "-f", str(pom_path()),
        "dependency:copy-dependencies", "-DincludeScope=runtime",
        f"-Dkafka.version={version}", f"-DoutputDirectory={tmp}",
    ]
    log.info("fetching kafka jars", version=version, dest=str(libs))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BrokerError(f"mvn failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    if not any(tmp.glob("kafka_2.13-*.jar")):
        raise BrokerError(f"mvn succeeded but no kafka_2.13 jar is in {tmp}")
    (tmp / _JAR_MARKER).write_text(version)
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    return libs


def _cluster_id() -> str:
    """A KRaft cluster id (base64url of 16 random bytes). One that starts with '-' would be read
    as an option by the storage tool, so draw again (Kafka's own Uuid.randomUuid does the same)."""
    while True:
        cid = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        if cid[0] != "-":
            return cid


@dataclass
class JvmBroker:
    """One broker process. ``start()`` returns when a metadata request succeeds."""

    libs: Path
    data_dir: Path
    log_path: Path
    heap: str = "512m"
    # Extra broker properties, e.g. a fast log cleaner for tests.
    overrides: dict[str, str] = field(default_factory=dict)
    port: int = 0
    controller_port: int = 0
    pid: int | None = None
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def properties(self) -> dict[str, str]:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir / "log"),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "log.cleaner.dedupe.buffer.size": "2097152",
            "log.cleaner.backoff.ms": "1000",
            "log.retention.check.interval.ms": "5000",
        }
        props.update(self.overrides)
        return props

    def _write_properties(self) -> Path:
        path = self.data_dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in self.properties().items()))
        return path

    def _java(self, *args: str) -> list[str]:
        return [
            "java", f"-Xms{min_heap(self.heap)}", f"-Xmx{self.heap}", "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true", "-cp", f"{self.libs}/*", *args,
        ]

    def start(self, timeout: float = 60.0, *, detach: bool = False) -> str:
        """Format storage (first time) and start. ``detach`` leaves it running after we exit."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.controller_port = self.controller_port or free_port(exclude={self.port})
        props = self._write_properties()
        if not (self.data_dir / "log" / "meta.properties").exists():
            fmt = subprocess.run(
                self._java("kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(props), "--ignore-formatted"),
                capture_output=True, text=True,
            )
            if fmt.returncode != 0:
                raise BrokerError(f"formatting KRaft storage failed:\n{fmt.stdout[-3000:]}\n{fmt.stderr[-3000:]}")
        started = time.monotonic()
        logf = open(self.log_path, "ab")
        self._proc = subprocess.Popen(
            self._java("kafka.Kafka", str(props)),
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=detach,
            preexec_fn=None if detach else die_with_parent,
        )
        logf.close()
        self.pid = self._proc.pid
        try:
            wait_for_metadata(self.bootstrap, timeout=timeout, alive=lambda: self._proc.poll() is None)
        except Exception as exc:
            self.stop()
            tail = self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""
            raise BrokerError(f"broker did not become ready: {exc}\n--- {self.log_path} ---\n{tail}") from exc
        log.info("kafka broker ready", bootstrap=self.bootstrap, pid=self.pid, seconds=round(time.monotonic() - started, 2))
        return self.bootstrap

    def stop(self, timeout: float = 20.0) -> None:
        if self.pid is None:
            return
        stop_pid(self.pid, timeout=timeout, proc=self._proc)
        self.pid = None
        self._proc = None


def min_heap(heap: str) -> str:
    return "128m" if heap.endswith("m") and int(heap[:-1]) <= 256 else "256m"


def stop_pid(pid: int, *, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    """SIGTERM, wait, then SIGKILL. Safe on an already dead pid."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                return
        elif not pid_alive(pid):
            return
        time.sleep(0.1)
    log.warning("process ignored SIGTERM, killing", pid=pid)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if proc is not None:
        proc.wait(timeout=10)
