"""Hypothesis strategies for the HTTP boundaries: any JSON, webhook-shaped JSON with the wrong type
at any level, signature headers, signed_request strings."""

from __future__ import annotations

import json

from hypothesis import strategies as st

SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=2**63, max_value=10**40)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40))
ANY_JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=15)
# Ids as Meta sends them, and ids that are not (too long, wrong type, path-like).
IDS = (st.from_regex(r"\A[0-9]{1,20}\Z") | st.integers(min_value=0, max_value=10**20)
       | st.text(min_size=120, max_size=300) | st.sampled_from(["../../etc/passwd", "a/b", "", " "]) | ANY_JSON)


def _or_any(strategy):
    return strategy | ANY_JSON


METADATA = _or_any(st.fixed_dictionaries({}, optional={"phone_number_id": IDS, "display_phone_number": IDS}))
VALUE = _or_any(st.fixed_dictionaries({}, optional={"messaging_product": ANY_JSON, "metadata": METADATA,
                                                    "statuses": ANY_JSON, "messages": ANY_JSON}))
CHANGE = _or_any(st.fixed_dictionaries({}, optional={"field": ANY_JSON, "value": VALUE}))
ENTRY = _or_any(st.fixed_dictionaries({}, optional={"id": IDS, "changes": _or_any(st.lists(CHANGE, max_size=3))}))
# Webhook-shaped objects: every level may hold the wrong type (a "changes" that is not a list...).
WEBHOOK = st.fixed_dictionaries({}, optional={"object": ANY_JSON, "entry": _or_any(st.lists(ENTRY, max_size=3))})


def dumps(doc: object) -> bytes:
    """Standard JSON (integers of any size), as a client would send it."""
    return json.dumps(doc).encode()


JSON_BODIES = (WEBHOOK | ANY_JSON).map(dumps)
ANY_BODIES = st.binary(max_size=300) | JSON_BODIES

# Header values a client can put on the wire: no CR/LF/NUL, any byte 0x20-0xff (latin-1 decoded by
# the ASGI server), plus look-alikes of a real signature.
HEADER_BYTES = st.binary(max_size=120).map(lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7f))
SIGNATURE_HEADERS = (HEADER_BYTES
                     | st.from_regex(r"\Asha256=[0-9a-fA-F]{0,70}\Z").map(str.encode)
                     | st.text(max_size=80).map(lambda t: ("sha256=" + t).encode("utf-8")))
