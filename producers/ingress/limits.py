"""The ingress's body limit against what the webhook topics really take.

``WAPIPE_INGRESS_MAX_BODY_BYTES`` sizes both the ingress and the topics (wapipe/topics.py), so they
agree once ``wapipe topics apply`` ran. On a cluster whose topics were made otherwise (or not
re-applied after the setting was raised), the ingress reads the topics' effective
``max.message.bytes`` at startup and lowers its own limit to what they can store: a body that could
never be written is refused with 413 from its ``Content-Length``, before it is read, and the
mismatch is logged as an error. Never raised above the setting.
"""

from __future__ import annotations

from confluent_kafka.admin import AdminClient, ConfigResource

from wapipe.config import Settings
from wapipe.topics import WEBHOOK_DEAD, WEBHOOK_ENVELOPE_BYTES, WEBHOOK_RAW


def topic_max_bytes(admin: AdminClient, topics: tuple[str, ...] = (WEBHOOK_RAW, WEBHOOK_DEAD),
                    timeout: float = 5.0) -> dict[str, int]:
    """Each topic's effective ``max.message.bytes`` (its own, else the broker's)."""
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in topics]
    out = {}
    for res, fut in admin.describe_configs(resources, request_timeout=timeout).items():
        entry = fut.result(timeout=timeout).get("max.message.bytes")
        if entry is not None and entry.value is not None:
            out[res.name] = int(entry.value)
    return out


def body_limit(settings: Settings, topic_limits: dict[str, int]) -> int:
    """The largest body whose raw record and dead letter both fit the topics, at most the setting."""
    limit = settings.ingress_max_body_bytes
    if WEBHOOK_RAW in topic_limits:
        limit = min(limit, topic_limits[WEBHOOK_RAW] - WEBHOOK_ENVELOPE_BYTES)
    if WEBHOOK_DEAD in topic_limits:
        limit = min(limit, topic_limits[WEBHOOK_DEAD] - 2 * WEBHOOK_ENVELOPE_BYTES)
    return max(limit, 0)
