"""A SendCommand for unit tests: the fields a test names, the rest filled in."""

from __future__ import annotations

import datetime as dt
from typing import Any

from wapipe.messages.send import SendCommand

BASE: dict[str, Any] = {
    "command_id": "c1", "tenant_id": "acme", "idempotency_key": "k", "phone_number_id": "111", "subject_id": "s1",
    "lane": "TRANSACTIONAL", "kind": "TEXT", "template": None, "valid_until": None,
    "pii": {"key_id": "", "nonce": b"", "ciphertext": b"{}"},
    "requested_at": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
}


def command(**fields: Any) -> SendCommand:
    """``fields`` as the Avro dict has them (a template as ``{"name", "language", ...}``)."""
    return SendCommand.from_avro(BASE | fields)
