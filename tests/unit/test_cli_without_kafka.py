"""Every command that needs Kafka, run with none configured and no `wapipe stack up` state: one
line saying what to do, exit code 1, no traceback (wapipe/app/bootstrap.py: bootstrap_or_exit)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

COMMANDS = [("topics", "apply"), ("sink",), ("normalise",), ("worker",), ("erp", "inbound"), ("media", "fetch"),
            ("tenants", "follow"), ("tenants", "serve"), ("privacy", "run"), ("ingress", "--port", "0"), ("up",)]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_no_kafka_is_one_clear_line(tmp_path, command):
    env = _env(tmp_path, WAPIPE_META_APPS=json.dumps({"1": "app-secret"}))
    p = subprocess.run([sys.executable, "-m", "wapipe", *command], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "error: no Kafka: run `wapipe stack up` or set KAFKA_BOOTSTRAP_SERVERS" in p.stderr, p.stdout + p.stderr
    assert "Traceback" not in p.stdout + p.stderr


def _env(tmp_path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "WAPIPE_", "CLICKHOUSE_"))}
    env.update(WAPIPE_STATE_DIR=str(tmp_path / "state"), WAPIPE_PROBE_ENABLED="false", **extra)
    return env


@pytest.mark.parametrize("command", [("media", "get", "--tenant", "t", "--event-id", "e", "--out", "x"),
                                     ("media", "sweep"), ("media", "fetch")], ids=" ".join)
def test_a_bad_media_url_is_one_clear_line(tmp_path, command):
    # the broker named is never reached: the store is opened first and refused
    env = _env(tmp_path, KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1", WAPIPE_MEDIA_URL="ftp://nowhere")
    p = subprocess.run([sys.executable, "-m", "wapipe", *command], env=env, capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "error: media URL 'ftp://nowhere'" in p.stderr and "Traceback" not in p.stdout + p.stderr


def test_an_unknown_log_level_is_a_usage_error(tmp_path):
    p = subprocess.run([sys.executable, "-m", "wapipe", "--log-level", "bogus", "health"], env=_env(tmp_path),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "bogus" in p.stderr and "Traceback" not in p.stdout + p.stderr


@pytest.mark.parametrize("option", [("ingress", "--server", "bogus"), ("ingress", "--port", "70000"),
                                    ("sandbox", "--port", "99999999")], ids=" ".join)
def test_a_bad_option_is_a_usage_error_before_anything_else(tmp_path, option):
    p = subprocess.run([sys.executable, "-m", "wapipe", *option], env=_env(tmp_path),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stdout + p.stderr  # a usage error, not "no Kafka" (exit 1)
    assert option[1] in p.stderr and "Traceback" not in p.stdout + p.stderr
