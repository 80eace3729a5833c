"""Let the embedded ClickHouse decode the Avro: the sink's fast path for high-volume topics.

Decoding Avro record by record in Python costs more than everything else the sink does. Records
on the wire are Avro single-object encoded (``C3 01`` + fingerprint + body), so when a record's
writer schema is the latest version, its body can go to ClickHouse untouched: the bodies of a
batch are framed as one Avro Object Container File (a header with the writer schema, one block,
a sync marker) in a temporary file, and one ``INSERT ... SELECT ... FROM file(..., 'Avro')``
converts and inserts them (same columns and rules as ``sinks/rows.py``). Records of older writer
schemas, Confluent-framed ones, and everything when the ClickHouse is a server (``file()`` would
read the server's disk) take the Python path. If ClickHouse rejects a block's data, the sink
decodes those records in Python to find and dead-letter the bad ones (``worker.py``).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from functools import cached_property

from sinks.rows import insert_settings
from wapipe.avro import SINGLE_OBJECT_MAGIC, SchemaStore
from wapipe.topics import STATUS_EVENTS

_RANKS = "transform(status, ['sent', 'delivered', 'read', 'played', 'failed'], [1, 2, 3, 3, 4], 0)"
_MS = "fromUnixTimestamp64Milli({}, 'UTC')"


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def container(schema_json: str, bodies: list[bytes]) -> bytes:
    """An Avro Object Container File holding ``bodies`` (already-encoded records) in one block."""
    sync = os.urandom(16)
    meta = {b"avro.schema": schema_json.encode(), b"avro.codec": b"null"}
    head = bytearray(b"Obj\x01") + _zigzag(len(meta))
    for k, v in meta.items():
        head += _zigzag(len(k)) + k + _zigzag(len(v)) + v
    head += _zigzag(0) + sync
    data = b"".join(bodies)
    return bytes(head) + _zigzag(len(bodies)) + _zigzag(len(data)) + data + sync


@dataclass(frozen=True)
class PassThrough:
    record: str
    table: str
    columns: tuple[str, ...]
    select: str  # expressions over the Avro fields, in the order of `columns`; {retention} is filled in
    fingerprint: bytes
    schema_json: str

    @cached_property
    def _prefix(self) -> bytes:
        return SINGLE_OBJECT_MAGIC + self.fingerprint

    def accepts(self, value: bytes | None) -> bool:
        return value is not None and value.startswith(self._prefix)

    def insert(self, client, values: list[bytes], retention: tuple[list[str], list[int], int], token: str) -> None:
        blob = container(self.schema_json, [v[10:] for v in values])
        fd, path = tempfile.mkstemp(suffix=".avro", prefix="wapipe-sink-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            tenants, days, default = retention
            sql = (f"INSERT INTO {self.table} ({', '.join(self.columns)}) SELECT {self.select} "
                   f"FROM file('{path}', 'Avro')")
            client.command(sql, parameters={"tenants": tenants, "days": days, "default_days": default},
                           settings=insert_settings(token))
        finally:
            os.unlink(path)


_STATUS_SELECT = ", ".join([
    "event_id", "ifNull(tenant_id, '')", "waba_id", "phone_number_id", "wamid", "status", _RANKS,
    _MS.format("timestamp"), "ifNull(subject_id, '')", "biz_opaque_callback_data", "conversation_id",
    "conversation_origin", f"if(conversation_expires_at IS NULL, NULL, {_MS.format('assumeNotNull(conversation_expires_at)')})",
    "pricing_billable", "pricing_model", "pricing_category", "pricing_type",
    "arrayMap(e -> e.code, errors)", "arrayMap(e -> ifNull(e.title, ''), errors)",
    "arrayMap(e -> ifNull(e.message, ''), errors)", "arrayMap(e -> ifNull(e.details, ''), errors)",
    _MS.format("received_at"), "extra",
    "transform(ifNull(tenant_id, ''), {tenants:Array(String)}, {days:Array(UInt16)}, {default_days:UInt16})",
    "substring(lower(ifNull(recipient_type, '')), 1, 32)",  # 'group' for a group's status (issue 20)
])


def passthroughs(store: SchemaStore) -> dict[str, PassThrough]:
    """topic -> fast path, for the topics that have one (status events: the volume)."""
    from sinks.rows import CONVERTERS

    sv = store.latest("StatusEvent")
    conv = CONVERTERS[STATUS_EVENTS]
    return {STATUS_EVENTS: PassThrough("StatusEvent", conv.table, conv.columns, _STATUS_SELECT, sv.fingerprint,
                                       sv.canonical)}
