"""`wapipe up` rides out a broker restart: the whole pipeline runs as an operator runs it, signed
webhooks keep coming, the broker goes away for 10 s and comes back on its address. No service
dies, every webhook the ingress acknowledged lands in ClickHouse once, and traffic flows again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from connectors.meta.signature import sign
from sinks.reader import open_reader
from wapipe.net import free_port
from wapipe.privacy.wamids import WamidRefs
from tests.harness import dedicated_broker, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "up-restart-secret"


def _body(tag: str, n: int) -> bytes:
    return json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "WABA-UP", "changes": [{
        "field": "messages", "value": {"messaging_product": "whatsapp",
                                       "metadata": {"display_phone_number": "1555", "phone_number_id": f"77{n % 3}"},
                                       "statuses": [{"id": f"wamid.{tag}.{n}", "status": "sent",
                                                     "timestamp": str(int(time.time())),
                                                     "recipient_id": "4915100000"}]}}]}]}).encode()


class _Output:
    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        threading.Thread(target=lambda: [self.lines.append(line) for line in proc.stdout], daemon=True).start()

    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, needle: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text():
                return True
            time.sleep(0.2)
        return False


def test_wapipe_up_rides_out_a_broker_restart(tmp_path):
    tag = f"t{os.getpid()}{int(time.time())}"
    with dedicated_broker(tmp_path / "broker") as provider:
        state = tmp_path / "state"
        port = free_port()
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": provider.bootstrap, "WAPIPE_STATE_DIR": str(state),
               "WAPIPE_META_APPS": json.dumps({"app": SECRET}), "WAPIPE_SINK_BATCH_MS": "300",
               "COLUMNS": "200"}
        up = subprocess.Popen([sys.executable, "-m", "wapipe", "up", "--ingress-port", str(port)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        out = _Output(up)
        acked: list[int] = []
        sending = threading.Event()
        try:
            assert out.wait_for("wapipe is up", 240), out.text()[-4000:]
            url = f"http://127.0.0.1:{port}/webhook"

            def send() -> None:
                n = 0
                with httpx.Client(timeout=5) as http:
                    while sending.is_set():
                        body = _body(tag, n)
                        try:
                            r = http.post(url, content=body, headers={"X-Hub-Signature-256": sign(SECRET.encode(), body),
                                                                      "Content-Type": "application/json"})
                            if r.status_code == 200:
                                acked.append(n)
                        except httpx.HTTPError:
                            pass
                        n += 1
                        time.sleep(0.02)

            sending.set()
            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            time.sleep(5)
            before = len(acked)
            provider._jvm.stop()
            time.sleep(10)
            provider._jvm.start()
            time.sleep(20)
            sending.clear()
            sender.join(10)
            assert before > 0 and len(acked) > before + 50, (before, len(acked))  # traffic flows again

            settings = make_settings(state, kafka_bootstrap_servers=provider.bootstrap)
            reader = open_reader(settings)
            want = len(set(acked))
            # the pipeline keeps the wamids' keyed refs, never the wamids (docs/privacy.md, issue 18)
            ref = WamidRefs.from_settings(settings)
            refs = sorted({ref(f"wamid.{tag}.{n}") for n in acked})

            def landed() -> tuple[int, int]:
                return reader.query("SELECT count(), uniqExact(wamid) FROM status_events FINAL "
                                    "WHERE wamid IN {refs:Array(String)}", {"refs": refs})[0]

            deadline = time.monotonic() + 120
            while landed()[1] < want and time.monotonic() < deadline:
                time.sleep(1)
            count, unique = landed()
            assert unique == want and count == want, (count, unique, want)
            assert "exited with code" not in out.text(), out.text()[-4000:]
        finally:
            sending.clear()
            if up.poll() is None:
                os.killpg(up.pid, signal.SIGTERM)
                try:
                    up.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(up.pid, signal.SIGKILL)
                    up.wait(10)
