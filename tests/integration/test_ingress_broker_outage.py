"""Broker down → the ingress answers 503 quickly (Meta retries), never 200 for an unwritten event;
after the broker is back, every webhook that got a 200 is on the topic exactly once.

Uses a DEDICATED broker (its own JVM, ports and data folder) so stopping it leaves the session's
broker alone; it is restarted on the same ports and data folder, as an operator's broker would be.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import httpx
import pytest

from connectors.meta.signature import sign
from producers.ingress.process import IngressProcess, wait_until
from tests.integration.kafka_helpers import read_all
from wapipe.avro import AvroSerde
from tests.harness import dedicated_broker
from wapipe.topics import WEBHOOK_RAW

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "outage-secret"


@pytest.fixture
def own_broker(tmp_path):
    with dedicated_broker(tmp_path, topic_partitions=2) as provider:
        yield provider


def body_for(n: int, tag: str) -> bytes:
    return json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{
        "field": "messages", "value": {"messaging_product": "whatsapp",
                                       "metadata": {"display_phone_number": "1555", "phone_number_id": f"PN{n % 3}"},
                                       "statuses": [{"id": f"wamid.{tag}.{n}", "status": "sent",
                                                     "timestamp": "1750000000", "recipient_id": "4915100000"}]}}]}]}
    ).encode()


# Which bound answers first: librdkafka's message.timeout.ms (600 < deadline 850), or the
# ingress's own deadline (850 < message.timeout.ms 5000).
BOUNDS = {"message_timeout": {"WAPIPE_INGRESS_PUBLISH_TIMEOUT_MS": "600", "WAPIPE_INGRESS_DEADLINE_MS": "850"},
          "deadline": {"WAPIPE_INGRESS_PUBLISH_TIMEOUT_MS": "5000", "WAPIPE_INGRESS_DEADLINE_MS": "850"}}


@pytest.mark.parametrize("bound", sorted(BOUNDS))
def test_broker_outage_gives_503_fast_and_no_acked_event_is_lost_or_doubled(own_broker, tmp_path, bound):
    env = {"KAFKA_BOOTSTRAP_SERVERS": own_broker.bootstrap, "WAPIPE_META_APPS": json.dumps({"app": SECRET}),
           "WAPIPE_LOG_LEVEL": "INFO", **BOUNDS[bound]}
    acked: list[str] = []
    refused: list[str] = []
    with IngressProcess(env, log_path=tmp_path / "ingress.log") as ing, \
            httpx.Client(base_url=ing.url, timeout=10) as http:

        def send(n: int, tag: str) -> tuple[int, float]:
            body = body_for(n, tag)
            t = time.monotonic()
            r = http.post("/webhook", content=body, headers={"x-hub-signature-256": sign(SECRET.encode(), body)})
            (acked if r.status_code == 200 else refused).append(f"wamid.{tag}.{n}")
            return r.status_code, time.monotonic() - t

        assert wait_until(lambda: http.get("/readyz").status_code == 200, 20)
        assert [send(n, "before")[0] for n in range(20)] == [200] * 20

        own_broker._jvm.stop()  # the dedicated broker only; ports and data folder are kept
        during = [send(n, "during") for n in range(5)]
        assert [code for code, _ in during] == [503] * 5
        # well under Meta's timeout, and far from the 5 s the deadline cuts short (a loaded 2-core
        # machine adds a few hundred ms to the 600/850 ms bounds)
        assert max(elapsed for _, elapsed in during) < 2.5, during
        assert http.get("/readyz").status_code == 503

        own_broker._jvm.start(timeout=60)  # same ports, same data folder
        assert wait_until(lambda: http.get("/readyz").status_code == 200, 30)
        # Meta retries what it did not get a 200 for; the producer recovers without a restart.
        codes = [send(n, "after")[0] for n in range(20)]
        assert codes.count(200) == 20, codes
        metrics = http.get("/metrics").text
        assert 'outcome="unavailable"} 5.0' in metrics

    serde = AvroSerde()
    on_topic = Counter()
    for m in read_all(own_broker.bootstrap, WEBHOOK_RAW, timeout=30):
        status = json.loads(serde.decode(m.value(), "RawWebhook")["body"])["entry"][0]["changes"][0]["value"]["statuses"][0]
        on_topic[status["id"]] += 1
    assert len(acked) == 40
    missing = [w for w in acked if on_topic[w] == 0]
    doubled = [w for w in acked if on_topic[w] > 1]
    assert missing == [] and doubled == [], (missing, doubled)
