"""Access / export: everything held about one subject, as JSON-ready data.

Kafka: every record of every topic (from the beginning) whose ``subject_id`` is the subject or
that holds a Sealed field of the subject, with each Sealed field opened (or marked erased), and
raw webhooks whose cleartext body holds the subject's number. ClickHouse: every row of every
table with a ``subject_id`` column. Corrections on record are applied to what is shown.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from wapipe.avro import AvroSerde, SerdeError
from wapipe.privacy.errors import SubjectErased, UnsealError
from wapipe.privacy.keyring import KeyRing
from wapipe.privacy.registry import PrivacyRegistry
from wapipe.privacy.subjects import digits
from wapipe.privacy.topicscan import scan
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


def export_subject(*, bootstrap: str, serde: AvroSerde, keyring: KeyRing, registry: PrivacyRegistry,
                   subject_id: str, wa_id: str | None = None, reader: Any = None) -> dict:
    def open_sealed(sealed: dict) -> Any:
        if not sealed["key_id"].startswith(subject_id + "/"):
            return "<another subject's data, not shown>"
        try:
            return apply_corrections(registry, keyring, subject_id, keyring.unseal(sealed))
        except SubjectErased:
            return "<erased>"
        except UnsealError as exc:
            return f"<unreadable: {exc}>"

    phone = digits(wa_id).encode() if wa_id else None
    kafka: dict[str, list] = {}
    for t in TOPICS:
        if t.name == SUBJECT_KEYS:
            continue
        for m in scan(bootstrap, t.name):
            if not m.value():
                continue
            if t.name in (WEBHOOK_RAW, WEBHOOK_DEAD) and phone and phone in m.value():
                try:
                    rec = serde.decode(m.value(), t.value)
                except SerdeError:
                    continue
                kafka.setdefault(t.name, []).append({"partition": m.partition(), "offset": m.offset(),
                                                     "record": jsonable(rec, open_sealed)})
                continue
            try:
                rec = serde.decode(m.value(), t.value)
            except SerdeError:
                continue
            if _mentions(rec, subject_id):
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
            rows = reader.query(f"SELECT {sel} FROM `{table}` WHERE subject_id = {{s:String}}", {"s": subject_id})
            if rows:
                clickhouse[table] = [jsonable(dict(zip(cols, r)), open_sealed) for r in rows]
    requests = [jsonable({k: v for k, v in r.items() if k != "details"}, open_sealed)
                for r in registry.requests() if r.get("subject_id") == subject_id]
    return {"subject_id": subject_id, "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "kafka": kafka, "clickhouse": clickhouse, "requests": requests,
            "restricted": registry.is_restricted(subject_id)}
