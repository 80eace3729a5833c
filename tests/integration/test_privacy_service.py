"""`wapipe privacy run` as a real process: READY line, an erasure submitted with the CLI reaches
COMPLETED, SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys

import pytest

from tests.harness import make_settings
from wapipe.topics import SUBJECT_KEYS, WEBHOOK_DEAD, WEBHOOK_RAW, admin_client, apply_topics, spec

pytestmark = pytest.mark.integration

FAST = dict(erasure_deadline_ms=2000, erasure_old_parts_lifetime_s=1, compacted_segment_ms=200, min_cleanable_dirty_ratio=0.01,
            tombstone_retention_ms=100, raw_webhook_retention_ms=1500, raw_webhook_segment_ms=200)
TOPICS = tuple(spec(t) for t in (SUBJECT_KEYS, WEBHOOK_RAW, WEBHOOK_DEAD))


def test_privacy_run_completes_a_cli_erasure_and_stops_on_sigterm(settings, topics, tmp_path, unique):
    admin = admin_client(topics)
    apply_topics(admin, settings.model_copy(update=FAST), TOPICS)
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": topics, "WAPIPE_STATE_DIR": str(settings.state_dir),
           "WAPIPE_JARS_DIR": str(settings.jars_dir), "WAPIPE_PRIVACY_CHECK_INTERVAL_S": "0.3",
           **{f"WAPIPE_{k.upper()}": str(v) for k, v in FAST.items()}}
    env.pop("CLICKHOUSE_URL", None)
    # stderr to a file: on a shared broker the processor also works through other tests' requests,
    # and an unread stderr pipe would fill up and block it.
    log_path = tmp_path / "privacy-run.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "wapipe", "privacy", "run", "--with-clickhouse"], env=env,
                                stdout=subprocess.PIPE, stderr=log_file, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 90)
        line = proc.stdout.readline() if ready else ""
        assert line.strip() == "READY privacy", log_path.read_text()[-3000:]
        r = subprocess.run([sys.executable, "-m", "wapipe", "privacy", "erase", "--tenant", f"t-{unique}",
                            "--wa-id", "15550101234", "--wait", "90"], env=env, capture_output=True, text=True, timeout=150)
        assert r.returncode == 0, r.stderr + log_path.read_text()[-3000:]
        out = json.loads(r.stdout)
        assert out["status"] == "COMPLETED", out
        assert set(out["steps"].values()) == {"done"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        apply_topics(admin, make_settings(tmp_path / "restore", kafka_bootstrap_servers=topics), TOPICS)
