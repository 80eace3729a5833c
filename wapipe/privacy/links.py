"""Which subjects of a tenant are one person: a number's and a BSUID's (``wa.subject.links``).

A WhatsApp user can be named by their number, their business-scoped user id (BSUID) and their
parent BSUID (``connectors/meta/bsuid.py``); each gives its own subject (``subjects.py``). When one
webhook item names a number and a BSUID together, the normaliser writes a ``SubjectLink``
(pseudonyms only, no identifier in clear) keyed ``tenant_id/linked_subject_id`` on a compacted
topic. A BSUID belongs to one number (a new number gets a new BSUID), so the latest link of a key
is the one that holds.

``linked_subjects(bootstrap, serde, tenant, subject)`` reads the topic and returns every subject
of the tenant connected to ``subject`` (itself included, transitively: parent BSUID → BSUID →
number). Access and erasure work on that whole set, so naming a person by their number or by
their BSUID reaches the same data. Only links of the same tenant are followed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable

from wapipe.avro import AvroSerde, SerdeError
from wapipe.messages.events import SubjectLink
from wapipe.topics import SUBJECT_LINKS

__all__ = ["link_record", "linked_subjects", "closure", "read_links", "read_link_partitions"]


def link_record(tenant_id: str, subject_id: str, linked_subject_id: str, at: dt.datetime) -> SubjectLink:
    """The link ``linked_subject_id`` → ``subject_id`` in ``tenant_id`` (its record key: ``.key``)."""
    eid = hashlib.sha256("\x1f".join(("link", tenant_id, subject_id, linked_subject_id)).encode()).hexdigest()
    return SubjectLink(event_id=eid, tenant_id=tenant_id, subject_id=subject_id, linked_subject_id=linked_subject_id,
                       linked_at=at)


def closure(pairs: Iterable[tuple[str, str]], start: str) -> set[str]:
    """Every node connected to ``start`` by the undirected ``pairs`` (``start`` included)."""
    edges: dict[str, set[str]] = {}
    for a, b in pairs:
        edges.setdefault(a, set()).add(b)
        edges.setdefault(b, set()).add(a)
    seen, todo = {start}, [start]
    while todo:
        for n in edges.get(todo.pop(), ()):
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


def read_links(bootstrap: str, serde: AvroSerde, tenant_id: str) -> list[tuple[str, str]]:
    """The tenant's current links (latest record per key; tombstoned keys dropped) as pairs."""
    from wapipe.edge.scan import scan

    latest: dict[bytes, tuple[str, str] | None] = {}
    for m in scan(bootstrap, SUBJECT_LINKS, missing_ok=True):
        key = m.key() or b""
        if not key.startswith(f"{tenant_id}/".encode()):
            continue
        if m.value() is None:
            latest[key] = None
            continue
        try:
            link = SubjectLink.from_avro(serde.decode(m.value(), "SubjectLink"))
        except SerdeError:
            continue  # not a link: it links nobody
        if link.tenant_id == tenant_id:
            latest[key] = (link.subject_id, link.linked_subject_id)
    return [p for p in latest.values() if p is not None]


def linked_subjects(bootstrap: str, serde: AvroSerde, tenant_id: str, subject_id: str) -> set[str]:
    """``subject_id`` and every subject of ``tenant_id`` that is the same person."""
    return closure(read_links(bootstrap, serde, tenant_id), subject_id)


def read_link_partitions(bootstrap: str, serde: AvroSerde, tenant_id: str, subjects: set[str]) -> dict[bytes, set[int]]:
    """Keys (and the partitions holding them) of the tenant's links that touch ``subjects``: what
    an erasure of those subjects tombstones."""
    from wapipe.edge.scan import scan

    out: dict[bytes, set[int]] = {}
    for m in scan(bootstrap, SUBJECT_LINKS, missing_ok=True):
        key = m.key() or b""
        if not key.startswith(f"{tenant_id}/".encode()) or m.value() is None:
            continue
        try:
            link = SubjectLink.from_avro(serde.decode(m.value(), "SubjectLink"))
        except SerdeError:
            continue
        if link.tenant_id == tenant_id and {link.subject_id, link.linked_subject_id} & subjects:
            out.setdefault(key, set()).add(m.partition())
    return out
