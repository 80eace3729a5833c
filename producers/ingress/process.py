"""Run ``wapipe ingress`` as a subprocess and wait for its READY line (tests, benchmarks, demo).

    with IngressProcess(env={"KAFKA_BOOTSTRAP_SERVERS": ..., "WAPIPE_META_APPS": ...}) as ing:
        httpx.post(ing.url + "/webhook", ...)

Stopping sends SIGTERM (the ingress drains and flushes) and SIGKILLs after a timeout.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path


class IngressProcess:
    def __init__(self, env: Mapping[str, str], *, workers: int = 1, server: str = "granian", host: str = "127.0.0.1",
                 log_path: Path | None = None, startup_timeout: float = 60.0) -> None:
        self._env = {**os.environ, **env}
        self._workers = workers
        self._server = server
        self._host = host
        self._log_path = log_path
        self._timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self.url: str = ""
        self.returncode: int | None = None

    def start(self) -> "IngressProcess":
        cmd = [sys.executable, "-m", "wapipe", "ingress", "--host", self._host, "--port", "0",
               "--workers", str(self._workers), "--server", self._server]
        stderr = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, env=self._env, stdout=subprocess.PIPE, stderr=stderr,
                                     stdin=subprocess.DEVNULL, text=True)
        if self._log_path:
            stderr.close()
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(self._timeout)
        if not line or not line[0].startswith("READY "):
            self.stop()
            tail = self._log_path.read_text(errors="replace")[-3000:] if self._log_path else ""
            raise RuntimeError(f"ingress did not become ready (got {line[0] if line else 'nothing'!r}, "
                               f"exit code {self.returncode}); log {self._log_path}:\n{tail}")
        self.url = line[0].split()[1].strip()
        return self

    def stop(self, timeout: float = 20.0) -> int | None:
        p = self.proc
        if p is None:
            return self.returncode
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        if p.stdout:
            p.stdout.close()
        self.returncode = p.returncode
        self.proc = None
        return self.returncode

    def __enter__(self) -> "IngressProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_until(predicate, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
