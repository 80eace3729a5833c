"""For the send path's unit tests: a SendCommand with the fields a test names (the rest filled
in), and a tenant registry over real tenant models."""

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


class Registry:
    """The lookups of ``wapipe.tenants.registry.TenantRegistry`` the send path makes, over a
    fixed set of tenants and templates."""

    def __init__(self, tenants, templates=()) -> None:
        self._t = {t.tenant_id: t for t in tenants}
        self._tpl = {(t.waba_id, t.name, t.language): t for t in templates}

    def tenant(self, tenant_id):
        return self._t.get(tenant_id)

    def template(self, waba_id, name, language):
        return self._tpl.get((waba_id, name, language))

    def number(self, pnid):
        return next((n for t in self._t.values() for n in t.numbers if n.phone_number_id == pnid), None)
