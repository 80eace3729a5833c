"""`wapipe tenants follow` and `wapipe tenants serve` as the supervisor runs them: subprocesses that
print READY, work, and stop cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

WAPIPE = str(Path(sys.executable).with_name("wapipe"))


def start(args, env):
    p = subprocess.Popen([WAPIPE, "tenants", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    lines = []
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("READY"):
            return p, line.split(None, 1)[1].strip()
    p.kill()
    p.wait()
    raise AssertionError("no READY line:\n" + "".join(lines))


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
