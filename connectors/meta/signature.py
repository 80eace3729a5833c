"""Meta's webhook signature: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>``.

Verify on the raw bytes, before parsing, in constant time. Several Meta apps may deliver to the
same endpoint: ``verify_any`` says which app's secret matched.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

HEADER = "X-Hub-Signature-256"
_PREFIX = "sha256="


def sign(secret: bytes, body: bytes) -> str:
    """The header value Meta would send for ``body``."""
    return _PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str | None) -> bool:
    if not header or not header.startswith(_PREFIX):
        return False
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header[len(_PREFIX):].strip().lower())


def verify_any(secrets: Mapping[str, bytes], body: bytes, header: str | None) -> str | None:
    """The app id whose secret signed ``body``, or None. Every secret is tried (no early exit
    that would leak which app ids exist through timing)."""
    match = None
    for app_id, secret in secrets.items():
        if verify(secret, body, header) and match is None:
            match = app_id
    return match
