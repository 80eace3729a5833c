"""Serving the ingress: uvicorn (httptools parser, uvloop event loop) on a socket we bind
ourselves, so ``--port 0`` works and the ``READY <url>`` line names the real port.

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
from typing import TextIO

import uvicorn

from wapipe.config import Settings
from wapipe.log import get_logger

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
          out: TextIO = sys.stdout, log_level: str = "warning") -> int:
    """Run until SIGTERM/SIGINT. Returns the exit code (non-zero when a worker failed)."""
    sock = bind(host, port)
    url = f"http://{host}:{sock.getsockname()[1]}"

    def ready() -> None:
        print(f"READY {url}", file=out, flush=True)

    if workers <= 1:
        _ReadyServer(_config(settings, bootstrap, log_level), ready).run(sockets=[sock])
        return 0
    return _supervise(settings, bootstrap, sock, workers, ready, log_level)


def _worker(settings: Settings, bootstrap: str, sock: socket.socket, ready_q, log_level: str) -> None:
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
