"""Typed errors of the Graph API, decided by Meta's ``code`` (never by the HTTP status alone).

The hierarchy::

    MetaError                      anything the Graph client raises; .retryable says what to do
    ├── Throttled                  slow down, then retry (4, 80007, 130429, 131057, 133016, …)
    │   ├── PairRateLimited        131056: too many messages to one recipient; wait 4^X s
    │   └── SpamLimited            131048: the number is restricted; pause it, retry much later
    ├── Transient                  retry with backoff (1, 2, 131000, 131016, 5xx, connect errors)
    ├── Permanent                  do not retry this request as it is
    │   ├── WindowClosed           131047: outside the 24 h service window; send a template
    │   ├── TemplateError          132xxx: template missing, paused, disabled, bad parameters
    │   └── RecipientError         131026, 131049, 131050, 130472, 131062: this recipient cannot get it
    ├── NumberBlocked              131031, 368, 133010: stop sending from this number
    ├── AuthError                  190, 10, 200, 0, 3: stop the tenant, an operator must act
    └── UnknownOutcome             the request may have reached Meta (timeout after send,
                                   connection reset after write): never resend automatically

``CODES`` is the one table from Meta code to class; add a code there and nowhere else.
Codes not in the table fall back on the HTTP status: 429 → Throttled, 5xx → Transient,
401/403 → AuthError, other 4xx → Permanent.

Errors never carry the request (its Authorization header holds the tenant's token) — only
Meta's own error fields, the HTTP status and the endpoint label. Meta's ``message`` and
``details`` can quote the recipient's phone number ("'+4915…' is not a valid WhatsApp phone
number"): ``str(error)`` and ``to_dict()`` mask long digit runs, so either is safe to put in a
log line or an unsealed record; the raw text stays on ``.message`` / ``.details``.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

import httpx

__all__ = [
    "CODES",
    "AuthError",
    "MetaError",
    "NumberBlocked",
    "PairRateLimited",
    "Permanent",
    "RecipientError",
    "SpamLimited",
    "TemplateError",
    "Throttled",
    "Transient",
    "UnknownOutcome",
    "WindowClosed",
    "error_for",
    "from_response",
    "from_transport_error",
]


# Phone-number-like runs (7+ digits, optional +, spaces, dashes, dots, brackets inside).
_LONG_DIGITS = re.compile(r"\+?\d[\d \-().]{5,}\d")


def mask_numbers(text: str | None) -> str | None:
    """``text`` with every phone-number-like digit run replaced by ``<number>``."""
    return _LONG_DIGITS.sub("<number>", text) if text else text


class MetaError(Exception):
    """An error of a Graph API call. ``code`` is Meta's error code (None when the call never got
    an answer); ``retryable`` says whether the same request may be sent again later."""

    retryable: ClassVar[bool] = False
    meaning: ClassVar[str] = "Graph API error"

    def __init__(
        self,
        message: str = "",
        *,
        code: int | None = None,
        subcode: int | None = None,
        fbtrace_id: str | None = None,
        http_status: int | None = None,
        type: str | None = None,  # noqa: A002 - Meta's field name
        details: str | None = None,
        retry_after: float | None = None,
        endpoint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.subcode = subcode
        self.fbtrace_id = fbtrace_id
        self.http_status = http_status
        self.type = type
        self.details = details
        self.retry_after = retry_after
        self.endpoint = endpoint

    def __str__(self) -> str:
        parts = [f"({self.code})" if self.code is not None else None, mask_numbers(self.message) or self.meaning]
        if self.details:
            parts.append(f"- {mask_numbers(self.details)}")
        if self.endpoint:
            parts.append(f"[{self.endpoint}]")
        if self.fbtrace_id:
            parts.append(f"fbtrace_id={self.fbtrace_id}")
        return " ".join(p for p in parts if p)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, subcode={self.subcode!r}, message={mask_numbers(self.message)!r}, "
            f"http_status={self.http_status!r}, fbtrace_id={self.fbtrace_id!r}, retryable={self.retryable})"
        )

    def retype(self, cls: type[MetaError]) -> MetaError:
        """The same error as another class (an endpoint-specific reading of a generic code)."""
        return cls(
            self.message, code=self.code, subcode=self.subcode, fbtrace_id=self.fbtrace_id, http_status=self.http_status,
            type=self.type, details=self.details, retry_after=self.retry_after, endpoint=self.endpoint,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain fields for a SendResult / dead-letter record (numbers masked)."""
        return {
            "error_class": type(self).__name__,
            "code": self.code,
            "subcode": self.subcode,
            "message": mask_numbers(self.message),
            "details": mask_numbers(self.details),
            "http_status": self.http_status,
            "fbtrace_id": self.fbtrace_id,
            "retryable": self.retryable,
            "retry_after": self.retry_after,
        }


class Throttled(MetaError):
    """A rate limit: slow down and retry later (``retry_after`` seconds when Meta said so)."""

    retryable = True
    meaning = "rate limited"


class PairRateLimited(Throttled):
    """131056: too many messages from one number to the same recipient. Meta asks the caller to
    wait 4^X seconds, X being the count of recent 131056s for this pair (see ``backoff``)."""

    meaning = "pair rate limit hit"

    @staticmethod
    def backoff(recent_hits: int) -> float:
        """Seconds to wait after the ``recent_hits``-th consecutive 131056 for one pair (1-based)."""
        return float(4 ** max(1, recent_hits))


class SpamLimited(Throttled):
    """131048: the number is restricted for spam; pause it and retry much later."""

    meaning = "spam rate limit hit"


class Transient(MetaError):
    """A temporary failure before Meta processed the request: retry with backoff."""

    retryable = True
    meaning = "temporary error"


class Permanent(MetaError):
    """The request is wrong or cannot succeed as it is: do not retry it."""

    meaning = "permanent error"


class WindowClosed(Permanent):
    """131047: a non-template message outside the 24 h customer-service window."""

    meaning = "customer-service window closed; send a template"


class TemplateError(Permanent):
    """The template is missing, paused, disabled, or its parameters do not fit."""

    meaning = "template error"


class RecipientError(Permanent):
    """This recipient cannot receive the message (invalid, opted out, not engaged …)."""

    meaning = "recipient cannot receive the message"


class NumberBlocked(MetaError):
    """The sending number (or its account) is locked, restricted or not registered: stop it."""

    meaning = "sending number blocked"


class AuthError(MetaError):
    """The token is expired or invalid, or a permission is missing: an operator must act."""

    meaning = "authentication or permission error"


class UnknownOutcome(MetaError):
    """The request left and no answer came back (timeout after send, connection reset after
    write): Meta may or may not have acted on it. Never resend automatically — wait for a
    status webhook carrying your ``biz_opaque_callback_data``."""

    meaning = "unknown outcome: the request may have reached Meta"


# --- the one table --------------------------------------------------------------------------
# Meta code -> class. Sources: Meta's "Error codes" page for the Cloud API and the Graph API's
# error handling page; meanings in the comments.
CODES: dict[int, type[MetaError]] = {
    # authorization
    0: AuthError,  # AuthException: could not authenticate the app user
    3: AuthError,  # API method: capability or permissions issue
    10: AuthError,  # permission denied / not granted or removed
    190: AuthError,  # access token expired or invalid
    131005: AuthError,  # access denied
    # 200-299: API permission (Meta documents the whole range)
    **{c: AuthError for c in range(200, 300)},
    # throttling
    4: Throttled,  # app-level API call limit
    17: Throttled,  # user request limit
    32: Throttled,  # page request limit
    613: Throttled,  # calls exceeded the rate limit
    80007: Throttled,  # WABA rate limit (management API calls)
    130429: Throttled,  # cloud API throughput per number reached
    131056: PairRateLimited,  # pair rate: same sender/recipient too often
    131048: SpamLimited,  # spam rate limit: the number is restricted
    131057: Throttled,  # account in maintenance mode (throughput upgrade in progress)
    132069: Throttled,  # flow throttled
    133008: Throttled,  # too many two-step verification PIN guesses
    133009: Throttled,  # two-step PIN entered too quickly
    133015: Throttled,  # wait a few minutes before registering a just-deleted number
    133016: Throttled,  # registration/deregistration rate limit (10 per 72 h)
    # transient
    1: Transient,  # API unknown
    2: Transient,  # API service: temporary downtime or overload
    131000: Transient,  # something went wrong
    131016: Transient,  # service unavailable
    133004: Transient,  # server temporarily unavailable
    # permanent: the request itself
    33: Permanent,  # parameter value not valid (e.g. unknown phone number id)
    100: Permanent,  # invalid parameter
    131008: Permanent,  # required parameter missing
    131009: Permanent,  # parameter value invalid
    131051: Permanent,  # unsupported message type
    131052: Permanent,  # media download error (inbound media could not be fetched)
    131053: Permanent,  # media upload error (outbound media unusable)
    131055: Permanent,  # method not allowed
    131045: Permanent,  # incorrect certificate / number not registered correctly
    131037: Permanent,  # display name needs approval before sending
    131042: Permanent,  # business eligibility: payment issue
    132068: Permanent,  # flow is blocked
    133000: Permanent,  # incomplete deregistration
    133005: Permanent,  # two-step verification PIN mismatch
    133006: Permanent,  # phone number needs re-verification
    135000: Permanent,  # generic user error
    # permanent: window, templates, recipients
    131047: WindowClosed,  # re-engagement message: more than 24 h since the last inbound
    132000: TemplateError,  # template parameter count mismatch
    132001: TemplateError,  # template does not exist (name/language)
    132005: TemplateError,  # template hydrated text too long
    132007: TemplateError,  # template format character policy violated
    132012: TemplateError,  # template parameter format mismatch
    132015: TemplateError,  # template paused for low quality
    132016: TemplateError,  # template disabled
    132018: TemplateError,  # template parameter issue (newline, tab, >4 consecutive spaces)
    131026: RecipientError,  # message undeliverable (not on WhatsApp, old app, blocked …)
    131021: RecipientError,  # recipient cannot be the sender
    131049: RecipientError,  # not delivered to keep ecosystem engagement healthy
    131050: RecipientError,  # user stopped marketing messages
    130472: RecipientError,  # user's number is part of an experiment
    131062: RecipientError,  # a BSUID recipient is not supported for this message (e.g. one-tap/zero-tap/copy-code auth)
    # the number or account
    131031: NumberBlocked,  # business account locked
    368: NumberBlocked,  # temporarily blocked for policy violations
    130497: NumberBlocked,  # business account restricted from messaging users in this country
    133010: NumberBlocked,  # phone number not registered on the Cloud API
}


def error_for(code: int | None, http_status: int | None = None) -> type[MetaError]:
    """The class for Meta ``code``; unknown codes fall back on the HTTP status."""
    if code is not None and code in CODES:
        return CODES[code]
    if http_status is None:
        return MetaError
    if http_status == 429:
        return Throttled
    if http_status >= 500:
        return Transient
    if http_status in (401, 403):
        return AuthError
    if http_status >= 400:
        return Permanent
    return MetaError


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait, from ``Retry-After`` or Meta's usage headers
    (``X-Business-Use-Case-Usage``: ``estimated_time_to_regain_access`` in minutes)."""
    value = headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
    usage = headers.get("x-business-use-case-usage")
    if usage:
        try:
            minutes = [
                float(item.get("estimated_time_to_regain_access") or 0)
                for items in json.loads(usage).values()
                for item in items
            ]
        except (ValueError, AttributeError, TypeError):
            return None
        if minutes and max(minutes) > 0:
            return max(minutes) * 60.0
    return None


def from_response(response: httpx.Response, *, endpoint: str | None = None) -> MetaError:
    """The typed error for a non-2xx Graph API answer, parsed from Meta's error object
    ``{"error": {message, type, code, error_subcode, error_data{details}, fbtrace_id}}``."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        cls = error_for(None, status)
        text = response.text[:200] if response.content else ""
        return cls(
            f"HTTP {status} without a Graph error object" + (f": {text}" if text else ""),
            http_status=status,
            endpoint=endpoint,
            retry_after=_retry_after(response.headers),
        )
    code = _int(error.get("code"))
    error_data = error.get("error_data")
    details = None
    if isinstance(error_data, dict):
        details = error_data.get("details")
    elif isinstance(error_data, str):  # some endpoints send it as a JSON string
        try:
            details = (json.loads(error_data) or {}).get("details")
        except (ValueError, AttributeError):
            details = error_data
    cls = error_for(code, status)
    return cls(
        str(error.get("message") or ""),
        code=code,
        subcode=_int(error.get("error_subcode")),
        fbtrace_id=error.get("fbtrace_id"),
        http_status=status,
        type=error.get("type"),
        details=details,
        retry_after=_retry_after(response.headers),
        endpoint=endpoint,
    )


# Errors raised before a single byte of the request could have reached Meta.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


def from_transport_error(exc: httpx.RequestError, *, idempotent: bool, endpoint: str | None = None) -> MetaError:
    """Classify a failure without an answer.

    * connect errors, connect and pool timeouts: the request never left → ``Transient``;
    * anything after the connection was up (read/write timeout, read/write error, the server
      closing the connection, protocol errors): Meta may have acted → ``UnknownOutcome`` —
      unless the call is ``idempotent`` (a GET), when a retry is harmless → ``Transient``;
    * an answer that arrived but could not be decoded (``DecodingError``): Meta acted → the same.

    A write timeout is treated as *unknown* too: part of the body may be in flight and we
    prefer a held message to a double send.
    """
    name = type(exc).__name__
    if isinstance(exc, _NOT_SENT):
        return Transient(f"request not sent: {name}", endpoint=endpoint)
    if idempotent:
        return Transient(f"no answer to an idempotent call: {name}", endpoint=endpoint)
    return UnknownOutcome(f"no answer after the request was sent: {name}", endpoint=endpoint)
