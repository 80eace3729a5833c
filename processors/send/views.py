"""Views every worker needs whole, whatever partitions it owns, each fed by a follower that reads
all partitions of a topic without a consumer group (``wapipe.edge.follow_aio.AsyncTopicFollower``):

* ``ServiceWindows`` — last inbound message per (phone_number_id, subject_id) from
  ``wa.inbound.messages`` (the 24 h customer-service window), read from 24 h back.
* ``CampaignStates`` — the latest ``CampaignControl`` per (tenant, campaign) (compacted topic, from the
  beginning); the dispatcher polls it, so a pause or stop takes effect within a second.
"""

from __future__ import annotations

import time

from processors.send.records import ms
from wapipe import log
from wapipe.messages.campaign import PAUSED, RUNNING, STOPPED
from wapipe.messages.events import InboundMessage

logger = log.get_logger(__name__)


class ServiceWindows:
    def __init__(self, window_s: int) -> None:
        self.window_s = window_s
        self._last: dict[tuple[str, str], int] = {}

    def apply(self, record: dict) -> None:
        """One decoded ``InboundMessage`` (the follower's callback; KeyError when it is not one)."""
        inbound = InboundMessage.from_avro(record)
        key = (inbound.phone_number_id, inbound.subject_id)
        ts = ms(inbound.timestamp)
        if ts > self._last.get(key, 0):
            self._last[key] = ts

    def last_inbound(self, phone_number_id: str, subject_id: str) -> int | None:
        return self._last.get((phone_number_id, subject_id))

    def since_ms(self) -> int:
        return int(time.time() * 1000) - self.window_s * 1000


class CampaignStates:
    """State per (tenant, campaign): tenant A's ``stop promo`` never stops tenant B's ``promo``."""

    def __init__(self) -> None:
        self._state: dict[tuple[str, str], str] = {}

    def apply(self, control: dict) -> None:
        tenant = control.get("tenant_id") or ""
        if not tenant:  # written before campaigns were keyed by tenant: it names no tenant's campaign
            logger.warning("campaign_control.no_tenant_ignored", campaign_id=control.get("campaign_id"))
            return
        self._state[(tenant, control["campaign_id"])] = control["state"]

    def state(self, tenant_id: str, campaign_id: str | None) -> str:
        if not campaign_id:
            return RUNNING
        return self._state.get((tenant_id, campaign_id), RUNNING)

    def paused(self, tenant_id: str, campaign_id: str) -> bool:
        return self.state(tenant_id, campaign_id) == PAUSED

    def stopped(self, tenant_id: str, campaign_id: str | None) -> bool:
        return self.state(tenant_id, campaign_id) == STOPPED
