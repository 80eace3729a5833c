"""`wapipe tenants follow` and `wapipe tenants serve` as the supervisor runs them: subprocesses that
print READY, work, and stop cleanly on SIGTERM."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

WAPIPE = str(Path(sys.executable).with_name("wapipe"))


def start(args, env, *, group=("tenants",), timeout=90.0):
    """Run ``wapipe <group> <args>`` in its own session; return (process, what its READY line names).
    A reader thread keeps draining its output, so a chatty service never blocks on a full pipe."""
    p = subprocess.Popen([WAPIPE, *group, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=env, start_new_session=True)
    lines: queue.Queue = queue.Queue()
    seen: list[str] = []
    threading.Thread(target=lambda: [lines.put(line) for line in p.stdout] + [lines.put(None)], daemon=True).start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            seen.append(line)
            m = re.search(r"READY (\S+)", line)  # a service may put terminal escapes before it
            if m:
                return p, m.group(1)
    except BaseException:  # interrupted (e.g. pytest-timeout): never leave the service running
        p.kill()
        p.wait()
        raise
    p.kill()
    p.wait()
    raise AssertionError(f"wapipe {' '.join([*group, *args])}: no READY line within {timeout:.0f}s:\n"
                         + "".join(seen[-40:]))


def stop(p):
    try:
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.fixture
def env(settings, topics):
    return {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": topics, "WAPIPE_STATE_DIR": str(settings.state_dir),
            "WAPIPE_OPERATOR_API_KEY": "svc-op-key"}


def test_follow_starts_and_stops_cleanly(env):
    p, name = start(["follow"], env)
    assert name == "tenants-follow"
    stop(p)


def test_serve_answers_with_the_operator_key(env):
    p, url = start(["serve"], env)
    try:
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{url}/admin/tenants", timeout=10).status_code == 401
        r = httpx.get(f"{url}/admin/tenants", headers={"Authorization": "Bearer svc-op-key"}, timeout=10)
        assert r.status_code == 200 and isinstance(r.json(), list)
    finally:
        stop(p)
