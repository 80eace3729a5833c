"""Health and metrics of one service process, for Prometheus and an orchestrator.

``GET /metrics``  the process's registry in Prometheus' text format.
``GET /healthz``  200 while the service's own loop beats (``Probe.beat``), 503 once it has not
                  beaten for ``stale_after`` seconds: a wedged loop, not only a dead process.
``GET /readyz``   200 when the service can do its job now: it said so (``Probe.mark_ready``, when
                  it prints READY) and its own check passes (``ready``: e.g. the broker answered
                  lately); else 503 with the reason.

Served by a small threaded WSGI server of the standard library in a daemon thread, so a scrape
is answered even while the service's event loop is busy, and the answer says whether the loop is
wedged. Bound to 127.0.0.1 unless told otherwise (a container binds 0.0.0.0 in its own network).

``ConsumerLag`` is a collector: at scrape time (at most every ``ttl`` seconds) it reads the
group's committed offsets and each partition's high watermark from the broker, and exports
``wapipe_consumer_lag{group,topic,partition}`` — the records the group has yet to read — and
``wapipe_consumer_committed_total`` (the committed offset: its rate is the records per second).

``DeadLetterMetrics`` exports the process's dead-letter tally (wapipe/deadletter.py) as
``wapipe_dead_letters_total{service, reason}``; every probe has it.
"""

from __future__ import annotations

import threading
import time
import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from wapipe.config import Settings
from wapipe.deadletter import PROCESS_TALLY, DeadLetterTally
from wapipe.edge.clients import consumer as make_consumer
from wapipe.log import get_logger

log = get_logger(__name__)

Ready = Callable[[], str | None]  # None: ready; else the reason it is not


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, *_args) -> None:  # scrapes are not news
        pass


@dataclass
class Probe:
    service: str
    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))
    ready: Ready = field(default=lambda: None)
    stale_after: float = 30.0
    started: bool = True  # False: /readyz says "starting" until mark_ready()
    # Health from the service's own sign of life instead of beat() (None: alive, else why not).
    alive: Ready | None = None
    _last_beat: float = field(default_factory=time.monotonic)
    _server: WSGIServer | None = None
    _thread: threading.Thread | None = None

    def beat(self) -> None:
        """The service's loop is alive: call it from the loop at least every few seconds."""
        self._last_beat = time.monotonic()

    def mark_ready(self) -> None:
        self.started = True
        self.beat()

    def health(self) -> str | None:
        if self.alive is not None:
            return self.alive()
        quiet = time.monotonic() - self._last_beat
        return None if quiet <= self.stale_after else f"{self.service}'s loop has not beaten for {quiet:.0f} s"

    def _app(self):
        metrics = make_wsgi_app(self.registry)

        def app(environ, start_response):
            path = environ.get("PATH_INFO", "")
            if path in ("/healthz", "/readyz"):
                try:
                    why = self.health()
                    if why is None and path == "/readyz":
                        why = self.ready() if self.started else f"{self.service} is starting"
                except Exception as exc:  # a failing check is a "not ready", never a crashed server
                    why = f"check failed: {exc}"
                status = "200 OK" if why is None else "503 Service Unavailable"
                start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
                return [(why or "ok").encode() + b"\n"]
            if path == "/metrics":
                return metrics(environ, start_response)
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: /metrics, /healthz, /readyz\n"]

        return app

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a daemon thread; returns the base URL (port 0: a free one)."""
        self._server = make_server(host, port, self._app(), server_class=_Server, handler_class=_Quiet)
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"probe-{self.service}", daemon=True)
        self._thread.start()
        url = f"http://{host}:{self._server.server_port}"
        log.info("probe.serving", service=self.service, url=url)
        return url

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@dataclass(eq=False)  # a registry keys collectors by identity
class ConsumerLag:
    """``wapipe_consumer_lag`` of one consumer group over its topics, read from the broker at
    scrape time. A broker that does not answer gives no samples (and a log line), never an error
    in the scrape."""

    bootstrap: str
    group: str
    topics: tuple[str, ...]
    client_config: dict[str, str] = field(default_factory=dict)
    ttl: float = 5.0
    timeout: float = 3.0
    _cache: tuple[float, list[tuple[str, int, int, int]]] = (0.0, [])
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def lags(self) -> list[tuple[str, int, int, int]]:
        """[(topic, partition, lag, committed offset)], at most ``ttl`` seconds old."""
        with self._lock:
            at, rows = self._cache
            if time.monotonic() - at < self.ttl:
                return rows
            try:
                rows = self._read()
            except Exception as exc:
                log.warning("probe.lag_unavailable", group=self.group, error=str(exc))
                rows = []
            self._cache = (time.monotonic(), rows)
            return rows

    def _read(self) -> list[tuple[str, int, int, int]]:
        from confluent_kafka import TopicPartition

        # Never subscribes: reading a group's commits does not join (or disturb) the group.
        c = make_consumer(self.bootstrap, self.group, **self.client_config)
        try:
            meta = c.list_topics(timeout=self.timeout)
            parts = [TopicPartition(t, p) for t in self.topics if t in meta.topics
                     for p in sorted(meta.topics[t].partitions)]
            committed = c.committed(parts, timeout=self.timeout)
            rows = []
            for tp in committed:
                low, high = c.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=self.timeout)
                start = tp.offset if tp.offset >= 0 else low  # never committed: everything retained is due
                rows.append((tp.topic, tp.partition, max(0, high - start), start))
            return rows
        finally:
            c.close()

    def describe(self) -> Iterable[GaugeMetricFamily]:
        yield from self._families()  # registering asks for names: no broker round trip for that

    def collect(self) -> Iterable[GaugeMetricFamily]:
        lag, done = self._families()
        for topic, partition, behind, committed in self.lags():
            lag.add_metric([self.group, topic, str(partition)], behind)
            done.add_metric([self.group, topic, str(partition)], committed)
        yield lag
        yield done

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, CounterMetricFamily]:
        labels = ["group", "topic", "partition"]
        return (GaugeMetricFamily("wapipe_consumer_lag", "Records of a partition the consumer group has yet to read",
                                  labels=labels),
                # its rate is the records per second the group handles
                CounterMetricFamily("wapipe_consumer_committed", "The group's committed offset of the partition",
                                    labels=labels))


@dataclass(eq=False)
class DeadLetterMetrics:
    """``wapipe_dead_letters_total{service, reason}``: dead letters this service wrote, by reason."""

    service: str
    tally: DeadLetterTally = PROCESS_TALLY

    def describe(self) -> Iterable[CounterMetricFamily]:
        yield self._family()

    def collect(self) -> Iterable[CounterMetricFamily]:
        fam = self._family()
        for reason, n in sorted(self.tally.counts().items()):
            fam.add_metric([self.service, reason], n)
        yield fam

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily("wapipe_dead_letters", "Dead letters written, by reason (the error type)",
                                   labels=["service", "reason"])


def probe_file(settings: Settings, service: str):
    """Where a running service writes its probe's URL (for `wapipe health` and a local Prometheus)."""
    return settings.state_dir / "probes" / f"{service}.json"


@contextmanager
def serving_probe(settings: Settings, service: str, *, ready: Ready | None = None, alive: Ready | None = None,
                  lag: tuple[str, str, tuple[str, ...]] | None = None, stale_after: float = 30.0) -> Iterator[Probe]:
    """The service's probe for as long as the block runs: process metrics (CPU, memory, open
    files), the consumer group's lag when ``lag`` = (bootstrap, group, topics) is given, served on
    ``WAPIPE_PROBE_HOST``:``WAPIPE_PROBE_PORT`` (0: a free port) and its URL written to
    ``<state>/probes/<service>.json``. ``/readyz`` says "starting" until ``mark_ready``."""
    probe = Probe(service, ready=ready or (lambda: None), stale_after=stale_after, started=False, alive=alive)
    ProcessCollector(registry=probe.registry)
    probe.registry.register(DeadLetterMetrics(service))
    if lag is not None:
        bootstrap, group, topics = lag
        probe.registry.register(ConsumerLag(bootstrap, group, tuple(topics)))
    path = probe_file(settings, service)
    if settings.probe_enabled:
        url = probe.start(settings.probe_host, settings.probe_port)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    try:
        yield probe
    finally:
        probe.close()
        if settings.probe_enabled:
            with suppress(OSError):
                path.unlink()


def beat_every_second(app, probe: Probe) -> None:
    """A Faust app's loop beats the probe once a second, and the probe is ready once the app has
    started (its READY line); a wedged loop stops beating."""

    async def beat() -> None:
        if not probe.started:  # timers run once the app has started
            probe.mark_ready()
        probe.beat()

    app.timer(1.0, name=f"probe-beat-{probe.service}")(beat)
