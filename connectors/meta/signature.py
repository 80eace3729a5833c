"""Meta's webhook signature: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>``.

Verify on the raw bytes, before parsing, in constant time. Several Meta apps may deliver to the
same endpoint: ``verify_any`` says which app's secret matched.

The header is attacker-controlled: any value (non-ASCII bytes decoded as latin-1, any length) is
simply "not a valid signature", never an exception. The comparison is on ASCII bytes, since
``hmac.compare_digest`` refuses ``str`` with non-ASCII characters.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

HEADER = "X-Hub-Signature-256"
_PREFIX = "sha256="
_HEX_LEN = 64  # a SHA-256 digest in hex


def sign(secret: bytes, body: bytes) -> str:
    """The header value Meta would send for ``body``."""
    return _PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _digest(header: str | bytes | None) -> bytes | None:
    """The hex digest the header claims (lower-case ASCII bytes), or None when it cannot be one."""
    if not header:
        return None
    if isinstance(header, str):
        try:
            header = header.encode("ascii")
        except UnicodeEncodeError:
            return None
    if not header.startswith(_PREFIX.encode()):
        return None
    claimed = header[len(_PREFIX):].strip().lower()
    return claimed if len(claimed) == _HEX_LEN else None


def verify(secret: bytes, body: bytes, header: str | bytes | None) -> bool:
    claimed = _digest(header)
    if claimed is None:
        return False
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
    return hmac.compare_digest(expected, claimed)


def verify_any(secrets: Mapping[str, bytes], body: bytes, header: str | bytes | None) -> str | None:
    """The app id whose secret signed ``body``, or None. Every secret is tried (no early exit
    that would leak which app ids exist through timing)."""
    claimed = _digest(header)
    if claimed is None:
        return None
    match = None
    for app_id, secret in secrets.items():
        expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
        if hmac.compare_digest(expected, claimed) and match is None:
            match = app_id
    return match
