"""The campaign family: ``CampaignControl`` (v1), the operator's word on a campaign."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

RUNNING = "RUNNING"
PAUSED = "PAUSED"
STOPPED = "STOPPED"


@dataclass(slots=True, kw_only=True)
class CampaignControl:
    """CampaignControl.v1.avsc: compacted by tenant and campaign; the latest wins."""

    campaign_id: str
    tenant_id: str
    state: str  # RUNNING, PAUSED, STOPPED
    actor: str
    at: dt.datetime

    @classmethod
    def from_avro(cls, r: dict[str, Any]) -> CampaignControl:
        return cls(campaign_id=r["campaign_id"], tenant_id=r["tenant_id"], state=r["state"], actor=r["actor"],
                   at=r["at"])

    def to_avro(self) -> dict[str, Any]:
        return {"campaign_id": self.campaign_id, "tenant_id": self.tenant_id, "state": self.state,
                "actor": self.actor, "at": self.at}
