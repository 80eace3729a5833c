"""Meta's words for throughput and messaging limits, turned into the numbers the dispatcher uses.

* Throughput per phone number: ``throughput.level`` STANDARD = 80 msg/s, HIGH = 1,000 msg/s.
* Messaging limit (per business portfolio, shared by its numbers): unique business-initiated
  recipients per moving 24 h, ``TIER_250`` → ``TIER_2K`` → ``TIER_10K`` → ``TIER_100K`` →
  ``TIER_UNLIMITED`` (older names ``TIER_50``, ``TIER_1K`` kept). Unlimited is ``UNLIMITED``.
"""

from __future__ import annotations

from typing import Any

from wapipe.tenants.models import DEFAULT_MPS, HIGH_MPS, PhoneNumber, Tenant

UNLIMITED = 2**31 - 1  # Avro int max: "no portfolio limit"

TIER_LIMITS: dict[str, int] = {
    "TIER_50": 50, "TIER_250": 250, "TIER_1K": 1_000, "TIER_2K": 2_000, "TIER_10K": 10_000,
    "TIER_100K": 100_000, "TIER_UNLIMITED": UNLIMITED,
}
LEVEL_MPS: dict[str, int] = {"STANDARD": DEFAULT_MPS, "HIGH": HIGH_MPS, "COEXISTENCE": 20}


def limit_for_tier(tier: str | None) -> int | None:
    """Recipients per 24 h for a tier name; None for an unknown name (keep the old value)."""
    if not tier:
        return None
    return TIER_LIMITS.get(str(tier).upper())


def mps_for_level(level: str | None) -> int | None:
    if not level:
        return None
    return LEVEL_MPS.get(str(level).upper())


def apply_number_info(tenant: Tenant, info: Any) -> Tenant:
    """A tenant with one number updated from ``GraphClient.phone_number()`` (a PhoneNumberInfo).
    Unknown or absent values keep what we had. The tier also sets ``Tenant.messaging_limit``."""
    old = tenant.number(info.id) or PhoneNumber(phone_number_id=info.id)
    tier = info.messaging_limit
    mps = mps_for_level(info.throughput_level)
    new = old.model_copy(update={
        "display_phone_number": info.display_phone_number or old.display_phone_number,
        "throughput_mps": mps or old.throughput_mps,
        "quality_rating": info.quality_rating or old.quality_rating,
        "messaging_limit_tier": tier or old.messaging_limit_tier,
        "status": info.status or old.status,
    })
    limit = limit_for_tier(tier)
    numbers = tuple(new if n.phone_number_id == info.id else n for n in tenant.numbers)
    if tenant.number(info.id) is None:
        numbers += (new,)
    changes: dict[str, Any] = {}
    if numbers != tenant.numbers:
        changes["numbers"] = numbers
    if limit is not None and limit != tenant.messaging_limit:
        changes["messaging_limit"] = limit
    return tenant.evolve(**changes) if changes else tenant
