"""Serving the ingress, with one of two production servers:

* ``granian`` (default): Rust HTTP/1.1 server running the ASGI app on uvloop. In this repo's
  benchmark it served ~25-30 % more signed webhooks per second per process than uvicorn, with
  about half the p99 (HTTP parsing and socket work happen outside the GIL). ``--port 0`` picks a
  free port first; READY is printed once ``/healthz`` answers.
* ``uvicorn`` (httptools parser, uvloop event loop) on a socket we bind ourselves, so
  ``--port 0`` is exact.

``workers > 1``: the parent binds the socket, forks that many worker processes (each its own
event loop, producer and poll thread — Python runs one request at a time per process), prints
READY once every worker serves, and forwards SIGTERM/SIGINT to them. The kernel spreads the
connections over the workers accepting on the shared socket.

SIGTERM (uvicorn's handler in each worker): stop accepting, let in-flight requests finish (each
waits at most the publish deadline for its ack), then the lifespan shutdown flushes the producer.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from typing import Literal, TextIO

import uvicorn

from wapipe.config import Settings
from wapipe.log import get_logger
from wapipe.procs import die_with_parent
from wapipe.net import free_port

Server = Literal["granian", "uvicorn"]

log = get_logger(__name__)


class _ReadyServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_ready) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            self._on_ready()


def bind(host: str, port: int, backlog: int = 4096) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def _config(settings: Settings, bootstrap: str, log_level: str) -> uvicorn.Config:
    from producers.ingress.app import IngressApp

    return uvicorn.Config(
        IngressApp(settings, bootstrap), loop="uvloop", http="httptools", lifespan="on", access_log=False,
        log_level=log_level, timeout_graceful_shutdown=max(5, settings.ingress_deadline_ms // 1000 + 5),
        backlog=4096, server_header=False, date_header=False, timeout_keep_alive=75,
    )


def serve(settings: Settings, bootstrap: str, *, host: str = "127.0.0.1", port: int = 0, workers: int = 1,
          server: Server = "granian", out: TextIO = sys.stdout, log_level: str = "warning") -> int:
    """Run until SIGTERM/SIGINT. Returns the exit code (non-zero when a worker failed)."""
    if server == "granian":
        return _serve_granian(bootstrap, host, port, workers, out, log_level)
    sock = bind(host, port)
    url = f"http://{host}:{sock.getsockname()[1]}"

    def ready() -> None:
        print(f"READY {url}", file=out, flush=True)

    if workers <= 1:
        _ReadyServer(_config(settings, bootstrap, log_level), ready).run(sockets=[sock])
        return 0
    return _supervise(settings, bootstrap, sock, workers, ready, log_level)


def _worker(settings: Settings, bootstrap: str, sock: socket.socket, ready_q, log_level: str) -> None:
    die_with_parent()
    # uvicorn installs its own handlers while it serves and re-raises the signal after the clean
    # shutdown; ignored then, so a drained worker exits 0.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _ReadyServer(_config(settings, bootstrap, log_level), lambda: ready_q.put(os.getpid())).run(sockets=[sock])


def _supervise(settings: Settings, bootstrap: str, sock: socket.socket, workers: int, ready, log_level: str) -> int:
    # fork: the parent has started no thread (no producer) yet, and the children inherit the socket.
    ctx = multiprocessing.get_context("fork")
    ready_q = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(settings, bootstrap, sock, ready_q, log_level),
                         name=f"ingress-worker-{i}", daemon=False) for i in range(workers)]
    stopping = False

    def forward(signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.pid and p.exitcode is None:
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    for p in procs:
        p.start()
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    started = 0
    while started < workers and not stopping:
        try:
            ready_q.get(timeout=0.5)
            started += 1
        except Exception:  # queue.Empty: check that nobody died while starting
            if any(p.exitcode is not None for p in procs):
                log.error("an ingress worker exited during startup")
                forward(signal.SIGTERM, None)
                break
    if started == workers:
        ready()
    # Any worker exiting ends the whole ingress (a supervisor restarts it as one unit).
    while any(p.is_alive() for p in procs):
        for p in procs:
            p.join(timeout=0.5)
            if p.exitcode is not None and not stopping:
                log.error("ingress worker exited", pid=p.pid, code=p.exitcode)
                forward(signal.SIGTERM, None)
    sock.close()
    return 0 if all(p.exitcode == 0 for p in procs) else 1


# --- granian ---------------------------------------------------------------------------------
def create_app():
    """Granian's app factory, run in each worker process: configuration from the environment."""
    from producers.ingress.app import IngressApp
    from wapipe import log as wlog
    from wapipe.edge.clients import settings_endpoint

    # A spawned (not forked) worker has not run the CLI's logging setup: logs go to stderr, never
    # to stdout where the READY line is.
    wlog.configure(level=os.environ.get("WAPIPE_LOG_LEVEL", "WARNING").upper())
    die_with_parent()
    settings = Settings()
    # _serve_granian put the broker the command resolved (and checked) into the environment.
    return IngressApp(settings, settings_endpoint(settings, check=False))  # checked by the command


def _serve_granian(bootstrap: str, host: str, port: int, workers: int, out: TextIO, log_level: str) -> int:
    from granian import Granian
    from granian.constants import Interfaces, Loops

    port = port or free_port()
    url = f"http://{host}:{port}"
    # The workers build their own Settings from the environment: hand them the resolved broker.
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = str(bootstrap)
    threading.Thread(target=_announce_when_serving, args=(host, port, url, out), daemon=True).start()
    Granian(
        "producers.ingress.server:create_app", factory=True, interface=Interfaces.ASGI, address=host, port=port,
        workers=workers, loop=Loops.uvloop, backlog=4096, log_access=False, log_level=log_level,
        workers_kill_timeout=30,
    ).serve()
    return 0


def _announce_when_serving(host: str, port: int, url: str, out: TextIO, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: ready\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    print(f"READY {url}", file=out, flush=True)
                    return
        except OSError:
            pass
        time.sleep(0.05)
    log.error("ingress did not start serving", url=url)
