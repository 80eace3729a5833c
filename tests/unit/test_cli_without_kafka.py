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
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "WAPIPE_", "CLICKHOUSE_"))}
    env.update(WAPIPE_STATE_DIR=str(tmp_path / "state"), WAPIPE_PROBE_ENABLED="false",
               WAPIPE_META_APPS=json.dumps({"1": "app-secret"}))
    p = subprocess.run([sys.executable, "-m", "wapipe", *command], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "error: no Kafka: run `wapipe stack up` or set KAFKA_BOOTSTRAP_SERVERS" in p.stderr, p.stdout + p.stderr
    assert "Traceback" not in p.stdout + p.stderr
