"""Avro on the wire: the schemas in ``schemas/avro/`` and the two framings we write.

* **Registry-free (default)** — Avro *single-object encoding* from the Avro specification:
  ``C3 01`` + the writer schema's 8-byte little-endian CRC-64-AVRO fingerprint of its parsing
  canonical form + the Avro binary body. A reader looks the fingerprint up among every version
  in ``schemas/avro/`` and resolves writer → reader schema (so old records stay readable).
* **Confluent wire format** when ``SCHEMA_REGISTRY_URL`` is set — ``00`` + 4-byte big-endian
  schema id + the Avro binary body; schemas registered under ``<topic>-value``.

Both decoders accept both framings, so a deployment can switch without a flag day.
See docs/wire-format.md for the details a non-Python producer needs.
"""

from __future__ import annotations

import io
import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro
import httpx
from fastavro.schema import to_parsing_canonical_form

from wapipe.config import REPO_ROOT

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
_FILE_RE = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9_]*)\.v(?P<version>\d+)\.avsc$")


class SerdeError(ValueError):
    """Bytes that are not a record we can read: the reason goes to a dead-letter record."""


# --- CRC-64-AVRO (Rabin) fingerprint, exactly as the Avro specification gives it ------------
_EMPTY = 0xC15D213AA4D7A795
_TABLE = []
for _i in range(256):
    _fp = _i
    for _ in range(8):
        _fp = (_fp >> 1) ^ (_EMPTY & -(_fp & 1))
    _TABLE.append(_fp)


def crc64_avro(data: bytes) -> int:
    fp = _EMPTY
    for b in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ b) & 0xFF]
    return fp


@dataclass(frozen=True)
class SchemaVersion:
    name: str  # short record name, e.g. "SendCommand"
    version: int
    schema: Any = field(repr=False)  # fastavro-parsed
    canonical: str = field(repr=False)
    fingerprint: bytes = b""  # 8 bytes, little-endian

    @property
    def full_name(self) -> str:
        return self.schema["name"]


def schema_dir() -> Path:
    for candidate in (REPO_ROOT / "schemas" / "avro", Path(__file__).resolve().parent / "_schemas" / "avro"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("schemas/avro not found")


class SchemaStore:
    """Every version of every schema; the highest version of a name is what readers read as."""

    def __init__(self, versions: list[SchemaVersion]) -> None:
        self._by_name: dict[str, list[SchemaVersion]] = {}
        self._by_fp: dict[bytes, SchemaVersion] = {}
        for v in sorted(versions, key=lambda v: (v.name, v.version)):
            self._by_name.setdefault(v.name, []).append(v)
            self._by_fp[v.fingerprint] = v

    @classmethod
    def load(cls, directory: Path | None = None) -> "SchemaStore":
        directory = directory or schema_dir()
        versions = []
        for path in sorted(directory.glob("*.avsc")):
            m = _FILE_RE.match(path.name)
            if not m:
                raise ValueError(f"{path.name}: schema files are named <Record>.v<N>.avsc")
            versions.append(parse_version(m["name"], int(m["version"]), json.loads(path.read_text())))
        return cls(versions)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def latest(self, name: str) -> SchemaVersion:
        try:
            return self._by_name[name][-1]
        except KeyError:
            raise SerdeError(f"unknown schema {name!r}") from None

    def versions(self, name: str) -> list[SchemaVersion]:
        return list(self._by_name[name])

    def by_fingerprint(self, fp: bytes) -> SchemaVersion | None:
        return self._by_fp.get(fp)


def parse_version(name: str, version: int, raw: dict) -> SchemaVersion:
    parsed = fastavro.parse_schema(raw)
    canonical = to_parsing_canonical_form(raw)
    fp = struct.pack("<Q", crc64_avro(canonical.encode()))
    return SchemaVersion(name, version, parsed, canonical, fp)


class SchemaRegistryClient:
    """The two calls of the Confluent Schema Registry REST API we need, cached."""

    def __init__(self, url: str, *, timeout: float = 10.0, transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout, transport=transport)
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, Any] = {}

    def register(self, subject: str, sv: SchemaVersion) -> int:
        key = (subject, sv.canonical)
        if key not in self._ids:
            r = self._http.post(f"/subjects/{subject}/versions", json={"schema": sv.canonical},
                                headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
            r.raise_for_status()
            self._ids[key] = r.json()["id"]
            self._schemas[self._ids[key]] = sv.schema
        return self._ids[key]

    def schema(self, schema_id: int) -> Any:
        if schema_id not in self._schemas:
            r = self._http.get(f"/schemas/ids/{schema_id}")
            if r.status_code == 404:
                raise SerdeError(f"schema id {schema_id} is not in the registry")
            r.raise_for_status()
            self._schemas[schema_id] = fastavro.parse_schema(json.loads(r.json()["schema"]))
        return self._schemas[schema_id]

    def close(self) -> None:
        self._http.close()


class AvroSerde:
    """``encode(name, record)`` / ``decode(data, name)``; records are plain dicts."""

    def __init__(self, store: SchemaStore | None = None, registry: SchemaRegistryClient | None = None) -> None:
        self.store = store or SchemaStore.load()
        self.registry = registry

    @classmethod
    def from_settings(cls, settings) -> "AvroSerde":
        reg = SchemaRegistryClient(settings.schema_registry_url) if settings.schema_registry_url else None
        return cls(SchemaStore.load(), reg)

    def encode(self, name: str, record: dict, *, topic: str | None = None, version: int | None = None) -> bytes:
        sv = self.store.latest(name) if version is None else self._version(name, version)
        buf = io.BytesIO()
        if self.registry is not None:
            if topic is None:
                raise ValueError("the Confluent wire format needs the topic for the subject name")
            buf.write(CONFLUENT_MAGIC + struct.pack(">I", self.registry.register(f"{topic}-value", sv)))
        else:
            buf.write(SINGLE_OBJECT_MAGIC + sv.fingerprint)
        try:
            fastavro.schemaless_writer(buf, sv.schema, record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SerdeError(f"record does not match {name} v{sv.version}: {exc}") from exc
        return buf.getvalue()

    def decode(self, data: bytes | None, name: str) -> dict:
        if not data:
            raise SerdeError(f"empty value where a {name} record was expected")
        reader = self.store.latest(name)
        if data[:2] == SINGLE_OBJECT_MAGIC:
            writer = self.store.by_fingerprint(bytes(data[2:10]))
            if writer is None:
                raise SerdeError(f"unknown writer schema fingerprint {bytes(data[2:10]).hex()} (not in schemas/avro)")
            if writer.name != name:
                raise SerdeError(f"expected a {name} record, got a {writer.name} record")
            writer_schema, body = writer.schema, data[10:]
        elif data[:1] == CONFLUENT_MAGIC and len(data) >= 5:
            if self.registry is None:
                raise SerdeError("Confluent-framed record but SCHEMA_REGISTRY_URL is not set")
            (schema_id,) = struct.unpack(">I", data[1:5])
            writer_schema, body = self.registry.schema(schema_id), data[5:]
        else:
            raise SerdeError(f"not an Avro record (first bytes {bytes(data[:4]).hex()})")
        try:
            return fastavro.schemaless_reader(io.BytesIO(body), writer_schema, reader.schema)
        except Exception as exc:  # truncated body, unresolvable schemas
            raise SerdeError(f"cannot decode {name}: {type(exc).__name__}: {exc}") from exc

    def _version(self, name: str, version: int) -> SchemaVersion:
        for v in self.store.versions(name):
            if v.version == version:
                return v
        raise SerdeError(f"{name} has no version {version}")
