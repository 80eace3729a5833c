"""Health and metrics of one service process, for Prometheus and an orchestrator.

``GET /metrics``  the process's registry in Prometheus' text format.
``GET /healthz``  200 while the service's own loop beats (``Probe.beat``), 503 once it has not
                  beaten for ``stale_after`` seconds: a wedged loop, not only a dead process.
``GET /readyz``   200 when the service can do its job now, else 503 with the reason (the
                  service's ``ready`` callback: e.g. the broker has not answered lately).

Served by a small threaded WSGI server of the standard library in a daemon thread, so a scrape
is answered even while the service's event loop is busy, and the answer says whether the loop is
wedged. Bound to 127.0.0.1 unless told otherwise (a container binds 0.0.0.0 in its own network).

``ConsumerLag`` is a collector: at scrape time (at most every ``ttl`` seconds) it reads the
group's committed offsets and each partition's high watermark from the broker, and exports
``wapipe_consumer_lag{group,topic,partition}`` — the records the group has yet to read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily

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
    _last_beat: float = field(default_factory=time.monotonic)
    _server: WSGIServer | None = None
    _thread: threading.Thread | None = None

    def beat(self) -> None:
        """The service's loop is alive: call it from the loop at least every few seconds."""
        self._last_beat = time.monotonic()

    def health(self) -> str | None:
        quiet = time.monotonic() - self._last_beat
        return None if quiet <= self.stale_after else f"{self.service}'s loop has not beaten for {quiet:.0f} s"

    def _app(self):
        metrics = make_wsgi_app(self.registry)

        def app(environ, start_response):
            path = environ.get("PATH_INFO", "")
            if path in ("/healthz", "/readyz"):
                try:
                    why = self.health() or (self.ready() if path == "/readyz" else None)
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
    _cache: tuple[float, list[tuple[str, int, int]]] = (0.0, [])
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def lags(self) -> list[tuple[str, int, int]]:
        """[(topic, partition, lag)], at most ``ttl`` seconds old."""
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

    def _read(self) -> list[tuple[str, int, int]]:
        from confluent_kafka import Consumer, TopicPartition

        # Never subscribes: reading a group's commits does not join (or disturb) the group.
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group, "enable.auto.commit": False,
                      **self.client_config})
        try:
            meta = c.list_topics(timeout=self.timeout)
            parts = [TopicPartition(t, p) for t in self.topics if t in meta.topics
                     for p in sorted(meta.topics[t].partitions)]
            committed = c.committed(parts, timeout=self.timeout)
            rows = []
            for tp in committed:
                low, high = c.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=self.timeout)
                start = tp.offset if tp.offset >= 0 else low  # never committed: everything retained is due
                rows.append((tp.topic, tp.partition, max(0, high - start)))
            return rows
        finally:
            c.close()

    def describe(self) -> Iterable[GaugeMetricFamily]:
        yield self._family()  # registering asks for names: no broker round trip for that

    def collect(self) -> Iterable[GaugeMetricFamily]:
        g = self._family()
        for topic, partition, lag in self.lags():
            g.add_metric([self.group, topic, str(partition)], lag)
        yield g

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("wapipe_consumer_lag", "Records of a partition the consumer group has yet to read",
                                 labels=["group", "topic", "partition"])
