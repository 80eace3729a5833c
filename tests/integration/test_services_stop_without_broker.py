"""SIGTERM ends every service within 10 s, also when its broker is gone: an orchestrator's stop
must not hang on a Kafka client waiting a minute for a broker that is not coming back."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from wapipe.app.services import Supervisor, pipeline_services
from tests.harness import dedicated_broker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# the normaliser last: its Faust consumer hung on a broker lost shortly after it joined (60 s and more)
SERVICES = ("sink", "tenants-follow", "privacy", "erp-inbound", "worker", "normalise")


def test_every_service_stops_within_10_s_of_sigterm_with_the_broker_gone(tmp_path):
    with dedicated_broker(tmp_path / "broker") as provider:
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": provider.bootstrap, "WAPIPE_STATE_DIR": str(tmp_path / "state")}
        with Supervisor(tmp_path / "logs", env=env) as sup:
            specs = {c.spec.name: c.spec for c in pipeline_services()}
            running = [sup.start(specs[name]) for name in SERVICES]
            time.sleep(1)
            provider._jvm.stop()
            time.sleep(2)
            t0 = time.monotonic()
            for svc in running:  # all at once, as `docker compose stop` does
                os.killpg(svc.proc.pid, signal.SIGTERM)
            took = {}
            for svc in running:
                try:
                    svc.proc.wait(max(0.1, 10 - (time.monotonic() - t0)))
                    took[svc.spec.name] = round(time.monotonic() - t0, 1)
                except subprocess.TimeoutExpired:
                    took[svc.spec.name] = None
            assert all(t is not None for t in took.values()), took
            assert all(svc.proc.returncode == 0 for svc in running), {s.spec.name: s.proc.returncode for s in running}
