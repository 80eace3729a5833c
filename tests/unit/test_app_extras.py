"""Optional extras (pyproject: `report`, `docker`): without them the app says what to install, or
falls back, instead of a traceback."""

from __future__ import annotations

import subprocess
import sys

from wapipe.app.stack.docker import ContainerBroker, docker_engine_available
from wapipe.net import free_port

import pytest


def report_without_plotly(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """`wapipe report ARGS` with plotly unimportable (None in sys.modules), as on an install
    without the extra; ClickHouse at a port nothing listens on."""
    code = ("import sys; sys.modules['plotly'] = None; sys.argv = ['wapipe', 'report', *sys.argv[1:]]; "
            "from wapipe.app.cli import main; main()")
    env = {"PATH": "/usr/bin:/bin", "WAPIPE_STATE_DIR": str(tmp_path), "COLUMNS": "200",
           "CLICKHOUSE_URL": f"http://127.0.0.1:{free_port()}/db"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60, env=env)


def test_html_report_without_plotly_says_which_extra(tmp_path):
    p = report_without_plotly(tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "pip install 'wapipe[report]' (or --no-html)" in p.stderr
    assert "Traceback" not in p.stderr


def test_terminal_report_needs_no_plotly_and_a_dead_clickhouse_is_a_message(tmp_path):
    p = report_without_plotly(tmp_path, "--no-html")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "reading ClickHouse (http://127.0.0.1:" in p.stderr and "plotly" not in p.stderr
    assert "Traceback" not in p.stderr


def test_no_docker_extra_means_no_container_broker(monkeypatch):
    monkeypatch.setitem(sys.modules, "docker", None)
    assert docker_engine_available() is False
    monkeypatch.setitem(sys.modules, "testcontainers.kafka", None)
    with pytest.raises(RuntimeError, match=r"pip install 'wapipe\[docker\]'"):
        ContainerBroker(version="4.0.0").start()
