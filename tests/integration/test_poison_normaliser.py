"""Poison records on wa.webhook.raw (issue 18): each is dead-lettered with its reason, and the good
webhook published right after it is still normalised; one bad item of a webhook costs only that
item (issue 20). Real broker, `wapipe normalise` as a subprocess."""

from __future__ import annotations

import copy
import json
import os
import time

import pytest

from tests.integration.kafka_helpers import produce_one_by_one
from tests.integration.test_normalise_service import FIXTURES, _mine, _raw, _Service
from wapipe.avro import AvroSerde
from wapipe.topics import STATUS_EVENTS, WEBHOOK_DEAD, WEBHOOK_RAW

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _status_doc(pnid: str, waba: str, wamids: list[str]) -> dict:
    doc = json.loads((FIXTURES / "status_failed.json").read_text())
    doc["entry"][0]["id"] = waba
    v = doc["entry"][0]["changes"][0]["value"]
    v["metadata"]["phone_number_id"] = pnid
    v["statuses"] = [{**copy.deepcopy(v["statuses"][0]), "id": w} for w in wamids]
    return doc


def test_poison_webhooks_are_dead_lettered_and_the_next_one_is_normalised(topics, tmp_path, unique):
    bootstrap = topics
    serde = AvroSerde()
    pnid, waba = f"7{int(unique, 16) % 10**12}", f"6{int(unique, 16) % 10**12}"

    def good(n: int) -> bytes:
        return _raw(serde, json.dumps(_status_doc(pnid, waba, [f"wamid.good{n}"])).encode())

    big_code = _status_doc(pnid, waba, ["wamid.bigcode"])
    big_code["entry"][0]["changes"][0]["value"]["statuses"][0]["errors"][0]["code"] = 2**63
    huge = _raw(serde, b"x" * 1_039_800)  # ~1,040,000 bytes: its dead letter was too large for Kafka on main
    assert 1_039_800 < len(huge) < 1_048_000
    mixed = _status_doc(pnid, waba, [f"wamid.mixed{i}" for i in range(4)])
    mixed["entry"][0]["changes"][0]["value"]["statuses"][2]["timestamp"] = "asdf"
    group = _status_doc(pnid, waba, ["wamid.group"])  # issue 20: a group's status is no poison
    group["entry"][0]["changes"][0]["value"]["statuses"][0].update(recipient_type="group", recipient_id="grp-AbCd")
    field_list = _status_doc(pnid, waba, ["wamid.fieldlist"])
    field_list["entry"][0]["changes"][0]["field"] = []
    records = [
        _raw(serde, json.dumps(big_code).encode()), good(1),
        huge, good(2),
        _raw(serde, json.dumps(field_list).encode()), good(3),
        _raw(serde, json.dumps(mixed).encode()), good(4),
        _raw(serde, json.dumps(group).encode()),
    ]
    produce_one_by_one(bootstrap, WEBHOOK_RAW, [(pnid.encode(), v) for v in records])  # one key: one partition

    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "WAPIPE_STATE_DIR": str(tmp_path / "state"),
           "WAPIPE_NORMALISE_APP_ID": f"normalise-{unique}", "WAPIPE_TOPIC_PARTITIONS": "4"}
    svc = _Service(env, tmp_path / "normalise.log")
    try:
        statuses = _mine(bootstrap, STATUS_EVENTS, serde, "StatusEvent", lambda r: r["phone_number_id"] == pnid, 8)
        dead = _mine(bootstrap, WEBHOOK_DEAD, serde, "DeadLetter", lambda r: r["key"] == pnid.encode(), 4)
        time.sleep(2)
        statuses = _mine(bootstrap, STATUS_EVENTS, serde, "StatusEvent", lambda r: r["phone_number_id"] == pnid, 8, 1)
        dead = _mine(bootstrap, WEBHOOK_DEAD, serde, "DeadLetter", lambda r: r["key"] == pnid.encode(), 4, 1)
    finally:
        svc.stop()
    log = (tmp_path / "normalise.log").read_text()

    # the pipeline keeps no wamid in clear: status events carry its keyed reference (wapipe/privacy/wamids.py)
    from wapipe.privacy.wamids import WamidRefs
    from tests.harness import make_settings

    ref = WamidRefs.from_settings(make_settings(tmp_path / "state", kafka_bootstrap_servers=bootstrap))
    assert sorted(r["wamid"] for r in statuses) == sorted(ref(w) for w in (
        [f"wamid.good{n}" for n in (1, 2, 3, 4)] + ["wamid.mixed0", "wamid.mixed1", "wamid.mixed3", "wamid.group"]
    )), log[-3000:]
    [grp] = [r for r in statuses if r["wamid"] == ref("wamid.group")]
    assert grp["recipient_type"] == "group" and grp["subject_id"] is None and grp["pii"] is None
    assert len(dead) == 4, [d["reason"] for d in dead]
    by_offset = sorted(dead, key=lambda d: d["offset"])
    first = by_offset[0]["offset"]
    assert [d["offset"] - first for d in by_offset] == [0, 2, 4, 6]  # the poison ones, each once
    code, cut, field, item = by_offset
    assert "code" in code["reason"] and "statuses[0]" in code["reason"] and code["headers"]["path"]
    assert cut["reason"] == "body is not valid JSON" and cut["source_topic"] == WEBHOOK_RAW
    # wa.webhook.dead takes a whole raw record plus the dead letter's envelope (wapipe/topics.py):
    # written whole; a smaller topic would have got it cut down (tests of the other consumers)
    assert cut["value"] == huge and "cut" not in cut["headers"]
    assert "field" in field["reason"] and field["headers"]["path"] == "entry[0].changes[0]"
    assert item["headers"]["path"] == "entry[0].changes[0].value.statuses[2]" and "timestamp" in item["reason"]
    assert json.loads(item["value"])["id"] == "wamid.mixed2"
