"""The ERP SDK rides out a broker restart: `publish` waits for the broker to come back instead of
failing after 30 s, and every command is on the topic exactly once (idempotent producer)."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from producers.erp import ErpProducer, Lane, Routing, template
from tests.integration.kafka_helpers import read_all
from wapipe.avro import AvroSerde
from tests.harness import dedicated_broker, make_settings
from wapipe.topics import SEND_REQUESTED_BULK

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_publish_waits_out_a_broker_restart_and_writes_each_command_once(tmp_path):
    with dedicated_broker(tmp_path / "broker") as provider:
        s = make_settings(tmp_path / "state", kafka_bootstrap_servers=provider.bootstrap)
        erp = ErpProducer.from_settings(s, provider.bootstrap)
        try:
            commands = [erp.command(template(f"49151{i:07d}", "promo"),
                                    Routing(tenant_id="t-erp", phone_number_id="4400", idempotency_key=f"k{i}",
                                            lane=Lane.CAMPAIGN, campaign_id="outage"))
                        for i in range(200)]
            assert erp.publish(commands[:100]) == 100
            provider._jvm.stop()
            box: dict = {}

            def publish() -> None:
                t0 = time.monotonic()
                try:
                    box["n"] = erp.publish(commands[100:])
                except Exception as exc:  # surfaced below
                    box["error"] = exc
                box["took"] = time.monotonic() - t0

            # publishing in a thread; the broker is started again from this (the main) thread: a
            # broker's parent-death signal fires when the thread that started it ends
            publisher = threading.Thread(target=publish)
            publisher.start()
            time.sleep(40)  # longer than librdkafka's old 30 s message timeout
            assert publisher.is_alive(), box
            provider._jvm.start()
            publisher.join(120)
            assert box.get("n") == 100, box
            assert box["took"] > 35  # it waited for the broker, it did not fail
        finally:
            erp.close()
        serde = AvroSerde()
        keys = Counter(serde.decode(m.value(), "SendCommand")["idempotency_key"]
                       for m in read_all(provider.bootstrap, SEND_REQUESTED_BULK))
        assert keys == Counter({f"k{i}": 1 for i in range(200)})
