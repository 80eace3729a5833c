"""Every long-running service answers /healthz, /readyz and /metrics (with its consumer lag),
and `wapipe health` reads them: the services run for real against the test broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from wapipe.app.services import Supervisor, pipeline_services

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROBED = {"sink": "wapipe-sink", "tenants-follow": "wapipe-tenants-follow", "normalise": "wapipe-normalise",
          "worker": "wapipe-send", "privacy": None}


def test_every_service_has_a_probe_and_wapipe_health_reads_them(topics, tmp_path):
    state = tmp_path / "state"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": topics, "WAPIPE_STATE_DIR": str(state),
           "WAPIPE_SEND_OFFSET_RESET": "latest", "WAPIPE_NORMALISE_OFFSET_RESET": "latest"}
    with Supervisor(tmp_path / "logs", env=env) as sup:
        for c in pipeline_services():
            if c.spec.name in PROBED:
                sup.start(c.spec)
        urls = {}
        for name in PROBED:
            doc = json.loads((state / "probes" / f"{name}.json").read_text())
            assert doc["pid"] == sup.get(name).pid
            urls[name] = doc["url"]
            assert doc["url"].startswith("http://127.0.0.1:")
        deadline = time.monotonic() + 30
        ready = {}
        while time.monotonic() < deadline and len(ready) < len(urls):
            for name, url in urls.items():
                if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                    ready[name] = True
            time.sleep(0.5)
        assert set(ready) == set(urls), {n: httpx.get(u + "/readyz", timeout=5).text for n, u in urls.items()}
        for name, group in PROBED.items():
            assert httpx.get(urls[name] + "/healthz", timeout=5).status_code == 200
            metrics = httpx.get(urls[name] + "/metrics", timeout=10).text
            assert "process_cpu_seconds_total" in metrics
            if group:
                assert f'wapipe_consumer_lag{{group="{group}"' in metrics, name
        # issue 21 #3: the erasure backlog on the privacy service; dead letters by reason on each service
        privacy = httpx.get(urls["privacy"] + "/metrics", timeout=10).text
        for gauge in ("wapipe_erasure_open_requests", "wapipe_erasure_oldest_age_seconds",
                      "wapipe_erasure_overdue_requests"):
            assert f"\n{gauge} " in privacy, gauge
        from wapipe.kafka import producer
        from wapipe.topics import STATUS_EVENTS

        p = producer(topics)
        p.produce(STATUS_EVENTS, key=b"poison", value=b"\x00 not an Avro record")
        assert p.flush(10) == 0
        counted = 'wapipe_dead_letters_total{reason="SerdeError",service="sink"}'
        deadline = time.monotonic() + 60
        while counted not in (sink := httpx.get(urls["sink"] + "/metrics", timeout=10).text):
            assert time.monotonic() < deadline, sink[-3000:]
            time.sleep(0.5)
        run = subprocess.run([sys.executable, "-m", "wapipe", "health", "--ready"], env=env, capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        assert all(f"{name}: ok" in run.stdout for name in PROBED)
        # a service that is gone is reported when asked for, and the check fails
        sup.stop(sup.get("privacy"))
        run = subprocess.run([sys.executable, "-m", "wapipe", "health", "privacy", "sink"], env=env,
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 1 and "privacy: not running" in run.stdout and "sink: ok" in run.stdout, run.stdout
    assert not list((state / "probes").glob("*.json"))  # each service removed its file on SIGTERM
