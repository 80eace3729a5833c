"""Poison records on wa.account.events (issue 18): `wapipe tenants follow` dead-letters each one
with its reason (a record too large for a whole dead letter gets a cut-down one), keeps running,
and applies the good event published right after it. Real broker, the Meta sandbox."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from tests.integration.kafka_helpers import produce_one_by_one, read_all
from tests.integration.test_tenants_lifecycle import (  # noqa: F401  (fixtures)
    dispatcher_view,
    eventually,
    follower,
    publish_account_event,
    service,
    tenant,
    world,
)
from wapipe.avro import AvroSerde
from wapipe.tenants.models import TenantStatus
from wapipe.topics import ACCOUNT_EVENTS, TENANTS_DEAD

pytestmark = pytest.mark.integration


def test_poison_account_events_are_dead_lettered_and_the_next_event_is_applied(  # noqa: F811
        tenant, world, follower, dispatcher_view, topics, unique):
    serde = AvroSerde()
    huge = b"\xde\xad" + unique.encode() + b"x" * (1_040_000 - 2 - len(unique))
    now = dt.datetime.now(dt.timezone.utc)
    bad_template = {  # decodes, but its template name is a list: applying it raises
        "event_id": f"bad-{unique}", "tenant_id": tenant.tenant_id, "waba_id": world["waba"], "phone_number_id": None,
        "field": "message_template_status_update", "event": "APPROVED", "timestamp": now, "received_at": now,
        "value": json.dumps({"event": "APPROVED", "message_template_name": ["invoice_due"],
                             "message_template_language": "en_US"})}
    key = world["waba"].encode()
    produce_one_by_one(topics, ACCOUNT_EVENTS, [
        (key, huge), (key, serde.encode("AccountEvent", bad_template, topic=ACCOUNT_EVENTS))])
    # the good event right after them: the business removed our app, the tenant is disconnected
    publish_account_event(topics, dispatcher_view, world["waba"], "account_update",
                          {"event": "PARTNER_REMOVED", "waba_info": {"waba_id": world["waba"]}})
    t = eventually(lambda: (x := dispatcher_view.tenant(tenant.tenant_id)) and x.status == TenantStatus.DISCONNECTED
                   and x, timeout=30)
    assert t.token is None

    def mine():
        dead = [serde.decode(m.value(), "DeadLetter") for m in read_all(topics, TENANTS_DEAD)]
        return [d for d in dead if d["source_topic"] == ACCOUNT_EVENTS and d["key"] == key] or None

    dead = sorted(eventually(lambda: (d := mine()) and len(d) >= 2 and d), key=lambda d: d["offset"])
    assert len(dead) == 2
    cut, bad = dead
    assert cut["headers"]["cut"] and int(cut["headers"]["value_bytes"]) == len(huge)
    assert huge.startswith(cut["value"]) and len(cut["value"]) < len(huge) and "not an Avro record" in cut["reason"]
    assert bad["offset"] == cut["offset"] + 1 and bad["error_type"] == "ValidationError"
    assert bad["tenant_id"] == tenant.tenant_id and "name" in bad["reason"]
