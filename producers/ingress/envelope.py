"""The little the ingress reads from a webhook body: is it JSON, and which key does it go under.

The ingress does not interpret webhooks (the normaliser does, from ``wa.webhook.raw``). It only
needs the partition key — ``entry[].changes[].value.metadata.phone_number_id``, so every event of
one number stays in order in one partition — falling back to the WABA id (``entry[].id``) for
fields without a number (template, quality, account updates). orjson parses a 3 MB body in
milliseconds and a typical one in microseconds.

Only what can never be processed is refused (``Malformed``): not JSON, or not a JSON object. Any
other shape — ``entry`` or ``changes`` not lists, ids of the wrong type — is stored as it came
(keyed by whatever id is usable, else unkeyed); judging the items inside is the normaliser's job.
A key is a string or integer id of at most ``KEY_MAX`` characters: Meta's ids are 15–20 digits,
and a longer "id" must not make the record bigger than the topic takes (wapipe/topics.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

KEY_MAX = 128


class Malformed(ValueError):
    """Signed by Meta but not a JSON object: retrying will not fix it, so it is dead-lettered."""


@dataclass(frozen=True, slots=True)
class Routing:
    key: bytes | None
    key_kind: str  # "phone_number_id", "waba_id" or "none"


def _id(value: object) -> bytes | None:
    """A usable partition key from an id field: a non-empty str or int (not bool), bounded."""
    if type(value) is str:
        text = value
    elif type(value) is int:
        text = str(value)
    else:
        return None
    if not text or len(text) > KEY_MAX:
        return None
    return text.encode("utf-8", "surrogatepass")


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
        changes = entry.get("changes")
        if isinstance(changes, list):
            for change in changes:
                value = change.get("value") if isinstance(change, dict) else None
                meta = value.get("metadata") if isinstance(value, dict) else None
                pnid = _id(meta.get("phone_number_id")) if isinstance(meta, dict) else None
                if pnid:
                    return Routing(pnid, "phone_number_id")
        if waba is None:
            waba = _id(entry.get("id"))
    return Routing(waba, "waba_id") if waba else Routing(None, "none")
