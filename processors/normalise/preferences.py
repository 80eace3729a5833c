"""Marketing preferences → ``Suppression`` records on ``wa.suppressions`` (key ``<tenant>/<subject>``).

Two sources, both from Meta (facts and sources in docs/meta-api.md, "Marketing opt-out"):

* the ``user_preferences`` webhook field: ``value.user_preferences[]`` items
  ``{wa_id, detail, category: "marketing_messages", value: "stop" | "resume", timestamp}``;
* a ``failed`` status whose ``errors`` carry code 131050 ("this recipient has chosen to stop
  receiving marketing messages on WhatsApp from your business").

Each ``user_preferences`` item converts on its own: a malformed one (no user id, a value other than
stop/resume, a timestamp that is not Unix seconds) becomes a ``BadItem`` naming its path, for its
own dead letter, and the others go on. A preference of a category other than
``marketing_messages`` (none exists today) and a webhook of a number no tenant claims yield no
record (the change is still kept, sealed, as account events). The record holds no phone number:
only the pseudonymous subject id (wapipe/privacy/subjects.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from connectors.meta.webhooks import BadItem, UnixSeconds
from wapipe.messages.events import MARKETING_MESSAGES, Suppression
from wapipe.topics import SUPPRESSIONS

FIELD = "user_preferences"
OPTED_OUT_CODE = 131050


class UserPreference(BaseModel):
    """One item of ``value.user_preferences`` (Meta's user_preferences webhook reference)."""

    model_config = ConfigDict(extra="allow", frozen=True, coerce_numbers_to_str=True)

    wa_id: str | None = None
    user_id: str | None = None  # a business-scoped user id, for users known only by a username
    category: str
    value: Literal["stop", "resume"]
    detail: str | None = None
    timestamp: UnixSeconds | None = None


def _event_id(*parts: object) -> str:
    return hashlib.sha256("\x1f".join("" if p is None else str(p) for p in parts).encode()).hexdigest()


def record(*, tenant_id: str, subject_id: str, suppressed: bool, source: str, at: dt.datetime,
           received_at: dt.datetime, phone_number_id: str | None, cause: str) -> Suppression:
    """A ``Suppression``; ``cause`` identifies what produced it (for a deterministic event id,
    so the same webhook delivered twice is dropped by the normaliser's seen table)."""
    return Suppression(event_id=_event_id("suppression", tenant_id, subject_id, suppressed, source, cause),
                       tenant_id=tenant_id, subject_id=subject_id, suppressed=suppressed,
                       source=source, at=at, phone_number_id=phone_number_id, received_at=received_at)


def _why(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "item"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)[:300]


Read = tuple[list[Suppression], list[BadItem]]  # the suppressions (record key: ``.key``), bad items


def from_user_preferences(body: object, path: str, *, tenant_id: str | None, phone_number_id: str | None,
                          subject_of: Callable[[str, str], str], received: dt.datetime) -> Read:
    """The suppressions of one ``user_preferences`` change value, and its bad items."""
    out: list[Suppression] = []
    bad: list[BadItem] = []
    items = body.get(FIELD) if isinstance(body, dict) else None
    vpath = f"{path}.value.{FIELD}"
    if not isinstance(items, list):
        return [], [BadItem(vpath, f"{FIELD} is not a list", items)]
    for i, raw in enumerate(items):
        ipath = f"{vpath}[{i}]"
        try:
            pref = UserPreference.model_validate(raw)
        except ValidationError as exc:
            bad.append(BadItem(ipath, _why(exc), raw))
            continue
        users = [u for u in (pref.wa_id, pref.user_id) if u]
        if not users:
            bad.append(BadItem(ipath, "names no user (neither wa_id nor user_id)", raw))
            continue
        if pref.category != MARKETING_MESSAGES or tenant_id is None:
            continue  # nothing to suppress: another category, or no tenant claims the number
        try:  # the person's every subject here: by number and by BSUID (a send may name either)
            subjects = list(dict.fromkeys(subject_of(tenant_id, u) for u in users))
        except ValueError as exc:
            bad.append(BadItem(ipath, f"user id: {exc}"[:300], raw))
            continue
        at = dt.datetime.fromtimestamp(pref.timestamp, dt.timezone.utc) if pref.timestamp is not None else received
        for subject in subjects:
            out.append(record(
                tenant_id=tenant_id, subject_id=subject, suppressed=pref.value == "stop",
                source=f"{FIELD} {pref.value}", at=at, received_at=received, phone_number_id=phone_number_id,
                cause=f"{pref.value}:{pref.timestamp if pref.timestamp is not None else received.isoformat()}"))
    return out, bad


def from_failed_status(*, tenant_id: str | None, subject_id: str | None, status: str, error_codes: list[int | None],
                       wamid_ref: str | None, at: dt.datetime, received: dt.datetime,
                       phone_number_id: str | None) -> Suppression | None:
    """The suppression a ``failed`` status with error 131050 implies, else None."""
    if status != "failed" or OPTED_OUT_CODE not in error_codes or not tenant_id or not subject_id:
        return None
    return record(
        tenant_id=tenant_id, subject_id=subject_id, suppressed=True, source=f"error {OPTED_OUT_CODE}", at=at,
        received_at=received, phone_number_id=phone_number_id, cause=f"status:{wamid_ref}")


TOPIC = SUPPRESSIONS
