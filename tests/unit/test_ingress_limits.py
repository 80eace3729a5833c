"""The ingress body limit and the webhook topics' max.message.bytes come from one setting and agree."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from producers.ingress.limits import body_limit
from wapipe.config import Settings
from wapipe.topics import (
    KAFKA_DEFAULT_MAX_MESSAGE_BYTES,
    WEBHOOK_DEAD,
    WEBHOOK_ENVELOPE_BYTES,
    WEBHOOK_RAW,
    desired_configs,
    spec,
)


def _applied(s: Settings) -> dict[str, int]:
    return {t: int(desired_configs(spec(t), s)["max.message.bytes"]) for t in (WEBHOOK_RAW, WEBHOOK_DEAD)}


@settings(max_examples=200, deadline=None)
@given(max_body=st.integers(min_value=1024, max_value=64 * 1024 * 1024))
def test_applied_topics_store_every_body_the_ingress_accepts(max_body):
    s = Settings(ingress_max_body_bytes=max_body)
    topics = _applied(s)
    assert body_limit(s, topics) == max_body  # the topics never lower the ingress's limit
    assert topics[WEBHOOK_RAW] >= max(max_body + WEBHOOK_ENVELOPE_BYTES, KAFKA_DEFAULT_MAX_MESSAGE_BYTES)
    assert topics[WEBHOOK_DEAD] >= topics[WEBHOOK_RAW] + WEBHOOK_ENVELOPE_BYTES


def test_the_default_takes_metas_3_mb():
    s = Settings()
    assert s.ingress_max_body_bytes >= 3 * 1024 * 1024
    assert _applied(s)[WEBHOOK_RAW] > 3 * 1024 * 1024


def test_topics_made_smaller_lower_the_ingress_limit_never_raise_it():
    s = Settings(ingress_max_body_bytes=8 * 1024 * 1024)
    defaults = _applied(Settings())  # topics applied with the default setting
    assert body_limit(s, defaults) == Settings().ingress_max_body_bytes
    assert body_limit(s, {WEBHOOK_RAW: KAFKA_DEFAULT_MAX_MESSAGE_BYTES}) == KAFKA_DEFAULT_MAX_MESSAGE_BYTES - WEBHOOK_ENVELOPE_BYTES
    assert body_limit(s, {}) == 8 * 1024 * 1024
    assert body_limit(Settings(ingress_max_body_bytes=2048), defaults) == 2048
