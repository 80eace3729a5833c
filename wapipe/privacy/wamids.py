"""Keyed references to WhatsApp message ids (wamids), which are personal data.

Meta's wamid embeds the other party's number: ``wamid.`` + base64 of a small protobuf-like record
holding the digits (the sandbox copies the format, ``connectors/meta/sandbox/engine.new_wamid``). So
no wamid is kept in clear once the Graph call or the webhook that carried it has been handled:

* every record field and record key that held a wamid (``SendResult.wamid``, ``DispatchEntry.wamid``,
  ``StatusEvent.wamid`` and its key, ``InboundMessage.message_id`` and ``context_message_id``, and so
  the send dedup table and every ClickHouse column fed from them) holds ``ref(wamid)``:
  ``wref.`` + HMAC-SHA256(K, wamid), 160 bits in hex, K derived from the subject pepper. The send
  worker computes it from the Graph answer, the normaliser from the webhook, so a status still joins
  its send (and the reconciler its ledger entry) without the wamid being stored;
* the clear wamid is kept only where it is sealed with the subject's data key (the ``pii`` of the
  status or inbound event), so an erasure shreds it with the rest.

Why a keyed hash is enough: a wamid carries 72 random bits besides the number, so ``ref`` can be
neither reversed nor matched to a number, even by someone holding K, without the clear wamid;
the key keeps anyone holding only a wamid from finding its records without the deployment's secret.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from wapipe.config import Settings

PREFIX = "wref."
_LABEL = b"wapipe/wamid-ref/v1"


@dataclass(frozen=True)
class WamidRefs:
    key: bytes
    # HMAC with the key already absorbed: each ref copies it (the send worker makes one per message)
    _keyed: "hmac.HMAC" = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_keyed", hmac.new(self.key, digestmod=hashlib.sha256))

    @classmethod
    def from_pepper(cls, pepper: bytes) -> "WamidRefs":
        return cls(hmac.new(pepper, _LABEL, hashlib.sha256).digest())

    @classmethod
    def from_settings(cls, settings: Settings) -> "WamidRefs":
        from wapipe.privacy.subjects import pepper_from

        return cls.from_pepper(pepper_from(settings))

    def __call__(self, wamid: str | None) -> str | None:
        """``ref(wamid)``; None and empty stay as they are, and a ref is not hashed twice."""
        if not wamid or wamid.startswith(PREFIX):
            return wamid
        h = self._keyed.copy()
        h.update(wamid.encode())
        return PREFIX + h.hexdigest()[:40]


def is_ref(value: str | None) -> bool:
    return bool(value) and value.startswith(PREFIX)  # type: ignore[union-attr]
