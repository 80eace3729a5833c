"""The little the ingress reads from a webhook body: is it JSON, and which key does it go under.

The ingress does not interpret webhooks (the normaliser does, from ``wa.webhook.raw``). It only
needs the partition key — ``entry[].changes[].value.metadata.phone_number_id``, so every event of
one number stays in order in one partition — falling back to the WABA id (``entry[].id``) for
fields without a number (template, quality, account updates). orjson parses a 3 MB body in
milliseconds and a typical one in microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson


class Malformed(ValueError):
    """Signed by Meta but not a JSON object: retrying will not fix it, so it is dead-lettered."""


@dataclass(frozen=True, slots=True)
class Routing:
    key: bytes | None
    key_kind: str  # "phone_number_id", "waba_id" or "none"


def routing_key(body: bytes) -> Routing:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Malformed(f"malformed JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise Malformed(f"webhook body is a JSON {type(doc).__name__}, not an object")
    entries = doc.get("entry")
    if not isinstance(entries, list):
        return Routing(None, "none")
    waba = None
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        for change in entry.get("changes") or ():
            value = change.get("value") if isinstance(change, dict) else None
            meta = value.get("metadata") if isinstance(value, dict) else None
            pnid = meta.get("phone_number_id") if isinstance(meta, dict) else None
            if pnid:
                return Routing(str(pnid).encode(), "phone_number_id")
        if waba is None and entry.get("id"):
            waba = str(entry["id"]).encode()
    return Routing(waba, "waba_id") if waba else Routing(None, "none")
