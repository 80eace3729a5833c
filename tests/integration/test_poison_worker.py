"""Poison records on wa.send.requested (issue 18): the worker's intake dead-letters each one with
its reason (a record too large for a whole dead letter gets a cut-down one) and handles the good
command published right after it. Real broker, the Meta sandbox, `wapipe worker` as a subprocess."""

from __future__ import annotations

import time
import uuid

import pytest

from producers.erp import template
from tests.integration.kafka_helpers import produce_one_by_one
from tests.integration.test_send_pipeline import _dead_letters, send_world  # noqa: F401  (fixture)
from wapipe.topics import SEND_REQUESTED

pytestmark = pytest.mark.integration


def test_poison_commands_are_dead_lettered_and_the_next_command_is_handled(send_world):  # noqa: F811
    w = send_world
    w.start_worker()
    tag = uuid.uuid4().hex.encode()
    huge = b"\xde\xad" + tag + b"x" * (1_040_000 - 2 - len(tag))  # 1,040,000 garbage bytes
    small = b"not an avro record " + tag
    goods = [w.erp.command(template(w.recipient(i), "hello_world"), w.routing(f"after-poison-{i}")) for i in (1, 2)]
    key = w.tenant_id.encode()
    produce_one_by_one(w.bootstrap, SEND_REQUESTED, [(key, v) for v in (  # one key: one partition, in this order
        huge, w.erp.serde.encode("SendCommand", goods[0], topic=SEND_REQUESTED),
        small, w.erp.serde.encode("SendCommand", goods[1], topic=SEND_REQUESTED))])

    final = w.final(["after-poison-1", "after-poison-2"], timeout=90)
    assert {k: v["outcome"] for k, v in final.items()} == {"after-poison-1": "ACCEPTED", "after-poison-2": "ACCEPTED"}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        dead = [d for d in _dead_letters(w.bootstrap) if d["value"] and tag in d["value"]]
        if len(dead) >= 2:
            break
        time.sleep(0.5)
    assert len(dead) == 2, dead
    cut = next(d for d in dead if d["value"].startswith(b"\xde\xad"))
    whole = next(d for d in dead if d["value"] == small)
    assert cut["source_topic"] == SEND_REQUESTED and cut["error_type"] == "SerdeError" and cut["reason"]
    assert cut["headers"]["cut"] and int(cut["headers"]["value_bytes"]) == len(huge)
    assert huge.startswith(cut["value"]) and len(cut["value"]) < len(huge)
    assert whole["offset"] == cut["offset"] + 2 and "not an Avro record" in whole["reason"]
    assert w.worker.alive()
