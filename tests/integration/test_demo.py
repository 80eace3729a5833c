"""`wapipe demo` end to end with a small workload, as a subprocess against the session's broker:
it finishes, the report it read back from ClickHouse equals what the sandbox saw, and every
process it started is gone afterwards — also when it is stopped half-way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from wapipe.app.demo.plan import DemoPlan
from wapipe.app.stack.jvm import pid_alive
from wapipe.config import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def demo_env(tmp_path, kafka, unique) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "WAPIPE_STATE_DIR": str(tmp_path / "state"),
        "WAPIPE_REPORTS_DIR": str(tmp_path / "reports"),
        # Consumer groups / faust apps of their own on the shared session broker.
        "WAPIPE_SEND_APP_ID": f"demo-send-{unique}",
        "WAPIPE_NORMALISE_APP_ID": f"demo-normalise-{unique}",
        "WAPIPE_SINK_GROUP": f"demo-sink-{unique}",
        "COLUMNS": "160",
    })
    return env


def summary_of(tmp_path) -> dict:
    files = sorted((tmp_path / "state" / "demo").glob("summary-*.json"))
    assert files, "the demo wrote no summary"
    return json.loads(files[-1].read_text())


def assert_all_stopped(summary: dict) -> None:
    deadline = time.monotonic() + 10
    alive = {}
    while time.monotonic() < deadline:
        alive = {name: pid for name, pid in summary["pids"].items() if pid_alive(pid)}
        if not alive:
            return
        time.sleep(0.2)
    for pid in alive.values():  # do not leave them to the next test either
        os.kill(pid, signal.SIGKILL)
    pytest.fail(f"the demo left processes running: {alive}")


def test_demo_small_workload_report_equals_sandbox(tmp_path, topics, unique):
    env = demo_env(tmp_path, topics, unique)
    cmd = [sys.executable, "-m", "wapipe", "demo", "--messages", "300", "--transactional", "30", "--invalid", "6",
           "--failing", "6", "--duplicates", "4", "--timeout", "240"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=420)
    out = proc.stdout + proc.stderr
    summary = summary_of(tmp_path)
    assert_all_stopped(summary)
    assert proc.returncode == 0, out[-6000:]
    # Issue 18: the sandbox seed holds the tenants' tokens and the app secret: owner-only.
    seed = tmp_path / "state" / "demo" / "sandbox-seed.json"
    assert seed.stat().st_mode & 0o777 == 0o600 and seed.parent.stat().st_mode & 0o777 == 0o700

    report, seen, sandbox = summary["report_totals"], summary["sandbox_scope_totals"], summary["sandbox"]
    # What ClickHouse holds (the report) against what the simulated Meta saw and sent.
    assert report["requested"] == 300 + 30 + 6 + 4
    assert report["accepted"] == seen["accepted"] == 330  # a fresh pipeline: nothing left from earlier runs
    assert seen["accepted"] == sandbox["accepted"] == sum(n["accepted"] for n in sandbox["numbers"].values())
    assert seen["delivered"] == report["delivered"] == sandbox["statuses"].get("delivered", 0)
    assert seen["read"] == report["read"] == sandbox["statuses"].get("read", 0)
    assert seen["failed"] == sum(sandbox["failed_async"].values()) == 6
    assert report["rejected"] == 6 and report["duplicate"] == 4
    assert report["pending"] == 0
    assert summary["dead_letters"] == 3
    # No number was ever driven over its limit.
    limits = {t.phone_number_id: t.throughput for t in DemoPlan(partitions=Settings().topic_partitions).tenants()}
    assert set(limits) == set(sandbox["numbers"])
    for number, c in sandbox["numbers"].items():
        assert c["max_accepted_1s"] <= limits[number], (number, c)

    html = (tmp_path / "reports").glob("report-*.html")
    path = next(html)
    assert str(path) == summary["report"]
    assert f"HTML report: {path}" in out.replace("\n", "")


def test_demo_stopped_midway_leaves_nothing_running(tmp_path, topics, unique):
    env = demo_env(tmp_path, topics, unique)
    cmd = [sys.executable, "-m", "wapipe", "demo", "--messages", "3000", "--timeout", "300"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        seen = []
        for line in proc.stdout:  # stop it once the worker is up (services are running)
            seen.append(line)
            if line.strip().startswith("ok worker:"):
                break
            if time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    summary = summary_of(tmp_path)
    assert summary["exit_code"] == 130, "".join(seen)[-3000:] + (rest or "")[-3000:]
    assert len(summary["pids"]) >= 3
    assert_all_stopped(summary)
