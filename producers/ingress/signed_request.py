"""Meta's ``signed_request`` (data-deletion and deauthorize callbacks).

``<sig>.<payload>``, both base64url without padding. ``sig`` is HMAC-SHA256 of the *encoded*
payload string with the app secret; the payload JSON carries ``algorithm`` (must be
``HMAC-SHA256``), ``issued_at``, maybe ``expires``, and the app-scoped ``user_id``. With several
Meta apps configured, every secret is tried (no early exit) and the matching app id is returned.

Any input string either parses or raises ``InvalidSignedRequest`` with a reason (property-tested in
tests/unit/test_boundary_properties.py): non-ASCII, non-base64, numbers out of range, a
``user_id`` that is not an id (a string or integer of at most ``USER_ID_MAX`` id characters).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

USER_ID_MAX = 128
_USER_ID = re.compile(r"[A-Za-z0-9_.-]{1,%d}" % USER_ID_MAX)


class InvalidSignedRequest(ValueError):
    """Why a signed_request was refused (safe to show: it names no secret)."""


@dataclass(frozen=True)
class SignedRequest:
    app_id: str
    user_id: str
    issued_at: int | None
    payload: dict


def b64url_decode(data: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(data.encode("ascii") + b"=" * (-len(data) % 4))
    except (binascii.Error, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise InvalidSignedRequest("not base64url") from exc


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def encode(secret: bytes, payload: dict) -> str:
    """The signed_request Meta would send (tests and the sandbox use it)."""
    body = b64url_encode(orjson.dumps(payload))
    sig = hmac.new(secret, body.encode(), hashlib.sha256).digest()
    return f"{b64url_encode(sig)}.{body}"


def parse(signed_request: str | None, secrets: Mapping[str, bytes], *, max_age_s: int,
          now: float | None = None) -> SignedRequest:
    if not signed_request or signed_request.count(".") != 1:
        raise InvalidSignedRequest("signed_request is not <signature>.<payload>")
    sig_part, payload_part = signed_request.split(".")
    sig = b64url_decode(sig_part)
    payload_bytes = payload_part.encode("utf-8", "surrogatepass")
    app_id = None
    for candidate, secret in secrets.items():
        expected = hmac.new(secret, payload_bytes, hashlib.sha256).digest()
        if hmac.compare_digest(expected, sig) and app_id is None:
            app_id = candidate
    if app_id is None:
        raise InvalidSignedRequest("bad signature")
    try:
        payload = orjson.loads(b64url_decode(payload_part))
    except orjson.JSONDecodeError as exc:
        raise InvalidSignedRequest("payload is not JSON") from exc
    if not isinstance(payload, dict):
        raise InvalidSignedRequest("payload is not a JSON object")
    algorithm = str(payload.get("algorithm", "")).upper()
    if algorithm != "HMAC-SHA256":
        raise InvalidSignedRequest(f"unsupported algorithm {str(payload.get('algorithm'))[:40]!r}")
    now = time.time() if now is None else now
    expires, issued_at = payload.get("expires"), payload.get("issued_at")
    if expires not in (None, 0) and _int(expires, "expires") < now:
        raise InvalidSignedRequest("expired")
    if issued_at is not None and _int(issued_at, "issued_at") < now - max_age_s:
        raise InvalidSignedRequest("expired (issued too long ago)")
    user_id = payload.get("user_id")
    if user_id is None or user_id == "":
        raise InvalidSignedRequest("no user_id")
    if isinstance(user_id, bool) or not isinstance(user_id, (str, int)) or not _USER_ID.fullmatch(str(user_id)):
        raise InvalidSignedRequest(f"user_id is not an id (letters, digits, '_.-', at most {USER_ID_MAX})")
    return SignedRequest(app_id, str(user_id), None if issued_at is None else _int(issued_at, "issued_at"), payload)


def _int(value: object, name: str) -> int:
    if isinstance(value, bool):
        raise InvalidSignedRequest(f"{name} is not a number")
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise InvalidSignedRequest(f"{name} is not a number") from None
