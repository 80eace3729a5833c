"""wapipe.messages.events: a decoded record missing a required field is refused (KeyError, a
follower's unreadable record). Round trips of every version read: tests/unit/test_messages.py."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from tests.unit.test_messages import SERDE, records
from wapipe.messages.events import AccountEvent, InboundMessage, StatusEvent, SubjectLink, Suppression

EVENTS = [("StatusEvent", StatusEvent), ("InboundMessage", InboundMessage), ("AccountEvent", AccountEvent),
          ("Suppression", Suppression), ("SubjectLink", SubjectLink)]


@pytest.mark.parametrize("name, cls", EVENTS, ids=[n for n, _ in EVENTS])
def test_a_record_missing_a_required_field_is_refused(name, cls):
    required = [f["name"] for f in SERDE.store.latest(name).schema["fields"] if "default" not in f]

    @settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(records(SERDE.store.latest(name).schema))
    def check(record):
        for f in required:
            with pytest.raises(KeyError):
                cls.from_avro({k: v for k, v in record.items() if k != f})

    check()
