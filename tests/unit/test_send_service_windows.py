"""ServiceWindows (processors/send/views.py): the last inbound message per (number, subject) from
decoded InboundMessage records; a record that is not one raises (the follower counts it) and
changes nothing."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.send.views import ServiceWindows
from wapipe.messages.events import InboundMessage
from wapipe.messages.send import Sealed

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def _inbound(pnid: str, subject: str, at_s: int, tenant: str = "acme") -> dict:
    at = T0 + dt.timedelta(seconds=at_s)
    return InboundMessage(event_id=f"e{pnid}{subject}{at_s}", tenant_id=tenant, waba_id="w", phone_number_id=pnid,
                          message_id="wref.m", type="text", timestamp=at, subject_id=subject,
                          pii=Sealed(f"{subject}/k", b"n" * 12, b"c"), received_at=at).to_avro()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["1", "2"]), st.sampled_from(["s1", "s2"]), st.integers(0, 10**6)),
                max_size=20))
def test_the_latest_inbound_per_number_and_subject_wins_in_any_order(seen):
    w = ServiceWindows(86400)
    for pnid, subject, at in seen:
        w.apply(_inbound(pnid, subject, at))
    for pnid in ("1", "2"):
        for subject in ("s1", "s2"):
            ats = [a for p, s, a in seen if (p, s) == (pnid, subject)]
            want = int((T0 + dt.timedelta(seconds=max(ats))).timestamp() * 1000) if ats else None
            assert w.last_inbound(pnid, subject) == want


@pytest.mark.parametrize("field", ["phone_number_id", "subject_id", "timestamp"])
def test_a_record_that_is_not_an_inbound_message_raises_and_changes_nothing(field):
    w = ServiceWindows(86400)
    w.apply(_inbound("1", "s1", 5))
    bad = _inbound("1", "s1", 50)
    del bad[field]
    with pytest.raises(KeyError):
        w.apply(bad)
    assert w.last_inbound("1", "s1") == int((T0 + dt.timedelta(seconds=5)).timestamp() * 1000)
