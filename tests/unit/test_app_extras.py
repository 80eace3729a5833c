"""Optional extras (pyproject: `report`, `docker`): without them the app says what to install, or
falls back, instead of a traceback."""

from __future__ import annotations

import subprocess
import sys

from wapipe.app.stack.docker import ContainerBroker, docker_engine_available

import pytest


def test_report_without_plotly_says_which_extra(tmp_path):
    # plotly made unimportable in the child (None in sys.modules), as on an install without the extra.
    code = ("import sys; sys.modules['plotly'] = None; sys.argv = ['wapipe', 'report', '--no-html']; "
            "from wapipe.app.cli import main; main()")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={"PATH": "/usr/bin:/bin", "WAPIPE_STATE_DIR": str(tmp_path)})
    assert p.returncode == 1, p.stdout + p.stderr
    assert "pip install 'wapipe[report]'" in p.stderr
    assert "Traceback" not in p.stderr


def test_no_docker_extra_means_no_container_broker(monkeypatch):
    monkeypatch.setitem(sys.modules, "docker", None)
    assert docker_engine_available() is False
    monkeypatch.setitem(sys.modules, "testcontainers.kafka", None)
    with pytest.raises(RuntimeError, match=r"pip install 'wapipe\[docker\]'"):
        ContainerBroker(version="4.0.0").start()
