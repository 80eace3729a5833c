"""What stores hold on disk, byte for byte, for the erasure proofs: ClickHouse (chDB) part files
decompressed, RocksDB databases read whole, and WhatsApp message ids (wamids) decoded.

Nothing here trusts a query: a row masked by a lightweight DELETE, a part a mutation replaced but
ClickHouse has not removed yet, a key RocksDB still holds in a WAL: all are bytes in a file.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import lz4.block
import zstandard

_LZ4, _NONE, _ZSTD = 0x82, 0x02, 0x90
_COMPRESSED = (".bin", ".cidx", ".cmrk", ".cmrk2", ".cmrk3")
_WAMID = re.compile(rb"wamid\.([A-Za-z0-9+/=_-]{8,})")


class Undecodable(AssertionError):
    """A compressed file the scan cannot read: the proof would be blind there."""


def clickhouse_decompress(data: bytes, name: str = "") -> bytes:
    """The content of a ClickHouse compressed file: blocks of checksum(16) method(1) csize(4) usize(4)."""
    out, i = [], 0
    while i < len(data):
        if i + 25 > len(data):
            raise Undecodable(f"{name}: truncated block header at {i}")
        method = data[i + 16]
        csize, usize = struct.unpack_from("<II", data, i + 17)
        payload = data[i + 25:i + 16 + csize]
        if method == _LZ4:
            out.append(lz4.block.decompress(payload, uncompressed_size=usize))
        elif method == _ZSTD:
            out.append(zstandard.ZstdDecompressor().decompress(payload, max_output_size=usize))
        elif method == _NONE:
            out.append(payload)
        else:
            raise Undecodable(f"{name}: codec 0x{method:02x} at {i}")
        i += 16 + csize
    return b"".join(out)


def chdb_files(root: Path) -> Iterator[tuple[Path, bytes]]:
    """Every file under a chDB data folder: its raw bytes, and for compressed part files also
    the decompressed bytes (so masked rows and replaced parts are seen too)."""
    for f in sorted(root.rglob("*")):
        if not f.is_file():
            continue
        raw = f.read_bytes()
        yield f, raw
        if f.suffix in _COMPRESSED and raw:
            yield f, clickhouse_decompress(raw, str(f))


def rocksdb_dirs(root: Path) -> list[Path]:
    return sorted({f.parent for f in root.rglob("CURRENT") if (f.parent / "IDENTITY").exists()
                   or any(f.parent.glob("MANIFEST-*"))})


def rocksdb_items(path: Path) -> Iterator[tuple[bytes, bytes]]:
    """Every key and value of a RocksDB database (all column families), read-only."""
    from rocksdict import AccessType, Options, Rdict

    cfs = Rdict.list_cf(str(path))
    db = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only(),
               column_families={name: Options(raw_mode=True) for name in cfs if name != "default"})
    try:
        for cf in cfs:
            handle = db if cf == "default" else db.get_column_family(cf)
            for k, v in handle.items():
                yield bytes(k), bytes(v)
    finally:
        db.close()


def files_bytes(root: Path) -> Iterator[tuple[Path, bytes]]:
    for f in sorted(root.rglob("*")):
        if f.is_file():
            yield f, f.read_bytes()


def wamid_payloads(blob: bytes) -> list[bytes]:
    """The decoded bytes of every wamid in ``blob`` (Meta's, and the sandbox's, embed the number)."""
    out = []
    for m in _WAMID.finditer(blob):
        token = m.group(1)
        for candidate in (token, token + b"=" * (-len(token) % 4)):
            try:
                out.append(base64.b64decode(candidate.replace(b"-", b"+").replace(b"_", b"/"), validate=False))
                break
            except (binascii.Error, ValueError):
                continue
    return out


def holds(blob: bytes, needles: list[bytes]) -> list[bytes]:
    """Which needles ``blob`` holds, in clear or inside a decoded wamid."""
    decoded = wamid_payloads(blob)
    return [n for n in needles if n in blob or any(n in d for d in decoded)]
