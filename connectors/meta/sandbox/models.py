"""The sandbox's boundary models: its configuration (limits, delays, bad habits) and the seed
that describes the simulated Meta world (businesses, WABAs, numbers, templates, tokens, apps).

Everything here is plain pydantic so a seed JSON file, the control API and the Python control
client all speak the same shapes. Times are seconds unless a name says otherwise; every window
Meta fixes (24 h, 6 s, 30 s) is a field here so a test can shrink it.
"""

from __future__ import annotations

import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors.meta.bsuid import Bsuid
from connectors.meta.sandbox.graph_errors import known

TIERS = {"TIER_250": 250, "TIER_2K": 2_000, "TIER_10K": 10_000, "TIER_100K": 100_000, "TIER_UNLIMITED": None}
DEFAULT_THROUGHPUT = 80


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Dist(_Model):
    """A delay distribution in milliseconds.

    fixed: ``a``; uniform: between ``a`` and ``b``; exponential: mean ``a``;
    lognormal: median ``a`` with shape ``b`` (sigma)."""

    kind: Literal["fixed", "uniform", "exponential", "lognormal"] = "fixed"
    a: float = 0.0
    b: float = 0.0

    def sample_s(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            ms = self.a
        elif self.kind == "uniform":
            ms = rng.uniform(self.a, max(self.a, self.b))
        elif self.kind == "exponential":
            ms = rng.expovariate(1.0 / self.a) if self.a > 0 else 0.0
        else:
            ms = rng.lognormvariate(0.0, self.b) * self.a
        return max(0.0, ms) / 1000.0


class Habits(_Model):
    """Meta's webhook bad habits, each a probability per message (0 disables it)."""

    duplicate: float = Field(0.0, ge=0, le=1, description="a status is delivered a second time, in a later POST")
    out_of_order: float = Field(0.0, ge=0, le=1, description="a later status (delivered/read) arrives before an earlier one")
    skip_delivered: float = Field(0.0, ge=0, le=1, description="`read` arrives without `delivered`")
    read: float = Field(1.0, ge=0, le=1, description="probability the recipient reads the message at all")
    held_for_quality: float = Field(0.0, ge=0, le=1, description=(
        "a marketing template is answered message_status held_for_quality_assessment (still sent)"))


class WebhookPolicy(_Model):
    sent_after: Dist = Dist(kind="uniform", a=20, b=80)
    delivered_after: Dist = Dist(kind="uniform", a=50, b=200)
    read_after: Dist = Dist(kind="uniform", a=100, b=400)
    duplicate_after: Dist = Dist(kind="uniform", a=50, b=300)
    batch_interval_s: float = Field(0.02, gt=0, description="how often due updates are gathered into POSTs")
    max_batch: int = Field(100, ge=1, le=1000, description="updates per POST (Meta: up to 1,000)")
    timeout_s: float = 5.0
    retry_initial_s: float = 0.5
    retry_factor: float = 2.0
    retry_max_interval_s: float = 60.0
    retry_max_age_s: float = 7 * 24 * 3600.0
    concurrency: int = Field(32, ge=1, description="POSTs in flight at once")


class Limits(_Model):
    throughput_window_s: float = 1.0
    inbound_counts: bool = Field(True, description="inbound messages use the number's throughput too, as at Meta")
    pair_interval_s: float = Field(6.0, gt=0, description="one message per this many seconds per (number, recipient)")
    pair_burst: int = Field(45, ge=1, description="messages a pair may borrow from later")
    tier_window_s: float = 24 * 3600.0
    service_window_s: float = 24 * 3600.0
    signup_code_ttl_s: float = 30.0
    # What happens when a business-initiated template would exceed the portfolio's tier. Meta
    # documents no synchronous error: the message is accepted and then not delivered.
    tier_mode: Literal["async_fail", "reject"] = "async_fail"
    tier_error_code: int = 131049
    # Meta's Cloud API accepts a session message outside the window and then reports 131047 in a
    # failed status; "reject" answers 131047 synchronously instead.
    window_mode: Literal["async_fail", "reject"] = "async_fail"
    management_calls_per_hour: int | None = Field(None, ge=1, description=(
        "Business Management API calls per (app, WABA) per management_window_s before 80007; None: unlimited"))
    management_window_s: float = 3600.0
    register_window_s: float = 72 * 3600.0
    register_max: int = 10
    throttle_429_ratio: float = Field(0.25, ge=0, le=1, description="share of throttling errors answered 429 instead of 400")


class SandboxConfig(_Model):
    latency: Dist = Dist()
    limits: Limits = Limits()
    webhooks: WebhookPolicy = WebhookPolicy()
    habits: Habits = Habits()
    template_review_s: float | None = Field(0.2, description="a created template is APPROVED after this delay; None: stays PENDING")
    record_messages: bool = Field(True, description="keep the list of accepted messages (turn off for very long runs)")
    media_ttl_s: float = Field(30 * 24 * 3600.0, gt=0, description="an uploaded media id stays valid this long (Meta: 30 days)")
    media_url_ttl_s: float = Field(300.0, gt=0, description="a media download URL expires after this (Meta: 5 minutes)")
    random_seed: int | None = None


class BusinessSeed(_Model):
    id: str
    name: str = "Business"
    tier: str = Field("TIER_250", description="one of " + ", ".join(TIERS))


class WabaSeed(_Model):
    id: str
    business_id: str
    name: str = "WABA"
    # None: every configured app receives this WABA's webhooks (a convenience for tests);
    # a list: only those apps, as after POST /{waba}/subscribed_apps.
    subscribed_apps: list[str] | None = None


class NumberSeed(_Model):
    id: str
    waba_id: str
    display_phone_number: str = "15550000000"
    verified_name: str = "Sandbox"
    quality_rating: Literal["GREEN", "YELLOW", "RED", "UNKNOWN"] = "GREEN"
    throughput: int = Field(DEFAULT_THROUGHPUT, ge=1, description="messages per second")
    registered: bool = True
    platform_type: str = "CLOUD_API"


class TemplateSeed(_Model):
    name: str
    waba_id: str
    language: str = "en_US"
    status: str = "APPROVED"
    category: Literal["MARKETING", "UTILITY", "AUTHENTICATION"] = "UTILITY"
    body_params: int = Field(0, ge=0, description="positional body parameters the template expects")
    body_text: str | None = None
    id: str | None = None


class TokenSeed(_Model):
    token: str
    app_id: str | None = None
    waba_ids: list[str] = Field(default_factory=list, description="WABAs this token may use; ['*'] for all")
    valid: bool = True


def _http_url(v: str | None) -> str | None:
    if v is not None and not (v.startswith("http://") or v.startswith("https://")):
        raise ValueError(f"webhook_url must be an http(s) URL, not {v!r}")
    return v


class AppSeed(_Model):
    id: str
    secret: str = Field(min_length=1)
    webhook_url: str | None = None
    name: str = "wapipe"

    _check_url = field_validator("webhook_url")(_http_url)


class Seed(_Model):
    config: SandboxConfig | None = None
    apps: list[AppSeed] = Field(default_factory=list)
    businesses: list[BusinessSeed] = Field(default_factory=list)
    wabas: list[WabaSeed] = Field(default_factory=list)
    numbers: list[NumberSeed] = Field(default_factory=list)
    templates: list[TemplateSeed] = Field(default_factory=list)
    tokens: list[TokenSeed] = Field(default_factory=list)
    invalid_recipients: list[str] = Field(default_factory=list, description="wa_ids whose messages fail with 131026")


class Faults(_Model):
    """Fault injection for Graph calls. ``*_count``: the next N calls; ``*_p``: each call with
    this probability. ``phone_number_id`` limits the faults to one number's sends."""

    error_count: int = 0
    error_p: float = Field(0.0, ge=0, le=1)
    error_code: int = Field(131000, description="any Graph error code the sandbox knows (graph_errors)")
    timeout_count: int = 0
    timeout_p: float = Field(0.0, ge=0, le=1)
    timeout_hold_s: float = 30.0
    reset_count: int = 0
    reset_p: float = Field(0.0, ge=0, le=1)
    phone_number_id: str | None = None

    @field_validator("error_code")
    @classmethod
    def _known_code(cls, v: int) -> int:
        if not known(v):
            raise ValueError(f"the sandbox does not know Graph error {v}")
        return v


class InboundRequest(_Model):
    """A user's message to a business number. A username user comes with ``user_id`` (their BSUID,
    maybe ``parent_user_id`` and ``username``) and no ``from``: the webhook then has no number."""

    phone_number_id: str
    wa_id: str | None = Field(None, alias="from")
    user_id: Bsuid | None = None
    parent_user_id: Bsuid | None = None
    username: str | None = None
    name: str = "Sandbox User"
    type: str = "text"
    text: str | None = "hello"
    message: dict | None = Field(None, description="the full type object, e.g. {'image': {...}}; overrides text")
    context_id: str | None = None
    media: "InboundMedia | None" = Field(None, description=(
        "a file the user sends: stored as a media id the business can GET and download, and the "
        "message's type object filled with id, mime_type, sha256 (and caption/filename)"))

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _sender(self):
        if not self.wa_id and not self.user_id:
            raise ValueError("an inbound message needs 'from' (a number) or 'user_id' (a BSUID)")
        return self

    @model_validator(mode="after")
    def _media_type(self):
        if self.media is not None and self.type not in ("image", "audio", "video", "document", "sticker"):
            raise ValueError(f"a message with media has type image, audio, video, document or sticker, not {self.type!r}")
        return self


class InboundMedia(_Model):
    mime_type: str
    content_b64: str = Field(description="the file, base64")
    caption: str | None = None
    filename: str | None = None


class TemplateStatusChange(_Model):
    status: str
    reason: str | None = None


class NumberChange(_Model):
    quality_rating: Literal["GREEN", "YELLOW", "RED", "UNKNOWN"] | None = None
    throughput: int | None = Field(None, ge=1)
    event: str | None = Field(None, description="webhook event; derived when omitted")


class BusinessChange(_Model):
    tier: str


class SignupCodeRequest(_Model):
    app_id: str
    waba_ids: list[str]
    token: str | None = Field(None, description="the token the exchange returns; generated when omitted")


class AccountUpdate(_Model):
    waba_id: str
    event: str = Field(description="PARTNER_REMOVED, ACCOUNT_VIOLATION, ACCOUNT_RESTRICTION, … (any name: Meta adds them)")
    details: dict | None = Field(None, description="extra value fields, e.g. {'violation_info': {...}}")


class UserPreferenceRequest(_Model):
    """``POST /_sandbox/user_preferences``: a user stops or resumes marketing messages from the
    business of ``phone_number_id`` (Meta's "Offers and announcements" setting): the sandbox then
    sends the signed ``user_preferences`` webhook, and fails MARKETING templates to them with 131050."""

    phone_number_id: str
    wa_id: str
    value: Literal["stop", "resume"]
    name: str | None = "Sandbox User"

    model_config = ConfigDict(extra="forbid")


InboundRequest.model_rebuild()


class MediaUpload(_Model):
    """``POST /_sandbox/media``: a media object owned by a number, as if uploaded or received."""

    phone_number_id: str
    mime_type: str
    content_b64: str
