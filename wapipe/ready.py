"""A bounded wait for a component that follows a topic into memory (its ``wait_ready(timeout)``)."""

from __future__ import annotations

import threading
from typing import Any


def wait_ready(component: Any, timeout: float) -> bool:
    """``component.wait_ready(timeout)`` bounded by ``timeout`` even if the call itself hangs
    (it runs in a daemon thread). Returns whether it finished."""
    box: dict = {}

    def run() -> None:
        try:
            component.wait_ready(timeout)
            box["ok"] = True
        except Exception as exc:  # surfaced below
            box["error"] = exc

    t = threading.Thread(target=run, name="wait-ready", daemon=True)
    t.start()
    t.join(timeout + 1)
    if "error" in box:
        raise box["error"]
    return bool(box.get("ok"))
