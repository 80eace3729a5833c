"""Campaign control and progress.

A campaign is ``(tenant_id, campaign_id)``: two tenants may both run a campaign ``promo``, and
one tenant's control and progress never touch the other's (docs/security.md, "Tenant isolation").

Control: a ``CampaignControl`` record (RUNNING / PAUSED / STOPPED) on the compacted
``wa.campaign.control`` topic, key ``<tenant_id>/<campaign_id>`` (tenant ids hold no "/"),
acknowledged before the command returns. Every worker follows that topic and checks it at least
every 250 ms, so pause/stop take effect within a second; a stop turns the tenant's campaign's
remaining commands into CANCELLED results. A record without a tenant (written before campaigns
were keyed by tenant) names no campaign and is ignored.

Progress is read from the topics themselves (no extra state): the campaign's distinct commands
on ``wa.send.requested(.bulk)`` and the latest result per idempotency key on ``wa.send.results``.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import asdict, dataclass

from wapipe import topics as T
from wapipe.avro import AvroSerde, SerdeError
from wapipe.edge.clients import producer as make_producer
from wapipe.edge.endpoint import Endpoint
from wapipe.edge.scan import scan
from wapipe.messages.campaign import PAUSED, RUNNING, STOPPED, CampaignControl

STATES = (RUNNING, PAUSED, STOPPED)


def control_key(tenant_id: str, campaign_id: str) -> bytes:
    return f"{tenant_id}/{campaign_id}".encode()


def publish_control(bootstrap: str, campaign_id: str, state: str, *, tenant_id: str, actor: str = "operator:cli",
                    serde: AvroSerde | None = None, timeout: float = 15.0) -> None:
    """The tenant's word on its campaign; another tenant's campaign of the same id is not touched."""
    if state not in STATES:
        raise ValueError(f"state must be one of {STATES}")
    if not tenant_id or "/" in tenant_id:
        raise ValueError("a campaign belongs to a tenant: give the tenant id")
    if not campaign_id:
        raise ValueError("give the campaign id")
    serde = serde or AvroSerde()
    control = CampaignControl(campaign_id=campaign_id, tenant_id=tenant_id, state=state, actor=actor,
                              at=dt.datetime.now(dt.timezone.utc))
    value = serde.encode("CampaignControl", control.to_avro(), topic=T.CAMPAIGN_CONTROL)
    errors: list[str] = []
    p = make_producer(bootstrap)
    p.produce(T.CAMPAIGN_CONTROL, key=control_key(tenant_id, campaign_id), value=value,
              on_delivery=lambda err, _m: errors.append(err.str()) if err else None)
    if p.flush(timeout):
        raise RuntimeError(f"campaign {campaign_id}: control record not acknowledged within {timeout:.0f}s")
    if errors:
        raise RuntimeError(f"campaign {campaign_id}: {errors[0]}")


@dataclass
class Progress:
    tenant_id: str
    campaign_id: str
    state: str
    queued: int  # distinct commands the ERP published for the campaign
    sent: int  # ACCEPTED by Meta
    failed: int  # FAILED, DEAD, REJECTED, EXPIRED
    unknown: int  # outcome unknown (reconciled from status webhooks)
    cancelled: int
    remaining: int  # no final outcome yet

    def as_dict(self) -> dict:
        return asdict(self)


def progress(bootstrap: Endpoint, campaign_id: str, *, tenant_id: str, serde: AvroSerde | None = None,
             timeout: float = 30.0) -> Progress:
    """The tenant's campaign only: commands, results and control records of other tenants are not
    counted, whatever their campaign id. Each topic is read whole (``wapipe.edge.scan``): one not
    read to its end within ``timeout`` raises ``TimeoutError``, an absent one ``ScanError``; a
    count is never made of part of a topic."""
    serde = serde or AvroSerde()
    state = "RUNNING"
    key = control_key(tenant_id, campaign_id)
    for m in scan(bootstrap, T.CAMPAIGN_CONTROL, timeout=timeout):
        if m.key() == key and m.value():
            try:
                state = serde.decode(m.value(), "CampaignControl")["state"]
            except SerdeError:
                pass
    keys: set[str] = set()
    for topic in (T.SEND_REQUESTED_BULK, T.SEND_REQUESTED):
        for m in scan(bootstrap, topic, timeout=timeout):
            try:
                c = serde.decode(m.value(), "SendCommand")
            except SerdeError:
                continue
            if c.get("tenant_id") == tenant_id and c.get("campaign_id") == campaign_id:
                keys.add(c["idempotency_key"])
    final: dict[str, str] = {}
    for m in scan(bootstrap, T.SEND_RESULTS, timeout=timeout):
        try:
            r = serde.decode(m.value(), "SendResult")
        except SerdeError:
            continue
        if (r.get("tenant_id") == tenant_id and r.get("campaign_id") == campaign_id and r["idempotency_key"] in keys
                and r["outcome"] not in ("RETRYING", "DUPLICATE")):
            final[r["idempotency_key"]] = r["outcome"]
    n = Counter(final.values())
    return Progress(
        tenant_id=tenant_id, campaign_id=campaign_id, state=state, queued=len(keys), sent=n["ACCEPTED"],
        failed=n["FAILED"] + n["DEAD"] + n["REJECTED"] + n["EXPIRED"], unknown=n["UNKNOWN"],
        cancelled=n["CANCELLED"], remaining=len(keys) - len(final),
    )
