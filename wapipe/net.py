"""Loopback ports chosen at run time, and waiting for a port to answer."""

from __future__ import annotations

import socket
import time


def free_port(exclude: set[int] | None = None) -> int:
    """A free TCP port on 127.0.0.1, chosen by the kernel."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not exclude or port not in exclude:
            return port


def port_free(port: int) -> bool:
    """Whether a process could listen on 127.0.0.1:port now (SO_REUSEADDR, as servers bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_for_port(host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{host}:{port} did not accept connections within {timeout}s")
            time.sleep(0.05)
