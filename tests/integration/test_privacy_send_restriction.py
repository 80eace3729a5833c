"""Restriction honoured by the real send pipeline: a send to a restricted person is refused with a
clear result and never reaches Meta (the sandbox), while an unrestricted one is sent.
Uses the send pipeline's own world (worker process, sandbox, tenant) from its test module."""

from __future__ import annotations

from collections import Counter

import pytest

from producers.erp import template
from tests.integration.test_send_pipeline import send_world  # noqa: F401  (the fixture)
from wapipe.privacy.service import PrivacyService

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_send_to_a_restricted_person_is_refused_and_not_sent(send_world):  # noqa: F811
    w = send_world
    svc = PrivacyService(w.settings, w.bootstrap).start()
    try:
        req = svc.submit("RESTRICTION", tenant_id=w.tenant_id, wa_id=w.recipient(5), source="api")
        assert req.subject_id == w.subject(w.recipient(5))
    finally:
        svc.close()
    w.start_worker()
    w.send(template(w.recipient(5), "hello_world"), w.routing("restricted"))
    w.send(template(w.recipient(6), "hello_world"), w.routing("free"))
    final = w.final(["restricted", "free"])
    assert final["restricted"]["outcome"] == "REJECTED" and "restricted" in final["restricted"]["reason"], final
    assert final["free"]["outcome"] == "ACCEPTED", final
    assert w.sent_by_key() == Counter({f"{w.tenant_id}/free": 1})
