"""Access / export: everything one tenant holds about one of its subjects, as JSON-ready data.

Everything is scoped to the tenant (docs/security.md, "Tenant isolation"):

* Kafka: every record of every topic (from the beginning) whose ``tenant_id`` is the tenant and
  whose ``subject_id`` is the subject or that holds a Sealed field of the subject; the subject's
  Sealed fields are opened (or marked erased), anyone else's are not.
* Raw webhooks (``wa.webhook.raw``, ``wa.webhook.dead``: Meta's bodies in clear, one body may
  carry several people and businesses): never whole. Only the subject's own items — a message
  *from* the subject, a status *to* the subject, the subject's contact entry — of changes on one
  of the tenant's numbers, matched by pseudonym (``subject_of(wa_id) == subject_id``), never by
  a substring of the body.
* ClickHouse: every row of every table with a ``subject_id`` column, filtered by the tenant
  (``tenant_id`` column) as well as the subject.

Corrections on record are applied to what is shown.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from wapipe.avro import AvroSerde, SerdeError
from wapipe.edge.scan import scan
from wapipe.privacy.errors import SubjectErased, UnsealError
from wapipe.privacy.keyring import KeyRing
from wapipe.privacy.registry import PrivacyRegistry
from wapipe.topics import SUBJECT_KEYS, TOPICS, WEBHOOK_DEAD, WEBHOOK_RAW


def _is_sealed(v: Any) -> bool:
    return isinstance(v, dict) and set(v) == {"key_id", "nonce", "ciphertext"}


def _mentions(obj: Any, subject_id: str) -> bool:
    if _is_sealed(obj):
        return obj["key_id"].startswith(subject_id + "/")
    if isinstance(obj, dict):
        return obj.get("subject_id") == subject_id or any(_mentions(v, subject_id) for v in obj.values())
    if isinstance(obj, list):
        return any(_mentions(v, subject_id) for v in obj)
    return False


def jsonable(obj: Any, open_sealed) -> Any:
    if _is_sealed(obj):
        return open_sealed(obj)
    if isinstance(obj, dict):
        return {k: jsonable(v, open_sealed) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, open_sealed) for v in obj]
    if isinstance(obj, (bytes, bytearray)):
        try:
            return bytes(obj).decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(bytes(obj)).decode()}
    if isinstance(obj, (dt.datetime, dt.date)):
        return obj.isoformat()
    return obj


def apply_corrections(registry: PrivacyRegistry, keyring: KeyRing, subject_id: str, data: dict) -> dict:
    """Overlay the subject's corrected fields (latest wins) on opened personal data."""
    out = dict(data)
    for field, sealed in registry.corrections(subject_id):
        if field in out or field in ("profile_name", "name"):
            try:
                out[field] = keyring.unseal(sealed)["value"]
            except (SubjectErased, UnsealError):
                pass
    return out


# The fields that name the person an item is about: by number, and by business-scoped user id
# (username users: their items may have no number at all).
RAW_ITEMS = (("messages", "from"), ("statuses", "recipient_id"), ("contacts", "wa_id"),
             ("messages", "from_user_id"), ("messages", "from_parent_user_id"), ("statuses", "recipient_user_id"),
             ("statuses", "recipient_parent_user_id"), ("contacts", "user_id"), ("contacts", "parent_user_id"))


def own_raw_items(body: bytes, *, subject_id: str, subject_of: Callable[[str], str],
                  owns_number: Callable[[str], bool]) -> list[dict]:
    """The subject's own items of one raw webhook body: messages from, statuses to, and the contact
    entry of the subject, in changes on one of the tenant's numbers. Anything else in the body
    (other people, other businesses) is left out; a body that is not a webhook gives nothing."""
    try:
        doc = json.loads(body)
    except (ValueError, TypeError, RecursionError):  # a signed body the ingress dead-lettered can be anything
        return []
    out: list[dict] = []
    entries = doc.get("entry") if isinstance(doc, dict) else None
    for entry in entries if isinstance(entries, list) else ():
        changes = entry.get("changes") if isinstance(entry, dict) else None
        for change in changes if isinstance(changes, list) else ():
            value = change.get("value") if isinstance(change, dict) else None
            if not isinstance(value, dict):
                continue
            metadata = value.get("metadata")
            pnid = metadata.get("phone_number_id") if isinstance(metadata, dict) else None
            if not isinstance(pnid, str) or not owns_number(pnid):
                continue
            taken: set[int] = set()  # an item naming the person by number and BSUID: once
            for kind, field in RAW_ITEMS:
                items = value.get(kind)
                for item in items if isinstance(items, list) else ():
                    wa = item.get(field) if isinstance(item, dict) else None
                    if isinstance(wa, str) and id(item) not in taken and _is_subject(wa, subject_id, subject_of):
                        taken.add(id(item))
                        out.append({"phone_number_id": pnid, "kind": kind, "item": item})
    return out


def _is_subject(wa_id: str, subject_id: str, subject_of: Callable[[str], str]) -> bool:
    try:
        return subject_of(wa_id) == subject_id
    except ValueError:  # no digits: nobody's number
        return False


def _raw_body(topic: str, rec: dict) -> bytes | None:
    body = rec.get("body") if topic == WEBHOOK_RAW else rec.get("value")
    return bytes(body) if isinstance(body, (bytes, bytearray)) else None


def export_subject(*, bootstrap: str, serde: AvroSerde, keyring: KeyRing, registry: PrivacyRegistry,
                   tenant_id: str, subject_id: str, subject_of: Callable[[str], str],
                   owns_number: Callable[[str], bool], reader: Any = None) -> dict:
    """Everything ``tenant_id`` holds about ``subject_id`` (which the caller checked is the tenant's).
    ``subject_of(wa_id)`` is the tenant's pseudonym of a number; ``owns_number(phone_number_id)``
    whether a business number is the tenant's."""
    def open_sealed(sealed: dict) -> Any:
        if not sealed["key_id"].startswith(subject_id + "/"):
            return "<another subject's data, not shown>"
        try:
            return apply_corrections(registry, keyring, subject_id, keyring.unseal(sealed))
        except SubjectErased:
            return "<erased>"
        except UnsealError as exc:
            return f"<unreadable: {exc}>"

    kafka: dict[str, list] = {}
    for t in TOPICS:
        if t.name == SUBJECT_KEYS:
            continue
        for m in scan(bootstrap, t.name, missing_ok=True):
            if not m.value():
                continue
            try:
                rec = serde.decode(m.value(), t.value)
            except SerdeError:
                continue
            if t.name in (WEBHOOK_RAW, WEBHOOK_DEAD):
                body = _raw_body(t.name, rec)
                items = own_raw_items(body, subject_id=subject_id, subject_of=subject_of,
                                      owns_number=owns_number) if body else []
                if items:
                    kafka.setdefault(t.name, []).append({
                        "partition": m.partition(), "offset": m.offset(),
                        "received_at": jsonable(rec.get("received_at") or m.timestamp()[1], str), "items": items})
                continue
            if rec.get("tenant_id") == tenant_id and _mentions(rec, subject_id):
                kafka.setdefault(t.name, []).append({"partition": m.partition(), "offset": m.offset(),
                                                     "record": jsonable(rec, open_sealed)})
    clickhouse: dict[str, list] = {}
    if reader is not None:
        tables = reader.query("SELECT c.table FROM system.columns AS c INNER JOIN system.tables AS t"
                              " ON c.database = t.database AND c.table = t.name WHERE c.database = currentDatabase()"
                              " AND c.name = 'subject_id' AND t.engine LIKE '%MergeTree%' ORDER BY c.table")
        for (table,) in tables:
            cols = [r[0] for r in reader.query(
                "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = {t:String}"
                " AND type NOT LIKE 'AggregateFunction%' ORDER BY position", {"t": table})]
            sel = ", ".join(f"`{c}`" for c in cols)
            # The pseudonym is per tenant already; the tenant filter is the second lock on the door.
            where = "subject_id = {s:String}" + (" AND tenant_id = {t:String}" if "tenant_id" in cols else "")
            rows = reader.query(f"SELECT {sel} FROM `{table}` WHERE {where}", {"s": subject_id, "t": tenant_id})
            if rows:
                clickhouse[table] = [jsonable(dict(zip(cols, r)), open_sealed) for r in rows]
    requests = [jsonable({k: v for k, v in r.to_avro().items() if k != "details"}, open_sealed)
                for r in registry.requests() if r.subject_id == subject_id and r.tenant_id == tenant_id]
    return {"tenant_id": tenant_id, "subject_id": subject_id,
            "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "kafka": kafka, "clickhouse": clickhouse, "requests": requests,
            "restricted": registry.is_restricted(tenant_id, subject_id)}


def merge_exports(docs: list[dict]) -> dict:
    """One export of a person from the exports of their linked subjects (the first is the one the
    request named): records and rows of all, ``linked_subjects`` naming the others."""
    first = dict(docs[0])
    first["kafka"] = {k: list(v) for k, v in first["kafka"].items()}
    first["clickhouse"] = {k: list(v) for k, v in first["clickhouse"].items()}
    first["requests"] = list(first["requests"])
    for other in docs[1:]:
        for part in ("kafka", "clickhouse"):
            for k, v in other[part].items():
                first[part].setdefault(k, []).extend(v)
        first["requests"].extend(other["requests"])
        first["restricted"] = first["restricted"] or other["restricted"]
    first["linked_subjects"] = [d["subject_id"] for d in docs[1:]]
    return first
