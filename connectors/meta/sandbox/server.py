"""Running the sandbox: in the foreground (``wapipe sandbox``), in a background thread of the
current process (the ``meta_sandbox`` pytest fixture), or as a subprocess (benchmarks, demo).

The listening socket is bound here (port 0 = the kernel picks a free one) and handed to uvicorn,
so the actual port is known before anyone connects and no other process can take it meanwhile.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import uvicorn

from connectors.meta.sandbox.app import create_app
from connectors.meta.sandbox.engine import Sandbox
from connectors.meta.sandbox.models import Seed


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def load_seed(path: Path | None) -> Seed | None:
    if path is None:
        return None
    return Seed.model_validate_json(Path(path).read_bytes())


def _uvicorn_config(app, loop: str = "auto") -> uvicorn.Config:
    return uvicorn.Config(app, loop=loop, http="httptools", lifespan="on", log_level="warning", access_log=False,
                          backlog=2048, timeout_keep_alive=30, limit_concurrency=None,
                          # a request held by an injected timeout must not hold up a stop
                          timeout_graceful_shutdown=2)


class _Server(uvicorn.Server):
    """uvicorn's server, calling ``on_started`` once it listens."""

    def __init__(self, config: uvicorn.Config, on_started=None) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self._on_started is not None:
            self._on_started()


def serve_forever(sandbox: Sandbox, host: str, port: int, on_ready=print) -> None:
    """Foreground: print ``READY <url>`` once listening; serve until SIGTERM/SIGINT, which uvicorn
    turns into a clean shutdown (the lifespan stops the webhook dispatcher)."""
    sock = bind(host, port)
    url = f"http://{host}:{sock.getsockname()[1]}"
    server = _Server(_uvicorn_config(create_app(sandbox)), on_started=lambda: on_ready(f"READY {url}"))
    # uvicorn re-raises the captured signal after its graceful shutdown, restoring the previous
    # handler first: make that one a no-op so a SIGTERM'd sandbox exits 0 after a clean stop.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run(sockets=[sock])


class SandboxThread:
    """The sandbox in a background thread of this process, on a real socket on 127.0.0.1."""

    def __init__(self, seed: Seed | None = None, host: str = "127.0.0.1") -> None:
        self.sandbox = Sandbox(seed)
        self._sock = bind(host, 0)
        self.url = f"http://{host}:{self._sock.getsockname()[1]}"
        self._server = uvicorn.Server(_uvicorn_config(create_app(self.sandbox)))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="meta-sandbox", daemon=True)

    def start(self, timeout: float = 10.0) -> "SandboxThread":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the Meta sandbox did not start")
            time.sleep(0.005)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> "SandboxThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class SandboxProcess:
    """``wapipe sandbox`` as a subprocess (its own core: what benchmarks and the demo use)."""

    def __init__(self, seed: Seed | dict | None = None, *, workdir: Path, host: str = "127.0.0.1",
                 env: dict | None = None) -> None:
        self.workdir = Path(workdir)
        self.host = host
        self.seed = seed
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None

    def start(self, timeout: float = 30.0) -> "SandboxProcess":
        args = [sys.executable, "-m", "wapipe", "sandbox", "--host", self.host, "--port", "0"]
        if self.seed is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
            path = self.workdir / "sandbox-seed.json"
            data = self.seed.model_dump(mode="json") if isinstance(self.seed, Seed) else self.seed
            path.write_text(json.dumps(data))
            args += ["--seed", str(path)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env={**os.environ, **(self.env or {})})
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = re.match(r"READY (\S+)", line)
            if m:
                self.url = m.group(1)
                return self
        self.stop()
        raise RuntimeError("the Meta sandbox process did not become ready")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "SandboxProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
