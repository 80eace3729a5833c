"""The tenant records as pydantic models, mirroring the ``TenantSettings`` / ``TemplateInfo`` Avro records.

A tenant's Graph API token is never a plain string on a model: ``Tenant.token`` is a ``SealedToken``
(``{key_id, nonce, ciphertext}``) sealed with the key-encryption key of ``wapipe.privacy.kek``, with
the tenant id as associated data so a sealed token copied onto another tenant does not open.
Use ``Tenant.with_token(kek, token)`` / ``Tenant.open_token(kek)``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

TENANT_RECORD = "TenantSettings"
TEMPLATE_RECORD = "TemplateInfo"

# Data types with their own retention (days); the sink and privacy areas read these names.
RETENTION_KINDS = ("content", "metadata", "raw_webhooks", "audit")
DEFAULT_RETENTION_DAYS = {"content": 30, "metadata": 365, "raw_webhooks": 1, "audit": 730}

# Meta's per-number throughput: 80 msg/s by default, 1,000 when upgraded.
DEFAULT_MPS = 80
HIGH_MPS = 1000

# Bounds of what a caller may set (the admin API refuses more with a 400; docs/security.md).
TENANT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
META_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"  # app, business, WABA, phone number ids (Meta's are digits)
AVRO_INT_MAX = 2**31 - 1  # TenantSettings' numbers are Avro ints
RETENTION_MAX_DAYS = 36_500
DISPLAY_NAME_MAX = 256


class TenantStatus(StrEnum):
    ONBOARDING = "ONBOARDING"
    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"
    DISCONNECTED = "DISCONNECTED"


class Kek(Protocol):
    """What ``wapipe.privacy.kek.load_kek(settings)`` returns."""

    def seal(self, data: bytes, aad: bytes) -> dict: ...

    def unseal(self, sealed: dict, aad: bytes) -> bytes: ...


def utcnow() -> dt.datetime:
    return _ms(dt.datetime.now(dt.timezone.utc))


def _ms(t: dt.datetime) -> dt.datetime:
    """Avro timestamp-millis precision, always aware UTC."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.astimezone(dt.timezone.utc).replace(microsecond=(t.microsecond // 1000) * 1000)


class SealedToken(BaseModel):
    """A token sealed with the KEK. Its repr never shows bytes."""

    model_config = ConfigDict(frozen=True)

    key_id: str
    nonce: bytes
    ciphertext: bytes

    def __repr__(self) -> str:
        return f"SealedToken(key_id={self.key_id!r}, {len(self.ciphertext)} bytes)"

    __str__ = __repr__


def token_aad(tenant_id: str) -> bytes:
    return f"tenant-token/{tenant_id}".encode()


class PhoneNumber(BaseModel):
    model_config = ConfigDict(frozen=True)

    phone_number_id: str = Field(min_length=1)
    display_phone_number: str = ""
    throughput_mps: int = Field(default=DEFAULT_MPS, ge=1, le=AVRO_INT_MAX)
    quality_rating: str | None = None  # GREEN, YELLOW, RED, UNKNOWN
    messaging_limit_tier: str | None = None  # TIER_250, TIER_1K, ..., TIER_UNLIMITED
    status: str = "CONNECTED"


class Tenant(BaseModel):
    """One ERP customer and its WhatsApp Business Account."""

    model_config = ConfigDict(frozen=True)

    tenant_id: str = Field(min_length=1, pattern=TENANT_ID_PATTERN)
    status: TenantStatus = TenantStatus.ONBOARDING
    display_name: str = Field(default="", max_length=DISPLAY_NAME_MAX)
    business_id: str | None = None
    waba_id: str | None = None
    app_id: str | None = None
    numbers: tuple[PhoneNumber, ...] = ()
    token: SealedToken | None = None
    # The app-scoped Meta user id of who connected the account (debug_token at onboarding): Meta's
    # data-deletion and deauthorize callbacks name this user (wapipe/privacy/processor.py).
    meta_user_id: str | None = None
    retention_days: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_RETENTION_DAYS))
    messaging_limit: int = Field(default=250, ge=0, le=AVRO_INT_MAX)
    onboarding_step: str | None = None
    api_key_sha256: str | None = None
    updated_at: dt.datetime = Field(default_factory=utcnow)
    version: int = 1

    @field_validator("retention_days")
    @classmethod
    def _known_retention(cls, v: dict[str, int]) -> dict[str, int]:
        unknown = set(v) - set(RETENTION_KINDS)
        if unknown:
            raise ValueError(f"unknown retention data type(s) {sorted(unknown)}; known: {', '.join(RETENTION_KINDS)}")
        bad = {k: d for k, d in v.items() if not 1 <= d <= RETENTION_MAX_DAYS}
        if bad:
            raise ValueError(f"retention must be at least 1 day and at most {RETENTION_MAX_DAYS}: {sorted(bad)}")
        return v

    @field_validator("updated_at")
    @classmethod
    def _millis(cls, v: dt.datetime) -> dt.datetime:
        return _ms(v)

    # --- reading ----------------------------------------------------------------------
    def operator_view(self) -> dict:
        """What operators see (the CLI and the admin API): everything but the token (only whether there is one)."""
        d = self.model_dump(mode="json", exclude={"token", "api_key_sha256"})
        d["token"] = f"sealed ({self.token.key_id})" if self.token else None
        d["api_key"] = "set" if self.api_key_sha256 else None
        return d

    @property
    def active(self) -> bool:
        return self.status == TenantStatus.ACTIVE

    def number(self, phone_number_id: str) -> PhoneNumber | None:
        for n in self.numbers:
            if n.phone_number_id == phone_number_id:
                return n
        return None

    def retention(self, kind: str) -> int:
        """Days to keep data of ``kind`` (content, metadata, raw_webhooks, audit)."""
        if kind not in RETENTION_KINDS:
            raise KeyError(kind)
        return self.retention_days.get(kind, DEFAULT_RETENTION_DAYS[kind])

    # --- changing (models are frozen: each returns a new Tenant) -----------------------
    def evolve(self, **changes: Any) -> "Tenant":
        """A copy with ``changes``, validated, ``version`` + 1 and ``updated_at`` now."""
        data = self.model_dump()
        data.update(changes)
        data["version"] = self.version + 1
        data["updated_at"] = utcnow()
        return Tenant.model_validate(data)

    def with_number(self, number: PhoneNumber) -> "Tenant":
        """Add or replace one number."""
        others = tuple(n for n in self.numbers if n.phone_number_id != number.phone_number_id)
        return self.evolve(numbers=others + (number,))

    def with_token(self, kek: Kek, token: str) -> "Tenant":
        if not token:
            raise ValueError("empty token")
        sealed = kek.seal(token.encode(), token_aad(self.tenant_id))
        return self.evolve(token=SealedToken.model_validate(sealed))

    def without_token(self) -> "Tenant":
        return self.evolve(token=None)

    def open_token(self, kek: Kek) -> str:
        """The clear token, for one Graph API call. Raises ``LookupError`` when there is none."""
        if self.token is None:
            raise LookupError(f"tenant {self.tenant_id} has no token (status {self.status})")
        return kek.unseal(self.token.model_dump(), token_aad(self.tenant_id)).decode()

    def with_api_key(self, api_key: str) -> "Tenant":
        return self.evolve(api_key_sha256=hash_api_key(api_key))

    def api_key_matches(self, api_key: str) -> bool:
        return self.api_key_sha256 is not None and hmac.compare_digest(self.api_key_sha256, hash_api_key(api_key))

    # --- Avro -------------------------------------------------------------------------
    def to_avro(self) -> dict:
        d = self.model_dump(mode="python")
        d["status"] = str(self.status)
        d["numbers"] = [n.model_dump() for n in self.numbers]
        d["token"] = self.token.model_dump() if self.token else None
        return d

    @classmethod
    def from_avro(cls, record: dict) -> "Tenant":
        data = dict(record)
        data["numbers"] = tuple(PhoneNumber.model_validate(n) for n in data.get("numbers") or ())
        return cls.model_validate(data)


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


class Template(BaseModel):
    """A message template of a tenant's WABA. Keyed ``<waba_id>/<name>/<language>``."""

    model_config = ConfigDict(frozen=True)

    tenant_id: str
    waba_id: str
    template_id: str | None = None
    name: str = Field(min_length=1)
    language: str = Field(min_length=1)
    status: str  # APPROVED, PENDING, REJECTED, PAUSED, DISABLED, ... (Meta's words, unknown ones kept)
    category: str = "UTILITY"
    body_parameter_count: int = 0
    components: str = "[]"
    reason: str | None = None
    status_at: dt.datetime | None = None  # when Meta set the status (webhook time, or the sync that saw it)
    updated_at: dt.datetime = Field(default_factory=utcnow)

    @field_validator("updated_at", "status_at")
    @classmethod
    def _millis(cls, v: dt.datetime | None) -> dt.datetime | None:
        return None if v is None else _ms(v)

    def is_stale(self, event_time: dt.datetime | None) -> bool:
        """Is a status change from ``event_time`` older than the status we hold? Meta's webhook times
        have second resolution, so only an event from an earlier second is stale."""
        if event_time is None or self.status_at is None:
            return False
        return _ms(event_time) < self.status_at.replace(microsecond=0)

    @property
    def key(self) -> str:
        return template_key(self.waba_id, self.name, self.language)

    @property
    def sendable(self) -> bool:
        """Only APPROVED templates can be sent (Meta refuses the rest; we refuse them first)."""
        return self.status == "APPROVED"

    def evolve(self, **changes: Any) -> "Template":
        data = self.model_dump()
        data.update(changes)
        data["updated_at"] = utcnow()
        return Template.model_validate(data)

    def to_avro(self) -> dict:
        return self.model_dump(mode="python")

    @classmethod
    def from_avro(cls, record: dict) -> "Template":
        return cls.model_validate(record)

    @classmethod
    def from_meta(cls, tenant_id: str, waba_id: str, obj: dict) -> "Template":
        """From one entry of ``GET /{waba_id}/message_templates``."""
        components = obj.get("components") or []
        return cls(
            tenant_id=tenant_id, waba_id=waba_id, template_id=str(obj["id"]) if obj.get("id") else None,
            name=obj["name"], language=obj.get("language") or obj.get("language_code") or "",
            status=str(obj.get("status") or "PENDING").upper(), category=str(obj.get("category") or "UTILITY").upper(),
            body_parameter_count=body_parameter_count(components), components=json.dumps(components),
            reason=obj.get("rejected_reason") if obj.get("rejected_reason") not in (None, "NONE") else None,
            status_at=utcnow(),
        )


def template_key(waba_id: str, name: str, language: str) -> str:
    return f"{waba_id}/{name}/{language}"


def body_parameter_count(components: list[dict]) -> int:
    """Number of distinct ``{{n}}`` / ``{{name}}`` placeholders in the BODY component."""
    for c in components:
        if str(c.get("type", "")).upper() == "BODY":
            return len(set(re.findall(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}", c.get("text") or "")))
    return 0
