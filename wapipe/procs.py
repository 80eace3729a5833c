"""Process lifetime helpers shared by everything that starts or watches a process."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import threading


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM this process when the one that started it dies, even by SIGKILL
    (PR_SET_PDEATHSIG), so a crashed test run, demo or supervisor leaves no strays."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def exit_by(seconds: float, reason: str) -> threading.Timer:
    """Leave the process at the latest ``seconds`` from now (exit code 0, a stop that was asked
    for): a daemon timer that ends the process if a clean shutdown is still under way then — a
    broker that is gone can hold a Kafka client's close for a minute. Whatever was not committed
    by then is read again after the restart, as after a crash, which every consumer here survives."""

    def expire() -> None:
        from wapipe.log import get_logger

        get_logger(__name__).warning("shutdown.deadline_passed", seconds=seconds, reason=reason)
        logging.shutdown()
        os._exit(0)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    return timer
