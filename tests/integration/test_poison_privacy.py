"""Poison records on wa.privacy.requests (issue 18): the privacy processor dead-letters each one
with its reason on wa.privacy.dead (a record too large for a whole dead letter gets a cut-down
one) and completes the good request published right after it. A real broker of the test's own: other
tests read every record of wa.privacy.requests, and a compacted topic keeps these."""

from __future__ import annotations

import time

import pytest

from tests.integration.kafka_helpers import produce_one_by_one, read_all
from wapipe.avro import AvroSerde
from wapipe.privacy.processor import PrivacyProcessor
from wapipe.privacy.records import new_request
from tests.harness import dedicated_broker, make_settings
from wapipe.topics import PRIVACY_DEAD, PRIVACY_REQUESTS

pytestmark = pytest.mark.integration


def test_poison_privacy_requests_are_dead_lettered_and_the_next_request_completes(tmp_path, unique):
    with dedicated_broker(tmp_path) as provider:
        _poison_requests(make_settings(tmp_path / "state", kafka_bootstrap_servers=provider.bootstrap),
                         provider.bootstrap, unique)


def _poison_requests(settings, topics: str, unique: str) -> None:
    serde = AvroSerde()
    huge = b"\xde\xad" + unique.encode() + b"x" * (1_040_000 - 2 - len(unique))
    good = new_request("RESTRICTION", source="test", tenant_id=f"t-{unique}", subject_id=f"s-{unique}")
    produce_one_by_one(topics, PRIVACY_REQUESTS, [
        (f"poison-{unique}-1".encode(), huge), (f"poison-{unique}-2".encode(), b"not avro " + unique.encode()),
        (good.request_id.encode(), serde.encode("PrivacyRequest", good.to_avro(), topic=PRIVACY_REQUESTS))], partition=0)

    proc = PrivacyProcessor(settings, topics, group=f"privacy-poison-{unique}", check_interval_s=0.2).start()
    try:
        deadline = time.monotonic() + 30
        while getattr(proc.registry.get(good.request_id), "status", None) != "COMPLETED":
            assert time.monotonic() < deadline, "the request after the poison ones was not completed"
            proc.tick()
            time.sleep(0.2)
    finally:
        proc.close()
    dead = [serde.decode(m.value(), "DeadLetter") for m in read_all(topics, PRIVACY_DEAD)]
    mine = {d["key"]: d for d in dead if d["source_topic"] == PRIVACY_REQUESTS
            and d["key"] in (f"poison-{unique}-1".encode(), f"poison-{unique}-2".encode())}
    assert len(mine) == 2, dead
    cut, small = mine[f"poison-{unique}-1".encode()], mine[f"poison-{unique}-2".encode()]
    assert cut["headers"]["cut"] and int(cut["headers"]["value_bytes"]) == len(huge)
    assert huge.startswith(cut["value"]) and len(cut["value"]) < len(huge) and "not an Avro record" in cut["reason"]
    assert small["offset"] == cut["offset"] + 1 and small["error_type"] == "SerdeError"
    assert small["value"] == b"not avro " + unique.encode()
